//! `GET`/`POST /oauth/logout`: OpenID Connect RP-Initiated Logout 1.0, the end-session endpoint.
//!
//! A relying party sends the browser here with `id_token_hint` (an ID token this server issued
//! it; an expired one is fine, §2), optionally `client_id`, `post_logout_redirect_uri` and
//! `state` (query for GET, form body for POST, §2). Then:
//!
//! - the hint's login session (`sid`) ends: every refresh-token family granted in that login,
//!   for any client, is revoked at its next use ([`crate::session`]);
//! - the refresh cookie of `/oauth/refresh` is cleared, and the gateway's login cookies named in
//!   `end_session.clear_cookies` too when the browser's login is the hinted one (or the gateway
//!   did not tell: the request carries no login);
//! - the browser goes to `post_logout_redirect_uri` with `state` when the client registered that
//!   exact URI (`post_logout_redirect_uris`, §3.1), else to the login service's logout page
//!   (`end_session.logout_url`), else it gets `200 {"status":"logged_out"}`.
//!
//! Never an open redirect: a hint that is not one of our ID tokens, a `client_id` that is not
//! among the hint's audiences, an unknown client or an unregistered URI get `400
//! invalid_request`, without a redirect. Without a hint the session cannot be named, and §2 then
//! wants the user asked: the browser goes to the login service's logout page (which can ask)
//! with nothing ended here, or, without one, gets `400`.

use serde::Deserialize;

use crate::client::valid_client_id;
use crate::config::Config;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::http::{Outcome, Response};
use crate::jws::{Alg, Audience, Untrusted};

use super::authorize::redirect;
use super::{lookup_client, mime, FORM};

/// What the hint must say.
#[derive(Deserialize)]
struct Hint {
    iss: String,
    sub: String,
    aud: Audience,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

/// An ID token this server signed (any published key; its expiry does not matter here).
fn open_hint(cfg: &Config, token: &str) -> Option<Hint> {
    let jws = Untrusted::parse(token, &Alg::ALL).ok()?;
    // An access token is not an ID token (RFC 9068 §2.1 `typ`).
    if jws.is_access_token() {
        return None;
    }
    let hint: Hint = jws.verify_with(&cfg.own_keys).ok()?.claims().ok()?;
    (hint.iss == cfg.issuer && !hint.sub.is_empty()).then_some(hint)
}

fn refuse(why: &'static str) -> crate::flow::Interrupt {
    OAuthError::invalid_request(why).into()
}

pub fn handle(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    let params = if req.method == "POST" {
        if mime(&req.headers)? != FORM {
            return Err(refuse(
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
        Form::parse(&req.body)?
    } else {
        Form::parse(req.query().as_bytes())?
    };
    let hint = match params.get("id_token_hint") {
        None => None,
        Some(t) => Some(
            open_hint(cfg, t)
                .ok_or_else(|| refuse("id_token_hint is not an ID token of this server"))?,
        ),
    };
    // The client: named, or the hint's (its azp, or its one audience).
    let named = params.get("client_id");
    if let (Some(id), Some(h)) = (named, &hint) {
        if !h.aud.contains(id) {
            return Err(refuse("client_id is not the audience of id_token_hint"));
        }
    }
    let client_id = named.map(str::to_string).or_else(|| {
        hint.as_ref().and_then(|h| match (&h.azp, &h.aud) {
            (Some(azp), _) => Some(azp.clone()),
            (None, Audience::One(a)) => Some(a.clone()),
            (None, Audience::Many(all)) if all.len() == 1 => all.first().cloned(),
            _ => None,
        })
    });
    let state = params.get("state");
    let back = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let Some(id) = client_id.as_deref().filter(|id| valid_client_id(id)) else {
                return Err(refuse(
                    "post_logout_redirect_uri needs client_id or id_token_hint",
                ));
            };
            let unknown = OAuthError::invalid_request("client_id is not a known client");
            let client = lookup_client(cfg, ctx, id)?.found(unknown)?;
            if !client.post_logout_redirect_uris.iter().any(|u| u == uri) {
                return Err(refuse(
                    "post_logout_redirect_uri is not registered for this client",
                ));
            }
            Some(uri.to_string())
        }
    };
    let Some(hint) = hint else {
        // §2: without a hint the user must be asked; the login service's page can.
        return match &cfg.end_session.logout_url {
            Some(page) => Ok(redirect(page, &[], Outcome::Served)),
            None => Err(refuse(
                "id_token_hint is required: this server cannot ask the user to confirm the logout",
            )),
        };
    };
    if let Some(sid) = &hint.sid {
        crate::session::end(cfg, ctx, sid)?;
    }
    // The browser's own login, if the gateway told: it ends too only if it is the hinted one.
    let same_login = match (&req.user, &hint.sid) {
        (None, _) => true,
        (Some(u), Some(sid)) => u.sid() == *sid,
        (Some(u), None) => u.sub == hint.sub,
    };
    let mut r = match (&back, &cfg.end_session.logout_url) {
        (Some(uri), _) => {
            let params: Vec<(&str, &str)> = state.map(|s| ("state", s)).into_iter().collect();
            redirect(uri, &params, Outcome::Served)
        }
        (None, Some(page)) => redirect(page, &[], Outcome::Served),
        (None, None) => {
            let mut r =
                Response::json(200, br#"{"status":"logged_out"}"#.to_vec(), Outcome::Served);
            r.no_store();
            r
        }
    };
    r.headers.push((
        "set-cookie",
        format!(
            "{}=; Path={}; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
            cfg.refresh_cookie_name,
            cfg.endpoints.path(crate::config::Endpoint::Refresh)
        ),
    ));
    if same_login {
        for name in &cfg.end_session.clear_cookies {
            r.headers.push((
                "set-cookie",
                format!("{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"),
            ));
        }
    }
    Ok(r)
}
