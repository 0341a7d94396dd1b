//! One file per grant type. Each takes an authenticated client and the parsed request and
//! answers tokens or an OAuth error.

pub mod authorization_code;
pub mod client_credentials;
pub mod issue;
pub mod refresh_token;

/// `grant_type` values.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
pub const AUTHORIZATION_CODE: &str = "authorization_code";
pub const REFRESH_TOKEN: &str = "refresh_token";

/// The grants this build answers, as advertised in the metadata.
pub const SUPPORTED: &[&str] = &[AUTHORIZATION_CODE, CLIENT_CREDENTIALS, REFRESH_TOKEN];
