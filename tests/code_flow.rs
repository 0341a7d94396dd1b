//! The authorization code flow through the core: PAR → authorize → code → token → refresh,
//! single use, races, expiry, PKCE, RAR, OIDC, rotation and reuse detection, bounded memory.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::{Endpoint, Engine};
use oauth_edge::flow::{Now, Request, User};
use oauth_edge::http::{Headers, Response};
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const CB: &str = "https://app.example.com/cb";

fn config(extra: Value) -> Value {
    let mut v = json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "user": {"metadata_namespace": "envoy.filters.http.jwt_authn", "metadata_key": "user"},
        "login_url": "https://login.example.com/login",
        "store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 64, "jti_slots": 64, "revoked_slots": 64},
        "clients": [
            {"client_id": "web", "client_secret": hash_secret("web-secret"),
             "grant_types": ["authorization_code", "refresh_token"], "scope": "openid profile read",
             "redirect_uris": [CB], "authorization_details_types": ["account_information"],
             "refresh_token_reuse_interval": 10, "allowed_resources": ["https://api.example.com/accounts"]},
            {"client_id": "spa", "token_endpoint_auth_method": "none",
             "grant_types": ["authorization_code", "refresh_token"], "scope": "openid read",
             "redirect_uris": ["https://spa.example.com/cb"], "refresh_token_cookie": true},
            {"client_id": "other", "client_secret": hash_secret("other-secret"),
             "grant_types": ["authorization_code"], "scope": "read", "redirect_uris": ["https://other.example.com/cb"]}
        ]
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in e {
            o.insert(k.clone(), val.clone());
        }
    }
    v
}

fn setup(extra: Value) -> (Engine, Host) {
    let e = Engine::new(Config::from_json(config(extra).to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    (e, h)
}

fn user() -> Option<User> {
    Some(User {
        sub: "alice".into(),
        auth_time: Some(NOW.secs() - 30),
        session: None,
    })
}

fn web_auth() -> Headers {
    form_headers(&[("authorization", &basic("web", "web-secret"))])
}

fn par(e: &Engine, h: &mut Host, headers: &Headers, body: &str) -> Response {
    h.request_at(
        e,
        "POST",
        "/oauth/pushed-authorization",
        headers,
        body.as_bytes(),
        None,
        NOW,
    )
}

fn par_ok(e: &Engine, h: &mut Host, extra: &str) -> String {
    let body = format!("response_type=code&client_id=web&redirect_uri={CB}&scope=openid+read&state=xyz&nonce=n-1&code_challenge={CHALLENGE}&code_challenge_method=S256{extra}");
    let r = par(e, h, &web_auth(), &body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = json_body(&r);
    assert_eq!(v["expires_in"], 90);
    v["request_uri"].as_str().unwrap().to_string()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn authorize_at(e: &Engine, h: &mut Host, query: &str, u: Option<User>, now: Now) -> Response {
    h.request_at(
        e,
        "GET",
        &format!("/oauth/authorize?{query}"),
        &Headers::default(),
        b"",
        u,
        now,
    )
}

fn location_params(r: &Response) -> (String, Vec<(String, String)>) {
    assert_eq!(r.status, 303, "{r:?}");
    let loc = r.header("location").unwrap();
    let (base, q) = loc.split_once('?').unwrap();
    let params = q
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (
                k.to_string(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    (base.to_string(), params)
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn code_for(e: &Engine, h: &mut Host, request_uri: &str) -> String {
    let r = authorize_at(
        e,
        h,
        &format!("client_id=web&request_uri={}", enc(request_uri)),
        user(),
        NOW,
    );
    let (base, p) = location_params(&r);
    assert_eq!(base, CB);
    assert_eq!(param(&p, "state"), Some("xyz"));
    assert_eq!(param(&p, "iss"), Some("https://as.example.com"));
    param(&p, "code").unwrap().to_string()
}

fn redeem(e: &Engine, h: &mut Host, code: &str, verifier: &str) -> Response {
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}",
        enc(CB)
    );
    h.token(e, &web_auth(), body.as_bytes())
}

fn refresh(e: &Engine, h: &mut Host, rt: &str) -> Response {
    h.token(
        e,
        &web_auth(),
        format!("grant_type=refresh_token&refresh_token={rt}").as_bytes(),
    )
}

#[test]
fn par_authorize_token_refresh_rfc9126_rfc6749_4_1() {
    let (e, mut h) = setup(json!({}));
    let ru = par_ok(&e, &mut h, "");
    assert!(ru.starts_with("urn:ietf:params:oauth:request_uri:"));
    let code = code_for(&e, &mut h, &ru);
    let r = redeem(&e, &mut h, &code, VERIFIER);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_body(&r);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "openid read");
    let at = v["access_token"].as_str().unwrap();
    let (_, claims) = jwt_parts(at);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], "web");
    assert_eq!(claims["auth_time"], NOW.secs() - 30);
    // OIDC ID token
    let (ih, ic) = jwt_parts(v["id_token"].as_str().unwrap());
    assert_eq!(ih["typ"], "JWT");
    assert_eq!(ic["aud"], "web");
    assert_eq!(ic["nonce"], "n-1");
    assert_eq!(ic["sub"], "alice");
    assert_eq!(ic["auth_time"], NOW.secs() - 30);
    let full = sha2::Sha512::digest(at.as_bytes());
    assert_eq!(ic["at_hash"], B64.encode(&full[..32]));
    // Refresh twice, rotating.
    let rt1 = v["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&e, &mut h, &rt1);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rt2 = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    let r = refresh(&e, &mut h, &rt2);
    assert_eq!(r.status, 200);
    let rt3 = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    // Narrowing works, widening does not.
    let r = h.token(
        &e,
        &web_auth(),
        format!("grant_type=refresh_token&refresh_token={rt3}&scope=profile").as_bytes(),
    );
    assert_error(&r, 400, "invalid_scope");
    let r = h.token(
        &e,
        &web_auth(),
        format!("grant_type=refresh_token&refresh_token={rt3}&scope=read").as_bytes(),
    );
    assert_eq!(json_body(&r)["scope"], "read");
}

#[test]
fn par_takes_the_seed_json_body_with_rar_and_resources() {
    let (e, mut h) = setup(json!({}));
    let body = json!({
        "client_id": "web", "redirect_uri": CB, "response_type": "code",
        "scope": "read", "code_challenge": CHALLENGE, "code_challenge_method": "S256", "state": "s",
        "authorization_details": [{"type": "account_information", "actions": ["list_accounts"], "identifier": "account-12345"}],
        "resources": ["https://api.example.com/accounts"]
    });
    // web is registered for client_secret_basic: the seed's `client_secret` in the body is for
    // client_secret_post clients only (RFC 7591 §2: the registered method is enforced).
    let json_ct = Headers(vec![("content-type".into(), "application/json".into())]);
    let mut in_body = body.clone();
    in_body["client_secret"] = json!("web-secret");
    assert_error(
        &par(&e, &mut h, &json_ct, &in_body.to_string()),
        401,
        "invalid_client",
    );
    let hd = Headers(vec![
        ("content-type".into(), "application/json".into()),
        ("authorization".into(), basic("web", "web-secret")),
    ]);
    let r = par(&e, &mut h, &hd, &body.to_string());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
    let r = authorize_at(
        &e,
        &mut h,
        &format!("client_id=web&request_uri={}", enc(&ru)),
        user(),
        NOW,
    );
    let (_, p) = location_params(&r);
    let r = redeem(&e, &mut h, param(&p, "code").unwrap(), VERIFIER);
    let v = json_body(&r);
    assert_eq!(v["authorization_details"][0]["type"], "account_information");
    assert!(v.get("id_token").is_none(), "no openid scope, no ID token");
    let (_, c) = jwt_parts(v["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://api.example.com/accounts");
    assert_eq!(c["authorization_details"][0]["identifier"], "account-12345");
    // A type the client may not use.
    let mut bad = body.clone();
    bad["authorization_details"] = json!([{"type": "payment_initiation"}]);
    assert_error(
        &par(&e, &mut h, &hd, &bad.to_string()),
        400,
        "invalid_authorization_details",
    );
}

#[test]
fn par_errors_as_seed_002() {
    let (e, mut h) = setup(json!({}));
    let good = format!("response_type=code&client_id=web&redirect_uri={CB}&code_challenge={CHALLENGE}&code_challenge_method=S256");
    let cases: Vec<(Headers, String, u16, &str)> = vec![
        (
            web_auth(),
            good.replace(CB, "https://evil.example.com/cb"),
            400,
            "invalid_request",
        ),
        (
            web_auth(),
            good.replace("S256", "plain"),
            400,
            "invalid_request",
        ),
        (
            web_auth(),
            good.replace(
                &format!("&code_challenge={CHALLENGE}&code_challenge_method=S256"),
                "",
            ),
            400,
            "invalid_request",
        ),
        (
            web_auth(),
            format!("{good}&scope=admin"),
            400,
            "invalid_scope",
        ),
        (
            web_auth(),
            good.replace("response_type=code", "response_type=token"),
            400,
            "unsupported_response_type",
        ),
        (
            web_auth(),
            format!("{good}&request_uri=urn:x"),
            400,
            "invalid_request",
        ),
        (
            form_headers(&[("authorization", &basic("web", "nope"))]),
            good.clone(),
            401,
            "invalid_client",
        ),
        (form_headers(&[]), good.clone(), 401, "invalid_client"),
        (
            Headers(vec![("content-type".into(), "text/plain".into())]),
            good.clone(),
            400,
            "invalid_request",
        ),
        (
            Headers(vec![("content-type".into(), "application/json".into())]),
            "{not json".into(),
            400,
            "invalid_request",
        ),
        (
            Headers(vec![("content-type".into(), "application/json".into())]),
            "[]".into(),
            400,
            "invalid_request",
        ),
        (
            Headers(vec![("content-type".into(), "application/json".into())]),
            r#"{"client_id":5}"#.into(),
            400,
            "invalid_request",
        ),
    ];
    for (hd, body, status, code) in cases {
        assert_error(&par(&e, &mut h, &hd, &body), status, code);
        assert_eq!(par(&e, &mut h, &web_auth(), &good).status, 201);
    }
}

#[test]
fn authorize_errors_shown_or_redirected_rfc6749_4_1_2_1() {
    let (e, mut h) = setup(json!({}));
    // Not trusted yet: shown.
    assert_error(
        &authorize_at(&e, &mut h, "response_type=code", user(), NOW),
        400,
        "invalid_request",
    );
    assert_error(
        &authorize_at(
            &e,
            &mut h,
            "client_id=nobody&response_type=code",
            user(),
            NOW,
        ),
        400,
        "invalid_request",
    );
    assert_error(
        &authorize_at(
            &e,
            &mut h,
            &format!(
                "client_id=web&redirect_uri={}",
                enc("https://evil.example.com/cb")
            ),
            user(),
            NOW,
        ),
        400,
        "invalid_request",
    );
    assert_error(
        &authorize_at(
            &e,
            &mut h,
            "client_id=web&request_uri=urn:ietf:params:oauth:request_uri:nope",
            user(),
            NOW,
        ),
        400,
        "invalid_request",
    );
    // Trusted client and redirect_uri: redirected with error, state and iss.
    let r = authorize_at(
        &e,
        &mut h,
        &format!(
            "client_id=web&redirect_uri={}&response_type=code&state=s1",
            enc(CB)
        ),
        user(),
        NOW,
    );
    let (base, p) = location_params(&r);
    assert_eq!(base, CB);
    assert_eq!(
        param(&p, "error"),
        Some("invalid_request"),
        "PKCE is required by default"
    );
    assert_eq!(param(&p, "state"), Some("s1"));
    assert_eq!(param(&p, "iss"), Some("https://as.example.com"));
    // No user: to the login page with the way back.
    let ru = par_ok(&e, &mut h, "");
    let q = format!("client_id=web&request_uri={}", enc(&ru));
    let r = authorize_at(&e, &mut h, &q, None, NOW);
    assert_eq!(r.status, 303);
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with(
            "https://login.example.com/login?return_to=%2Foauth%2Fauthorize%3Fclient_id%3Dweb"
        ),
        "{loc}"
    );
    // ... and the request_uri was not spent by that.
    let code = code_for(&e, &mut h, &ru);
    assert_eq!(redeem(&e, &mut h, &code, VERIFIER).status, 200);
}

#[test]
fn plain_authorize_and_required_par() {
    let (e, mut h) = setup(json!({}));
    let q = format!("client_id=web&redirect_uri={}&response_type=code&code_challenge={CHALLENGE}&code_challenge_method=S256&state=q", enc(CB));
    let (_, p) = location_params(&authorize_at(&e, &mut h, &q, user(), NOW));
    assert_eq!(
        redeem(&e, &mut h, param(&p, "code").unwrap(), VERIFIER).status,
        200
    );
    let (e, mut h) = setup(json!({"require_pushed_authorization_requests": true}));
    assert_error(
        &authorize_at(&e, &mut h, &q, user(), NOW),
        400,
        "invalid_request",
    );
}

#[test]
fn pushed_parameters_win_over_query_rfc9126_4() {
    let (e, mut h) = setup(json!({}));
    let ru = par_ok(&e, &mut h, "");
    let q = format!(
        "client_id=web&request_uri={}&state=evil&redirect_uri={}&scope=profile",
        enc(&ru),
        enc("https://evil.example.com/")
    );
    let (base, p) = location_params(&authorize_at(&e, &mut h, &q, user(), NOW));
    assert_eq!(base, CB);
    assert_eq!(param(&p, "state"), Some("xyz"));
}

#[test]
fn request_uri_single_use_bound_and_expiring() {
    let (e, mut h) = setup(json!({}));
    let ru = par_ok(&e, &mut h, "");
    // Another client's request_uri.
    let r = authorize_at(
        &e,
        &mut h,
        &format!("client_id=other&request_uri={}", enc(&ru)),
        user(),
        NOW,
    );
    assert_error(&r, 400, "invalid_request");
    code_for(&e, &mut h, &ru);
    // Used.
    assert_error(
        &authorize_at(
            &e,
            &mut h,
            &format!("client_id=web&request_uri={}", enc(&ru)),
            user(),
            NOW,
        ),
        400,
        "invalid_request",
    );
    // Expired (90 s).
    let ru = par_ok(&e, &mut h, "");
    let later = Now {
        unix_ms: NOW.unix_ms + 91_000,
    };
    assert_error(
        &authorize_at(
            &e,
            &mut h,
            &format!("client_id=web&request_uri={}", enc(&ru)),
            user(),
            later,
        ),
        400,
        "invalid_request",
    );
    // Tampered secret.
    let ru = par_ok(&e, &mut h, "");
    let mut t = ru.clone().into_bytes();
    let last = t.len() - 2;
    t[last] = if t[last] == b'A' { b'B' } else { b'A' };
    let t = String::from_utf8(t).unwrap();
    assert_error(
        &authorize_at(
            &e,
            &mut h,
            &format!("client_id=web&request_uri={}", enc(&t)),
            user(),
            NOW,
        ),
        400,
        "invalid_request",
    );
}

#[test]
fn code_checks_pkce_redirect_client_expiry() {
    let (e, mut h) = setup(json!({}));
    let ru = par_ok(&e, &mut h, "");
    let code = code_for(&e, &mut h, &ru);
    let wrong_verifier = "a".repeat(43);
    assert_error(
        &redeem(&e, &mut h, &code, &wrong_verifier),
        400,
        "invalid_grant",
    );
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}",
        enc(CB)
    );
    assert_error(
        &h.token(&e, &web_auth(), body.as_bytes()),
        400,
        "invalid_grant",
    );
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
        enc("https://app.example.com/other")
    );
    assert_error(
        &h.token(&e, &web_auth(), body.as_bytes()),
        400,
        "invalid_grant",
    );
    let other = form_headers(&[("authorization", &basic("other", "other-secret"))]);
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
        enc(CB)
    );
    assert_error(&h.token(&e, &other, body.as_bytes()), 400, "invalid_grant");
    // None of those spent the code.
    assert_eq!(redeem(&e, &mut h, &code, VERIFIER).status, 200);
    // Expired (60 s).
    let ru = par_ok(&e, &mut h, "");
    let code = code_for(&e, &mut h, &ru);
    let later = Now {
        unix_ms: NOW.unix_ms + 61_000,
    };
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
        enc(CB)
    );
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/token",
        &web_auth(),
        body.as_bytes(),
        None,
        later,
    );
    assert_error(&r, 400, "invalid_grant");
    assert_error(
        &redeem(&e, &mut h, "garbage", VERIFIER),
        400,
        "invalid_grant",
    );
}

#[test]
fn replayed_code_fails_and_revokes_its_refresh_family_rfc6749_4_1_2() {
    let (e, mut h) = setup(json!({}));
    let ru = par_ok(&e, &mut h, "");
    let code = code_for(&e, &mut h, &ru);
    let r = redeem(&e, &mut h, &code, VERIFIER);
    let rt = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    assert_error(&redeem(&e, &mut h, &code, VERIFIER), 400, "invalid_grant");
    assert_error(&refresh(&e, &mut h, &rt), 400, "invalid_grant");
}

#[test]
fn concurrent_redemption_has_exactly_one_winner() {
    for _ in 0..200 {
        let (e, mut h) = setup(json!({}));
        let ru = par_ok(&e, &mut h, "");
        let code = code_for(&e, &mut h, &ru);
        let body = format!(
            "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
            enc(CB)
        );
        let req = || Request {
            method: "POST".into(),
            path: "/oauth/token".into(),
            headers: web_auth(),
            body: body.clone().into_bytes(),
            user: None,
            source: None,
            client_cert: None,
        };
        // Both read the live code and allocate their family; then both try to consume it.
        let a = h.until_cas(&e, Endpoint::Token, req(), NOW).unwrap();
        let b = h.until_cas(&e, Endpoint::Token, req(), NOW).unwrap();
        // Run both to completion, one step each in turn.
        let mut done: Vec<Response> = Vec::new();
        let mut running = vec![a, b];
        while !running.is_empty() {
            let mut next = Vec::new();
            for (p, n) in running {
                let ans = h.answer(&e, n, NOW);
                match e.resume(p, ans, &mut SystemRandom) {
                    oauth_edge::engine::Step::Done(r) => done.push(r),
                    oauth_edge::engine::Step::Need(n, p) => next.push((p, n)),
                }
            }
            running = next;
        }
        assert_eq!(done.len(), 2);
        let ok: Vec<&Response> = done.iter().filter(|r| r.status == 200).collect();
        assert_eq!(
            ok.len(),
            1,
            "exactly one winner: {:?}",
            done.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        // The loser's replay revoked the winner's family.
        let rt = json_body(ok[0])["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_error(&refresh(&e, &mut h, &rt), 400, "invalid_grant");
    }
}

#[test]
fn refresh_reuse_revokes_the_family_rfc9700_4_14() {
    // web has a 10 s reuse interval; spa none.
    let (e, mut h) = setup(json!({}));
    let ru = par_ok(&e, &mut h, "");
    let code = code_for(&e, &mut h, &ru);
    let rt1 = json_body(&redeem(&e, &mut h, &code, VERIFIER))["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let rt2 = json_body(&refresh(&e, &mut h, &rt1))["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Within the interval, the previous token is honoured once more (a lost answer).
    let r = refresh(&e, &mut h, &rt1);
    assert_eq!(r.status, 200);
    // After it, reuse revokes everything.
    let later = Now {
        unix_ms: NOW.unix_ms + 11_000,
    };
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/token",
        &web_auth(),
        format!("grant_type=refresh_token&refresh_token={rt1}").as_bytes(),
        None,
        later,
    );
    assert_error(&r, 400, "invalid_grant");
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/token",
        &web_auth(),
        format!("grant_type=refresh_token&refresh_token={rt2}").as_bytes(),
        None,
        later,
    );
    assert_error(&r, 400, "invalid_grant");
    // Tampered and foreign tokens.
    assert_error(
        &refresh(&e, &mut h, &format!("{}A", &rt2[..rt2.len() - 1])),
        400,
        "invalid_grant",
    );
    assert_error(&refresh(&e, &mut h, "rt1.AAAA"), 400, "invalid_grant");
    let (e2, _) = setup(json!({}));
    let mut h2 = Host::without_registry();
    h2.init(&e2);
    assert_error(&refresh(&e2, &mut h2, &rt2), 400, "invalid_grant");
}

#[test]
fn refresh_survives_a_restart_and_another_instance() {
    let cfg = config(json!({}));
    let e = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    let ru = par_ok(&e, &mut h, "");
    let code = code_for(&e, &mut h, &ru);
    let rt1 = json_body(&redeem(&e, &mut h, &code, VERIFIER))["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let rt2 = json_body(&refresh(&e, &mut h, &rt1))["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // A restart: same configuration, empty shared data.
    let e2 = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
    let mut h2 = Host::without_registry();
    h2.init(&e2);
    let r = refresh(&e2, &mut h2, &rt2);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rt3 = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh(&e2, &mut h2, &rt3).status, 200);
    // ... and the instance now tracks the family: rt2 or rt3 again is reuse.
    let later = Now {
        unix_ms: NOW.unix_ms + 11_000,
    };
    let r = h2.request_at(
        &e2,
        "POST",
        "/oauth/token",
        &web_auth(),
        format!("grant_type=refresh_token&refresh_token={rt3}").as_bytes(),
        None,
        later,
    );
    assert_error(&r, 400, "invalid_grant");
}

#[test]
fn cookie_refresh_endpoint_seed_001() {
    let (e, mut h) = setup(json!({}));
    let spa_cb = "https://spa.example.com/cb";
    let q = format!("client_id=spa&redirect_uri={}&response_type=code&scope=openid+read&code_challenge={CHALLENGE}&code_challenge_method=S256", enc(spa_cb));
    let (_, p) = location_params(&authorize_at(&e, &mut h, &q, user(), NOW));
    let body = format!("grant_type=authorization_code&client_id=spa&code={}&redirect_uri={}&code_verifier={VERIFIER}", param(&p, "code").unwrap(), enc(spa_cb));
    let r = h.token(&e, &form_headers(&[]), body.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        json_body(&r).get("refresh_token").is_none(),
        "browser client: cookie only"
    );
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("; Path=/oauth/refresh; ")
            && cookie.contains("Secure; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap().to_string();
    let hd = |origin: Option<&str>, c: &str| {
        let mut v = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("cookie".to_string(), c.to_string()),
        ];
        if let Some(o) = origin {
            v.push(("origin".into(), o.into()));
        }
        Headers(v)
    };
    let post = |h: &mut Host, hd: &Headers, body: &str| {
        h.request_at(&e, "POST", "/oauth/refresh", hd, body.as_bytes(), None, NOW)
    };
    let ok = post(&mut h, &hd(Some("https://spa.example.com"), &value), "{}");
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert!(json_body(&ok)["access_token"].is_string());
    let next = ok
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(next, value);
    // Seed 001 errors.
    assert_error(
        &post(&mut h, &hd(Some("https://evil.example.com"), &next), "{}"),
        400,
        "invalid_request",
    );
    assert_error(
        &post(&mut h, &hd(None, &next), "{}"),
        400,
        "invalid_request",
    );
    assert_error(
        &post(
            &mut h,
            &hd(Some("https://spa.example.com"), "other=1"),
            "{}",
        ),
        400,
        "invalid_request",
    );
    assert_error(
        &post(&mut h, &hd(Some("https://spa.example.com"), &next), "[]"),
        400,
        "invalid_request",
    );
    let form = Headers(vec![
        (
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
        ("cookie".into(), next.clone()),
        ("origin".into(), "https://spa.example.com".into()),
    ]);
    assert_error(&post(&mut h, &form, "{}"), 400, "invalid_request");
    let garbage = post(
        &mut h,
        &hd(Some("https://spa.example.com"), "oauth_edge_rt=rt1.garbage"),
        "{}",
    );
    assert_error(&garbage, 401, "invalid_grant");
    assert!(garbage.header("set-cookie").unwrap().contains("Max-Age=0"));
    // The old cookie again (after the grace-less rotation): reuse → 401 and the family is gone.
    assert_error(
        &post(&mut h, &hd(Some("https://spa.example.com"), &value), "{}"),
        401,
        "invalid_grant",
    );
    assert_error(
        &post(&mut h, &hd(Some("https://spa.example.com"), &next), "{}"),
        401,
        "invalid_grant",
    );
}

#[test]
fn memory_is_bounded_under_churn() {
    let (e, mut h) = setup(json!({}));
    let keys_at_start = h.shared.len();
    let mut later = NOW;
    for i in 0..3_000u64 {
        // Abandoned pushed requests and codes, three seconds apart so old ones expire (64
        // slots, 90 s lifetime: about 30 live at a time). Two seconds kept 45 live, 70 % of the
        // ring, where a 32-probe allocation is refused about once in 10^5 (`store::PROBES`):
        // over 6,000 allocations the test failed now and then.
        later = Now {
            unix_ms: NOW.unix_ms + i * 3_000,
        };
        let body = format!("response_type=code&client_id=web&redirect_uri={CB}&code_challenge={CHALLENGE}&code_challenge_method=S256");
        let r = h.request_at(
            &e,
            "POST",
            "/oauth/pushed-authorization",
            &web_auth(),
            body.as_bytes(),
            None,
            later,
        );
        assert_eq!(
            r.status,
            201,
            "round {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
        let r = authorize_at(
            &e,
            &mut h,
            &format!("client_id=web&request_uri={}", enc(&ru)),
            user(),
            later,
        );
        assert_eq!(r.status, 303);
    }
    assert_eq!(
        h.shared.len(),
        keys_at_start,
        "no key per code or request_uri"
    );
    assert!(
        h.shared.bytes() < 64 * 3 * 1_000,
        "values bounded by the slot count: {}",
        h.shared.bytes()
    );
    let _ = later;
}

#[test]
fn a_full_ring_is_a_clean_server_error() {
    let (e, mut h) = setup(
        json!({"store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 16, "code_slots": 16, "refresh_family_slots": 16, "jti_slots": 16, "revoked_slots": 16}}),
    );
    let body = format!("response_type=code&client_id=web&redirect_uri={CB}&code_challenge={CHALLENGE}&code_challenge_method=S256");
    let mut created = 0;
    let mut refused = 0;
    for _ in 0..40 {
        let r = par(&e, &mut h, &web_auth(), &body);
        match r.status {
            201 => created += 1,
            _ => {
                assert_error(&r, 500, "server_error");
                refused += 1;
            }
        }
    }
    assert!(
        created <= 16 && refused >= 24,
        "{created} created, {refused} refused"
    );
    let later = Now {
        unix_ms: NOW.unix_ms + 91_000,
    };
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/pushed-authorization",
        &web_auth(),
        body.as_bytes(),
        None,
        later,
    );
    assert_eq!(r.status, 201, "slots come back after expiry");
}

#[test]
fn challenge_is_sha256_of_verifier() {
    assert_eq!(B64.encode(Sha256::digest(VERIFIER.as_bytes())), CHALLENGE);
}

#[test]
fn after_a_restart_an_old_refresh_token_is_still_single_use() {
    let cfg = config(
        json!({"store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 16, "jti_slots": 16, "revoked_slots": 16}}),
    );
    let e = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    let ru = par_ok(&e, &mut h, "");
    let code = code_for(&e, &mut h, &ru);
    let rt1 = json_body(&redeem(&e, &mut h, &code, VERIFIER))["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Restart (or another instance): no family record.
    let e2 = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
    let mut h2 = Host::without_registry();
    h2.init(&e2);
    let keys = h2.shared.len();
    let r = refresh(&e2, &mut h2, &rt1);
    assert_eq!(r.status, 200);
    let rt2 = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    // The same old token again, well after the reuse interval: reuse, the family is revoked.
    let later = Now {
        unix_ms: NOW.unix_ms + 11_000,
    };
    for _ in 0..40 {
        let r = h2.request_at(
            &e2,
            "POST",
            "/oauth/token",
            &web_auth(),
            format!("grant_type=refresh_token&refresh_token={rt1}").as_bytes(),
            None,
            later,
        );
        assert_error(&r, 400, "invalid_grant");
    }
    let r = h2.request_at(
        &e2,
        "POST",
        "/oauth/token",
        &web_auth(),
        format!("grant_type=refresh_token&refresh_token={rt2}").as_bytes(),
        None,
        later,
    );
    assert_error(&r, 400, "invalid_grant");
    // Forty replays took no slots: a new login still gets its family (16 slots in all).
    assert_eq!(h2.shared.len(), keys);
    let ru = par_ok(&e2, &mut h2, "");
    let code = code_for(&e2, &mut h2, &ru);
    assert_eq!(redeem(&e2, &mut h2, &code, VERIFIER).status, 200);
}

#[test]
fn the_inline_store_runs_the_same_flow() {
    let (e, mut h) = setup(json!({}));
    let body = format!("response_type=code&client_id=web&redirect_uri={CB}&scope=openid+read&state=xyz&code_challenge={CHALLENGE}&code_challenge_method=S256");
    let r = h.request_inline(
        &e,
        "POST",
        "/oauth/pushed-authorization",
        &web_auth(),
        body.as_bytes(),
        None,
    );
    assert_eq!(r.status, 201);
    let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
    let r = h.request_inline(
        &e,
        "GET",
        &format!("/oauth/authorize?client_id=web&request_uri={}", enc(&ru)),
        &Headers::default(),
        b"",
        user(),
    );
    let (_, p) = location_params(&r);
    let body = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={VERIFIER}",
        param(&p, "code").unwrap(),
        enc(CB)
    );
    let r = h.request_inline(
        &e,
        "POST",
        "/oauth/token",
        &web_auth(),
        body.as_bytes(),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rt = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    let first = format!("grant_type=refresh_token&refresh_token={rt}");
    let r = h.request_inline(
        &e,
        "POST",
        "/oauth/token",
        &web_auth(),
        first.as_bytes(),
        None,
    );
    assert_eq!(r.status, 200);
    let rt2 = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    let second = format!("grant_type=refresh_token&refresh_token={rt2}");
    assert_eq!(
        h.request_inline(
            &e,
            "POST",
            "/oauth/token",
            &web_auth(),
            second.as_bytes(),
            None
        )
        .status,
        200
    );
    // Two generations back: reuse, whatever the reuse interval.
    assert_error(
        &h.request_inline(
            &e,
            "POST",
            "/oauth/token",
            &web_auth(),
            first.as_bytes(),
            None,
        ),
        400,
        "invalid_grant",
    );
}

/// Issue 13: one owner holds a bounded share of each ring (10 % of it per record lifetime by
/// default): a logged-in user's codes, a public client's pushed requests per source address.
/// Past the share: 429 with Retry-After for that owner only; everybody else still gets slots.
#[test]
fn one_owner_holds_a_bounded_share_of_each_ring() {
    let (e, mut h) = setup(
        json!({"store": {"request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 64}}),
    );
    let share = 64 / 10;
    let query = format!("response_type=code&client_id=web&redirect_uri={CB}&scope=read&code_challenge={CHALLENGE}&code_challenge_method=S256");
    let as_user = |e: &Engine, h: &mut Host, sub: &str| {
        let u = User {
            sub: sub.into(),
            auth_time: Some(NOW.secs() - 30),
            session: None,
        };
        authorize_at(e, h, &query, Some(u), NOW)
    };
    for _ in 0..share {
        assert_eq!(as_user(&e, &mut h, "mallory").status, 303);
    }
    let r = as_user(&e, &mut h, "mallory");
    assert_error(&r, 429, "rate_limit_exceeded");
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        as_user(&e, &mut h, "alice").status,
        303,
        "another user is not affected"
    );

    // A public client's pushed requests are charged per source address.
    let body = format!("response_type=code&client_id=spa&redirect_uri=https://spa.example.com/cb&scope=read&code_challenge={CHALLENGE}&code_challenge_method=S256");
    h.source = Some("198.51.100.66".into());
    for _ in 0..share {
        assert_eq!(par(&e, &mut h, &form_headers(&[]), &body).status, 201);
    }
    assert_error(
        &par(&e, &mut h, &form_headers(&[]), &body),
        429,
        "rate_limit_exceeded",
    );
    h.source = Some("192.0.2.7".into());
    assert_eq!(
        par(&e, &mut h, &form_headers(&[]), &body).status,
        201,
        "the client's users elsewhere"
    );
    // A confidential client has its own share, whoever fills the public one.
    let web = format!("response_type=code&client_id=web&redirect_uri={CB}&scope=read&code_challenge={CHALLENGE}&code_challenge_method=S256");
    assert_eq!(par(&e, &mut h, &web_auth(), &web).status, 201);
}

/// Issue 16 item 5 (OIDC Registration §2): a client's registered id_token_signed_response_alg
/// picks the ID token's key; without one (and without an RS256 key) the active key signs; a
/// registered algorithm no configured key has is refused at start.
#[test]
fn id_token_signed_response_alg_picks_the_key() {
    let es = generate_jwk(Alg::ES256, "k-es", &mut SystemRandom).unwrap();
    let ed = generate_jwk(Alg::EdDSA, "k-ed", &mut SystemRandom).unwrap();
    let mut cfg = config(json!({"signing_keys": [es, ed]}));
    cfg["clients"][0]["id_token_signed_response_alg"] = json!("EdDSA");
    let e = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    let ru = par_ok(&e, &mut h, "");
    let code = code_for(&e, &mut h, &ru);
    let v = json_body(&redeem(&e, &mut h, &code, VERIFIER));
    let (ih, ic) = jwt_parts(v["id_token"].as_str().unwrap());
    assert_eq!(
        (ih["alg"].as_str(), ih["kid"].as_str()),
        (Some("EdDSA"), Some("k-ed"))
    );
    let full = sha2::Sha512::digest(v["access_token"].as_str().unwrap().as_bytes());
    assert_eq!(
        ic["at_hash"],
        B64.encode(&full[..32]),
        "at_hash by the ID token's algorithm"
    );
    let (ah, _) = jwt_parts(v["access_token"].as_str().unwrap());
    assert_eq!(ah["alg"], "ES256", "access tokens keep the active key");
    // Registered, but no key of it.
    let mut bad = config(json!({}));
    bad["clients"][0]["id_token_signed_response_alg"] = json!("RS256");
    let err = Config::from_json(bad.to_string().as_bytes()).err().unwrap();
    assert_eq!(err.field, "clients[0]", "{err}");
    assert!(
        err.problem.contains("id_token_signed_response_alg RS256"),
        "{err}"
    );
    let mut none = config(json!({}));
    none["clients"][0]["id_token_signed_response_alg"] = json!("none");
    assert!(Config::from_json(none.to_string().as_bytes()).is_err());
}
