//! Token policy (issue 12, items 1–3), through the core with the fake host:
//! - resources are a per-client policy (`allowed_resources`) in every grant, and a refresh only
//!   narrows them (RFC 8707 §2, §2.2; RFC 9700 §2.3);
//! - token exchange keeps a DPoP binding or refuses (RFC 9449 §6, RFC 8693 §5), and only an
//!   audience of the subject token (or a client its policy allows) may exchange it;
//! - token exchange keeps the delegation chain, and actors are the client's own tokens or a
//!   trusted issuer's (RFC 8693 §4.1).

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::Engine;
use oauth_edge::flow::User;
use oauth_edge::http::{Headers, Response};
use oauth_edge::keys::{generate_jwk, Alg, KeySet};
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};

const ISS: &str = "https://as.example.com";
const TOKEN_URL: &str = "https://as.example.com/oauth/token";
const API: &str = "https://api.example.com";
const ORDERS: &str = "https://orders.example.com";
const BILLING: &str = "https://billing.example.com";
const ADMIN: &str = "https://admin.internal.example/";
const CB: &str = "https://app.example.com/cb";
const PARTNER: &str = "https://idp.partner.example";
const PARTNER_JWKS: &str = "https://idp.partner.example/jwks";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const TX: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
const AT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token";
const JWT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt";

fn config(signing_key: &Value, web_resources: &[&str]) -> Value {
    json!({
        "issuer": ISS,
        "signing_keys": [signing_key],
        "access_token_audience": API,
        "user": {"metadata_namespace": "envoy.filters.http.jwt_authn", "metadata_key": "user"},
        "store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 64,
                  "jti_slots": 64, "device_slots": 64, "revoked_slots": 64},
        "jwks_fetch": {"cluster": "jwks"},
        "device": {"interval": "5s"},
        "token_exchange": {"trusted_issuers": [{"issuer": PARTNER, "jwks_uri": PARTNER_JWKS}]},
        "clients": [
            // No list: only the default audience.
            {"client_id": "plain", "client_secret": hash_secret("p"),
             "grant_types": ["client_credentials"], "scope": "read"},
            {"client_id": "svc", "client_secret": hash_secret("s"),
             "grant_types": ["client_credentials"], "scope": "read write",
             "allowed_resources": [ORDERS]},
            {"client_id": "web", "client_secret": hash_secret("w"),
             "grant_types": ["authorization_code", "refresh_token"], "scope": "read",
             "redirect_uris": [CB], "allowed_resources": web_resources},
            {"client_id": "tv", "token_endpoint_auth_method": "none", "scope": "read",
             "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"],
             "allowed_resources": [ORDERS]},
            // A gateway: exchanges tokens for the API (and the partner's, addressed to us).
            {"client_id": "gw", "client_secret": hash_secret("g"), "scope": "read write",
             "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange", "client_credentials"],
             "allowed_resources": [ORDERS, BILLING, "orders-svc"],
             "token_exchange_subject_audiences": [API, ISS]},
            // The orders service: an audience by its client_id, no policy of its own.
            {"client_id": "orders-svc", "client_secret": hash_secret("o"), "scope": "read",
             "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"],
             "allowed_resources": [BILLING]},
            // Registered for the grant, but no audience of anything.
            {"client_id": "nosy", "client_secret": hash_secret("n"), "scope": "read write",
             "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"],
             "allowed_resources": [ORDERS]}
        ]
    })
}

struct World {
    e: Engine,
    h: Host,
    partner: Value,
}

fn world() -> World {
    world_with(&[ORDERS, BILLING])
}

fn world_with(web_resources: &[&str]) -> World {
    let key = generate_jwk(Alg::EdDSA, "as1", &mut SystemRandom).unwrap();
    let e =
        Engine::new(Config::from_json(config(&key, web_resources).to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    let partner = generate_jwk(Alg::ES256, "p1", &mut SystemRandom).unwrap();
    let mut public = partner.clone();
    public.as_object_mut().unwrap().remove("d");
    h.jwks.insert(
        PARTNER_JWKS.into(),
        (
            Some(200),
            json!({"keys": [public]}).to_string().into_bytes(),
        ),
    );
    World { e, h, partner }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn now_s() -> u64 {
    NOW.unix_ms / 1000
}

impl World {
    fn post(&mut self, path: &str, auth: (&str, &str), body: &str, dpop: Option<&str>) -> Response {
        let b = basic(auth.0, auth.1);
        let mut extra = vec![("authorization", b.as_str())];
        if let Some(p) = dpop {
            extra.push(("dpop", p));
        }
        self.h.request_inline(
            &self.e,
            "POST",
            path,
            &form_headers(&extra),
            body.as_bytes(),
            None,
        )
    }

    fn token(&mut self, auth: (&str, &str), body: &str) -> Response {
        self.post("/oauth/token", auth, body, None)
    }

    fn cc(&mut self, auth: (&str, &str), dpop: Option<&str>) -> String {
        let r = self.post("/oauth/token", auth, "grant_type=client_credentials", dpop);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        json_body(&r)["access_token"].as_str().unwrap().to_string()
    }

    fn exchange(&mut self, who: (&str, &str), extra: &str, dpop: Option<&str>) -> Response {
        self.post(
            "/oauth/token",
            who,
            &format!("grant_type={TX}{extra}"),
            dpop,
        )
    }

    fn partner_token(&self, claims: Value) -> String {
        let mut c = json!({"iss": PARTNER, "aud": ISS, "exp": now_s() + 60, "scope": "read"});
        for (k, v) in claims.as_object().unwrap() {
            c[k] = v.clone();
        }
        sign(
            &self.partner,
            "ES256",
            json!({"kid": "p1", "typ": "JWT"}),
            &c,
        )
    }
}

fn sign(private: &Value, alg: &str, mut header: Value, claims: &Value) -> String {
    header["alg"] = json!(alg);
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let ks = KeySet::from_jwks(std::slice::from_ref(private), None).unwrap();
    let sig = ks.active().unwrap().sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

/// A DPoP key: proofs for the token endpoint, and its RFC 7638 thumbprint (computed here).
struct PopKey {
    private: Value,
    public: Value,
    n: std::cell::Cell<u32>,
}

impl PopKey {
    fn new() -> PopKey {
        let private = generate_jwk(Alg::EdDSA, "d", &mut SystemRandom).unwrap();
        let mut public = private.clone();
        let o = public.as_object_mut().unwrap();
        o.remove("d");
        o.remove("kid");
        PopKey {
            private,
            public,
            n: std::cell::Cell::new(0),
        }
    }

    fn proof(&self) -> String {
        self.n.set(self.n.get() + 1);
        let jti = format!("{}-{}", self.thumbprint(), self.n.get());
        sign(
            &self.private,
            "EdDSA",
            json!({"typ": "dpop+jwt", "jwk": self.public}),
            &json!({"jti": jti, "htm": "POST", "htu": TOKEN_URL, "iat": now_s()}),
        )
    }

    fn thumbprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            self.public["x"].as_str().unwrap()
        );
        B64.encode(Sha256::digest(canonical.as_bytes()))
    }
}

fn claims(r: &Response) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    jwt_parts(json_body(r)["access_token"].as_str().unwrap()).1
}

// --------------------------------------------------------------------------- item 1: resources
#[test]
fn rfc8707_resources_are_a_per_client_policy_in_every_grant() {
    let mut w = world();
    // client_credentials: the registered resource, the default, nothing else.
    let r = w.token(
        ("svc", "s"),
        &format!("grant_type=client_credentials&resource={}", enc(ORDERS)),
    );
    assert_eq!(claims(&r)["aud"], ORDERS);
    assert_eq!(
        claims(&w.token(("svc", "s"), "grant_type=client_credentials"))["aud"],
        API
    );
    for (who, res) in [
        (("svc", "s"), ADMIN),
        (("svc", "s"), BILLING),
        (("svc", "s"), "https://orders.example.com/"), // exact comparison
        (("plain", "p"), ADMIN),
        (("plain", "p"), API), // the default is had by asking for none, not by naming it
    ] {
        let r = w.token(
            who,
            &format!("grant_type=client_credentials&resource={}", enc(res)),
        );
        assert_error(&r, 400, "invalid_target");
    }
    let r = w.token(
        ("svc", "s"),
        &format!(
            "grant_type=client_credentials&resource={}&resource={}",
            enc(ORDERS),
            enc(ADMIN)
        ),
    );
    assert_error(&r, 400, "invalid_target");

    // PAR: shown as a JSON error; a plain authorize request: redirected with invalid_target.
    let par = format!(
        "response_type=code&redirect_uri={}&scope=read&code_challenge={CHALLENGE}&code_challenge_method=S256&resource={}",
        enc(CB),
        enc(ADMIN)
    );
    let r = w.post("/oauth/pushed-authorization", ("web", "w"), &par, None);
    assert_error(&r, 400, "invalid_target");
    let q = format!(
        "/oauth/authorize?client_id=web&response_type=code&redirect_uri={}&scope=read&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256&resource={}",
        enc(CB),
        enc(ADMIN)
    );
    let r = w.h.request_at(
        &w.e,
        "GET",
        &q,
        &Headers::default(),
        b"",
        Some(alice()),
        NOW,
    );
    assert_eq!(r.status, 303);
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with(CB) && loc.contains("error=invalid_target"),
        "{loc}"
    );

    // Device authorization.
    let r = w.h.request_inline(
        &w.e,
        "POST",
        "/oauth/device_authorization",
        &form_headers(&[]),
        format!("client_id=tv&scope=read&resource={}", enc(ADMIN)).as_bytes(),
        None,
    );
    assert_error(&r, 400, "invalid_target");
    let r = w.h.request_inline(
        &w.e,
        "POST",
        "/oauth/device_authorization",
        &form_headers(&[]),
        format!("client_id=tv&scope=read&resource={}", enc(ORDERS)).as_bytes(),
        None,
    );
    assert_eq!(r.status, 200);

    // Token exchange: the same list.
    let subject = w.cc(("plain", "p"), None);
    let r = w.exchange(
        ("gw", "g"),
        &format!(
            "&subject_token={subject}&subject_token_type={AT}&resource={}",
            enc(ADMIN)
        ),
        None,
    );
    assert_error(&r, 400, "invalid_target");
    let r = w.exchange(
        ("gw", "g"),
        &format!(
            "&subject_token={subject}&subject_token_type={AT}&audience={}",
            enc(BILLING)
        ),
        None,
    );
    assert_eq!(claims(&r)["aud"], BILLING);
}

fn alice() -> User {
    User {
        sub: "alice".into(),
        auth_time: Some(now_s() - 10),
        session: None,
    }
}

/// A code for `web` with `resources`, redeemed: the token answer.
fn code_tokens(w: &mut World, resources: &[&str]) -> Value {
    let mut par = format!(
        "response_type=code&redirect_uri={}&scope=read&code_challenge={CHALLENGE}&code_challenge_method=S256",
        enc(CB)
    );
    for r in resources {
        par.push_str(&format!("&resource={}", enc(r)));
    }
    let r = w.post("/oauth/pushed-authorization", ("web", "w"), &par, None);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
    let r = w.h.request_at(
        &w.e,
        "GET",
        &format!("/oauth/authorize?client_id=web&request_uri={}", enc(&ru)),
        &Headers::default(),
        b"",
        Some(alice()),
        NOW,
    );
    let loc = r.header("location").unwrap().to_string();
    let code = loc
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap()
        .to_string();
    let r = w.token(
        ("web", "w"),
        &format!(
            "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
            enc(CB)
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    json_body(&r)
}

#[test]
fn rfc8707_2_2_a_refresh_only_narrows_the_resources() {
    let mut w = world();
    let t = code_tokens(&mut w, &[ORDERS, BILLING]);
    assert_eq!(
        jwt_parts(t["access_token"].as_str().unwrap()).1["aud"],
        json!([ORDERS, BILLING])
    );
    let mut rt = t["refresh_token"].as_str().unwrap().to_string();
    let mut refresh = |w: &mut World, extra: &str| -> Response {
        let r = w.token(
            ("web", "w"),
            &format!("grant_type=refresh_token&refresh_token={}{extra}", enc(&rt)),
        );
        if r.status == 200 {
            rt = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
        }
        r
    };
    // Narrower: one of them.
    let r = refresh(&mut w, &format!("&resource={}", enc(BILLING)));
    assert_eq!(claims(&r)["aud"], BILLING);
    // Never wider: a resource outside the grant, even one the client could ask for anew.
    for extra in [
        format!("&resource={}", enc(ADMIN)),
        format!("&resource={}&resource={}", enc(ORDERS), enc(ADMIN)),
        format!("&resource={}", enc(API)),
    ] {
        assert_error(&refresh(&mut w, &extra), 400, "invalid_target");
    }
    // The grant is not narrowed for good: the next refresh without resource has both again.
    assert_eq!(
        claims(&refresh(&mut w, ""))["aud"],
        json!([ORDERS, BILLING])
    );

    // A grant without resources has only the default audience: nothing to narrow to.
    let t = code_tokens(&mut w, &[]);
    let rt2 = t["refresh_token"].as_str().unwrap();
    let r = w.token(
        ("web", "w"),
        &format!(
            "grant_type=refresh_token&refresh_token={}&resource={}",
            enc(rt2),
            enc(ORDERS)
        ),
    );
    assert_error(&r, 400, "invalid_target");
}

#[test]
fn rfc8707_a_grant_outside_the_clients_current_policy_is_not_refreshed() {
    let key = generate_jwk(Alg::EdDSA, "as1", &mut SystemRandom).unwrap();
    let before = Engine::new(
        Config::from_json(config(&key, &[ORDERS, BILLING]).to_string().as_bytes()).unwrap(),
    );
    let mut h = Host::without_registry();
    h.init(&before);
    let mut w = World {
        e: before,
        h,
        partner: json!({}),
    };
    let t = code_tokens(&mut w, &[ORDERS, BILLING]);
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    // The registration drops BILLING (same keys, same store: a configuration reload).
    w.e = Engine::new(Config::from_json(config(&key, &[ORDERS]).to_string().as_bytes()).unwrap());
    let r = w.token(
        ("web", "w"),
        &format!("grant_type=refresh_token&refresh_token={}", enc(&rt)),
    );
    assert_error(&r, 400, "invalid_grant");
    // Narrowed to what is still allowed, it works.
    let r = w.token(
        ("web", "w"),
        &format!(
            "grant_type=refresh_token&refresh_token={}&resource={}",
            enc(&rt),
            enc(ORDERS)
        ),
    );
    assert_eq!(claims(&r)["aud"], ORDERS);
}

// --------------------------------------------------------------------------- item 2: binding, who
#[test]
fn rfc9449_token_exchange_keeps_the_dpop_binding_or_refuses() {
    let mut w = world();
    let key = PopKey::new();
    let bound = w.cc(("plain", "p"), Some(&key.proof()));
    let sub = format!("&subject_token={bound}&subject_token_type={AT}");
    // No proof: the binding would be dropped.
    assert_error(
        &w.exchange(("gw", "g"), &sub, None),
        400,
        "invalid_dpop_proof",
    );
    // Another key's proof: not the holder.
    let other = PopKey::new();
    assert_error(
        &w.exchange(("gw", "g"), &sub, Some(&other.proof())),
        400,
        "invalid_request",
    );
    // The holder's proof: bound to the same key again.
    let r = w.exchange(("gw", "g"), &sub, Some(&key.proof()));
    let v = json_body(&r);
    assert_eq!(v["token_type"], "DPoP");
    assert_eq!(claims(&r)["cnf"], json!({"jkt": key.thumbprint()}));

    // A bound actor (our token, issued to gw itself) binds the result the same way.
    let actor = w.cc(("gw", "g"), Some(&key.proof()));
    let plain = w.cc(("plain", "p"), None);
    let both = format!(
        "&subject_token={plain}&subject_token_type={AT}&actor_token={actor}&actor_token_type={AT}"
    );
    assert_error(
        &w.exchange(("gw", "g"), &both, None),
        400,
        "invalid_dpop_proof",
    );
    let r = w.exchange(("gw", "g"), &both, Some(&key.proof()));
    assert_eq!(claims(&r)["cnf"], json!({"jkt": key.thumbprint()}));
    // Subject and actor bound to different keys: no one proof keeps both.
    let other_actor = w.cc(("gw", "g"), Some(&other.proof()));
    let r = w.exchange(
        ("gw", "g"),
        &format!("&subject_token={bound}&subject_token_type={AT}&actor_token={other_actor}&actor_token_type={AT}"),
        Some(&key.proof()),
    );
    assert_error(&r, 400, "invalid_request");

    // A trusted issuer's token bound with cnf.jkt: the same rule; with a confirmation method we
    // cannot prove (mTLS x5t#S256): refused, even with a proof.
    let p = w.partner_token(json!({"sub": "u-1", "cnf": {"jkt": key.thumbprint()}}));
    let sub = format!("&subject_token={p}&subject_token_type={JWT}");
    assert_error(
        &w.exchange(("gw", "g"), &sub, None),
        400,
        "invalid_dpop_proof",
    );
    let r = w.exchange(("gw", "g"), &sub, Some(&key.proof()));
    assert_eq!(claims(&r)["cnf"], json!({"jkt": key.thumbprint()}));
    for cnf in [
        json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
        json!({"jkt": key.thumbprint(), "x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
        json!({"jkt": 1}),
        json!("x"),
    ] {
        let p = w.partner_token(json!({"sub": "u-1", "cnf": cnf}));
        let r = w.exchange(
            ("gw", "g"),
            &format!("&subject_token={p}&subject_token_type={JWT}"),
            Some(&key.proof()),
        );
        assert_error(&r, 400, "invalid_request");
    }
    // Unbound subjects are bound only if a proof comes (as before).
    let r = w.exchange(
        ("gw", "g"),
        &format!("&subject_token={plain}&subject_token_type={AT}"),
        None,
    );
    assert!(claims(&r).get("cnf").is_none());
}

#[test]
fn rfc8693_only_an_audience_of_the_subject_token_exchanges_it() {
    let mut w = world();
    let subject = w.cc(("plain", "p"), None); // aud: the default API audience
    let sub = format!("&subject_token={subject}&subject_token_type={AT}");
    // nosy has the grant, but the API token is not for it.
    assert_error(
        &w.exchange(("nosy", "n"), &sub, None),
        400,
        "invalid_request",
    );
    // gw's policy lists the API audience.
    let r = w.exchange(("gw", "g"), &format!("{sub}&audience=orders-svc"), None);
    let mid = json_body(&r)["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims(&r)["aud"], "orders-svc");
    // That token's audience is orders-svc's client_id: orders-svc may exchange it, gw not.
    let sub2 = format!("&subject_token={mid}&subject_token_type={AT}");
    let r = w.exchange(
        ("orders-svc", "o"),
        &format!("{sub2}&audience={}", enc(BILLING)),
        None,
    );
    assert_eq!(claims(&r)["aud"], BILLING);
    assert_eq!(claims(&r)["client_id"], "orders-svc");
    assert_error(
        &w.exchange(("gw", "g"), &sub2, None),
        400,
        "invalid_request",
    );
    // A trusted issuer's token addressed to us: for clients whose policy names our issuer.
    let p = w.partner_token(json!({"sub": "u-9"}));
    let sub3 = format!("&subject_token={p}&subject_token_type={JWT}");
    assert_error(
        &w.exchange(("nosy", "n"), &sub3, None),
        400,
        "invalid_request",
    );
    assert_eq!(claims(&w.exchange(("gw", "g"), &sub3, None))["sub"], "u-9");
}

// --------------------------------------------------------------------------- item 3: act
#[test]
fn rfc8693_4_1_the_delegation_chain_is_kept_and_actors_are_limited() {
    let mut w = world();
    let subject = w.cc(("plain", "p"), None);
    let gw_own = w.cc(("gw", "g"), None);
    let r = w.exchange(
        ("gw", "g"),
        &format!("&subject_token={subject}&subject_token_type={AT}&actor_token={gw_own}&actor_token_type={AT}&audience=orders-svc"),
        None,
    );
    let c = claims(&r);
    assert_eq!(
        (c["sub"].as_str(), &c["act"]),
        (Some("plain"), &json!({"sub": "gw"}))
    );
    let delegated = json_body(&r)["access_token"].as_str().unwrap().to_string();

    // Re-exchanged without a new actor: the chain stays.
    let r = w.exchange(
        ("orders-svc", "o"),
        &format!(
            "&subject_token={delegated}&subject_token_type={AT}&audience={}",
            enc(BILLING)
        ),
        None,
    );
    let c = claims(&r);
    assert_eq!(c["act"], json!({"sub": "gw"}));
    assert_eq!(c["sub"], "plain");
    let twice = json_body(&r)["access_token"].as_str().unwrap().to_string();
    // And a trusted actor on top nests it (newest first).
    let robot = w.partner_token(json!({"sub": "robot-1"}));
    let r = w.exchange(
        ("orders-svc", "o"),
        &format!("&subject_token={twice}&subject_token_type={AT}&actor_token={robot}&actor_token_type={JWT}"),
        None,
    );
    assert_error(&r, 400, "invalid_request"); // `twice` is for BILLING, not for orders-svc
    let r = w.exchange(
        ("orders-svc", "o"),
        &format!("&subject_token={delegated}&subject_token_type={AT}&actor_token={robot}&actor_token_type={JWT}"),
        None,
    );
    assert_eq!(
        claims(&r)["act"],
        json!({"sub": "robot-1", "iss": PARTNER, "act": {"sub": "gw"}})
    );

    // Actors: another client's token is refused, whoever it names.
    for (actor, who) in [
        (w.cc(("plain", "p"), None), ("gw", "g")),
        (w.cc(("svc", "s"), None), ("gw", "g")),
        (gw_own.clone(), ("orders-svc", "o")),
    ] {
        let r = w.exchange(
            who,
            &format!("&subject_token={}&subject_token_type={AT}&actor_token={actor}&actor_token_type={AT}",
                     if who.0 == "gw" { &subject } else { &delegated }),
            None,
        );
        assert_error(&r, 400, "invalid_request");
    }

    // A trusted issuer's subject with its own act: kept; a malformed act: refused.
    let p = w
        .partner_token(json!({"sub": "u-5", "act": {"sub": "agent-7", "act": {"sub": "agent-3"}}}));
    let r = w.exchange(
        ("gw", "g"),
        &format!("&subject_token={p}&subject_token_type={JWT}"),
        None,
    );
    assert_eq!(
        claims(&r)["act"],
        json!({"sub": "agent-7", "act": {"sub": "agent-3"}})
    );
    for act in [json!("agent-7"), json!({"iss": PARTNER}), json!({"sub": 7})] {
        let p = w.partner_token(json!({"sub": "u-5", "act": act}));
        let r = w.exchange(
            ("gw", "g"),
            &format!("&subject_token={p}&subject_token_type={JWT}"),
            None,
        );
        assert_error(&r, 400, "invalid_request");
    }
}
