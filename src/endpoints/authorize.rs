//! `GET /oauth/authorize` (RFC 6749 §4.1.1, RFC 9126 §4, RFC 9207): turns an authorization
//! request and the user the gateway authenticated into a code at the client's redirect_uri.
//!
//! - with `request_uri`: the pushed request is used and parameters beside it are ignored
//!   (RFC 9126 §4); it is bound to its client and consumed once the code is issued;
//! - without: only when PAR is not required (server-wide or for this client), validated here;
//! - no authenticated user: a redirect to the configured login URL with the way back;
//! - errors before the client and its redirect_uri are trusted are shown (400 JSON), never
//!   redirected; later ones go to the redirect_uri with `error`, `state` and `iss`;
//! - success: 303 (never 307, which would replay a POST) with `code`, `state`, `iss`.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::authz::{AuthzRequest, RawAuthz};
use crate::client::valid_client_id;
use crate::config::Config;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::http::{Outcome, Response};
use crate::records::CodeData;
use crate::ring_share::{self, Kind, Owner};
use crate::store::{self, Consumed, Handle};

use super::par::REQUEST_URI_PREFIX;

/// Query component encoding: everything but unreserved characters.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn handle(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    let q = Form::parse(req.query().as_bytes())?;
    let client_id = q
        .get("client_id")
        .filter(|c| valid_client_id(c))
        .ok_or_else(|| OAuthError::invalid_request("client_id is missing or malformed"))?;
    let lookup = super::lookup_client(cfg, ctx, client_id)?;
    let client = lookup.found(OAuthError::invalid_request("unknown client_id"))?;

    let pushed = match q.get("request_uri") {
        Some(uri) => {
            let h = uri
                .strip_prefix(REQUEST_URI_PREFIX)
                .and_then(Handle::decode)
                .ok_or_else(|| OAuthError::invalid_request("request_uri is invalid"))?;
            let Some((rec, cas)) = store::peek::<AuthzRequest>(ctx, cfg.rings.request_uris, &h)?
            else {
                return Err(
                    OAuthError::invalid_request("request_uri is invalid or expired").into(),
                );
            };
            if rec.is_used() {
                return Err(OAuthError::invalid_request("request_uri was already used").into());
            }
            if rec.data.client_id != client.client_id {
                return Err(OAuthError::invalid_request(
                    "request_uri was issued to another client",
                )
                .into());
            }
            let data = rec.data.clone();
            Some((h, data, (rec, cas)))
        }
        None => None,
    };
    let (handle, authz) = match pushed {
        Some((h, a, read)) => (Some((h, read)), a),
        None => {
            if cfg.require_par || client.require_par {
                return Err(OAuthError::invalid_request(
                    "pushed authorization requests are required",
                )
                .into());
            }
            let raw = RawAuthz::from_form(&q)?;
            match raw.validate(cfg, &client) {
                Ok(a) => (None, a),
                Err(r) if r.redirectable => {
                    let uri = raw.redirect_uri.unwrap_or_default();
                    return Ok(error_redirect(cfg, &uri, raw.state.as_deref(), &r.error));
                }
                Err(r) => return Err(r.error.into()),
            }
        }
    };

    let Some(user) = &req.user else {
        return match &cfg.login_url {
            Some(login) => Ok(login_redirect(login, &req.path)),
            None => Ok(error_redirect(
                cfg,
                &authz.redirect_uri,
                authz.state.as_deref(),
                &OAuthError::new(
                    crate::error::ErrorCode::AccessDenied,
                    "no authenticated user",
                ),
            )),
        };
    };

    // Charged before the pushed request is consumed: a refused user can come back with it.
    ring_share::charge(cfg, ctx, Kind::Code, Owner::User(&user.sub))?;
    if let Some((h, read)) = handle {
        match store::consume_read::<AuthzRequest>(
            ctx,
            cfg.rings.request_uris,
            &h,
            Some(read),
            Clone::clone,
        )? {
            Consumed::Fresh(_) => {}
            _ => return Err(OAuthError::invalid_request("request_uri was already used").into()),
        }
    }
    let authz_state = authz.state.clone();
    let data = CodeData {
        req: authz,
        sub: user.sub.clone(),
        // An authentication time in the future (a login token's iat) is not believable.
        auth_time: user
            .auth_time
            .filter(|t| *t <= ctx.now.secs().saturating_add(60)),
        sid: Some(user.sid()),
        family: None,
        at: None,
    };
    let ttl_ms = crate::duration::millis(cfg.lifetimes.code);
    // A remote store gets sealed codes: nothing to write now, one round trip to redeem.
    let code = if cfg.rings.codes.remote {
        let exp = ctx.now.unix_ms.saturating_add(ttl_ms);
        // The refresh family the code will start: its record is the code's used mark. (The
        // state is not needed to redeem: not carried.)
        let mut data = CodeData {
            family: Some(ctx.random_id()?),
            ..data.clone()
        };
        data.req.state = None;
        let code = crate::sealed_code::seal(&cfg.keys, &data, exp, ctx)?;
        if code.len() > crate::sealed_code::MAX_LEN {
            // Only huge authorization_details get here; such a code would not travel in a URL.
            return Ok(error_redirect(
                cfg,
                &data.req.redirect_uri,
                authz_state.as_deref(),
                &OAuthError::invalid_request(
                    "the authorization request is too large to be carried by a code",
                ),
            ));
        }
        code
    } else {
        store::allocate(ctx, cfg.rings.codes, ttl_ms, &data)?.encode()
    };
    let mut params: Vec<(&str, &str)> = vec![("code", &code)];
    if let Some(s) = &data.req.state {
        params.push(("state", s));
    }
    params.push(("iss", &cfg.issuer));
    Ok(redirect(
        &data.req.redirect_uri,
        &params,
        Outcome::Issued("authorization_code_issued"),
    ))
}

/// An error sent to the (trusted) redirect_uri, with `state` and `iss` (RFC 9207).
fn error_redirect(
    cfg: &crate::config::Config,
    redirect_uri: &str,
    state: Option<&str>,
    e: &OAuthError,
) -> Response {
    let mut params: Vec<(&str, &str)> = vec![
        ("error", e.code.as_str()),
        ("error_description", &e.description),
    ];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", &cfg.issuer));
    redirect(redirect_uri, &params, Outcome::Error(e.code))
}

/// A `303` to `base` with `params` added to its query.
pub(crate) fn redirect(base: &str, params: &[(&str, &str)], outcome: Outcome) -> Response {
    let mut loc = base.to_string();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        loc.push(sep);
        loc.push_str(k);
        loc.push('=');
        loc.extend(utf8_percent_encode(v, QUERY));
        sep = '&';
    }
    let mut r = Response {
        status: 303,
        headers: vec![("location", loc)],
        body: Vec::new(),
        outcome,
        forward: None,
        cause: None,
    };
    r.no_store();
    r
}

/// To the login page, with the authorization request to come back to (a relative path: the
/// login service sends the user back to the same origin).
fn login_redirect(login: &str, path_and_query: &str) -> Response {
    redirect(login, &[("return_to", path_and_query)], Outcome::Served)
}
