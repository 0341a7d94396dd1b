//! Which requests are ours and what happens on their headers: the engine's routing, its
//! near-miss guard, and the decisions made before any body is read.

use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::{Endpoint, Engine, HeadAction};
use oauth_edge::http::Headers;
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};

fn engine(extra: Value) -> Engine {
    let mut cfg = json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "clients": [{"client_id": "svc", "client_secret": hash_secret("s"),
                     "grant_types": ["client_credentials"], "scope": "read"}]
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap())
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn respond(a: HeadAction) -> oauth_edge::http::Response {
    match a {
        HeadAction::Respond(r) => r,
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn exact_paths_route_with_or_without_a_query() {
    let e = engine(json!({}));
    assert_eq!(e.route("/oauth/token"), Some(Endpoint::Token));
    assert_eq!(e.route("/oauth/token?x=1"), Some(Endpoint::Token));
    assert_eq!(
        e.route("/oauth/authorize?client_id=a"),
        Some(Endpoint::Authorize)
    );
    assert_eq!(
        e.route("/.well-known/oauth-authorization-server"),
        Some(Endpoint::AuthorizationServerMetadata)
    );
    assert_eq!(
        e.route("/.well-known/openid-configuration"),
        Some(Endpoint::OpenIdConfiguration)
    );
    for other in ["/", "/oauth", "/oauth/token/x", "/api/oauth/token", ""] {
        assert_eq!(e.route(other), None, "{other}");
    }
    // The device endpoints exist only with the device flow configured.
    assert_eq!(e.route("/oauth/device_authorization"), None);
    let d = engine(json!({"device": {}}));
    assert_eq!(
        d.route("/oauth/device_authorization"),
        Some(Endpoint::DeviceAuthorization)
    );
}

#[test]
fn near_misses_of_our_paths_are_caught_and_ordinary_paths_are_not() {
    let e = engine(json!({}));
    for variant in [
        "/oauth/token/",
        "/OAUTH/TOKEN",
        "/oauth%2Ftoken",
        "/oauth//token",
        "/oauth/./token",
        "/oauth/%74oken",
    ] {
        assert_eq!(e.path_variant(variant), Some(Endpoint::Token), "{variant}");
    }
    for ordinary in ["/api/things", "/oauth/tokens", "/static/app.js", "/%7Euser"] {
        assert_eq!(e.path_variant(ordinary), None, "{ordinary}");
    }
}

#[test]
fn decisions_on_the_headers() {
    let e = engine(json!({"limits": {"max_body_bytes": 1024}}));
    let none = Headers::default();
    // Methods.
    let r = respond(e.on_headers(Endpoint::Token, "GET", &none));
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = respond(e.on_headers(Endpoint::Authorize, "POST", &none));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    let r = respond(e.on_headers(Endpoint::Userinfo, "PUT", &none));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
    assert!(matches!(
        e.on_headers(Endpoint::Authorize, "GET", &none),
        HeadAction::Start
    ));
    assert!(matches!(
        e.on_headers(Endpoint::Userinfo, "GET", &none),
        HeadAction::Start
    ));
    // The announced body length.
    let len = |v: &str| headers(&[("content-length", v)]);
    assert!(matches!(
        e.on_headers(Endpoint::Token, "POST", &len("1024")),
        HeadAction::ReadBody
    ));
    assert!(matches!(
        e.on_headers(Endpoint::Token, "POST", &none),
        HeadAction::ReadBody
    ));
    assert_eq!(
        respond(e.on_headers(Endpoint::Token, "POST", &len("1025"))).status,
        413
    );
    assert_eq!(
        respond(e.on_headers(Endpoint::Token, "POST", &len("-1"))).status,
        400
    );
    let twice = headers(&[("content-length", "1"), ("content-length", "1")]);
    assert_eq!(
        respond(e.on_headers(Endpoint::Token, "POST", &twice)).status,
        400
    );
    assert_eq!(e.body_too_large(1025).map(|r| r.status), Some(413));
    assert!(e.body_too_large(1024).is_none());
    // Documents: GET and HEAD, cacheable for a short while.
    for m in ["GET", "HEAD"] {
        let r = respond(e.on_headers(Endpoint::Jwks, m, &none));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    }
    let r = respond(e.on_headers(Endpoint::AuthorizationServerMetadata, "GET", &none));
    let doc: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["issuer"], "https://as.example.com");
    assert_eq!(
        respond(e.on_headers(Endpoint::Jwks, "POST", &none)).status,
        405
    );
    // Every error answer is flat JSON and not cached.
    let r = respond(e.on_headers(Endpoint::Token, "POST", &len("x")));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[test]
fn source_addresses_are_read_only_when_a_policy_needs_them() {
    // Never at a protected route (its checks charge the token's key, not an address).
    let e = engine(json!({}));
    assert!(!e.needs_source_address(Endpoint::Resource));
    let limited = engine(json!({"rate_limits": {"per_address": {"requests": 5, "window": "1s"}}}));
    assert!(limited.needs_source_address(Endpoint::Token));
    assert!(!limited.needs_source_address(Endpoint::Resource));
}
