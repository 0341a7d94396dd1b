//! `GET`/`POST /oauth/userinfo` (OpenID Connect Core §5.3): the claims about the end user of
//! an access token that was granted `openid`.
//!
//! - The token is checked as at a protected route ([`crate::protect::authorize`]): our
//!   signature, `typ`, `iss`, expiry, the deny-list, and for a DPoP-bound token the DPoP scheme
//!   with a proof for this method and URL (RFC 9449 §7); any audience (the endpoint belongs to
//!   this server); the scope `openid`. Refusals are RFC 6750 §3 / RFC 9449 §7.1 answers
//!   (`401 invalid_token` with a challenge, `403 insufficient_scope`).
//! - A `POST` may carry the token as the form parameter `access_token` instead (RFC 6750 §2.2),
//!   never both ways at once.
//! - The answer is `sub` (the token's, always) plus the claims the granted scopes release
//!   (§5.4: `profile`, `email`, `address`, `phone`), taken from the user-info service when one is
//!   configured (`userinfo`: `GET {path_prefix}{sub}` on an Envoy cluster answering the user's
//!   claims as a JSON object). Without one the answer is `sub` alone. Never cached: a user's
//!   claims change, and userinfo is not a hot path.

use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::http::{Call, Outcome, Response};
use crate::oidc_settings::UserinfoSource;
use crate::protect::{self, answer, Guard};

use super::{mime, FORM};

/// OIDC Core §5.4: the claims each standard scope releases.
const SCOPE_CLAIMS: &[(&str, &[&str])] = &[
    (
        "profile",
        &[
            "name",
            "family_name",
            "given_name",
            "middle_name",
            "nickname",
            "preferred_username",
            "profile",
            "picture",
            "website",
            "gender",
            "birthdate",
            "zoneinfo",
            "locale",
            "updated_at",
        ],
    ),
    ("email", &["email", "email_verified"]),
    ("address", &["address"]),
    ("phone", &["phone_number", "phone_number_verified"]),
];

/// Every claim userinfo can release (the metadata's `claims_supported` adds them when a
/// user-info service is configured).
pub fn releasable_claims() -> impl Iterator<Item = &'static str> {
    SCOPE_CLAIMS.iter().flat_map(|(_, c)| c.iter().copied())
}

pub fn handle(
    cfg: &Config,
    guard: &Guard,
    req: &Request,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let route = &guard.userinfo_route;
    let from_body;
    let req = match body_token(req)? {
        Some(r) => {
            from_body = r;
            &from_body
        }
        None => req,
    };
    let claims = match protect::authorize(cfg, guard, route, req, ctx)? {
        Ok(c) => c,
        Err(d) => return Ok(answer::refuse(route, guard.dpop_algs(), d)),
    };
    let granted: Vec<&str> = claims.scope.split(' ').collect();
    let mut out = Map::new();
    if let Some(source) = &cfg.userinfo {
        let wanted: Vec<&str> = SCOPE_CLAIMS
            .iter()
            .filter(|(s, _)| granted.contains(s))
            .flat_map(|(_, c)| c.iter().copied())
            .collect();
        if !wanted.is_empty() {
            let Some(mut user) = fetch(source, &claims.sub, ctx)? else {
                // The user is gone: the token no longer stands for anyone.
                let denial = answer::Denial::InvalidToken {
                    why: "the user of this access token is unknown",
                    dpop: claims.cnf.is_some(),
                };
                return Ok(answer::refuse(route, guard.dpop_algs(), denial));
            };
            for name in wanted {
                if let Some(v) = user.remove(name).filter(|v| !v.is_null()) {
                    out.insert(name.to_string(), v);
                }
            }
        }
    }
    out.insert("sub".into(), Value::String(claims.sub.clone()));
    let mut r = Response::json(
        200,
        Value::Object(out).to_string().into_bytes(),
        Outcome::Served,
    );
    r.no_store();
    Ok(r)
}

/// RFC 6750 §2.2: a POST whose form body carries `access_token` (and no `Authorization`
/// header): the same request with the token as a Bearer header. Any other POST body is left as
/// it is; a token sent both ways is refused (§2: one method per request).
fn body_token(req: &Request) -> FlowResult<Option<Request>> {
    if req.method != "POST" || req.body.is_empty() || mime(&req.headers)? != FORM {
        return Ok(None);
    }
    let form = Form::parse(&req.body)?;
    let Some(token) = form.get("access_token") else {
        return Ok(None);
    };
    if req.headers.all("authorization").next().is_some() {
        return Err(
            OAuthError::invalid_request("the access token is presented more than one way").into(),
        );
    }
    let mut r = req.clone();
    r.headers
        .0
        .push(("authorization".into(), format!("Bearer {token}")));
    Ok(Some(r))
}

/// The user's claims from the user-info service (`None`: it knows no such user).
fn fetch(
    source: &UserinfoSource,
    sub: &str,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Option<Map<String, Value>>> {
    let path = format!(
        "{}{}",
        source.path_prefix,
        percent_encoding::utf8_percent_encode(sub, crate::registry::SEGMENT)
    );
    let answer = ctx.http(Call {
        cluster: source.cluster.clone(),
        headers: vec![
            (":method", "GET".into()),
            (":path", path),
            (":authority", source.authority.clone()),
            ("accept", "application/json".into()),
            ("user-agent", "oauth-edge".into()),
        ],
        timeout: source.timeout,
        body: None,
    })?;
    match answer.status {
        Some(200) => match serde_json::from_slice::<Value>(&answer.body) {
            // A service that answers for another subject is not believed.
            Ok(Value::Object(m)) if m.get("sub").is_none_or(|s| s.as_str() == Some(sub)) => {
                Ok(Some(m))
            }
            _ => Err(OAuthError::server_error(
                "the user-info service answered something unreadable",
            )
            .into()),
        },
        Some(404) => Ok(None),
        _ => Err(OAuthError::server_error("the user-info service is unavailable").into()),
    }
}
