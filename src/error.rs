//! One error type for everything a client can be told, and the one place that turns it into an
//! HTTP answer (status, headers, flat JSON body). RFC 6749 §5.2 and the seed documents decide the
//! wire strings and statuses; internal detail never reaches the client, only the log.

use std::borrow::Cow;

use crate::http::{Outcome, Response};

pub use crate::error_code::ErrorCode;

/// `WWW-Authenticate` challenges. RFC 9110 §11.6.1: a 401 carries at least one, whatever the
/// client tried (RFC 6749 §5.2 only says which one after a Basic attempt).
pub mod challenge {
    /// The one HTTP authentication scheme the client-authenticating endpoints take
    /// (`client_secret_basic`, RFC 6749 §2.3.1); the default of every 401.
    pub const BASIC: &str = "Basic realm=\"oauth-edge\"";
    /// The FAPI 2.0 profile takes no Basic, and an assertion in the body (RFC 7523) has no HTTP
    /// scheme: the challenge names the method instead. Clients skip a scheme they do not know.
    pub const PRIVATE_KEY_JWT: &str = "private_key_jwt realm=\"oauth-edge\"";
    /// `/oauth/refresh`: the credential is the refresh token cookie. A Basic challenge there
    /// could make a browser ask its user for a password.
    pub const COOKIE: &str = "Cookie realm=\"oauth-edge\"";
    /// The device verification endpoint: the user's login, as Envoy's jwt_authn challenges.
    pub const BEARER: &str = "Bearer realm=\"oauth-edge\"";
}

/// An error answer. `description` is generic enough to show a client: it names the parameter or
/// rule, never a secret or internal state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: Cow<'static, str>,
    pub status: u16,
    /// The client tried HTTP Basic: a 401 must carry a `WWW-Authenticate: Basic` challenge
    /// (RFC 6749 §5.2), whatever `challenge` says.
    pub basic_challenge: bool,
    /// For a 401: the challenge to send if not [`challenge::BASIC`] (see [`challenge`]).
    pub challenge: Option<&'static str>,
    /// For 405 answers: the methods the endpoint takes.
    pub allow: Option<&'static str>,
    /// For 429 answers: seconds until the client may try again (RFC 9110 §10.2.3).
    pub retry_after: Option<u64>,
    /// A fresh DPoP server nonce for the client to use (RFC 9449 §8).
    pub dpop_nonce: Option<String>,
    /// What went wrong inside, for the operator's log (Envoy's log, through the gateway); never
    /// in the answer. No secret or token goes in here. Boxed: errors travel in every
    /// `Result` of the flows, and a cause is rare.
    pub cause: Option<Box<Cow<'static, str>>>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        OAuthError {
            code,
            description: description.into(),
            status: code.default_status(),
            basic_challenge: false,
            challenge: None,
            allow: None,
            retry_after: None,
            dpop_nonce: None,
            cause: None,
        }
    }

    pub fn invalid_request(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_client(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClient, d)
    }
    pub fn unauthorized_client(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::UnauthorizedClient, d)
    }
    pub fn unsupported_grant_type(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::UnsupportedGrantType, d)
    }
    pub fn invalid_scope(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidScope, d)
    }
    pub fn server_error(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ServerError, d)
    }
    /// A failure of ours: the client hears `server_error` / "internal error", the log hears
    /// `cause`.
    pub fn internal(cause: impl Into<Cow<'static, str>>) -> Self {
        Self::server_error("internal error").with_cause(cause)
    }

    /// Keeps what went wrong for the log (see [`OAuthError::cause`]).
    pub fn with_cause(mut self, cause: impl Into<Cow<'static, str>>) -> Self {
        self.cause = Some(Box::new(cause.into()));
        self
    }

    pub fn invalid_grant(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    pub fn invalid_dpop_proof(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidDpopProof, d)
    }

    /// 429 with `Retry-After` (seed 000).
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            ErrorCode::RateLimitExceeded,
            "Request rate too high, please retry later",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }

    /// `use_dpop_nonce` with the nonce to use.
    pub fn use_dpop_nonce(nonce: String) -> Self {
        let mut e = Self::new(
            ErrorCode::UseDpopNonce,
            "the DPoP proof must carry the server nonce from the DPoP-Nonce header",
        );
        e.dpop_nonce = Some(nonce);
        e
    }

    /// 413 for a body over the configured limit (still an OAuth error body, not Envoy's text).
    pub fn payload_too_large() -> Self {
        Self::invalid_request("request body too large").with_status(413)
    }

    /// 405 for a method the endpoint does not take.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::invalid_request("method not allowed").with_status(405);
        e.allow = Some(allow);
        e
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn with_basic_challenge(mut self, basic: bool) -> Self {
        self.basic_challenge = basic;
        self
    }

    /// The challenge of this error if it is a 401 (unless the client tried Basic).
    pub fn with_challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// The one mapping from an error to what goes on the wire.
    pub fn into_response(self) -> Response {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'a str,
            error_description: &'a str,
        }
        let body = serde_json::to_vec(&Body {
            error: self.code.as_str(),
            error_description: &self.description,
        })
        .unwrap_or_else(|_| br#"{"error":"server_error"}"#.to_vec());
        let mut resp = Response::json(self.status, body, Outcome::Error(self.code));
        resp.cause = self.cause.map(|c| *c);
        resp.no_store();
        if self.status == 401 {
            let c = match (self.basic_challenge, self.challenge) {
                (false, Some(c)) => c,
                _ => challenge::BASIC,
            };
            resp.headers.push(("www-authenticate", c.to_string()));
        }
        if let Some(allow) = self.allow {
            resp.headers.push(("allow", allow.to_string()));
        }
        if let Some(secs) = self.retry_after {
            resp.headers.push(("retry-after", secs.to_string()));
        }
        if let Some(nonce) = self.dpop_nonce {
            resp.headers.push(("dpop-nonce", nonce));
        }
        resp
    }
}

impl From<OAuthError> for Response {
    fn from(e: OAuthError) -> Self {
        e.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_keeps_its_cause_for_the_log_not_the_client() {
        let r = OAuthError::internal("the signing key is gone").into_response();
        assert_eq!(r.status, 500);
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert_eq!(
            body,
            r#"{"error":"server_error","error_description":"internal error"}"#
        );
        assert_eq!(r.cause.as_deref(), Some("the signing key is gone"));
        assert_eq!(OAuthError::invalid_request("x").into_response().cause, None);
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn flat_json_body_with_no_store() {
        let r = OAuthError::invalid_scope("scope not allowed").into_response();
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error":"invalid_scope","error_description":"scope not allowed"})
        );
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
        assert_eq!(header(&r, "content-type"), Some("application/json"));
    }

    #[test]
    fn every_401_challenges_basic_after_a_basic_attempt() {
        let r = OAuthError::invalid_client("x").into_response();
        assert_eq!(r.status, 401);
        assert_eq!(header(&r, "www-authenticate"), Some(challenge::BASIC));
        let r = OAuthError::invalid_client("x")
            .with_challenge(challenge::PRIVATE_KEY_JWT)
            .into_response();
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("private_key_jwt realm=\"oauth-edge\"")
        );
        // RFC 6749 §5.2: after Basic, the Basic challenge whatever else was set.
        let r = OAuthError::invalid_client("x")
            .with_challenge(challenge::PRIVATE_KEY_JWT)
            .with_basic_challenge(true)
            .into_response();
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Basic realm=\"oauth-edge\"")
        );
        // Only 401s challenge.
        let r = OAuthError::invalid_grant("x")
            .with_challenge(challenge::COOKIE)
            .into_response();
        assert_eq!(header(&r, "www-authenticate"), None);
        let r = OAuthError::invalid_grant("x")
            .with_status(401)
            .with_challenge(challenge::COOKIE)
            .into_response();
        assert_eq!(header(&r, "www-authenticate"), Some(challenge::COOKIE));
    }

    #[test]
    fn statuses() {
        assert_eq!(OAuthError::payload_too_large().into_response().status, 413);
        let r = OAuthError::method_not_allowed("POST").into_response();
        assert_eq!((r.status, header(&r, "allow")), (405, Some("POST")));
        assert_eq!(OAuthError::server_error("x").into_response().status, 500);
        assert_eq!(ErrorCode::RateLimitExceeded.default_status(), 429);
        let r = OAuthError::rate_limited(0).into_response();
        assert_eq!((r.status, header(&r, "retry-after")), (429, Some("1")));
        let r = OAuthError::use_dpop_nonce("n1".into()).into_response();
        assert_eq!((r.status, header(&r, "dpop-nonce")), (400, Some("n1")));
    }

    #[test]
    fn description_is_json_escaped() {
        let r = OAuthError::invalid_request("bad \"quote\"\n").into_response();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error_description"], "bad \"quote\"\n");
    }
}
