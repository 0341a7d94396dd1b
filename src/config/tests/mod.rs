//! The configuration's tests: defaults, every mistake named by its field, the messages logged.
//! Secret references: `secrets.rs`.

mod secrets;

use super::*;
use crate::keys::{generate_jwk, Alg};
use crate::random::SystemRandom;
use serde_json::{json, Value};

pub fn sample() -> Value {
    json!({
        "issuer": "https://auth.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "clients": [{
            "client_id": "demo-client",
            "client_secret": crate::client::hash_secret("demo-secret"),
            "grant_types": ["client_credentials"],
            "scope": "read write"
        }, {
            "client_id": "demo-public",
            "token_endpoint_auth_method": "none",
            "scope": "read"
        }]
    })
}

fn parse(v: &Value) -> Result<Config, ConfigError> {
    Config::from_json(v.to_string().as_bytes())
}

#[test]
fn defaults() {
    let c = parse(&sample()).unwrap();
    let e = &c.endpoints;
    assert_eq!(e.path(Endpoint::Token), "/oauth/token");
    assert_eq!(
        e.url(Endpoint::Token),
        "https://auth.example.com/oauth/token"
    );
    assert_eq!(e.url(Endpoint::Jwks), "https://auth.example.com/oauth/jwks");
    assert_eq!(e.path(Endpoint::Resource), "");
    assert_eq!(
        c.endpoints.path(Endpoint::AuthorizationServerMetadata),
        "/.well-known/oauth-authorization-server"
    );
    assert_eq!(
        c.endpoints.path(Endpoint::OpenIdConfiguration),
        "/.well-known/openid-configuration"
    );
    assert_eq!(
        c.lifetimes.access_token,
        std::time::Duration::from_secs(300)
    );
    assert_eq!(c.access_token_audience, "https://auth.example.com");
    assert_eq!(c.max_body_bytes, 16384);
    assert!(c.pause_on_request_headers);
    assert!(c.registry.is_none());
    assert_eq!(c.clients.len(), 2);
}

#[test]
fn issuer_with_path_moves_well_known() {
    let mut v = sample();
    v["issuer"] = json!("https://example.com/tenant1/");
    let c = parse(&v).unwrap();
    assert_eq!(
        c.endpoints.path(Endpoint::AuthorizationServerMetadata),
        "/.well-known/oauth-authorization-server/tenant1"
    );
    assert_eq!(
        c.endpoints.path(Endpoint::OpenIdConfiguration),
        "/tenant1/.well-known/openid-configuration"
    );
    assert_eq!(
        c.endpoints.url(Endpoint::Token),
        "https://example.com/oauth/token"
    );
}

#[test]
fn registry_defaults_and_bounds() {
    let mut v = sample();
    v["registry"] = json!({"cluster": "registry"});
    let r = parse(&v).unwrap().registry.unwrap();
    assert_eq!(r.authority, "registry");
    assert_eq!(r.path_prefix, "/clients/");
    assert_eq!(r.timeout, std::time::Duration::from_millis(500));
    v["registry"]["timeout"] = json!("0ms");
    assert_eq!(parse(&v).unwrap_err().field, "registry.timeout");
}

/// Every mistake is refused naming its field (serde's own refusals: the key it names) and
/// saying what is wrong.
#[test]
fn every_mistake_is_named() {
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Mutation, &str, &str)> = vec![
        (
            Box::new(|v| v["isuer"] = json!("x")),
            "isuer",
            "unknown field",
        ),
        (
            Box::new(|v| v["issuer"] = json!("http://example.com")),
            "issuer",
            "https",
        ),
        (
            Box::new(|v| v["issuer"] = json!("https://a.com/?x")),
            "issuer",
            "query",
        ),
        (
            Box::new(|v| v["issuer"] = json!("ftp://a")),
            "issuer",
            "https",
        ),
        (
            Box::new(|v| v["signing_keys"] = json!([])),
            "signing_keys",
            "empty",
        ),
        (
            Box::new(|v| v["endpoints"] = json!({"token": "oauth/token"})),
            "endpoints.token",
            "plain absolute path",
        ),
        (
            Box::new(|v| v["endpoints"] = json!({"token": "/x", "jwks": "/x"})),
            "endpoints.jwks",
            "\"/x\" is used twice",
        ),
        (
            Box::new(|v| v["endpoints"] = json!({"token": "/.well-known/openid-configuration"})),
            "issuer",
            "used twice",
        ),
        (
            Box::new(|v| v["endpoints"] = json!({"tokn": "/x"})),
            "tokn",
            "unknown field",
        ),
        (
            Box::new(|v| v["lifetimes"] = json!({"access_token": "0s"})),
            "lifetimes.access_token",
            "must be between",
        ),
        (
            Box::new(|v| v["lifetimes"] = json!({"access_token": "5 minutes"})),
            "lifetimes.access_token",
            "lifetimes.access_token: ",
        ),
        (
            Box::new(|v| v["registry"] = json!({"cluster": ""})),
            "registry.cluster",
            "Envoy cluster",
        ),
        (
            Box::new(|v| v["registry"] = json!({"cluster": "r", "ttl": "1s"})),
            "ttl",
            "unknown field",
        ),
        (
            Box::new(|v| v["limits"] = json!({"max_body_bytes": 10})),
            "limits.max_body_bytes",
            "between 256 and 1048576",
        ),
        (
            Box::new(|v| v["clients"][0]["client_secret"] = json!("plain")),
            "clients[0]",
            "client_secret",
        ),
        (
            Box::new(|v| v["clients"][1]["client_id"] = json!("demo-client")),
            "clients[1]",
            "used twice",
        ),
        (
            Box::new(|v| v["clients"][0]["redirect_uri"] = json!("x")),
            "clients[0]",
            "redirect_uri",
        ),
        (
            Box::new(|v| v["active_signing_key"] = json!("nope")),
            "active_signing_key",
            "\"nope\" is not a configured private key",
        ),
        (
            Box::new(|v| v["access_token_audience"] = json!("")),
            "access_token_audience",
            "non-empty",
        ),
        (
            Box::new(|v| v["store"] = json!({"backend": "redis"})),
            "store.backend",
            "unknown",
        ),
        (
            Box::new(|v| {
                v["store"] = json!({"backend": "etcd", "etcd": {"cluster": "e", "timeout": "0s"}})
            }),
            "store.etcd.timeout",
            "must be between",
        ),
        (
            Box::new(|v| v["device"] = json!({"attempts": {"requests": 0, "window": "1m"}})),
            "device.attempts.requests",
            "at least 1",
        ),
        (
            Box::new(|v| {
                v["token_exchange"] =
                    json!({"trusted_issuers": [{"issuer": "https://x", "jwks_uri": "x"}]})
            }),
            "token_exchange.trusted_issuers[0].jwks_uri",
            "absolute URL",
        ),
        (
            Box::new(|v| {
                v["rate_limits"] = json!({"per_client": {"requests": 1, "window": "1ms"}})
            }),
            "rate_limits.per_client.window",
            "must be between",
        ),
        (
            Box::new(|v| v["profile"] = json!("fapi3")),
            "profile",
            "unknown",
        ),
        (
            Box::new(|v| v["user"] = json!({})),
            "user",
            "metadata_namespace",
        ),
        (
            Box::new(|v| v["mtls"] = json!({"source": "x"})),
            "mtls.source",
            "connection or xfcc",
        ),
    ];
    for (mutate, field, needle) in cases {
        let mut v = sample();
        mutate(&mut v);
        let e = parse(&v).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(needle), "expected {needle:?} in {e}");
    }
    let empty = Config::from_json(b"").unwrap_err();
    assert_eq!(empty.field, "");
    assert!(empty.to_string().contains("empty"));
    assert!(Config::from_json(b"{").is_err());
    assert!(Config::from_json(b"[]").is_err());
    assert!(Config::from_json(&[0xff, 0xfe]).is_err());
}

/// The messages `on_configure` logs read as they did before the typed error.
#[test]
fn messages_read_as_before() {
    let message = |mutate: &dyn Fn(&mut Value)| {
        let mut v = sample();
        mutate(&mut v);
        parse(&v).unwrap_err().to_string()
    };
    assert_eq!(
        message(&|v| v["lifetimes"] = json!({"code": "0s"})),
        "lifetimes.code must be between 1s and 600s"
    );
    assert_eq!(
        message(&|v| v["endpoints"] = json!({"token": "/x", "jwks": "/x"})),
        "endpoint path \"/x\" is used twice"
    );
    assert_eq!(
        message(&|v| v["store"] = json!({"backend": "etcd"})),
        "store.backend etcd needs store.etcd"
    );
    assert_eq!(
        message(&|v| v["issuer"] = json!("http://example.com")),
        "issuer must be an https URL (http only for localhost)"
    );
    assert!(
        message(&|v| v["isuer"] = json!("x")).starts_with("configuration: unknown field `isuer`")
    );
}
