//! One file per grant type. Each takes an authenticated client and the parsed request and
//! answers tokens or an OAuth error.

pub mod client_credentials;

/// Grant types this build knows, as `grant_type` values.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
