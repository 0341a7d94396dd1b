//! CORS per client (src/cors.rs) through the core: preflights at the browser endpoints, the
//! exact origin echoed for the request's client, credentials only at /oauth/refresh, never `*`
//! with credentials, `Vary: Origin`, and every other endpoint and method as before.

mod common;

use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::{Endpoint, Engine, HeadAction};
use oauth_edge::http::{Headers, Response};
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;
use serde_json::json;

const SPA: &str = "https://spa.example.com";
const SECOND: &str = "https://second.example.com";
const WEB: &str = "https://web.example.com";
const EVIL: &str = "https://evil.example.net";

fn engine() -> (Engine, Host) {
    let cfg = json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64,
                  "code_slots": 64, "refresh_family_slots": 64, "jti_slots": 64, "revoked_slots": 64},
        "clients": [
            {"client_id": "spa", "token_endpoint_auth_method": "none",
             "grant_types": ["authorization_code", "refresh_token"], "scope": "openid read",
             "redirect_uris": [format!("{SPA}/cb")], "allowed_origins": [SECOND],
             "refresh_token_cookie": true},
            {"client_id": "web", "client_secret": hash_secret("web-secret"),
             "grant_types": ["client_credentials"], "scope": "read",
             "redirect_uris": [format!("{WEB}/cb")]}
        ]
    });
    let e = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    (e, h)
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn preflight(e: &Engine, path: &str, origin: &str) -> Response {
    let ep = e.route(path).unwrap();
    let h = headers(&[
        ("origin", origin),
        ("access-control-request-method", "POST"),
    ]);
    match e.on_headers(ep, "OPTIONS", &h) {
        HeadAction::Respond(r) => r,
        other => panic!("a preflight is answered at once, not {other:?}"),
    }
}

fn all<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn preflight_at_client_endpoints_echoes_static_client_origins_credentials_only_at_token() {
    let (e, _) = engine();
    for path in [
        "/oauth/token",
        "/oauth/pushed-authorization",
        "/oauth/revoke",
    ] {
        for origin in [SPA, SECOND, WEB] {
            let r = preflight(&e, path, origin);
            assert_eq!(r.status, 204, "{path} {origin}");
            assert!(r.body.is_empty());
            assert_eq!(r.header("access-control-allow-origin"), Some(origin));
            assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
            assert_eq!(r.header("vary"), Some("Origin"));
            // Credentials only where a cookie is set: the token endpoint, for the origins of
            // cookie clients (spa); never at PAR or revocation.
            let credentials = path == "/oauth/token" && origin != WEB;
            assert_eq!(
                r.header("access-control-allow-credentials"),
                credentials.then_some("true"),
                "{path} {origin}"
            );
            assert!(r
                .header("access-control-allow-headers")
                .unwrap()
                .contains("Content-Type"));
            assert!(r.header("access-control-max-age").is_some());
        }
    }
    let r = preflight(&e, "/oauth/token", SPA);
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("DPoP"));
}

#[test]
fn preflight_from_another_origin_is_refused_as_flat_json() {
    let (e, _) = engine();
    for path in [
        "/oauth/token",
        "/oauth/pushed-authorization",
        "/oauth/revoke",
        "/oauth/refresh",
    ] {
        for origin in [
            EVIL,
            "null",
            "https://spa.example.com:8443",
            "http://spa.example.com",
        ] {
            let r = preflight(&e, path, origin);
            assert_error(&r, 403, "invalid_request");
            assert_eq!(
                r.header("access-control-allow-origin"),
                None,
                "{path} {origin}"
            );
            assert_eq!(r.header("access-control-allow-credentials"), None);
            assert_eq!(r.header("vary"), Some("Origin"));
        }
    }
}

#[test]
fn refresh_preflight_allows_credentials_only_for_cookie_clients() {
    let (e, _) = engine();
    for origin in [SPA, SECOND] {
        let r = preflight(&e, "/oauth/refresh", origin);
        assert_eq!(r.status, 204);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("Content-Type")
        );
    }
    // `web` has no refresh cookie: its origin may call the token endpoint, not /oauth/refresh.
    assert_error(
        &preflight(&e, "/oauth/refresh", WEB),
        403,
        "invalid_request",
    );
}

#[test]
fn documents_allow_any_origin_never_with_credentials() {
    let (e, mut h) = engine();
    for path in [
        "/oauth/jwks",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        assert_eq!(preflight(&e, path, "null").status, 204);
        let r = preflight(&e, path, EVIL);
        assert_eq!(r.status, 204);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, HEAD"));
        assert_eq!(r.header("access-control-allow-credentials"), None);
        let r = h.request_at(
            &e,
            "GET",
            path,
            &headers(&[("origin", EVIL)]),
            b"",
            None,
            NOW,
        );
        assert_eq!(r.status, 200);
        assert_eq!(all(&r, "access-control-allow-origin"), vec!["*"]);
        assert_eq!(r.header("access-control-allow-credentials"), None);
    }
}

#[test]
fn options_without_preflight_headers_is_still_405() {
    let (e, _) = engine();
    let ep = e.route("/oauth/token").unwrap();
    let HeadAction::Respond(r) = e.on_headers(ep, "OPTIONS", &headers(&[("origin", SPA)])) else {
        panic!("405 expected")
    };
    assert_error(&r, 405, "invalid_request");
    assert_eq!(r.header("allow"), Some("POST"));
    // Not a browser endpoint: no preflight answered, 405 as before.
    let ep = e.route("/oauth/introspect").unwrap();
    assert_eq!(ep, Endpoint::Introspection);
    let h = headers(&[("origin", SPA), ("access-control-request-method", "POST")]);
    let HeadAction::Respond(r) = e.on_headers(ep, "OPTIONS", &h) else {
        panic!("405 expected")
    };
    assert_error(&r, 405, "invalid_request");
    assert_eq!(r.header("access-control-allow-origin"), None);
}

fn token(e: &Engine, h: &mut Host, origin: &str, auth: Option<&str>, body: &str) -> Response {
    let mut hd = form_headers(&[("origin", origin)]);
    if let Some(a) = auth {
        hd.0.push(("authorization".into(), a.into()));
    }
    h.token(e, &hd, body.as_bytes())
}

#[test]
fn actual_request_echoes_the_origin_of_the_requests_client_only() {
    let (e, mut h) = engine();
    let web = basic("web", "web-secret");
    let r = token(&e, &mut h, WEB, Some(&web), "grant_type=client_credentials");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(WEB));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header("vary"), Some("Origin"));
    assert!(r
        .header("access-control-expose-headers")
        .unwrap()
        .contains("DPoP-Nonce"));
    // The spa's origin may preflight, but this request is web's: not echoed.
    let r = token(&e, &mut h, SPA, Some(&web), "grant_type=client_credentials");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("vary"), Some("Origin"));
    // The spa's errors are readable from its origins (the client was found).
    let r = token(
        &e,
        &mut h,
        SECOND,
        None,
        "grant_type=authorization_code&client_id=spa&code=nope&redirect_uri=x&code_verifier=y",
    );
    assert_error(&r, 400, "invalid_grant");
    assert_eq!(r.header("access-control-allow-origin"), Some(SECOND));
    assert_eq!(r.header("vary"), Some("Origin"));
    // spa's code redemption sets the refresh cookie: a cross-origin app makes it with
    // credentials, so the answer allows them (web's never does, see above).
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    // An unknown origin never.
    let r = token(
        &e,
        &mut h,
        EVIL,
        Some(&web),
        "grant_type=client_credentials",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn answers_without_a_client_echo_only_preflight_origins() {
    let (e, mut h) = engine();
    // Unknown client: no client's origins apply; a configured origin can read the error.
    let r = token(
        &e,
        &mut h,
        SPA,
        None,
        "grant_type=client_credentials&client_id=nobody",
    );
    assert_error(&r, 401, "invalid_client");
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA));
    let r = token(
        &e,
        &mut h,
        EVIL,
        None,
        "grant_type=client_credentials&client_id=nobody",
    );
    assert_error(&r, 401, "invalid_client");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("vary"), Some("Origin"));
    // Errors answered from the headers alone (405) too.
    let ep = e.route("/oauth/token").unwrap();
    let HeadAction::Respond(r) = e.on_headers(ep, "GET", &headers(&[("origin", SPA)])) else {
        panic!("405 expected")
    };
    assert_error(&r, 405, "invalid_request");
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA));
}

#[test]
fn refresh_answers_allow_credentials_for_the_exact_origin_never_a_wildcard() {
    let (e, mut h) = engine();
    for origin in [SPA, SECOND, WEB, EVIL] {
        let hd = headers(&[
            ("content-type", "application/json"),
            ("origin", origin),
            ("cookie", "oauth_edge_rt=garbage"),
        ]);
        let r = h.request_at(&e, "POST", "/oauth/refresh", &hd, b"{}", None, NOW);
        assert_error(&r, 401, "invalid_grant");
        assert_eq!(r.header("vary"), Some("Origin"));
        let acao = r.header("access-control-allow-origin");
        assert_ne!(acao, Some("*"));
        if origin == SPA || origin == SECOND {
            assert_eq!(acao, Some(origin));
            assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        } else {
            assert_eq!(acao, None, "{origin}");
            assert_eq!(r.header("access-control-allow-credentials"), None);
        }
    }
}

#[test]
fn a_repeated_origin_is_never_echoed() {
    let (e, mut h) = engine();
    let mut hd = form_headers(&[("origin", WEB), ("origin", WEB)]);
    hd.0.push(("authorization".into(), basic("web", "web-secret")));
    let r = h.token(&e, &hd, b"grant_type=client_credentials");
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn endpoints_without_cors_send_no_cors_headers() {
    let (e, mut h) = engine();
    let r = h.request_at(
        &e,
        "GET",
        "/oauth/authorize?client_id=spa",
        &headers(&[("origin", SPA)]),
        b"",
        None,
        NOW,
    );
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("vary").is_none());
}

/// A registry client: its origins are honoured on the actual request (a public client's form
/// POST is a CORS simple request), but a preflight, which names no client, is answered only for
/// the static clients' origins.
#[test]
fn registry_clients_origins_on_actual_requests_only() {
    const REG: &str = "https://registry-app.example.com";
    let cfg = json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "registry": {"cluster": "registry"},
        "store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64,
                  "code_slots": 64, "refresh_family_slots": 64, "jti_slots": 64, "revoked_slots": 64},
        "clients": []
    });
    let e = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
    let mut h = Host::new(Box::new(|id: &str| {
        if id == "reg-spa" {
            let body = json!({"client_id": "reg-spa", "token_endpoint_auth_method": "none",
                              "grant_types": ["authorization_code"], "scope": "read",
                              "redirect_uris": [format!("{REG}/cb")]});
            (Some(200), body.to_string().into_bytes())
        } else {
            (Some(404), Vec::new())
        }
    }));
    h.init(&e);
    assert_error(&preflight(&e, "/oauth/token", REG), 403, "invalid_request");
    let r = token(
        &e,
        &mut h,
        REG,
        None,
        "grant_type=authorization_code&client_id=reg-spa&code=nope&redirect_uri=x&code_verifier=y",
    );
    assert_error(&r, 400, "invalid_grant");
    assert_eq!(r.header("access-control-allow-origin"), Some(REG));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    let r = token(
        &e,
        &mut h,
        EVIL,
        None,
        "grant_type=authorization_code&client_id=reg-spa&code=nope&redirect_uri=x&code_verifier=y",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}
