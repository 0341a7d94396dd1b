//! One file per grant type. Each takes an authenticated client and the parsed request and
//! answers tokens or an OAuth error.

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
pub mod issue;
pub mod password;
pub mod refresh_token;
pub mod token_exchange;

/// `grant_type` values.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
pub const AUTHORIZATION_CODE: &str = "authorization_code";
pub const REFRESH_TOKEN: &str = "refresh_token";
pub const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const PASSWORD: &str = "password";

/// Whether this configuration answers `grant_type` (checked on every token request: no
/// allocation). The device flow, token exchange and the password grant only when configured.
pub fn enabled(cfg: &crate::config::Config, grant_type: &str) -> bool {
    match grant_type {
        AUTHORIZATION_CODE | CLIENT_CREDENTIALS | REFRESH_TOKEN => true,
        DEVICE_CODE => cfg.device.is_some(),
        TOKEN_EXCHANGE => cfg.token_exchange.is_some(),
        PASSWORD => cfg.password_grant.is_some(),
        _ => false,
    }
}

/// The grants this configuration answers, as advertised in the metadata.
pub fn supported(cfg: &crate::config::Config) -> Vec<&'static str> {
    [
        AUTHORIZATION_CODE,
        CLIENT_CREDENTIALS,
        REFRESH_TOKEN,
        DEVICE_CODE,
        TOKEN_EXCHANGE,
        PASSWORD,
    ]
    .into_iter()
    .filter(|g| enabled(cfg, g))
    .collect()
}
