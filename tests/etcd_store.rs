//! The short-lived state in etcd (`store.backend: "etcd"`): two engines with the same
//! configuration are two gateway replicas sharing one etcd (the JSON-gateway stand-in in
//! common/etcd.rs; the real etcd cluster runs in the integration tests).

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::etcd::FakeEtcd;
use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::Engine;
use oauth_edge::flow::{Now, User};
use oauth_edge::http::{Headers, Response};
use oauth_edge::keys::{generate_jwk, Alg, KeySet};
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ISS: &str = "https://as.example.com";
const CB: &str = "https://rp.example/cb";
const VERIFIER: &str = "verifier-verifier-verifier-verifier-verifier-1";

struct Replica {
    e: Engine,
    h: Host,
}

fn replicas(auth: bool) -> (Replica, Replica, Rc<RefCell<FakeEtcd>>) {
    let key = generate_jwk(Alg::EdDSA, "as1", &mut SystemRandom).unwrap();
    let mut etcd_cfg = json!({"cluster": "etcd", "prefix": "/oe/"});
    let etcd = Rc::new(RefCell::new(FakeEtcd::default()));
    if auth {
        etcd_cfg["username"] = json!("oauth-edge");
        etcd_cfg["password"] = json!("pw");
        etcd.borrow_mut().auth = Some(("oauth-edge".into(), "pw".into()));
    }
    let cfg = json!({
        "issuer": ISS,
        "signing_keys": [key],
        "store": {"backend": "etcd", "etcd": etcd_cfg, "rate_limit_slots": 16},
        "device": {"interval": "1s"},
        "clients": [
            {"client_id": "web", "client_secret": hash_secret("w"),
             "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
             "redirect_uris": [CB], "scope": "read"},
            {"client_id": "nr", "client_secret": hash_secret("n"),
             "grant_types": ["authorization_code"], "redirect_uris": [CB], "scope": "read",
             "authorization_details_types": ["payment"]}
        ]
    });
    let make = || {
        let e = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
        let mut h = Host::without_registry();
        h.init(&e);
        h.etcd = Some(etcd.clone());
        Replica { e, h }
    };
    let (a, b) = (make(), make());
    // Only the (local) rate-limit ring has keys in shared data; no remote ring is created here.
    assert!(a.e.rings().iter().all(|r| !r.remote));
    // 16 slots and the marker that says the ring's keys exist (workers skip the walk).
    assert_eq!(a.h.shared.len(), 16 + 1);
    (a, b, etcd)
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn web() -> Headers {
    form_headers(&[("authorization", &basic("web", "w"))])
}

fn par(r: &mut Replica, at: Now) -> Response {
    let challenge = B64.encode(Sha256::digest(VERIFIER.as_bytes()));
    let body = format!(
        "response_type=code&client_id=web&redirect_uri={}&scope=read&code_challenge={challenge}&code_challenge_method=S256",
        enc(CB)
    );
    r.h.request_at(
        &r.e,
        "POST",
        "/oauth/pushed-authorization",
        &web(),
        body.as_bytes(),
        None,
        at,
    )
}

fn authorize(r: &mut Replica, request_uri: &str, at: Now) -> Response {
    let user = Some(User {
        sub: "alice".into(),
        auth_time: Some(at.unix_ms / 1000),
        session: None,
    });
    let path = format!(
        "/oauth/authorize?client_id=web&request_uri={}",
        enc(request_uri)
    );
    r.h.request_at(&r.e, "GET", &path, &Headers::default(), b"", user, at)
}

fn redeem(r: &mut Replica, code: &str, at: Now) -> Response {
    redeem_with(r, code, VERIFIER, at)
}

fn refresh(r: &mut Replica, rt: &str, at: Now) -> Response {
    let body = format!("grant_type=refresh_token&refresh_token={}", enc(rt));
    r.h.request_at(
        &r.e,
        "POST",
        "/oauth/token",
        &web(),
        body.as_bytes(),
        None,
        at,
    )
}

fn code_of(r: &Response) -> String {
    let loc = r.header("location").unwrap();
    let code = loc
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    percent_encoding::percent_decode_str(code)
        .decode_utf8()
        .unwrap()
        .to_string()
}

fn at(s: u64) -> Now {
    Now {
        unix_ms: NOW.unix_ms + s * 1000,
    }
}

#[test]
fn a_code_pushed_at_one_replica_is_redeemed_once_at_another() {
    for auth in [false, true] {
        let (mut a, mut b, etcd) = replicas(auth);
        let r = par(&mut a, at(0));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
        let r = authorize(&mut b, &ru, at(1));
        assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
        let code = code_of(&r);
        // The request_uri is used up at B, for A too.
        assert_eq!(authorize(&mut a, &ru, at(1)).status, 400);
        let r = redeem(&mut a, &code, at(2));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let rt = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
        // Rotation at A; the old token replayed at B revokes the family everywhere.
        let r = refresh(&mut a, &rt, at(4));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let rt2 = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
        assert_error(&refresh(&mut b, &rt, at(5)), 400, "invalid_grant");
        assert_error(&refresh(&mut a, &rt2, at(6)), 400, "invalid_grant");
        // The code replayed at B.
        assert_error(&redeem(&mut b, &code, at(7)), 400, "invalid_grant");
        // Round trips, once logged in and with leases granted: authorizing reads and consumes
        // the request_uri (the code is sealed: nothing written); a redemption is one: it
        // creates the refresh family, create-only, and that record is the code's used mark.
        let r = par(&mut a, at(8));
        let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
        let before = etcd.borrow().requests;
        let code = code_of(&authorize(&mut a, &ru, at(8)));
        assert_eq!(etcd.borrow().requests - before, 2, "authorize");
        assert!(code.starts_with("ac1."), "{code}");
        let before = etcd.borrow().requests;
        assert_eq!(redeem(&mut a, &code, at(9)).status, 200);
        assert_eq!(etcd.borrow().requests - before, 1, "redemption");
        // Leases drop what expired: codes and request_uris are gone after their lifetimes,
        // the families (24 h) remain.
        let keys = etcd.borrow().keys();
        assert!(keys >= 3, "{keys}");
        etcd.borrow_mut().expire((at(0).unix_ms / 1000) + 400);
        assert!(etcd.borrow().keys() < keys);
        etcd.borrow_mut().expire((at(0).unix_ms / 1000) + 200_000);
        assert_eq!(etcd.borrow().keys(), 0, "nothing outlives its lease");
    }
}

fn redeem_with(r: &mut Replica, code: &str, verifier: &str, at: Now) -> Response {
    let body = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}",
        enc(code),
        enc(CB)
    );
    r.h.request_at(
        &r.e,
        "POST",
        "/oauth/token",
        &web(),
        body.as_bytes(),
        None,
        at,
    )
}

fn introspect(r: &mut Replica, token: &str, at: Now) -> Value {
    let body = format!("token={}", enc(token));
    json_body(&r.h.request_at(
        &r.e,
        "POST",
        "/oauth/introspect",
        &web(),
        body.as_bytes(),
        None,
        at,
    ))
}

#[test]
fn sealed_codes_write_nothing_until_redeemed_and_a_failed_attempt_burns_nothing() {
    let (mut a, mut b, etcd) = replicas(false);
    // A first flow at A, so its leases are granted (they are reused for a minute).
    let r = par(&mut a, at(0));
    let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
    let warm = code_of(&authorize(&mut a, &ru, at(0)));
    assert_eq!(redeem(&mut a, &warm, at(0)).status, 200);
    let r = par(&mut a, at(0));
    let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
    let code = code_of(&authorize(&mut b, &ru, at(1)));
    let requests = || etcd.borrow().requests;

    // Garbage, a forged code, a tampered one: refused before etcd is asked anything.
    let before = requests();
    let mut tampered = code.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        "ac1.",
        "ac1.AAAA",
        "ac1.!!!",
        tampered.as_str(),
        "rt1.x",
        &format!("ac1.{}", "A".repeat(9000)),
    ] {
        assert_error(&redeem(&mut a, bad, at(2)), 400, "invalid_grant");
    }
    assert_eq!(
        requests() - before,
        0,
        "nothing read or written for a bad code"
    );

    // A wrong verifier: reads (is it used?), nothing written; the code still works.
    let before = requests();
    let r = redeem_with(
        &mut a,
        &code,
        "wrong-wrong-wrong-wrong-wrong-wrong-wrong-wrong",
        at(2),
    );
    assert_error(&r, 400, "invalid_grant");
    assert_eq!(requests() - before, 2, "both probes of the family read");
    let keys = etcd.borrow().keys();

    // Redeemed at A in one round trip: the family, created only if it does not exist.
    let before = requests();
    let r = redeem(&mut a, &code, at(3));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(requests() - before, 1);
    assert_eq!(
        etcd.borrow().keys(),
        keys + 1,
        "the family, which is the used mark"
    );
    let tokens = json_body(&r);
    let at_ = tokens["access_token"].as_str().unwrap().to_string();
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(introspect(&mut b, &at_, at(4))["active"], true);

    // Replayed at B, even with a wrong verifier: refused, and what the first redemption
    // issued is revoked (RFC 6749 §4.1.2).
    let r = redeem_with(
        &mut b,
        &code,
        "wrong-wrong-wrong-wrong-wrong-wrong-wrong-wrong",
        at(5),
    );
    assert_error(&r, 400, "invalid_grant");
    assert_eq!(introspect(&mut a, &at_, at(6))["active"], false);
    assert_error(&refresh(&mut a, &rt, at(6)), 400, "invalid_grant");

    // Expired (the code lives 60 s by default): refused unread.
    let r = par(&mut a, at(10));
    let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
    let code = code_of(&authorize(&mut a, &ru, at(10)));
    let before = requests();
    assert_error(&redeem(&mut b, &code, at(75)), 400, "invalid_grant");
    assert_eq!(requests() - before, 0);
}

#[test]
fn a_sealed_code_without_refresh_tokens_is_marked_used_and_its_replay_revokes_the_access_token() {
    let (mut a, mut b, etcd) = replicas(false);
    let nr = form_headers(&[("authorization", &basic("nr", "n"))]);
    let challenge = B64.encode(Sha256::digest(VERIFIER.as_bytes()));
    let body = format!(
        "response_type=code&client_id=nr&redirect_uri={}&scope=read&code_challenge={challenge}&code_challenge_method=S256",
        enc(CB)
    );
    let user = Some(User {
        sub: "alice".into(),
        auth_time: Some(NOW.unix_ms / 1000),
        session: None,
    });
    let code_at = |r: &mut Replica, t: Now| {
        let p = r.h.request_at(
            &r.e,
            "POST",
            "/oauth/pushed-authorization",
            &nr,
            body.as_bytes(),
            None,
            t,
        );
        let ru = json_body(&p)["request_uri"].as_str().unwrap().to_string();
        let path = format!("/oauth/authorize?client_id=nr&request_uri={}", enc(&ru));
        code_of(&r.h.request_at(
            &r.e,
            "GET",
            &path,
            &Headers::default(),
            b"",
            user.clone(),
            t,
        ))
    };
    let redeem_nr = |r: &mut Replica, code: &str, t: Now| {
        let body = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={VERIFIER}",
            enc(code),
            enc(CB)
        );
        r.h.request_at(&r.e, "POST", "/oauth/token", &nr, body.as_bytes(), None, t)
    };
    let warm = code_at(&mut a, at(0));
    assert_eq!(redeem_nr(&mut a, &warm, at(0)).status, 200);
    let code = code_at(&mut a, at(1));
    let before = etcd.borrow().requests;
    let r = redeem_nr(&mut a, &code, at(2));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(etcd.borrow().requests - before, 1, "one round trip");
    let tokens = json_body(&r);
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let at_ = tokens["access_token"].as_str().unwrap().to_string();
    // Introspected by the client itself (another may not see its tokens).
    let active = |r: &mut Replica, t: Now| {
        let body = format!("token={}", enc(&at_));
        let r = r.h.request_at(
            &r.e,
            "POST",
            "/oauth/introspect",
            &nr,
            body.as_bytes(),
            None,
            t,
        );
        json_body(&r)["active"].clone()
    };
    assert_eq!(active(&mut b, at(3)), true);
    // Replayed at B: refused, and the access token is revoked (RFC 6749 §4.1.2).
    assert_error(&redeem_nr(&mut b, &code, at(4)), 400, "invalid_grant");
    assert_eq!(active(&mut a, at(5)), false);
}

#[test]
fn a_request_too_large_for_a_sealed_code_is_refused_at_the_redirect_uri() {
    let (mut a, _, _) = replicas(false);
    let nr = form_headers(&[("authorization", &basic("nr", "n"))]);
    let challenge = B64.encode(Sha256::digest(VERIFIER.as_bytes()));
    let user = Some(User {
        sub: "alice".into(),
        auth_time: Some(NOW.unix_ms / 1000),
        session: None,
    });
    let mut authorize_with = |details: &Value| {
        let body = format!(
            "response_type=code&client_id=nr&redirect_uri={}&scope=read&state=st&code_challenge={challenge}&code_challenge_method=S256&authorization_details={}",
            enc(CB),
            enc(&details.to_string())
        );
        let p = a.h.request_at(
            &a.e,
            "POST",
            "/oauth/pushed-authorization",
            &nr,
            body.as_bytes(),
            None,
            NOW,
        );
        assert_eq!(p.status, 201, "{}", String::from_utf8_lossy(&p.body));
        let ru = json_body(&p)["request_uri"].as_str().unwrap().to_string();
        let path = format!("/oauth/authorize?client_id=nr&request_uri={}", enc(&ru));
        a.h.request_at(
            &a.e,
            "GET",
            &path,
            &Headers::default(),
            b"",
            user.clone(),
            NOW,
        )
    };
    let small = json!([{"type": "payment", "identifier": "x".repeat(1000)}]);
    let r = authorize_with(&small);
    assert_eq!(r.status, 303);
    assert!(code_of(&r).len() < 3000);
    let huge = json!([{"type": "payment", "identifier": "x".repeat(9000)}]);
    let r = authorize_with(&huge);
    assert_eq!(r.status, 303);
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with(CB), "{loc}");
    assert!(loc.contains("error=invalid_request"), "{loc}");
    assert!(loc.contains("state=st"), "{loc}");
    assert!(!loc.contains("code="), "{loc}");
}

#[test]
fn a_sealed_code_whose_family_slot_is_taken_still_redeems_once() {
    let (mut a, mut b, etcd) = replicas(false);
    let fam_key = |r: &Replica, code: &str| {
        let cfg = &r.e.config;
        let fam = oauth_edge::sealed_code::open(&cfg.keys, code, at(0).unix_ms)
            .unwrap()
            .data
            .family
            .unwrap();
        format!(
            "/oe/{}",
            oauth_edge::store::first_key(cfg.rings.families, &fam)
        )
    };
    // Normally the family is written at that first slot.
    let r = par(&mut a, at(0));
    let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
    let code = code_of(&authorize(&mut a, &ru, at(0)));
    assert_eq!(redeem(&mut a, &code, at(0)).status, 200);
    assert!(etcd.borrow().get(&fam_key(&a, &code)).is_some());

    let r = par(&mut a, at(0));
    let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
    let code = code_of(&authorize(&mut a, &ru, at(0)));
    // Another family already holds the first slot of this code's family (about one chance in
    // 2^32 per live family): the redemption goes on to the next slot.
    let key = fam_key(&a, &code);
    let other = format!(
        r#"{{"h":"someone-else","exp":{},"used":false,"data":{{"gen":0,"rotated_at":0}}}}"#,
        at(0).unix_ms + 86_400_000
    );
    etcd.borrow_mut().put(&key, other.as_bytes());
    let r = redeem(&mut a, &code, at(1));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rt = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&mut b, &rt, at(2));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Replayed: found at the second slot, refused, the family revoked.
    assert_error(&redeem(&mut b, &code, at(3)), 400, "invalid_grant");
    let rt2 = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    assert_error(&refresh(&mut a, &rt2, at(4)), 400, "invalid_grant");
    // The other family's record is untouched.
    assert_eq!(etcd.borrow().get(&key).as_deref(), Some(other.as_bytes()));
}

#[test]
fn dpop_and_assertion_replays_are_caught_across_replicas() {
    let (mut a, mut b, _) = replicas(false);
    let k = generate_jwk(Alg::ES256, "d", &mut SystemRandom).unwrap();
    let mut public = k.clone();
    public.as_object_mut().unwrap().remove("d");
    public.as_object_mut().unwrap().remove("kid");
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg":"ES256","typ":"dpop+jwt","jwk":public}).to_string()),
        B64.encode(json!({"jti":"once","htm":"POST","htu":format!("{ISS}/oauth/token"),"iat":NOW.unix_ms/1000}).to_string())
    );
    let ks = KeySet::from_jwks(std::slice::from_ref(&k), None).unwrap();
    let proof = format!(
        "{input}.{}",
        B64.encode(ks.active().unwrap().sign(input.as_bytes()).unwrap())
    );
    let hs = form_headers(&[("authorization", &basic("web", "w")), ("dpop", &proof)]);
    let r = a.h.request_at(
        &a.e,
        "POST",
        "/oauth/token",
        &hs,
        b"grant_type=client_credentials",
        None,
        NOW,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = b.h.request_at(
        &b.e,
        "POST",
        "/oauth/token",
        &hs,
        b"grant_type=client_credentials",
        None,
        NOW,
    );
    assert_error(&r, 400, "invalid_dpop_proof");
}

#[test]
fn etcd_down_fails_closed_and_recovers_without_a_restart() {
    let (mut a, _b, etcd) = replicas(true);
    assert_eq!(par(&mut a, at(0)).status, 201);
    etcd.borrow_mut().down = true;
    let r = par(&mut a, at(1));
    assert_error(&r, 500, "server_error");
    // client_credentials needs no state: still served.
    let r = a.h.request_at(
        &a.e,
        "POST",
        "/oauth/token",
        &web(),
        b"grant_type=client_credentials",
        None,
        at(1),
    );
    assert_eq!(r.status, 200);
    etcd.borrow_mut().down = false;
    // etcd restarted: the old token is refused, the filter logs in again by itself.
    etcd.borrow_mut().token = Some("another".into());
    let r = par(&mut a, at(2));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn configuration_of_the_etcd_store() {
    let base = |store: Value| {
        let c = json!({"issuer": ISS, "store": store,
            "signing_keys": [generate_jwk(Alg::EdDSA, "k", &mut SystemRandom).unwrap()]});
        Config::from_json(c.to_string().as_bytes())
    };
    assert!(base(json!({"backend": "etcd", "etcd": {"cluster": "etcd"}})).is_ok());
    assert!(base(json!({"backend": "shared_data"})).is_ok());
    for bad in [
        json!({"backend": "etcd"}),
        json!({"etcd": {"cluster": "etcd"}}),
        json!({"backend": "redis"}),
        json!({"backend": "etcd", "etcd": {"cluster": ""}}),
        json!({"backend": "etcd", "etcd": {"cluster": "e", "prefix": "nope"}}),
        json!({"backend": "etcd", "etcd": {"cluster": "e", "username": "u"}}),
        json!({"backend": "etcd", "etcd": {"cluster": "e", "timeout": "0s"}}),
    ] {
        assert!(base(bad.clone()).is_err(), "{bad}");
    }
}
