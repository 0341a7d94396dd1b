//! Discovery documents (RFC 8414 and OpenID Connect Discovery) and the JWKS, built once per
//! configuration. Only what really works is advertised.

use serde_json::json;

use crate::config::Config;

pub const GRANT_TYPES: &[&str] = &["client_credentials"];
pub const TOKEN_AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post"];

/// RFC 8414 §2 authorization server metadata.
pub fn authorization_server(cfg: &Config) -> serde_json::Value {
    json!({
        "issuer": cfg.issuer,
        "token_endpoint": cfg.token_endpoint,
        "jwks_uri": cfg.jwks_uri,
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": TOKEN_AUTH_METHODS,
        // REQUIRED by RFC 8414; there is no authorization endpoint yet, so no response type works.
        "response_types_supported": [],
        "scopes_supported": scopes(cfg),
        "access_token_signing_alg_values_supported": cfg.keys.signing_algs(),
    })
}

/// The same facts at the OpenID Connect discovery location (no ID tokens are issued yet, so
/// nothing OpenID-specific is claimed).
pub fn openid_configuration(cfg: &Config) -> serde_json::Value {
    authorization_server(cfg)
}

/// Scopes of the static clients: the ones an operator has declared.
fn scopes(cfg: &Config) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in cfg.clients.values() {
        for s in &c.scope {
            if !out.contains(&s.as_str()) {
                out.push(s);
            }
        }
    }
    out.sort_unstable();
    out
}
