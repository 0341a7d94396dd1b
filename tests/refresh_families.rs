//! Refresh families in buckets (issue #13 item 6) through the core: many families per slot, the
//! access tokens of a family named by derived `jti`s (what revocation denies), a family recorded
//! afresh after a restart, and a full ring's clean error.

mod common;

use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::Engine;
use oauth_edge::flow::{HttpAnswer, Now, User};
use oauth_edge::grants::refresh_token::access_token_jti;
use oauth_edge::http::Call as HttpCall;
use oauth_edge::http::{Headers, Response};
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;
use oauth_edge::sealed;
use serde_json::{json, Value};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const CB: &str = "https://app.example.com/cb";

fn config(slots: u32) -> String {
    let client = |id: &str, grants: Value, extra: Value| {
        let mut c = json!({"client_id": id, "client_secret": hash_secret(&format!("{id}-secret")),
                           "grant_types": grants, "scope": "openid read", "redirect_uris": [CB]});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "user": {"metadata_namespace": "envoy.filters.http.jwt_authn", "metadata_key": "user"},
        "lifetimes": {"refresh_token": "3600s"},
        "store": {"request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": slots,
                  "jti_slots": 256, "revoked_slots": 256},
        "password_grant": {"cluster": "users", "path": "/verify"},
        "clients": [
            client("web", json!(["authorization_code", "refresh_token"]),
                   json!({"refresh_token_reuse_interval": 30})),
            client("legacy", json!(["password", "refresh_token"]), json!({}))
        ]
    })
    .to_string()
}

fn setup(slots: u32) -> (Engine, Host) {
    let e = Engine::new(Config::from_json(config(slots).as_bytes()).unwrap());
    let h = host_for(&e);
    (e, h)
}

fn host_for(e: &Engine) -> Host {
    let mut h = Host::without_registry();
    h.init(e);
    // The password grant's credential check: everybody is somebody.
    h.http = Box::new(|call: &HttpCall| {
        let v: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
        HttpAnswer {
            status: Some(200),
            body: json!({"sub": v["username"]}).to_string().into_bytes(),
        }
    });
    h
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn post(e: &Engine, h: &mut Host, path: &str, id: &str, body: &str, now: Now) -> Response {
    let auth = basic(id, &format!("{id}-secret"));
    h.request_at(
        e,
        "POST",
        path,
        &form_headers(&[("authorization", &auth)]),
        body.as_bytes(),
        None,
        now,
    )
}

fn at(secs_later: u64) -> Now {
    Now {
        unix_ms: NOW.unix_ms + secs_later * 1000,
    }
}

fn tokens(r: &Response) -> (String, String) {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_body(r);
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

fn login(e: &Engine, h: &mut Host, user: &str, now: Now) -> Response {
    post(
        e,
        h,
        "/oauth/token",
        "legacy",
        &format!("grant_type=password&username={user}&password=x"),
        now,
    )
}

fn refresh(e: &Engine, h: &mut Host, id: &str, rt: &str, now: Now) -> Response {
    post(
        e,
        h,
        "/oauth/token",
        id,
        &format!("grant_type=refresh_token&refresh_token={}", enc(rt)),
        now,
    )
}

/// Whether the token's own client's introspection calls it active.
fn active(e: &Engine, h: &mut Host, id: &str, token: &str, now: Now) -> bool {
    let r = post(
        e,
        h,
        "/oauth/introspect",
        id,
        &format!("token={}", enc(token)),
        now,
    );
    assert_eq!(r.status, 200);
    json_body(&r)["active"] == true
}

fn jti(at: &str) -> String {
    jwt_parts(at).1["jti"].as_str().unwrap().to_string()
}

fn fam(e: &Engine, rt: &str) -> String {
    sealed::open(&e.config.keys, rt).unwrap().fam
}

fn code(e: &Engine, h: &mut Host) -> String {
    let q = format!("client_id=web&redirect_uri={}&response_type=code&scope=openid+read&code_challenge={CHALLENGE}&code_challenge_method=S256", enc(CB));
    let user = Some(User {
        sub: "alice".into(),
        auth_time: None,
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
    let c = loc
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap();
    percent_encoding::percent_decode_str(c)
        .decode_utf8()
        .unwrap()
        .to_string()
}

fn redeem(e: &Engine, h: &mut Host, c: &str) -> Response {
    let body = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={VERIFIER}",
        enc(c),
        enc(CB)
    );
    post(e, h, "/oauth/token", "web", &body, NOW)
}

#[test]
fn a_familys_access_tokens_are_counted_and_named_by_derived_jtis() {
    let (e, mut h) = setup(64);
    let c = code(&e, &mut h);
    let (at0, rt0) = tokens(&redeem(&e, &mut h, &c));
    let f = fam(&e, &rt0);
    // The code's access token is the family's 0th, each refresh's the next.
    assert_eq!(jti(&at0), access_token_jti(&f, 0));
    let (at1, rt1) = tokens(&refresh(&e, &mut h, "web", &rt0, at(1)));
    assert_eq!(jti(&at1), access_token_jti(&f, 1));
    // The reuse interval's grace (a lost answer) issues one more.
    let (at2, rt1b) = tokens(&refresh(&e, &mut h, "web", &rt0, at(2)));
    assert_eq!(jti(&at2), access_token_jti(&f, 2));
    assert_eq!(sealed::open(&e.config.keys, &rt1b).unwrap().gen, 1);
    let (at3, rt2) = tokens(&refresh(&e, &mut h, "web", &rt1, at(3)));
    assert_eq!(jti(&at3), access_token_jti(&f, 3));
    // Distinct, and not guessable from each other without the family id.
    let mut all = vec![jti(&at0), jti(&at1), jti(&at2), jti(&at3)];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].len(), 22);
    // Introspection reads the family: the newest refresh token is active, a rotated one not.
    assert!(active(&e, &mut h, "web", &rt2, at(4)));
    assert!(!active(&e, &mut h, "web", &rt1, at(4)));
    // A replay of the code revokes the family: its four newest access tokens are denied (the
    // code's was the 0th, also named by the used code).
    let r = redeem(&e, &mut h, &c);
    assert_error(&r, 400, "invalid_grant");
    for t in [&at0, &at1, &at2, &at3, &rt2] {
        assert!(!active(&e, &mut h, "web", t, at(5)));
    }
    assert_error(
        &refresh(&e, &mut h, "web", &rt2, at(5)),
        400,
        "invalid_grant",
    );
}

#[test]
fn revoking_a_password_grant_family_denies_its_first_access_token() {
    // The grant's first access token takes its jti from the family, so revoking the family
    // (RFC 7009 §2.1) takes it down too.
    let (e, mut h) = setup(64);
    let (at0, rt0) = tokens(&login(&e, &mut h, "bob", NOW));
    assert_eq!(jti(&at0), access_token_jti(&fam(&e, &rt0), 0));
    let (at1, rt1) = tokens(&refresh(&e, &mut h, "legacy", &rt0, at(1)));
    assert!(active(&e, &mut h, "legacy", &at0, at(2)));
    let r = post(
        &e,
        &mut h,
        "/oauth/revoke",
        "legacy",
        &format!("token={}", enc(&rt1)),
        at(2),
    );
    assert_eq!(r.status, 200);
    for t in [&at0, &at1, &rt1] {
        assert!(!active(&e, &mut h, "legacy", t, at(3)));
    }
}

#[test]
fn many_families_share_a_slot_and_take_no_new_keys() {
    // 16 slots, 200 live families (one record per slot kept 16 at most).
    let (e, mut h) = setup(16);
    let keys = h.shared.len();
    let mut rts = Vec::new();
    for i in 0..200 {
        rts.push(tokens(&login(&e, &mut h, &format!("user{i}"), NOW)).1);
    }
    // Each family is found and rotates; an old generation is reuse for its family only.
    let mut next = Vec::new();
    for rt in &rts {
        next.push(tokens(&refresh(&e, &mut h, "legacy", rt, at(60))).1);
    }
    assert_error(
        &refresh(&e, &mut h, "legacy", &rts[7], at(120)),
        400,
        "invalid_grant",
    );
    assert_error(
        &refresh(&e, &mut h, "legacy", &next[7], at(120)),
        400,
        "invalid_grant",
    );
    for (i, rt) in next.iter().enumerate() {
        if i != 7 {
            assert_eq!(
                refresh(&e, &mut h, "legacy", rt, at(120)).status,
                200,
                "{i}"
            );
        }
    }
    assert_eq!(h.shared.len(), keys, "the families live in the ring's keys");
}

#[test]
fn a_full_families_ring_is_a_clean_server_error_and_recovers_as_families_expire() {
    // 16 buckets of 48: the first refusals come when most buckets are full.
    let (e, mut h) = setup(16);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..16 * 48 + 40 {
        let r = login(&e, &mut h, &format!("u{i}"), NOW);
        if r.status == 200 {
            ok += 1;
        } else {
            assert_error(&r, 500, "server_error");
            refused += 1;
        }
    }
    assert!(
        ok > 16 * 40 && ok <= 16 * 48 && refused >= 40,
        "{ok} ok, {refused} refused"
    );
    // The families live an hour here: after it, their room is reused.
    assert_eq!(login(&e, &mut h, "late", at(3600)).status, 200);
}

#[test]
fn a_family_recorded_afresh_after_a_restart_counts_from_a_random_point() {
    let cfg = config(64);
    let e = Engine::new(Config::from_json(cfg.as_bytes()).unwrap());
    let mut h = host_for(&e);
    let (_, rt0) = tokens(&login(&e, &mut h, "carol", NOW));
    let (_, rt1) = tokens(&refresh(&e, &mut h, "legacy", &rt0, at(1)));
    let f = fam(&e, &rt0);
    // A restart: same configuration, empty shared data. The family is recorded again at its
    // next refresh, and the access token then issued cannot repeat one issued before.
    let e2 = Engine::new(Config::from_json(cfg.as_bytes()).unwrap());
    let mut h2 = host_for(&e2);
    let (at2, rt2) = tokens(&refresh(&e2, &mut h2, "legacy", &rt1, at(2)));
    let before: Vec<String> = (0..1000).map(|n| access_token_jti(&f, n)).collect();
    assert!(!before.contains(&jti(&at2)));
    // ... and it is the one a revocation there denies, with the next.
    let (at3, _) = tokens(&refresh(&e2, &mut h2, "legacy", &rt2, at(3)));
    assert_error(
        &refresh(&e2, &mut h2, "legacy", &rt1, at(4)),
        400,
        "invalid_grant",
    );
    assert!(!active(&e2, &mut h2, "legacy", &at2, at(5)));
    assert!(!active(&e2, &mut h2, "legacy", &at3, at(5)));
}
