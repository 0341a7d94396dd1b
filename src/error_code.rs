//! The `error` codes a client can hear, with their wire strings and default statuses. Its own
//! module so [`crate::http`] can name a code in an [`crate::http::Outcome`] without depending
//! on the error type that builds answers ([`crate::error`]).

/// The `error` values this server sends (RFC 6749 §5.2, RFC 9126, seed 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    ServerError,
    TemporarilyUnavailable,
    RateLimitExceeded,
    /// RFC 9396 §5.
    InvalidAuthorizationDetails,
    /// RFC 8707 §2.
    InvalidTarget,
    /// RFC 6749 §4.1.2.1 (authorization endpoint).
    UnsupportedResponseType,
    AccessDenied,
    /// RFC 9449 §5: the DPoP proof is missing where required, or invalid.
    InvalidDpopProof,
    /// RFC 9449 §8: the proof must carry the server nonce sent in `DPoP-Nonce`.
    UseDpopNonce,
    /// RFC 8628 §3.5: the user has not decided yet.
    AuthorizationPending,
    /// RFC 8628 §3.5: polling too fast; the interval grows by 5 s.
    SlowDown,
    /// RFC 8628 §3.5: the device code expired.
    ExpiredToken,
    /// RFC 6750 §3.1: a protected route's access token is not acceptable.
    InvalidToken,
    /// RFC 6750 §3.1: the access token lacks a scope the protected route needs.
    InsufficientScope,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidClient,
        ErrorCode::InvalidGrant,
        ErrorCode::UnauthorizedClient,
        ErrorCode::UnsupportedGrantType,
        ErrorCode::InvalidScope,
        ErrorCode::ServerError,
        ErrorCode::TemporarilyUnavailable,
        ErrorCode::RateLimitExceeded,
        ErrorCode::InvalidAuthorizationDetails,
        ErrorCode::InvalidTarget,
        ErrorCode::UnsupportedResponseType,
        ErrorCode::AccessDenied,
        ErrorCode::InvalidDpopProof,
        ErrorCode::UseDpopNonce,
        ErrorCode::AuthorizationPending,
        ErrorCode::SlowDown,
        ErrorCode::ExpiredToken,
        ErrorCode::InvalidToken,
        ErrorCode::InsufficientScope,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::RateLimitExceeded => "rate_limit_exceeded",
            ErrorCode::InvalidAuthorizationDetails => "invalid_authorization_details",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
        }
    }

    /// The status each code gets unless the error says otherwise (413, 405, ...).
    /// Every `invalid_client` is a 401 (RFC 6749 §5.2 allows 400 when no Authorization header was
    /// used; seed 000 documents 401 only, and one status is easier for clients to handle).
    pub fn default_status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient => 401,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            ErrorCode::RateLimitExceeded => 429,
            ErrorCode::InvalidToken => 401,
            ErrorCode::InsufficientScope => 403,
            _ => 400,
        }
    }
}
