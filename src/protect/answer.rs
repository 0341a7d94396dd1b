//! The one place a protected route's refusals become HTTP answers (RFC 6750 §3, RFC 9449 §7.1,
//! RFC 9728 §5.1): the status, the `WWW-Authenticate` challenges, and the flat JSON body every
//! answer of this filter has.

use crate::error::ErrorCode;
use crate::http::{Outcome, Response};

use super::config::{DpopMode, Route};

/// Why a request to a protected route is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No credentials (or a scheme this route does not take): a challenge without an error
    /// code (RFC 6750 §3.1).
    NoToken,
    /// A malformed presentation (400).
    Malformed(&'static str),
    /// The token is not acceptable (401 `invalid_token`); `dpop`: it was presented with the
    /// DPoP scheme (the error goes in that challenge).
    InvalidToken { why: &'static str, dpop: bool },
    /// The DPoP proof is missing or wrong (401 `invalid_dpop_proof`).
    InvalidProof(String),
    /// The proof must carry the server nonce (401 `use_dpop_nonce` with `DPoP-Nonce`).
    UseNonce(String),
    /// The token lacks a scope (403 `insufficient_scope`).
    InsufficientScope,
}

/// Where the error goes: in the Bearer challenge, the DPoP one, or neither.
#[derive(PartialEq, Eq, Clone, Copy)]
enum In {
    Bearer,
    Dpop,
    Neither,
}

/// `key="value"`, the value as a quoted-string (RFC 9110 §5.6.4): our own strings never hold a
/// quote or backslash, but escape them anyway.
fn param(out: &mut String, key: &str, value: &str) {
    if !out.ends_with(' ') {
        out.push_str(", ");
    }
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out.push('"');
}

fn challenge(
    scheme: &str,
    route: &Route,
    algs: &str,
    error: Option<(&str, &str)>,
    scope: Option<String>,
) -> String {
    let mut c = format!("{scheme} ");
    param(&mut c, "realm", "oauth-edge");
    if scheme == "DPoP" {
        param(&mut c, "algs", algs);
    }
    if let Some((code, description)) = error {
        param(&mut c, "error", code);
        param(&mut c, "error_description", description);
    }
    if let Some(s) = scope {
        param(&mut c, "scope", &s);
    }
    if !route.metadata_url.is_empty() {
        param(&mut c, "resource_metadata", &route.metadata_url);
    }
    c
}

/// The answer to a refused request. `algs`: the DPoP proof algorithms accepted.
pub fn refuse(route: &Route, algs: &str, denial: Denial) -> Response {
    let (status, code, description, at, nonce): (u16, ErrorCode, String, In, Option<String>) =
        match denial {
            Denial::NoToken => (
                401,
                ErrorCode::InvalidToken,
                "this resource needs an access token".into(),
                In::Neither,
                None,
            ),
            Denial::Malformed(why) => (
                400,
                ErrorCode::InvalidRequest,
                why.into(),
                In::Neither,
                None,
            ),
            Denial::InvalidToken { why, dpop } => (
                401,
                ErrorCode::InvalidToken,
                why.into(),
                if dpop || route.dpop == DpopMode::Required {
                    In::Dpop
                } else {
                    In::Bearer
                },
                None,
            ),
            Denial::InvalidProof(why) => (401, ErrorCode::InvalidDpopProof, why, In::Dpop, None),
            Denial::UseNonce(nonce) => (
                401,
                ErrorCode::UseDpopNonce,
                "the DPoP proof must carry the server nonce from the DPoP-Nonce header".into(),
                In::Dpop,
                Some(nonce),
            ),
            Denial::InsufficientScope => (
                403,
                ErrorCode::InsufficientScope,
                "the access token lacks a scope this resource needs".into(),
                In::Neither,
                None,
            ),
        };
    let error =
        (at != In::Neither || status == 403).then_some((code.as_str(), description.as_str()));
    let scope = match (&route.scopes, status) {
        (super::config::Scopes::All(s) | super::config::Scopes::Any(s), 401 | 403) => {
            Some(s.join(" "))
        }
        _ => None,
    };
    let body = serde_json::json!({"error": code.as_str(), "error_description": description});
    let mut r = Response::json(status, body.to_string().into_bytes(), Outcome::Error(code));
    r.no_store();
    if status == 401 || status == 403 {
        // 403: the challenge of the scheme in use carries insufficient_scope (RFC 6750 §3.1).
        let bearer_error = match at {
            In::Bearer => error,
            In::Neither if status == 403 => error,
            _ => None,
        };
        let dpop_error = match at {
            In::Dpop => error,
            In::Neither if status == 403 => error,
            _ => None,
        };
        if route.dpop == DpopMode::Allowed {
            r.headers.push((
                "www-authenticate",
                challenge("Bearer", route, algs, bearer_error, scope.clone()),
            ));
        }
        r.headers.push((
            "www-authenticate",
            challenge("DPoP", route, algs, dpop_error, scope),
        ));
    }
    if let Some(n) = nonce {
        r.headers.push(("dpop-nonce", n));
    }
    r
}
