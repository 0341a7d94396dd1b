//! Flow tests of the protocol core through its public sans-IO interface, with a small fake
//! host (shared data as a map, a registry as a closure). The same steps the proxy-wasm adapter
//! takes, natively, so every branch is reachable under plain `cargo test`.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::{Endpoint, Engine, HeadAction};
use oauth_edge::http::{Headers, Outcome};
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};

fn no_registry() -> Host {
    Host::without_registry()
}

fn config(registry: bool) -> Value {
    let mut v = json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "lifetimes": {"access_token": "120s"},
        "access_token_audience": "https://api.example.com",
        "clients": [
            {"client_id": "svc", "client_secret": hash_secret("svc-secret"),
             "grant_types": ["client_credentials"], "scope": "read write",
             "allowed_resources": ["https://a.example.com/", "https://b.example.com/"]},
            {"client_id": "post-svc", "client_secret": hash_secret("p"),
             "token_endpoint_auth_method": "client_secret_post",
             "grant_types": ["client_credentials"], "scope": "read"},
            {"client_id": "web", "client_secret": hash_secret("w"),
             "grant_types": ["authorization_code"], "scope": "read"},
            {"client_id": "spa", "token_endpoint_auth_method": "none",
             "grant_types": ["client_credentials"], "scope": "read"}
        ]
    });
    if registry {
        v["registry"] = json!({"cluster": "registry", "timeout": "200ms", "cache_ttl": "60s", "negative_cache_ttl": "5s"});
    }
    v
}

fn engine(registry: bool) -> Engine {
    Engine::new(Config::from_json(config(registry).to_string().as_bytes()).unwrap())
}

#[test]
fn client_credentials_rfc6749_4_4_basic_issues_rfc9068_token() {
    let e = engine(false);
    let mut host = no_registry();
    let r = host.token(
        &e,
        &form_headers(&[("authorization", &basic("svc", "svc-secret"))]),
        b"grant_type=client_credentials&scope=read",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.outcome, Outcome::Issued("client_credentials"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = json_body(&r);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 120);
    assert_eq!(v["scope"], "read");
    assert!(
        v.get("refresh_token").is_none(),
        "RFC 6749 §4.4.3: no refresh token"
    );
    let (h, c) = jwt_parts(v["access_token"].as_str().unwrap());
    assert_eq!(h, json!({"alg":"EdDSA","kid":"k1","typ":"at+jwt"}));
    assert_eq!(c["iss"], "https://as.example.com");
    assert_eq!(c["sub"], "svc");
    assert_eq!(c["client_id"], "svc");
    assert_eq!(c["aud"], "https://api.example.com");
    assert_eq!(c["scope"], "read");
    assert_eq!(c["iat"], NOW.secs());
    assert_eq!(c["exp"], NOW.secs() + 120);
    assert_eq!(c["jti"].as_str().unwrap().len(), 22);
}

#[test]
fn client_secret_post_and_default_scope() {
    let e = engine(false);
    let mut host = no_registry();
    let r = host.token(
        &e,
        &form_headers(&[]),
        b"grant_type=client_credentials&client_id=post-svc&client_secret=p",
    );
    assert_eq!(r.status, 200);
    assert_eq!(json_body(&r)["scope"], "read");
    // The registered method only (RFC 7591 §2): the right secret the other way is refused,
    // and spends nothing: the registered way works right after.
    let r = host.token(
        &e,
        &form_headers(&[]),
        b"grant_type=client_credentials&client_id=svc&client_secret=svc-secret",
    );
    assert_error(&r, 401, "invalid_client");
    assert!(r.header("www-authenticate").is_some());
    let r = host.token(
        &e,
        &form_headers(&[("authorization", &basic("post-svc", "p"))]),
        b"grant_type=client_credentials",
    );
    assert_error(&r, 401, "invalid_client");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"oauth-edge\"")
    );
    let r = host.token(
        &e,
        &form_headers(&[("authorization", &basic("svc", "svc-secret"))]),
        b"grant_type=client_credentials",
    );
    assert_eq!(r.status, 200);
    assert_eq!(json_body(&r)["scope"], "read write");
}

#[test]
fn errors_rfc6749_5_2_each_followed_by_success() {
    let e = engine(false);
    let mut host = no_registry();
    let good = form_headers(&[("authorization", &basic("svc", "svc-secret"))]);
    let cases: Vec<(Headers, &[u8], u16, &str)> = vec![
        (good.clone(), b"", 400, "invalid_request"),
        (good.clone(), b"scope=read", 400, "invalid_request"),
        (
            good.clone(),
            b"grant_type=password",
            400,
            "unsupported_grant_type",
        ),
        (
            good.clone(),
            b"grant_type=client_credentials&grant_type=client_credentials",
            400,
            "invalid_request",
        ),
        (
            good.clone(),
            b"grant_type=client_credentials&scope=admin",
            400,
            "invalid_scope",
        ),
        (
            good.clone(),
            b"grant_type=client_credentials&scope=r\"d",
            400,
            "invalid_scope",
        ),
        (
            good.clone(),
            b"grant_type=client_credentials\xff",
            400,
            "invalid_request",
        ),
        (good.clone(), b"grant_type=%ff", 400, "invalid_request"),
        (
            Headers(vec![
                ("content-type".into(), "application/json".into()),
                ("authorization".into(), basic("svc", "svc-secret")),
            ]),
            br#"{"grant_type":"client_credentials"}"#,
            400,
            "invalid_request",
        ),
        (
            Headers(vec![("authorization".into(), basic("svc", "svc-secret"))]),
            b"grant_type=client_credentials",
            400,
            "invalid_request",
        ),
        (
            form_headers(&[("authorization", &basic("svc", "wrong"))]),
            b"grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            form_headers(&[("authorization", &basic("nobody", "x"))]),
            b"grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            form_headers(&[("authorization", "Basic %%%")]),
            b"grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            form_headers(&[]),
            b"grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            good.clone(),
            b"grant_type=client_credentials&client_id=svc&client_secret=svc-secret",
            401,
            "invalid_client",
        ),
        (
            form_headers(&[("authorization", &basic("web", "w"))]),
            b"grant_type=client_credentials",
            400,
            "unauthorized_client",
        ),
        (
            form_headers(&[]),
            b"grant_type=client_credentials&client_id=spa",
            400,
            "unauthorized_client",
        ),
        (
            form_headers(&[]),
            b"grant_type=client_credentials&client_id=svc",
            401,
            "invalid_client",
        ),
        (
            form_headers(&[("content-length", "99999999")]),
            b"",
            413,
            "invalid_request",
        ),
        (
            form_headers(&[("content-length", "x")]),
            b"",
            400,
            "invalid_request",
        ),
    ];
    for (headers, body, status, code) in cases {
        let r = host.token(&e, &headers, body);
        assert_error(&r, status, code);
        let ok = host.token(&e, &good, b"grant_type=client_credentials");
        assert_eq!(ok.status, 200);
    }
}

#[test]
fn every_401_challenges() {
    let e = engine(false);
    let mut host = no_registry();
    let r = host.token(
        &e,
        &form_headers(&[("authorization", &basic("svc", "nope"))]),
        b"grant_type=client_credentials",
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"oauth-edge\"")
    );
    let r = host.token(
        &e,
        &form_headers(&[]),
        b"grant_type=client_credentials&client_id=svc&client_secret=nope",
    );
    // RFC 9110 §15.5.2: not only after Basic (the scheme the endpoint takes).
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"oauth-edge\"")
    );
}

#[test]
fn oversized_streamed_body_is_413() {
    let e = engine(false);
    assert!(e.body_too_large(16 * 1024).is_none());
    let r = e.body_too_large(16 * 1024 + 1).unwrap();
    assert_error(&r, 413, "invalid_request");
    let mut host = no_registry();
    let big = vec![b'a'; 20_000];
    assert_error(
        &host.token(&e, &form_headers(&[]), &big),
        413,
        "invalid_request",
    );
}

#[test]
fn variants_of_our_paths_are_ours_other_paths_are_not() {
    let e = engine(false);
    for p in [
        "/oauth/token/",
        "/OAUTH/TOKEN",
        "/oauth/token;x",
        "/oauth%2Ftoken",
        "/oauth/token%20",
        "/.well-known/oauth-authorization-server/",
        "/oauth/JWKS?x=1",
    ] {
        assert_eq!(e.route(p), None, "{p}");
        assert!(e.path_variant(p).is_some(), "{p}");
    }
    for p in [
        "/oauth/callback",
        "/oauth/tokens",
        "/api/x%2Fy",
        "/",
        // Device endpoints are not configured here: their paths belong to the application.
        "/oauth/device/",
    ] {
        assert_eq!(e.route(p), None, "{p}");
        assert_eq!(e.path_variant(p), None, "{p}");
    }
    assert_eq!(e.path_variant("/oauth/token"), Some(Endpoint::Token));
}

#[test]
fn methods_and_documents() {
    let e = engine(false);
    assert_eq!(e.route("/oauth/token?x=1"), Some(Endpoint::Token));
    assert_eq!(e.route("/oauth/tokens"), None);
    assert_eq!(e.route("/"), None);
    match e.on_headers(Endpoint::Token, "GET", &Headers::default()) {
        HeadAction::Respond(r) => {
            assert_error(&r, 405, "invalid_request");
            assert_eq!(r.header("allow"), Some("POST"));
        }
        _ => panic!("GET must not read a body"),
    }
    let HeadAction::Respond(r) = e.on_headers(
        Endpoint::AuthorizationServerMetadata,
        "GET",
        &Headers::default(),
    ) else {
        panic!()
    };
    let m = json_body(&r);
    assert_eq!(m["issuer"], "https://as.example.com");
    assert_eq!(m["token_endpoint"], "https://as.example.com/oauth/token");
    assert_eq!(m["jwks_uri"], "https://as.example.com/oauth/jwks");
    assert_eq!(
        m["grant_types_supported"],
        json!(["authorization_code", "client_credentials", "refresh_token"])
    );
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    let HeadAction::Respond(r) = e.on_headers(Endpoint::Jwks, "GET", &Headers::default()) else {
        panic!()
    };
    let jwks = json_body(&r);
    assert_eq!(jwks["keys"][0]["kid"], "k1");
    assert!(jwks["keys"][0].get("d").is_none());
    let HeadAction::Respond(r) = e.on_headers(Endpoint::Jwks, "POST", &Headers::default()) else {
        panic!()
    };
    assert_eq!(r.status, 405);
}

fn registry_client(id: &str) -> Vec<u8> {
    json!({"client_id": id, "client_secret": hash_secret("reg-secret"), "grant_types": ["client_credentials"], "scope": "read", "software_id": "ignored"})
        .to_string()
        .into_bytes()
}

#[test]
fn registry_lookup_is_cached_per_worker_and_shared() {
    let e = engine(true);
    let mut host = Host::new(Box::new(|id: &str| (Some(200), registry_client(id))));
    let h = form_headers(&[("authorization", &basic("reg-1", "reg-secret"))]);
    assert_eq!(
        host.token(&e, &h, b"grant_type=client_credentials").status,
        200
    );
    assert_eq!(host.registry_calls, 1);
    assert_eq!(host.shared.len(), 1, "found clients go to shared data");
    assert_eq!(
        host.token(&e, &h, b"grant_type=client_credentials").status,
        200
    );
    assert_eq!(
        host.registry_calls, 1,
        "second request served from the worker cache"
    );
    assert_eq!(e.drain_events().cache_hits, 1);
    // Another worker (another engine) finds it in shared data.
    let e2 = engine(true);
    assert_eq!(
        host.token(&e2, &h, b"grant_type=client_credentials").status,
        200
    );
    assert_eq!(host.registry_calls, 1);
    // A wrong secret is still refused from cache.
    let bad = form_headers(&[("authorization", &basic("reg-1", "x"))]);
    assert_error(
        &host.token(&e, &bad, b"grant_type=client_credentials"),
        401,
        "invalid_client",
    );
}

#[test]
fn registry_not_found_is_invalid_client_and_not_shared() {
    let e = engine(true);
    let mut host = Host::new(Box::new(|_: &str| (Some(404), b"{}".to_vec())));
    let h = form_headers(&[("authorization", &basic("ghost", "x"))]);
    assert_error(
        &host.token(&e, &h, b"grant_type=client_credentials"),
        401,
        "invalid_client",
    );
    assert_error(
        &host.token(&e, &h, b"grant_type=client_credentials"),
        401,
        "invalid_client",
    );
    assert_eq!(host.registry_calls, 1, "negative answer cached per worker");
    assert!(
        host.shared.is_empty(),
        "unknown ids never reach shared data"
    );
}

#[test]
fn registry_misses_per_address_are_limited() {
    let mut cfg = config(true);
    cfg["registry"]["misses_per_address"] = json!({"requests": 3, "window": "10s"});
    let e = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
    let mut host = Host::new(Box::new(|_: &str| (Some(404), b"{}".to_vec())));
    host.init(&e);
    let ghost = |i: usize| form_headers(&[("authorization", &basic(&format!("ghost-{i}"), "x"))]);
    for i in 0..3 {
        let r = host.token(&e, &ghost(i), b"grant_type=client_credentials");
        assert_error(&r, 401, "invalid_client");
    }
    assert_eq!(host.registry_calls, 3);
    // Past the budget: made-up ids cost the registry nothing.
    for i in 3..10 {
        let r = host.token(&e, &ghost(i), b"grant_type=client_credentials");
        assert_error(&r, 429, "rate_limit_exceeded");
    }
    assert_eq!(host.registry_calls, 3);
    // Known clients still answer from that address; other addresses are not limited.
    let svc = form_headers(&[("authorization", &basic("svc", "svc-secret"))]);
    assert_eq!(
        host.token(&e, &svc, b"grant_type=client_credentials")
            .status,
        200
    );
    host.source = Some("198.51.100.9".into());
    let r = host.token(&e, &ghost(99), b"grant_type=client_credentials");
    assert_error(&r, 401, "invalid_client");
    assert_eq!(host.registry_calls, 4);
}

#[test]
fn registry_trouble_is_server_error_and_nothing_cached() {
    let answers: Vec<(Option<u16>, Vec<u8>)> = vec![
        (None, vec![]),
        (Some(500), b"oops".to_vec()),
        (Some(503), b"upstream connect error".to_vec()),
        (Some(504), vec![]),
        (Some(200), b"<html>".to_vec()),
        (Some(200), registry_client("someone-else")),
        (
            Some(200),
            br#"{"client_id":"reg-2","client_secret":"plaintext"}"#.to_vec(),
        ),
    ];
    for (status, body) in answers {
        let e = engine(true);
        let b = body.clone();
        let mut host = Host::new(Box::new(move |_: &str| (status, b.clone())));
        let h = form_headers(&[("authorization", &basic("reg-2", "reg-secret"))]);
        assert_error(
            &host.token(&e, &h, b"grant_type=client_credentials"),
            500,
            "server_error",
        );
        assert!(host.shared.is_empty());
        // Nothing remembered: the next request asks again, and succeeds once the registry is back.
        let mut healthy = Host::new(Box::new(|id: &str| (Some(200), registry_client(id))));
        assert_eq!(
            healthy
                .token(&e, &h, b"grant_type=client_credentials")
                .status,
            200,
            "{status:?}"
        );
        assert_eq!(healthy.registry_calls, 1);
    }
}

#[test]
fn expired_shared_entry_asks_the_registry_again() {
    let e = engine(true);
    let mut host = Host::new(Box::new(|id: &str| (Some(200), registry_client(id))));
    let key = oauth_edge::registry::shared_key("reg-3");
    host.shared
        .set(
            &key,
            &oauth_edge::registry::encode_entry(NOW.unix_ms - 1, &registry_client("reg-3")),
            0,
        )
        .unwrap();
    let h = form_headers(&[("authorization", &basic("reg-3", "reg-secret"))]);
    assert_eq!(
        host.token(&e, &h, b"grant_type=client_credentials").status,
        200
    );
    assert_eq!(host.registry_calls, 1);
}

/// Random bytes as bodies and header values: every answer is a clean OAuth error or a token,
/// and a valid request right after still works.
#[test]
fn garbage_never_panics() {
    let e = engine(true);
    let mut host = Host::new(Box::new(|id: &str| (Some(200), registry_client(id))));
    let good = form_headers(&[("authorization", &basic("svc", "svc-secret"))]);
    let mut rng = SystemRandom;
    use oauth_edge::random::Random as _;
    let alphabet = b"=&%+:abcgrant_typeclient_credentialsscopeclient_idsecret\xff\x00 \"\\";
    for i in 0..3000 {
        let mut len = [0u8; 2];
        rng.fill(&mut len).unwrap();
        let n = (u16::from_le_bytes(len) % 300) as usize;
        let mut raw = vec![0u8; n];
        rng.fill(&mut raw).unwrap();
        let body: Vec<u8> = if i % 2 == 0 {
            raw.iter()
                .map(|b| alphabet[(*b as usize) % alphabet.len()])
                .collect()
        } else {
            raw.clone()
        };
        let auth = format!("Basic {}", STANDARD.encode(&raw[..n.min(40)]));
        let headers = form_headers(&[("authorization", &auth)]);
        let r = host.token(&e, &headers, &body);
        assert!(r.status == 200 || (400..=500).contains(&r.status));
        let v = json_body(&r);
        assert!(v.get("error").is_some() || v.get("access_token").is_some());
        let r = host.token(&e, &headers, b"grant_type=client_credentials");
        assert!(r.status >= 400);
    }
    assert_eq!(
        host.token(&e, &good, b"grant_type=client_credentials")
            .status,
        200
    );
}

#[test]
fn client_credentials_resource_indicators_rfc8707() {
    let e = engine(false);
    let mut host = no_registry();
    let h = form_headers(&[("authorization", &basic("svc", "svc-secret"))]);
    let r = host.token(
        &e,
        &h,
        b"grant_type=client_credentials&resource=https%3A%2F%2Fa.example.com%2F&resource=https%3A%2F%2Fb.example.com%2F",
    );
    assert_eq!(r.status, 200);
    let (_, c) = jwt_parts(json_body(&r)["access_token"].as_str().unwrap());
    assert_eq!(
        c["aud"],
        json!(["https://a.example.com/", "https://b.example.com/"])
    );
    let r = host.token(&e, &h, b"grant_type=client_credentials&resource=not-a-uri");
    assert_error(&r, 400, "invalid_target");
    // RFC 8707 §2 / RFC 9700 §2.3: only the resources the client is registered for.
    let r = host.token(
        &e,
        &h,
        b"grant_type=client_credentials&resource=https%3A%2F%2Fadmin.internal.example%2F",
    );
    assert_error(&r, 400, "invalid_target");
}
