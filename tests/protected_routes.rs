//! Route protection through the core (issue 15): which requests a protected route takes, what
//! goes upstream, the refusals, the strict configuration, and garbage that never panics
//! (`tests/integration/test_protected_routes.py` drives the same through Envoy).

mod common;

use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::{Endpoint, Engine, HeadAction};
use oauth_edge::http::{Headers, Outcome, Response};
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};

const ISS: &str = "https://as.example.com";
const ORDERS: &str = "https://api.example.com/orders";

fn config(routes: Value) -> Value {
    json!({
        "issuer": ISS,
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "clients": [{"client_id": "svc", "client_secret": hash_secret("svc-secret"),
                     "grant_types": ["client_credentials"], "scope": "read orders:read",
                     "allowed_resources": [ORDERS]}],
        "resource_protection": {"routes": routes},
    })
}

fn setup() -> (Engine, Host) {
    let routes = json!([{"prefix": "/orders", "resource": ORDERS, "scopes": {"all": ["orders:read"]},
                         "methods": ["GET", "POST"], "filter_state": true,
                         "claim_headers": {"sub": "x-oauth-sub", "client_id": "x-oauth-client-id",
                                           "scope": "x-oauth-scope"}}]);
    let e = Engine::new(Config::from_json(config(routes).to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    (e, h)
}

fn token(e: &Engine, h: &mut Host, scope: &str, resource: &str) -> String {
    let body = format!("grant_type=client_credentials&scope={scope}&resource={resource}");
    let r = h.token(
        e,
        &form_headers(&[("authorization", &basic("svc", "svc-secret"))]),
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    json_body(&r)["access_token"].as_str().unwrap().to_string()
}

fn call(e: &Engine, h: &mut Host, path: &str, extra: &[(&str, &str)]) -> Response {
    let ep = e
        .protected(path, "api.example.com", "GET")
        .expect("a protected path");
    let mut headers = Headers(vec![(":authority".into(), "api.example.com".into())]);
    for (k, v) in extra {
        headers.0.push((k.to_string(), v.to_string()));
    }
    match e.on_headers(ep, "GET", &headers) {
        HeadAction::Start => {}
        other => panic!("{other:?}"),
    }
    h.request_at(e, "GET", path, &headers, b"", None, NOW)
}

#[test]
fn which_requests_a_route_takes() {
    let (e, _) = setup();
    for p in [
        "/orders",
        "/orders/1",
        "/orders/1?x=y",
        "/ORDERS/1",
        "/a/../orders/1",
        "/orders;x/1",
        "/%6frders/1",
    ] {
        assert_eq!(e.protected(p, "h", "GET"), Some(Endpoint::Resource), "{p}");
    }
    for p in ["/ordersx", "/order", "/", "/oauth/token"] {
        assert_eq!(e.protected(p, "h", "GET"), None, "{p}");
    }
    assert_eq!(e.protected("/orders/1", "h", "DELETE"), None, "methods");
    assert!(e
        .route("/.well-known/oauth-protected-resource/orders")
        .is_some());
}

#[test]
fn a_valid_token_goes_upstream_with_its_claims_and_spoofs_removed() {
    let (e, mut h) = setup();
    let t = token(&e, &mut h, "orders:read", ORDERS);
    let r = call(
        &e,
        &mut h,
        "/orders/1",
        &[
            ("authorization", &format!("Bearer {t}")),
            ("x-oauth-sub", "admin"),
        ],
    );
    assert_eq!(r.outcome, Outcome::Forwarded);
    let f = r.forward.expect("forward");
    // Setting a header replaces the client's copies: nothing else to remove.
    assert!(f.remove.is_empty(), "{:?}", f.remove);
    assert!(f
        .set
        .contains(&("x-oauth-sub".to_string(), "svc".to_string())));
    assert!(f
        .set
        .contains(&("x-oauth-scope".to_string(), "orders:read".to_string())));
    assert!(f
        .state
        .contains(&("oauth_edge.client_id".to_string(), "svc".to_string())));
}

#[test]
fn a_route_that_names_no_claims_changes_no_header() {
    // Like jwt_authn's claim_to_headers: claims go upstream only where the route asks for them
    // (each header change makes Envoy match the route again).
    let routes =
        json!([{"prefix": "/orders", "resource": ORDERS, "scopes": {"all": ["orders:read"]}}]);
    let e = Engine::new(Config::from_json(config(routes).to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    let t = token(&e, &mut h, "orders:read", ORDERS);
    let auth = format!("Bearer {t}");
    let r = call(&e, &mut h, "/orders/1", &[("authorization", &auth)]);
    assert_eq!(r.outcome, Outcome::Forwarded);
    let f = r.forward.expect("forward");
    assert!(
        f.set.is_empty() && f.remove.is_empty() && f.state.is_empty(),
        "{f:?}"
    );
}

#[test]
fn refusals() {
    let (e, mut h) = setup();
    let r = call(&e, &mut h, "/orders/1", &[]);
    assert_eq!(r.status, 401);
    let challenges: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| *k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(challenges.len(), 2);
    assert!(
        challenges[0].starts_with("Bearer realm=\"oauth-edge\"")
            && !challenges[0].contains("error=")
    );
    assert!(challenges[1].starts_with("DPoP ") && challenges[1].contains("algs=\""));
    let narrow = token(&e, &mut h, "read", ORDERS);
    let r = call(
        &e,
        &mut h,
        "/orders/1",
        &[("authorization", &format!("Bearer {narrow}"))],
    );
    assert_eq!(r.status, 403);
    assert_eq!(json_body(&r)["error"], "insufficient_scope");
    let r = call(
        &e,
        &mut h,
        "/orders/1",
        &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
    );
    assert_error(&r, 400, "invalid_request");
    let t = token(&e, &mut h, "orders:read", ORDERS);
    let r = call(
        &e,
        &mut h,
        "/orders/1",
        &[("authorization", &format!("DPoP {t}"))],
    );
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
}

#[test]
fn garbage_never_panics_and_the_next_request_works() {
    let (e, mut h) = setup();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let n = (next() % 300) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| (next() % 256) as u8).collect();
        let s = String::from_utf8_lossy(&bytes).into_owned();
        let scheme = ["Bearer ", "DPoP ", "bearer", ""][(next() % 4) as usize];
        let r = call(
            &e,
            &mut h,
            "/orders/1",
            &[("authorization", &format!("{scheme}{s}")), ("dpop", &s)],
        );
        assert!(matches!(r.status, 400 | 401), "{}", r.status);
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let t = token(&e, &mut h, "orders:read", ORDERS);
    let r = call(
        &e,
        &mut h,
        "/orders/1",
        &[("authorization", &format!("Bearer {t}"))],
    );
    assert_eq!(r.outcome, Outcome::Forwarded);
}

#[test]
fn strict_configuration() {
    let bad = [
        json!([{"prefix": "orders", "resource": ORDERS}]),
        json!([{"prefix": "/o", "resource": "http://api.example.com/o"}]),
        json!([{"prefix": "/o", "resource": ORDERS, "dpop": "sometimes"}]),
        json!([{"prefix": "/o", "resource": ORDERS, "scopes": {"all": ["a"], "any": ["b"]}}]),
        json!([{"prefix": "/o", "resource": ORDERS, "scopes": {"all": []}}]),
        json!([{"prefix": "/o", "resource": ORDERS, "claim_headers": {"sub": "Authorization"}}]),
        json!([{"prefix": "/o", "resource": ORDERS, "claim_headers": {"password": "x-pw"}}]),
        json!([{"prefix": "/o", "resource": ORDERS, "claim_headers": {"sub": "x-a", "jti": "x-a"}}]),
        json!([{"prefix": "/o", "resource": ORDERS, "methods": ["get"]}]),
        // Filter state carries the claims claim_headers names: with none it would set nothing.
        json!([{"prefix": "/o", "resource": ORDERS, "filter_state": true}]),
        json!([{"prefix": "/o", "resource": ORDERS, "surprise": 1}]),
        json!([{"prefix": "/o", "resource": ORDERS}, {"prefix": "/p", "resource": "https://other.example/orders"}]),
    ];
    for routes in bad {
        let err = Config::from_json(config(routes.clone()).to_string().as_bytes()).err();
        // Named by its field, or (a key serde does not know) by serde's message.
        assert!(
            err.as_ref()
                .is_some_and(|e| e.field.starts_with("resource_protection")
                    || (e.field == "surprise" && e.problem.contains("unknown field"))),
            "{routes}: {err:?}"
        );
    }
}

#[test]
fn a_revocation_is_seen_on_the_next_call_even_for_a_token_checked_before() {
    let (e, mut h) = setup();
    let a = token(&e, &mut h, "orders:read", ORDERS);
    let b = token(&e, &mut h, "orders:read", ORDERS);
    let bearer = |t: &str| format!("Bearer {t}");
    // Both used (and found not revoked) a few times: the worker remembers that.
    for _ in 0..3 {
        for t in [&a, &b] {
            let r = call(&e, &mut h, "/orders/1", &[("authorization", &bearer(t))]);
            assert_eq!(r.status, 0, "{r:?}");
        }
    }
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/revoke",
        &form_headers(&[("authorization", &basic("svc", "svc-secret"))]),
        format!("token={a}").as_bytes(),
        None,
        NOW,
    );
    assert_eq!(r.status, 200);
    let r = call(&e, &mut h, "/orders/1", &[("authorization", &bearer(&a))]);
    assert_error(&r, 401, "invalid_token");
    // The other token is checked against the list once more, and still goes on.
    for _ in 0..2 {
        let r = call(&e, &mut h, "/orders/1", &[("authorization", &bearer(&b))]);
        assert_eq!(r.status, 0, "{r:?}");
    }
}
