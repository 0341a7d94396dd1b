//! Discovery documents (RFC 8414 and OpenID Connect Discovery), built once per configuration.
//! Only what really works is advertised.

use serde_json::{json, Value};

use crate::config::{Config, Endpoint, Profile};
use crate::grants;

pub const TOKEN_AUTH_METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
];

/// FAPI 2.0: private_key_jwt (and the mTLS methods where mutual TLS is configured).
pub const FAPI2_AUTH_METHODS: &[&str] = &["private_key_jwt"];

/// The client authentication methods offered: per profile, plus RFC 8705's where Envoy hands
/// the filter client certificates (`tls_client_auth` only where it verifies their chains).
pub fn auth_methods(cfg: &Config) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = match cfg.profile {
        Profile::Fapi2 => FAPI2_AUTH_METHODS.to_vec(),
        Profile::Default => TOKEN_AUTH_METHODS.to_vec(),
    };
    if let Some(m) = &cfg.mtls {
        if m.chain_verified {
            out.push("tls_client_auth");
        }
        out.push("self_signed_tls_client_auth");
    }
    out
}

/// RFC 8414 §2 authorization server metadata (+ RFC 9126 §5, RFC 9207 §3, RFC 9396 §10).
pub fn authorization_server(cfg: &Config) -> Value {
    let methods = auth_methods(cfg);
    let auth_methods = methods.as_slice();
    let mut verify_algs: Vec<&str> = cfg.verify_algs.iter().map(|a| a.as_str()).collect();
    // RFC 9864's fully-specified name for the same Ed25519 signatures.
    verify_algs.push("Ed25519");
    let mut v = base(cfg, auth_methods, &verify_algs);
    if let Some(o) = v.as_object_mut() {
        // Every endpoint's URL under its field (the endpoint table's `metadata` column): RFC
        // 8414 §2, RFC 9126 §5, RFC 7009 §2, RFC 7662 §4, RFC 8628 §4 (the device endpoint
        // only with the device flow), OIDC Discovery §3, OIDC RP-Initiated Logout §3.
        for ep in Endpoint::ALL {
            let row = ep.row();
            if let Some(field) = row.metadata {
                if !row.device_only || cfg.device.is_some() {
                    o.insert(field.into(), json!(cfg.endpoints.url(*ep)));
                }
            }
        }
        o.insert(
            "revocation_endpoint_auth_methods_supported".into(),
            json!(auth_methods),
        );
        let confidential: Vec<&str> = auth_methods
            .iter()
            .copied()
            .filter(|m| *m != "none")
            .collect();
        o.insert(
            "introspection_endpoint_auth_methods_supported".into(),
            json!(confidential),
        );
        if let Some(m) = &cfg.mtls {
            // RFC 8705 §3.3.
            o.insert(
                "tls_client_certificate_bound_access_tokens".into(),
                json!(true),
            );
            // RFC 8705 §5: the same endpoints where the operator serves mutual TLS.
            if let Some(alias) = &m.endpoint_aliases_origin {
                let mut aliases = serde_json::Map::new();
                let keys = Endpoint::ALL
                    .iter()
                    .map(|e| e.row())
                    .filter(|r| r.mtls_alias)
                    .filter_map(|r| r.metadata);
                for key in keys {
                    if let Some(url) = o.get(key).and_then(Value::as_str) {
                        let path = url.strip_prefix(cfg.issuer_origin()).unwrap_or(url);
                        aliases.insert(key.into(), json!(format!("{alias}{path}")));
                    }
                }
                o.insert("mtls_endpoint_aliases".into(), Value::Object(aliases));
            }
        }
    }
    v
}

fn base(cfg: &Config, auth_methods: &[&str], verify_algs: &[&str]) -> Value {
    json!({
        "issuer": cfg.issuer,
        "require_pushed_authorization_requests": cfg.require_par,
        "grant_types_supported": grants::supported(cfg),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": verify_algs,
        // RFC 9126 §2 and RFC 8414 §2: PAR authenticates clients as the token endpoint does.
        "pushed_authorization_request_endpoint_auth_methods_supported": auth_methods,
        "dpop_signing_alg_values_supported": verify_algs,
        "scopes_supported": scopes(cfg),
        "authorization_response_iss_parameter_supported": true,
        "authorization_details_types_supported": details_types(cfg),
        "access_token_signing_alg_values_supported": cfg.keys.signing_algs(),
        // OpenID Connect Discovery §3, in both documents so they agree: every algorithm a
        // client may register for its ID tokens (RS256 is the default, when configured).
        "id_token_signing_alg_values_supported": cfg.keys.signing_algs(),
        "subject_types_supported": ["public"],
        "claims_supported": claims(cfg),
    })
}

/// The ID token's claims, and with a user-info service the claims userinfo can release.
fn claims(cfg: &Config) -> Vec<&'static str> {
    let mut out = vec![
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "at_hash",
        "azp",
        "sid",
    ];
    if cfg.userinfo.is_some() {
        out.extend(crate::endpoints::userinfo::releasable_claims());
    }
    out
}

/// The same facts plus what OpenID Connect Discovery §3 requires.
pub fn openid_configuration(cfg: &Config) -> Value {
    // The OIDC fields are in both documents (see `base`).
    authorization_server(cfg)
}

/// Scopes of the static clients (the ones an operator declared), and `openid`.
fn scopes(cfg: &Config) -> Vec<&str> {
    let mut out: Vec<&str> = vec!["openid"];
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

fn details_types(cfg: &Config) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in cfg.clients.values() {
        for t in &c.authorization_details_types {
            if !out.contains(&t.as_str()) {
                out.push(t);
            }
        }
    }
    out.sort_unstable();
    out
}
