//! Token policy edges through the core (issue 12, items 4–8): who may introspect what, what a
//! replayed code takes down with it, the registered authentication method, the seeds' details
//! (JSON PAR scope, /oauth/refresh's Content-Type and JSON answer, a challenge on every 401),
//! and refresh tokens under a reuse interval and under the FAPI 2.0 profile.

mod common;

use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::Engine;
use oauth_edge::flow::{Now, User};
use oauth_edge::http::{Headers, Response};
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};

const ISS: &str = "https://as.example.com";
const API: &str = "https://api.example.com";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const CB: &str = "https://app.example.com/cb";
const SPA_CB: &str = "https://spa.example.com/cb";
const SPA_ORIGIN: &str = "https://spa.example.com";

fn config(extra: Value) -> Value {
    let code_client = |id: &str, grants: Value, extra: Value| {
        let mut c = json!({"client_id": id, "client_secret": hash_secret(&format!("{id}-secret")),
                           "grant_types": grants, "scope": "openid read", "redirect_uris": [CB]});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let mut v = json!({
        "issuer": ISS,
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "access_token_audience": API,
        "user": {"metadata_namespace": "envoy.filters.http.jwt_authn", "metadata_key": "user"},
        "store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 64,
                  "jti_slots": 256, "revoked_slots": 256},
        "token_exchange": {},
        "clients": [
            code_client("web", json!(["authorization_code", "refresh_token"]), json!({})),
            code_client("nort", json!(["authorization_code"]), json!({})),
            code_client("grace", json!(["authorization_code", "refresh_token"]),
                        json!({"refresh_token_reuse_interval": 30})),
            {"client_id": "spa", "token_endpoint_auth_method": "none",
             "grant_types": ["authorization_code", "refresh_token"], "scope": "openid read",
             "redirect_uris": [SPA_CB], "refresh_token_cookie": true},
            {"client_id": "spa-json", "token_endpoint_auth_method": "none",
             "grant_types": ["authorization_code", "refresh_token"], "scope": "openid read",
             "redirect_uris": [SPA_CB], "refresh_token_cookie": true,
             "refresh_endpoint_returns_refresh_token": true},
            {"client_id": "svc", "client_secret": hash_secret("svc-secret"),
             "grant_types": ["client_credentials"], "scope": "read"},
            {"client_id": "post", "client_secret": hash_secret("post-secret"),
             "token_endpoint_auth_method": "client_secret_post",
             "grant_types": ["client_credentials"], "scope": "read"},
            {"client_id": "gw", "client_secret": hash_secret("gw-secret"),
             "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"], "scope": "openid read",
             "token_exchange_audiences": ["https://orders.example.com"],
             "token_exchange_subject_audiences": [API]},
            {"client_id": "rs-api", "client_secret": hash_secret("rs-api-secret"),
             "grant_types": ["client_credentials"], "scope": "", "resource_server_audiences": [API]},
            {"client_id": "rs-orders", "client_secret": hash_secret("rs-orders-secret"),
             "grant_types": ["client_credentials"], "scope": "",
             "resource_server_audiences": ["https://orders.example.com"]},
            {"client_id": "pub", "token_endpoint_auth_method": "none",
             "grant_types": ["authorization_code"], "scope": "read", "redirect_uris": [SPA_CB]}
        ]
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

fn setup(extra: Value) -> (Engine, Host) {
    let e = Engine::new(Config::from_json(config(extra).to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    (e, h)
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn secret_auth(id: &str) -> Headers {
    form_headers(&[("authorization", &basic(id, &format!("{id}-secret")))])
}

fn post_at(
    e: &Engine,
    h: &mut Host,
    path: &str,
    headers: &Headers,
    body: &str,
    now: Now,
) -> Response {
    h.request_at(e, "POST", path, headers, body.as_bytes(), None, now)
}

fn at(secs_later: u64) -> Now {
    Now {
        unix_ms: NOW.unix_ms + secs_later * 1000,
    }
}

/// A code for `client_id` (plain authorize: PAR is not required here).
fn code(e: &Engine, h: &mut Host, client_id: &str, redirect_uri: &str) -> String {
    let q = format!(
        "client_id={client_id}&redirect_uri={}&response_type=code&scope=openid+read&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256",
        enc(redirect_uri)
    );
    let user = Some(User {
        sub: "alice".into(),
        auth_time: Some(NOW.secs() - 10),
        session: None,
    });
    let r = h.request_at(
        e,
        "GET",
        &format!("/oauth/authorize?{q}"),
        &Headers::default(),
        b"",
        user,
        NOW,
    );
    assert_eq!(r.status, 303, "{r:?}");
    let loc = r.header("location").unwrap();
    let code = loc
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap();
    percent_encoding::percent_decode_str(code)
        .decode_utf8()
        .unwrap()
        .to_string()
}

/// Redeems a code of a confidential client (Basic).
fn redeem(e: &Engine, h: &mut Host, client_id: &str, code: &str) -> Response {
    let body = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={VERIFIER}",
        enc(code),
        enc(CB)
    );
    post_at(e, h, "/oauth/token", &secret_auth(client_id), &body, NOW)
}

fn tokens(r: &Response) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    json_body(r)
}

/// The refresh cookie (`name=value`) a browser client's code flow ends with.
fn browser_cookie(e: &Engine, h: &mut Host, client_id: &str) -> String {
    let c = code(e, h, client_id, SPA_CB);
    let body = format!(
        "grant_type=authorization_code&client_id={client_id}&code={}&redirect_uri={}&code_verifier={VERIFIER}",
        enc(&c),
        enc(SPA_CB)
    );
    let r = post_at(e, h, "/oauth/token", &form_headers(&[]), &body, NOW);
    assert!(tokens(&r).get("refresh_token").is_none(), "cookie only");
    set_cookie(&r).unwrap()
}

fn set_cookie(r: &Response) -> Option<String> {
    r.header("set-cookie")
        .map(|c| c.split(';').next().unwrap().to_string())
}

fn cookie_post(e: &Engine, h: &mut Host, cookie: &str, content_type: Option<&str>) -> Response {
    let mut hd = vec![
        ("cookie".to_string(), cookie.to_string()),
        ("origin".to_string(), SPA_ORIGIN.to_string()),
    ];
    if let Some(ct) = content_type {
        hd.push(("content-type".into(), ct.into()));
    }
    post_at(e, h, "/oauth/refresh", &Headers(hd), "{}", NOW)
}

// ------------------------------------------------------------------------------ item 6
#[test]
fn rfc7591_2_the_registered_secret_method_only() {
    let (e, mut h) = setup(json!({}));
    let cc = "grant_type=client_credentials";
    let post_body = |id: &str, s: &str| format!("{cc}&client_id={id}&client_secret={s}");
    let basic_client_by_post = post_at(
        &e,
        &mut h,
        "/oauth/token",
        &form_headers(&[]),
        &post_body("svc", "svc-secret"),
        NOW,
    );
    assert_error(&basic_client_by_post, 401, "invalid_client");
    let post_client_by_basic = post_at(&e, &mut h, "/oauth/token", &secret_auth("post"), cc, NOW);
    assert_error(&post_client_by_basic, 401, "invalid_client");
    assert_eq!(
        post_client_by_basic.header("www-authenticate"),
        Some("Basic realm=\"oauth-edge\"")
    );
    tokens(&post_at(
        &e,
        &mut h,
        "/oauth/token",
        &secret_auth("svc"),
        cc,
        NOW,
    ));
    tokens(&post_at(
        &e,
        &mut h,
        "/oauth/token",
        &form_headers(&[]),
        &post_body("post", "post-secret"),
        NOW,
    ));
}

// ------------------------------------------------------------------------------ item 8
#[test]
fn seed_002_json_par_requires_scope_the_form_does_not() {
    let (e, mut h) = setup(json!({}));
    let json_ct = Headers(vec![
        ("content-type".into(), "application/json".into()),
        ("authorization".into(), basic("web", "web-secret")),
    ]);
    let body = |scope: Value| {
        let mut b = json!({"client_id": "web", "redirect_uri": CB, "response_type": "code",
                           "code_challenge": CHALLENGE, "code_challenge_method": "S256"});
        if !scope.is_null() {
            b["scope"] = scope;
        }
        b.to_string()
    };
    for scope in [Value::Null, json!(""), json!(" ")] {
        let r = post_at(
            &e,
            &mut h,
            "/oauth/pushed-authorization",
            &json_ct,
            &body(scope),
            NOW,
        );
        assert_error(&r, 400, "invalid_request");
        assert!(json_body(&r)["error_description"]
            .as_str()
            .unwrap()
            .contains("scope"));
    }
    let explicit_null = r#"{"client_id":"web","redirect_uri":"https://app.example.com/cb","response_type":"code","scope":null,"code_challenge":"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM","code_challenge_method":"S256"}"#;
    assert_error(
        &post_at(
            &e,
            &mut h,
            "/oauth/pushed-authorization",
            &json_ct,
            explicit_null,
            NOW,
        ),
        400,
        "invalid_request",
    );
    let r = post_at(
        &e,
        &mut h,
        "/oauth/pushed-authorization",
        &json_ct,
        &body(json!("read")),
        NOW,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // RFC 9126's form body: scope stays optional (RFC 6749 §3.3).
    let form = format!(
        "response_type=code&redirect_uri={}&code_challenge={CHALLENGE}&code_challenge_method=S256",
        enc(CB)
    );
    let r = post_at(
        &e,
        &mut h,
        "/oauth/pushed-authorization",
        &secret_auth("web"),
        &form,
        NOW,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn seed_001_refresh_needs_its_content_type_and_may_answer_the_refresh_token() {
    let (e, mut h) = setup(json!({}));
    let cookie = browser_cookie(&e, &mut h, "spa");
    // No Content-Type at all: refused like a wrong one, nothing rotated, no cookie touched.
    let r = cookie_post(&e, &mut h, &cookie, None);
    assert_error(&r, 400, "invalid_request");
    assert!(r.header("set-cookie").is_none());
    let r = cookie_post(&e, &mut h, &cookie, Some("application/json"));
    let body = tokens(&r);
    assert!(body.get("refresh_token").is_none(), "the cookie carries it");
    let next = set_cookie(&r).unwrap();
    assert_ne!(next, cookie);
    // A 401 of this endpoint challenges with the cookie scheme, not Basic.
    let r = cookie_post(&e, &mut h, &cookie, Some("application/json"));
    assert_error(&r, 401, "invalid_grant");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Cookie realm=\"oauth-edge\"")
    );

    // refresh_endpoint_returns_refresh_token: the same new token in the JSON too.
    let cookie = browser_cookie(&e, &mut h, "spa-json");
    let r = cookie_post(&e, &mut h, &cookie, Some("application/json"));
    let body = tokens(&r);
    let next = set_cookie(&r).unwrap();
    assert_eq!(
        next,
        format!("oauth_edge_rt={}", body["refresh_token"].as_str().unwrap())
    );
    let r = cookie_post(&e, &mut h, &next, Some("application/json"));
    assert!(tokens(&r)["refresh_token"].is_string());
}

#[test]
fn refresh_endpoint_returns_refresh_token_needs_the_cookie() {
    let mut v = config(json!({}));
    v["clients"] = json!([{"client_id": "x", "token_endpoint_auth_method": "none",
                           "refresh_endpoint_returns_refresh_token": true}]);
    let err = Config::from_json(v.to_string().as_bytes()).err().unwrap();
    assert_eq!(err.field, "clients[0]", "{err}");
    assert!(err.problem.contains("refresh_token_cookie"), "{err}");
}

#[test]
fn rfc9110_every_401_carries_a_challenge() {
    let (e, mut h) = setup(json!({}));
    let cases: Vec<(&str, Headers, String)> = vec![
        // The right secret the wrong way, a wrong one in the body, none at all, unknown client.
        ("/oauth/token", form_headers(&[]), "grant_type=client_credentials&client_id=post&client_secret=nope".into()),
        ("/oauth/token", form_headers(&[]), "grant_type=client_credentials".into()),
        ("/oauth/token", form_headers(&[]), "grant_type=client_credentials&client_id=nobody&client_secret=x".into()),
        // A malformed client assertion.
        ("/oauth/token", form_headers(&[]), "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=x.y.z".into()),
        // A public client at introspection; revocation and PAR by an unknown client.
        ("/oauth/introspect", form_headers(&[]), "token=x&client_id=pub".into()),
        ("/oauth/revoke", form_headers(&[]), "token=x&client_id=nobody&client_secret=x".into()),
        ("/oauth/pushed-authorization", form_headers(&[]), "client_id=nobody&client_secret=x".into()),
    ];
    for (path, hd, body) in cases {
        let r = post_at(&e, &mut h, path, &hd, &body, NOW);
        assert_error(&r, 401, "invalid_client");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"oauth-edge\""),
            "{path} {body}"
        );
    }
}

#[test]
fn fapi2_401s_challenge_private_key_jwt_except_after_basic() {
    let mut v = config(json!({"profile": "fapi2"}));
    // The profile's checks on keys and lifetimes pass with these settings; no refresh cookie.
    v["clients"] = json!([{"client_id": "svc", "client_secret": hash_secret("svc-secret"),
                           "grant_types": ["client_credentials"], "scope": "read"}]);
    let e = Engine::new(Config::from_json(v.to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    let r = post_at(
        &e,
        &mut h,
        "/oauth/token",
        &form_headers(&[]),
        "grant_type=client_credentials&client_id=svc&client_secret=svc-secret",
        NOW,
    );
    assert_error(&r, 401, "invalid_client");
    assert_eq!(
        r.header("www-authenticate"),
        Some("private_key_jwt realm=\"oauth-edge\"")
    );
    let r = post_at(
        &e,
        &mut h,
        "/oauth/token",
        &secret_auth("svc"),
        "grant_type=client_credentials",
        NOW,
    );
    assert_error(&r, 401, "invalid_client");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"oauth-edge\"")
    );
}

// ------------------------------------------------------------------------------ item 5
fn introspect(e: &Engine, h: &mut Host, by: &str, token: &str, now: Now) -> Value {
    let r = post_at(
        e,
        h,
        "/oauth/introspect",
        &secret_auth(by),
        &format!("token={}", enc(token)),
        now,
    );
    tokens(&r)
}

fn active(e: &Engine, h: &mut Host, by: &str, token: &str) -> bool {
    let v = introspect(e, h, by, token, NOW);
    assert!(v["active"].is_boolean(), "{v}");
    v["active"] == json!(true)
}

fn refresh(e: &Engine, h: &mut Host, client_id: &str, rt: &str, now: Now) -> Response {
    post_at(
        e,
        h,
        "/oauth/token",
        &secret_auth(client_id),
        &format!("grant_type=refresh_token&refresh_token={}", enc(rt)),
        now,
    )
}

fn exchange(e: &Engine, h: &mut Host, subject: &str) -> Response {
    let body = format!(
        "grant_type={}&subject_token={}&subject_token_type={}",
        enc("urn:ietf:params:oauth:grant-type:token-exchange"),
        enc(subject),
        enc("urn:ietf:params:oauth:token-type:access_token")
    );
    post_at(e, h, "/oauth/token", &secret_auth("gw"), &body, NOW)
}

#[test]
fn rfc6749_4_1_2_a_replayed_code_denies_its_access_token_without_a_refresh_family() {
    let (e, mut h) = setup(json!({}));
    let c = code(&e, &mut h, "nort", CB);
    let t = tokens(&redeem(&e, &mut h, "nort", &c));
    assert!(t.get("refresh_token").is_none());
    let at = t["access_token"].as_str().unwrap().to_string();
    assert!(active(&e, &mut h, "nort", &at));
    tokens(&exchange(&e, &mut h, &at));
    // The replay fails, and the access token the code gave is dead for introspection and
    // token exchange (RFC 9700 §4.5).
    assert_error(&redeem(&e, &mut h, "nort", &c), 400, "invalid_grant");
    assert!(!active(&e, &mut h, "nort", &at));
    assert_error(&exchange(&e, &mut h, &at), 400, "invalid_request");
}

#[test]
fn rfc6749_4_1_2_a_replayed_code_denies_every_access_token_of_its_grant() {
    let (e, mut h) = setup(json!({}));
    let c = code(&e, &mut h, "web", CB);
    let t = tokens(&redeem(&e, &mut h, "web", &c));
    let at1 = t["access_token"].as_str().unwrap().to_string();
    let t2 = tokens(&refresh(
        &e,
        &mut h,
        "web",
        t["refresh_token"].as_str().unwrap(),
        NOW,
    ));
    let at2 = t2["access_token"].as_str().unwrap().to_string();
    let t3 = tokens(&refresh(
        &e,
        &mut h,
        "web",
        t2["refresh_token"].as_str().unwrap(),
        NOW,
    ));
    let at3 = t3["access_token"].as_str().unwrap().to_string();
    // An unrelated grant of the same client and user stays untouched.
    let other = tokens(&{
        let c = code(&e, &mut h, "web", CB);
        redeem(&e, &mut h, "web", &c)
    });
    let other_at = other["access_token"].as_str().unwrap().to_string();
    for at in [&at1, &at2, &at3, &other_at] {
        assert!(active(&e, &mut h, "web", at));
    }
    assert_error(&redeem(&e, &mut h, "web", &c), 400, "invalid_grant");
    for at in [&at1, &at2, &at3] {
        assert!(!active(&e, &mut h, "web", at));
        assert_error(&exchange(&e, &mut h, at), 400, "invalid_request");
    }
    assert_error(
        &refresh(
            &e,
            &mut h,
            "web",
            t3["refresh_token"].as_str().unwrap(),
            NOW,
        ),
        400,
        "invalid_grant",
    );
    assert!(active(&e, &mut h, "web", &other_at));
    tokens(&refresh(
        &e,
        &mut h,
        "web",
        other["refresh_token"].as_str().unwrap(),
        NOW,
    ));
}

#[test]
fn rfc7009_2_1_revoking_a_refresh_token_denies_the_access_tokens_of_its_grant() {
    let (e, mut h) = setup(json!({}));
    let t = tokens(&{
        let c = code(&e, &mut h, "web", CB);
        redeem(&e, &mut h, "web", &c)
    });
    let t2 = tokens(&refresh(
        &e,
        &mut h,
        "web",
        t["refresh_token"].as_str().unwrap(),
        NOW,
    ));
    let r = post_at(
        &e,
        &mut h,
        "/oauth/revoke",
        &secret_auth("web"),
        &format!("token={}", enc(t2["refresh_token"].as_str().unwrap())),
        NOW,
    );
    assert_eq!(r.status, 200);
    for at in [&t["access_token"], &t2["access_token"]] {
        assert!(!active(&e, &mut h, "web", at.as_str().unwrap()));
    }
}

#[test]
fn rfc9700_4_14_2_reuse_detection_denies_the_access_tokens_of_the_family() {
    let (e, mut h) = setup(json!({}));
    let t = tokens(&{
        let c = code(&e, &mut h, "web", CB);
        redeem(&e, &mut h, "web", &c)
    });
    let rt1 = t["refresh_token"].as_str().unwrap().to_string();
    let t2 = tokens(&refresh(&e, &mut h, "web", &rt1, NOW));
    assert_error(&refresh(&e, &mut h, "web", &rt1, NOW), 400, "invalid_grant");
    for at in [&t["access_token"], &t2["access_token"]] {
        assert!(!active(&e, &mut h, "web", at.as_str().unwrap()));
    }
}

#[test]
fn a_family_names_its_newest_live_access_tokens_only() {
    // Six refreshes within one access token lifetime: the family record keeps the newest four
    // (bounded slots); the two oldest then live out their lifetime after a code replay.
    let (e, mut h) = setup(json!({}));
    let c = code(&e, &mut h, "web", CB);
    let t = tokens(&redeem(&e, &mut h, "web", &c));
    let mut ats = vec![t["access_token"].as_str().unwrap().to_string()];
    let mut rt = t["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..5 {
        let n = tokens(&refresh(&e, &mut h, "web", &rt, NOW));
        ats.push(n["access_token"].as_str().unwrap().to_string());
        rt = n["refresh_token"].as_str().unwrap().to_string();
    }
    assert_error(&redeem(&e, &mut h, "web", &c), 400, "invalid_grant");
    let alive: Vec<bool> = ats.iter().map(|a| active(&e, &mut h, "web", a)).collect();
    // The code's own token is denied from the code record; of the refreshes', the last four.
    assert_eq!(alive, [false, true, false, false, false, false]);
}

// ------------------------------------------------------------------------------ item 4
#[test]
fn rfc7662_4_an_access_token_is_introspected_by_its_client_and_its_audiences_servers_only() {
    let (e, mut h) = setup(json!({}));
    let c = code(&e, &mut h, "web", CB);
    let t = tokens(&redeem(&e, &mut h, "web", &c));
    let at = t["access_token"].as_str().unwrap().to_string();
    for by in ["web", "rs-api"] {
        let v = introspect(&e, &mut h, by, &at, NOW);
        assert_eq!(
            (v["active"].clone(), v["client_id"].clone()),
            (json!(true), json!("web"))
        );
        assert_eq!(v["aud"], API);
    }
    // Another resource server, another confidential client, the token exchange client: exactly
    // what a token that does not exist gets.
    for by in ["rs-orders", "svc", "gw", "nort"] {
        assert_eq!(
            introspect(&e, &mut h, by, &at, NOW),
            json!({"active": false}),
            "{by}"
        );
    }
    // Public clients may not ask at all (§2.1).
    let r = post_at(
        &e,
        &mut h,
        "/oauth/introspect",
        &form_headers(&[]),
        &format!("token={}&client_id=pub", enc(&at)),
        NOW,
    );
    assert_error(&r, 401, "invalid_client");

    // A token for another audience (token exchange to orders): its client and that audience's
    // resource server see it; the default audience's does not.
    let body = format!(
        "grant_type={}&subject_token={}&subject_token_type={}&audience={}",
        enc("urn:ietf:params:oauth:grant-type:token-exchange"),
        enc(&at),
        enc("urn:ietf:params:oauth:token-type:access_token"),
        enc("https://orders.example.com")
    );
    let x = tokens(&post_at(
        &e,
        &mut h,
        "/oauth/token",
        &secret_auth("gw"),
        &body,
        NOW,
    ));
    let xat = x["access_token"].as_str().unwrap();
    assert_eq!(introspect(&e, &mut h, "gw", xat, NOW)["active"], true);
    assert_eq!(
        introspect(&e, &mut h, "rs-orders", xat, NOW)["active"],
        true
    );
    for by in ["rs-api", "web"] {
        assert_eq!(
            introspect(&e, &mut h, by, xat, NOW),
            json!({"active": false}),
            "{by}"
        );
    }
}

#[test]
fn rfc7662_2_1_a_refresh_token_is_introspected_by_its_client_only() {
    let (e, mut h) = setup(json!({}));
    let c = code(&e, &mut h, "web", CB);
    let t = tokens(&redeem(&e, &mut h, "web", &c));
    let rt = t["refresh_token"].as_str().unwrap();
    let v = introspect(&e, &mut h, "web", rt, NOW);
    assert_eq!(
        (v["active"].clone(), v["token_type"].clone()),
        (json!(true), json!("refresh_token"))
    );
    for by in ["rs-api", "grace", "svc"] {
        assert_eq!(
            introspect(&e, &mut h, by, rt, NOW),
            json!({"active": false}),
            "{by}"
        );
    }
}

// ------------------------------------------------------------------------------ item 7
fn rt_of(r: &Response) -> String {
    tokens(r)["refresh_token"].as_str().unwrap().to_string()
}

#[test]
fn rfc9700_4_14_2_the_reuse_interval_grace_is_once_per_generation() {
    let (e, mut h) = setup(json!({}));
    let c = code(&e, &mut h, "grace", CB);
    let rt0 = rt_of(&redeem(&e, &mut h, "grace", &c));
    // The answer to this rotation is lost ...
    let _lost = rt_of(&refresh(&e, &mut h, "grace", &rt0, at(1)));
    // ... the client retries with rt0 within the interval: served (the current generation).
    let rt1 = rt_of(&refresh(&e, &mut h, "grace", &rt0, at(2)));
    // Not twice: rt0 a third time is reuse, and the family is gone.
    assert_error(
        &refresh(&e, &mut h, "grace", &rt0, at(3)),
        400,
        "invalid_grant",
    );
    assert_error(
        &refresh(&e, &mut h, "grace", &rt1, at(4)),
        400,
        "invalid_grant",
    );

    // Past the interval there is no grace at all.
    let c = code(&e, &mut h, "grace", CB);
    let rt0 = rt_of(&redeem(&e, &mut h, "grace", &c));
    let _lost = rt_of(&refresh(&e, &mut h, "grace", &rt0, at(1)));
    assert_error(
        &refresh(&e, &mut h, "grace", &rt0, at(32)),
        400,
        "invalid_grant",
    );

    // Lost answers that are not back to back each get their grace.
    let c = code(&e, &mut h, "grace", CB);
    let rt0 = rt_of(&redeem(&e, &mut h, "grace", &c));
    let _lost = rt_of(&refresh(&e, &mut h, "grace", &rt0, at(1)));
    let rt1 = rt_of(&refresh(&e, &mut h, "grace", &rt0, at(2)));
    let rt2 = rt_of(&refresh(&e, &mut h, "grace", &rt1, at(3)));
    let _lost = rt_of(&refresh(&e, &mut h, "grace", &rt2, at(4)));
    let rt3 = rt_of(&refresh(&e, &mut h, "grace", &rt2, at(5)));
    tokens(&refresh(&e, &mut h, "grace", &rt3, at(6)));
}

#[test]
fn rfc9700_4_14_2_two_holders_cannot_take_turns_inside_the_reuse_interval() {
    // A thief and the client hold the same refresh token. Each refresh lands inside the
    // interval after the other's: without a bound the grace would hand each the other's next
    // generation forever. The second use of a twin generation trips reuse detection.
    let (e, mut h) = setup(json!({}));
    let c = code(&e, &mut h, "grace", CB);
    let t = tokens(&redeem(&e, &mut h, "grace", &c));
    let shared = t["refresh_token"].as_str().unwrap().to_string();
    let client1 = rt_of(&refresh(&e, &mut h, "grace", &shared, at(1)));
    let thief1 = tokens(&refresh(&e, &mut h, "grace", &shared, at(2)));
    let client2 = tokens(&refresh(&e, &mut h, "grace", &client1, at(3)));
    let r = refresh(
        &e,
        &mut h,
        "grace",
        thief1["refresh_token"].as_str().unwrap(),
        at(4),
    );
    assert_error(&r, 400, "invalid_grant");
    // The family is revoked: the client's newest token too, and every access token it named.
    assert_error(
        &refresh(
            &e,
            &mut h,
            "grace",
            client2["refresh_token"].as_str().unwrap(),
            at(5),
        ),
        400,
        "invalid_grant",
    );
    for at in [
        &t["access_token"],
        &thief1["access_token"],
        &client2["access_token"],
    ] {
        assert!(!active(&e, &mut h, "grace", at.as_str().unwrap()));
    }

    // The other order: the thief refreshes first, the client's grace twin then collides.
    let c = code(&e, &mut h, "grace", CB);
    let shared = rt_of(&redeem(&e, &mut h, "grace", &c));
    let thief1 = rt_of(&refresh(&e, &mut h, "grace", &shared, at(1)));
    let client1 = rt_of(&refresh(&e, &mut h, "grace", &shared, at(2)));
    let _thief2 = rt_of(&refresh(&e, &mut h, "grace", &thief1, at(3)));
    assert_error(
        &refresh(&e, &mut h, "grace", &client1, at(4)),
        400,
        "invalid_grant",
    );
}
