//! private_key_jwt (RFC 7523), DPoP (RFC 9449), the FAPI 2.0 profile and rate limits, through
//! the core's sans-IO interface with the fake host. (The real-Envoy tests sign with maintained
//! JOSE libraries; here the project's own signer makes the test tokens, checked independently
//! against RustCrypto's verifiers in the keys tests.)

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
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
const TOKEN_URL: &str = "https://as.example.com/oauth/token";
const PAR_URL: &str = "https://as.example.com/oauth/pushed-authorization";
const CB: &str = "https://rp.example/cb";
const JWKS_URL: &str = "https://rp.example/jwks";

/// A client's key pair: the private JWK signs, the public one is registered.
struct Key {
    alg: Alg,
    private: Value,
    public: Value,
}

impl Key {
    fn new(alg: Alg, kid: &str) -> Key {
        let private = generate_jwk(alg, kid, &mut SystemRandom).unwrap();
        let mut public = private.clone();
        public.as_object_mut().unwrap().remove("d");
        Key {
            alg,
            private,
            public,
        }
    }

    /// A compact JWS with this key; `header` gets `alg` added.
    fn sign(&self, header: Value, claims: &Value) -> String {
        self.sign_as(self.alg.as_str(), header, claims)
    }

    fn sign_as(&self, alg: &str, mut header: Value, claims: &Value) -> String {
        header["alg"] = json!(alg);
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let ks = KeySet::from_jwks(std::slice::from_ref(&self.private), None).unwrap();
        let sig = ks.active().unwrap().sign(input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig))
    }

    /// RFC 7638 thumbprint, computed here from the members (not with the filter's code).
    fn thumbprint(&self) -> String {
        let p = &self.public;
        let canonical = match p["kty"].as_str().unwrap() {
            "OKP" => format!(
                r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
                p["crv"].as_str().unwrap(),
                p["x"].as_str().unwrap()
            ),
            _ => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                p["crv"].as_str().unwrap(),
                p["x"].as_str().unwrap(),
                p["y"].as_str().unwrap()
            ),
        };
        B64.encode(Sha256::digest(canonical.as_bytes()))
    }

    fn proof(&self, htm: &str, htu: &str, iat: u64, jti: &str, nonce: Option<&str>) -> String {
        let mut pub_jwk = self.public.clone();
        pub_jwk.as_object_mut().unwrap().remove("kid");
        let mut claims = json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat});
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        self.sign(json!({"typ": "dpop+jwt", "jwk": pub_jwk}), &claims)
    }
}

fn now_s() -> u64 {
    NOW.unix_ms / 1000
}

fn assertion(key: &Key, client_id: &str, aud: Value, jti: &str) -> String {
    key.sign(
        json!({"kid": key.public["kid"]}),
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "jti": jti,
                "exp": now_s() + 60, "iat": now_s()}),
    )
}

struct World {
    e: Engine,
    h: Host,
    pk: Key,
    uri_key: Key,
}

fn world(extra: Value) -> World {
    let pk = Key::new(Alg::ES256, "pk1");
    let uri_key = Key::new(Alg::EdDSA, "uri1");
    let mut cfg = json!({
        "issuer": ISS,
        "signing_keys": [generate_jwk(Alg::EdDSA, "as1", &mut SystemRandom).unwrap()],
        "jwks_fetch": {"cluster": "jwks", "refetch_cooldown": "0s"},
        "store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 64,
                  "jti_slots": 256, "rate_limit_slots": 64},
        "clients": [
            {"client_id": "pk", "token_endpoint_auth_method": "private_key_jwt",
             "jwks": {"keys": [pk.public.clone()]},
             "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
             "redirect_uris": [CB], "scope": "read write"},
            {"client_id": "uri", "token_endpoint_auth_method": "private_key_jwt",
             "jwks_uri": JWKS_URL, "grant_types": ["client_credentials"], "scope": "read"},
            {"client_id": "svc", "client_secret": hash_secret("svc-secret"),
             "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
             "redirect_uris": [CB], "scope": "read"},
            {"client_id": "bound", "client_secret": hash_secret("b"),
             "dpop_bound_access_tokens": true,
             "grant_types": ["client_credentials"], "scope": "read"},
            {"client_id": "pub", "token_endpoint_auth_method": "none",
             "grant_types": ["authorization_code", "refresh_token"],
             "redirect_uris": [CB], "scope": "read"}
        ]
    });
    if let (Some(c), Some(x)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            c.insert(k.clone(), v.clone());
        }
    }
    let e = Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    h.jwks.insert(
        JWKS_URL.into(),
        (
            Some(200),
            json!({"keys": [uri_key.public.clone()]})
                .to_string()
                .into_bytes(),
        ),
    );
    World { e, h, pk, uri_key }
}

fn pk_form(a: &str, extra: &str) -> Vec<u8> {
    format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}{extra}"
    )
    .into_bytes()
}

fn token(w: &mut World, headers: &Headers, body: &[u8]) -> Response {
    w.h.request_inline(&w.e, "POST", "/oauth/token", headers, body, None)
}

fn ok(w: &mut World) {
    let a = assertion(&w.pk, "pk", json!(ISS), &uuid());
    let r = token(w, &form_headers(&[]), &pk_form(&a, ""));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    B64.encode(b)
}

#[test]
fn rfc7523_private_key_jwt_inline_jwks() {
    let mut w = world(json!({}));
    let a = assertion(&w.pk, "pk", json!(ISS), "j1");
    let r = token(&mut w, &form_headers(&[]), &pk_form(&a, "&client_id=pk"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_body(&r);
    assert_eq!(v["token_type"], "Bearer");
    assert!(v.get("dpop_access_token_bound").is_none());
    // §3 check 7: the same assertion again is a replay.
    let r = token(&mut w, &form_headers(&[]), &pk_form(&a, ""));
    assert_error(&r, 401, "invalid_client");
    ok(&mut w);
    // Endpoint URLs are audiences too (RFC 9126 §2), in an array as well.
    for aud in [json!(TOKEN_URL), json!(PAR_URL), json!(["x", ISS])] {
        let a = assertion(&w.pk, "pk", aud, &uuid());
        let r = token(&mut w, &form_headers(&[]), &pk_form(&a, ""));
        assert_eq!(r.status, 200);
    }
}

#[test]
fn rfc7523_s3_every_refusal_is_invalid_client() {
    let mut w = world(json!({}));
    let other = Key::new(Alg::ES256, "pk1");
    let t = now_s();
    let claims = |over: Value| {
        let mut c = json!({"iss": "pk", "sub": "pk", "aud": ISS, "jti": uuid(), "exp": t + 60});
        for (k, v) in over.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hdr = json!({"kid": "pk1"});
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong aud",
            w.pk.sign(hdr.clone(), &claims(json!({"aud": "https://other"}))),
        ),
        (
            "expired",
            w.pk.sign(hdr.clone(), &claims(json!({"exp": t - 120}))),
        ),
        (
            "exp too far",
            w.pk.sign(hdr.clone(), &claims(json!({"exp": t + 3600}))),
        ),
        (
            "no exp",
            w.pk.sign(hdr.clone(), &claims(json!({"exp": null}))),
        ),
        (
            "no jti",
            w.pk.sign(hdr.clone(), &claims(json!({"jti": null}))),
        ),
        (
            "iat in future",
            w.pk.sign(hdr.clone(), &claims(json!({"iat": t + 600}))),
        ),
        (
            "iss != sub",
            w.pk.sign(hdr.clone(), &claims(json!({"iss": "svc"}))),
        ),
        (
            "unknown kid",
            w.pk.sign(json!({"kid": "nope"}), &claims(json!({}))),
        ),
        ("wrong key", other.sign(hdr.clone(), &claims(json!({})))),
        ("alg none", {
            let h = B64.encode(json!({"alg":"none","kid":"pk1"}).to_string());
            format!("{h}.{}.", B64.encode(claims(json!({})).to_string()))
        }),
        ("HS256", {
            use hmac::{Hmac, KeyInit, Mac};
            let h = B64.encode(json!({"alg":"HS256","kid":"pk1"}).to_string());
            let input = format!("{h}.{}", B64.encode(claims(json!({})).to_string()));
            let mut m = Hmac::<Sha256>::new_from_slice(w.pk.public.to_string().as_bytes()).unwrap();
            m.update(input.as_bytes());
            format!("{input}.{}", B64.encode(m.finalize().into_bytes()))
        }),
        (
            "EdDSA with an EC key",
            w.pk.sign_as("EdDSA", hdr.clone(), &claims(json!({}))),
        ),
        ("garbage", "a.b.c".into()),
    ];
    for (why, a) in cases {
        let r = token(&mut w, &form_headers(&[]), &pk_form(&a, ""));
        assert_error(&r, 401, "invalid_client");
        // RFC 9110 §15.5.2: a challenge also when no Basic was tried (the scheme the
        // endpoint takes besides assertions).
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"oauth-edge\""),
            "{why}"
        );
        ok(&mut w);
    }
    // Two methods at once, a client_id naming someone else, the wrong assertion type.
    let a = assertion(&w.pk, "pk", json!(ISS), &uuid());
    let r = token(
        &mut w,
        &form_headers(&[("authorization", &basic("pk", "x"))]),
        &pk_form(&a, ""),
    );
    assert_error(&r, 401, "invalid_client");
    let r = token(&mut w, &form_headers(&[]), &pk_form(&a, "&client_secret=x"));
    assert_error(&r, 401, "invalid_client");
    let r = token(&mut w, &form_headers(&[]), &pk_form(&a, "&client_id=svc"));
    assert_error(&r, 401, "invalid_client");
    let body =
        format!("grant_type=client_credentials&client_assertion_type=x&client_assertion={a}");
    assert_error(
        &token(&mut w, &form_headers(&[]), body.as_bytes()),
        401,
        "invalid_client",
    );
    // A secret client cannot authenticate with an assertion, nor pk with a secret.
    let a = w.pk.sign(
        json!({}),
        &json!({"iss":"svc","sub":"svc","aud":ISS,"jti":uuid(),"exp":t+60}),
    );
    assert_error(
        &token(&mut w, &form_headers(&[]), &pk_form(&a, "")),
        401,
        "invalid_client",
    );
    let r = token(
        &mut w,
        &form_headers(&[("authorization", &basic("pk", "anything"))]),
        b"grant_type=client_credentials",
    );
    assert_error(&r, 401, "invalid_client");
    ok(&mut w);
}

#[test]
fn rfc7523_jwks_uri_is_fetched_cached_and_refetched_on_a_kid_miss() {
    let mut w = world(json!({}));
    let uri_assertion = |k: &Key| {
        k.sign(
            json!({"kid": k.public["kid"]}),
            &json!({"iss":"uri","sub":"uri","aud":ISS,"jti":uuid(),"exp":now_s()+60}),
        )
    };
    for _ in 0..3 {
        let a = uri_assertion(&w.uri_key);
        let r = token(&mut w, &form_headers(&[]), &pk_form(&a, ""));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(w.h.jwks_calls[JWKS_URL], 1, "fetched once, then cached");
    // The client rotates: the new kid is not in the cached set, so one refetch finds it.
    let rotated = Key::new(Alg::ES256, "uri2");
    w.h.jwks.insert(
        JWKS_URL.into(),
        (
            Some(200),
            json!({"keys": [rotated.public.clone()]})
                .to_string()
                .into_bytes(),
        ),
    );
    let r = token(
        &mut w,
        &form_headers(&[]),
        &pk_form(&uri_assertion(&rotated), ""),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(w.h.jwks_calls[JWKS_URL], 2);
    // A kid nobody has: one refetch, then invalid_client.
    let ghost = Key::new(Alg::ES256, "ghost");
    let r = token(
        &mut w,
        &form_headers(&[]),
        &pk_form(&uri_assertion(&ghost), ""),
    );
    assert_error(&r, 401, "invalid_client");
    assert_eq!(w.h.jwks_calls[JWKS_URL], 3);
    // The client's server down: invalid_client, and nothing panics.
    w.h.jwks.insert(JWKS_URL.into(), (Some(503), vec![]));
    let r = token(
        &mut w,
        &form_headers(&[]),
        &pk_form(&uri_assertion(&ghost), ""),
    );
    assert_error(&r, 401, "invalid_client");
    let r = token(
        &mut w,
        &form_headers(&[]),
        &pk_form(&uri_assertion(&rotated), ""),
    );
    assert_eq!(r.status, 200, "the cached set still serves known kids");
}

#[test]
fn rfc9449_dpop_binds_the_token_and_checks_every_rule() {
    let mut w = world(json!({}));
    let k = Key::new(Alg::EdDSA, "d1");
    let svc = basic("svc", "svc-secret");
    let t = now_s();
    let r = token(
        &mut w,
        &form_headers(&[
            ("authorization", &svc),
            ("dpop", &k.proof("POST", TOKEN_URL, t, "p1", None)),
        ]),
        b"grant_type=client_credentials",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_body(&r);
    assert_eq!(v["token_type"], "DPoP");
    assert_eq!(v["dpop_access_token_bound"], true);
    assert_eq!(v["dpop_signing_alg"], "EdDSA");
    let (_, claims) = jwt_parts(v["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["jkt"], k.thumbprint());

    let mut private_jwk = k.private.clone();
    private_jwk.as_object_mut().unwrap().remove("kid");
    let with_private = k.sign(
        json!({"typ": "dpop+jwt", "jwk": private_jwk}),
        &json!({"jti": uuid(), "htm": "POST", "htu": TOKEN_URL, "iat": t}),
    );
    let other = Key::new(Alg::ES256, "o");
    // k's proof with a signature made by another key.
    let mut forged = k.proof("POST", TOKEN_URL, t, &uuid(), None);
    let foreign = other.proof("POST", TOKEN_URL, t, "x", None);
    let foreign_sig = foreign.rsplit('.').next().unwrap();
    forged.replace_range(forged.rfind('.').unwrap() + 1.., foreign_sig);
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "replayed jti",
            vec![k.proof("POST", TOKEN_URL, t, "p1", None)],
        ),
        (
            "wrong htm",
            vec![k.proof("GET", TOKEN_URL, t, &uuid(), None)],
        ),
        (
            "wrong htu",
            vec![k.proof("POST", PAR_URL, t, &uuid(), None)],
        ),
        (
            "stale iat",
            vec![k.proof("POST", TOKEN_URL, t - 600, &uuid(), None)],
        ),
        (
            "future iat",
            vec![k.proof("POST", TOKEN_URL, t + 600, &uuid(), None)],
        ),
        ("private key", vec![with_private]),
        (
            "two proofs",
            vec![
                k.proof("POST", TOKEN_URL, t, &uuid(), None),
                k.proof("POST", TOKEN_URL, t, &uuid(), None),
            ],
        ),
        ("bad signature", vec![forged]),
        (
            "typ",
            vec![k.sign(
                json!({"typ":"JWT","jwk":k.public}),
                &json!({"jti":uuid(),"htm":"POST","htu":TOKEN_URL,"iat":t}),
            )],
        ),
        (
            "no jwk",
            vec![k.sign(
                json!({"typ":"dpop+jwt"}),
                &json!({"jti":uuid(),"htm":"POST","htu":TOKEN_URL,"iat":t}),
            )],
        ),
        ("garbage", vec!["x.y.z".into()]),
    ];
    for (why, proofs) in cases {
        let mut hs = vec![("authorization", svc.as_str())];
        for p in &proofs {
            hs.push(("dpop", p.as_str()));
        }
        let r = token(&mut w, &form_headers(&hs), b"grant_type=client_credentials");
        assert_eq!(r.status, 400, "{why}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(json_body(&r)["error"], "invalid_dpop_proof", "{why}");
        let good = k.proof("POST", TOKEN_URL, t, &uuid(), None);
        let r = token(
            &mut w,
            &form_headers(&[("authorization", &svc), ("dpop", &good)]),
            b"grant_type=client_credentials",
        );
        assert_eq!(r.status, 200, "after {why}");
    }
    // The htu is normalised: case, default port, query.
    let p = k.proof(
        "POST",
        "HTTPS://AS.example.com:443/oauth/token?x=1",
        t,
        &uuid(),
        None,
    );
    let r = token(
        &mut w,
        &form_headers(&[("authorization", &svc), ("dpop", &p)]),
        b"grant_type=client_credentials",
    );
    assert_eq!(r.status, 200);
    // A client registered dpop_bound_access_tokens: no proof, no token.
    let r = token(
        &mut w,
        &form_headers(&[("authorization", &basic("bound", "b"))]),
        b"grant_type=client_credentials",
    );
    assert_error(&r, 400, "invalid_dpop_proof");
    let p = k.proof("POST", TOKEN_URL, t, &uuid(), None);
    let r = token(
        &mut w,
        &form_headers(&[("authorization", &basic("bound", "b")), ("dpop", &p)]),
        b"grant_type=client_credentials",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn rfc9449_s8_server_nonces() {
    let mut w = world(json!({"dpop": {"require_nonce": true, "nonce_lifetime": "60s"}}));
    let k = Key::new(Alg::ES256, "d1");
    let svc = basic("svc", "svc-secret");
    let t = now_s();
    let r = token(
        &mut w,
        &form_headers(&[
            ("authorization", &svc),
            ("dpop", &k.proof("POST", TOKEN_URL, t, &uuid(), None)),
        ]),
        b"grant_type=client_credentials",
    );
    assert_error(&r, 400, "use_dpop_nonce");
    let nonce = r.header("dpop-nonce").unwrap().to_string();
    let r = token(
        &mut w,
        &form_headers(&[
            ("authorization", &svc),
            (
                "dpop",
                &k.proof("POST", TOKEN_URL, t, &uuid(), Some("wrong")),
            ),
        ]),
        b"grant_type=client_credentials",
    );
    assert_error(&r, 400, "use_dpop_nonce");
    let r = token(
        &mut w,
        &form_headers(&[
            ("authorization", &svc),
            (
                "dpop",
                &k.proof("POST", TOKEN_URL, t, &uuid(), Some(&nonce)),
            ),
        ]),
        b"grant_type=client_credentials",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("dpop-nonce"), Some(nonce.as_str()));
    // Two periods later the nonce has rotated.
    let later = Now {
        unix_ms: NOW.unix_ms + 130_000,
    };
    let p = k.proof(
        "POST",
        TOKEN_URL,
        later.unix_ms / 1000,
        &uuid(),
        Some(&nonce),
    );
    let r = w.h.request_at(
        &w.e,
        "POST",
        "/oauth/token",
        &form_headers(&[("authorization", &svc), ("dpop", &p)]),
        b"grant_type=client_credentials",
        None,
        later,
    );
    assert_error(&r, 400, "use_dpop_nonce");
    assert_ne!(r.header("dpop-nonce"), Some(nonce.as_str()));
}

fn code_flow(
    w: &mut World,
    client_auth: &[(&str, &str)],
    client_id: &str,
    par_extra: &str,
    par_headers: &[(&str, &str)],
) -> String {
    let challenge = B64.encode(Sha256::digest(
        b"verifier-verifier-verifier-verifier-verifier-1",
    ));
    let body = format!(
        "response_type=code&client_id={client_id}&redirect_uri={}&scope=read&code_challenge={challenge}&code_challenge_method=S256{par_extra}",
        percent(CB)
    );
    let mut hs: Vec<(&str, &str)> = client_auth.to_vec();
    hs.extend_from_slice(par_headers);
    let r = w.h.request_inline(
        &w.e,
        "POST",
        "/oauth/pushed-authorization",
        &form_headers(&hs),
        body.as_bytes(),
        None,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let ru = json_body(&r)["request_uri"].as_str().unwrap().to_string();
    let user = Some(User {
        sub: "alice".into(),
        auth_time: Some(now_s()),
        session: None,
    });
    let r = w.h.request_inline(
        &w.e,
        "GET",
        &format!(
            "/oauth/authorize?client_id={client_id}&request_uri={}",
            percent(&ru)
        ),
        &Headers::default(),
        b"",
        user,
    );
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").unwrap();
    let code = loc
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    percent_decode(code)
}

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .unwrap()
        .to_string()
}

fn redeem(code: &str, client_id: &str) -> Vec<u8> {
    format!(
        "grant_type=authorization_code&client_id={client_id}&code={}&redirect_uri={}&code_verifier=verifier-verifier-verifier-verifier-verifier-1",
        percent(code),
        percent(CB)
    )
    .into_bytes()
}

#[test]
fn rfc9449_s5_public_refresh_tokens_are_bound_and_s10_dpop_jkt_binds_the_code() {
    let mut w = world(json!({}));
    let k = Key::new(Alg::EdDSA, "d1");
    let other = Key::new(Alg::EdDSA, "d2");
    let t = now_s();
    // dpop_jkt at PAR binds the code: another key cannot redeem it.
    let code = code_flow(
        &mut w,
        &[],
        "pub",
        &format!("&dpop_jkt={}", k.thumbprint()),
        &[],
    );
    let r = token(
        &mut w,
        &form_headers(&[("dpop", &other.proof("POST", TOKEN_URL, t, &uuid(), None))]),
        &redeem(&code, "pub"),
    );
    assert_error(&r, 400, "invalid_grant");
    let code = code_flow(
        &mut w,
        &[],
        "pub",
        &format!("&dpop_jkt={}", k.thumbprint()),
        &[],
    );
    let r = token(&mut w, &form_headers(&[]), &redeem(&code, "pub"));
    assert_error(&r, 400, "invalid_dpop_proof");
    // A proof at PAR binds too; a proof whose key differs from dpop_jkt is refused there.
    let par_proof = k.proof("POST", PAR_URL, t, &uuid(), None);
    let challenge = B64.encode(Sha256::digest(
        b"verifier-verifier-verifier-verifier-verifier-1",
    ));
    let body = format!("response_type=code&client_id=pub&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&dpop_jkt={}", percent(CB), other.thumbprint());
    let r = w.h.request_inline(
        &w.e,
        "POST",
        "/oauth/pushed-authorization",
        &form_headers(&[("dpop", &par_proof)]),
        body.as_bytes(),
        None,
    );
    assert_error(&r, 400, "invalid_dpop_proof");
    let par_proof = k.proof("POST", PAR_URL, t, &uuid(), None);
    let code = code_flow(&mut w, &[], "pub", "", &[("dpop", &par_proof)]);
    let r = token(
        &mut w,
        &form_headers(&[("dpop", &k.proof("POST", TOKEN_URL, t, &uuid(), None))]),
        &redeem(&code, "pub"),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_body(&r);
    assert_eq!(v["token_type"], "DPoP");
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    let refresh = |rt: &str| {
        format!(
            "grant_type=refresh_token&client_id=pub&refresh_token={}",
            percent(rt)
        )
        .into_bytes()
    };
    // The public client's refresh token is bound to k.
    let r = token(
        &mut w,
        &form_headers(&[("dpop", &other.proof("POST", TOKEN_URL, t, &uuid(), None))]),
        &refresh(&rt),
    );
    assert_error(&r, 400, "invalid_grant");
    let r = token(&mut w, &form_headers(&[]), &refresh(&rt));
    assert_error(&r, 400, "invalid_dpop_proof");
    let r = token(
        &mut w,
        &form_headers(&[("dpop", &k.proof("POST", TOKEN_URL, t, &uuid(), None))]),
        &refresh(&rt),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, at) = jwt_parts(json_body(&r)["access_token"].as_str().unwrap());
    assert_eq!(at["cnf"]["jkt"], k.thumbprint());
}

#[test]
fn rate_limits_answer_429_with_retry_after_then_serve_again() {
    let mut w = world(json!({"rate_limits": {"per_client": {"requests": 3, "window": "10s"}}}));
    let svc = form_headers(&[("authorization", &basic("svc", "svc-secret"))]);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = token(&mut w, &svc, b"grant_type=client_credentials");
        if r.status == 429 {
            assert_error(&r, 429, "rate_limit_exceeded");
            let ra: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=10).contains(&ra));
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    ok(&mut w); // another client is still served
    let later = Now {
        unix_ms: (NOW.unix_ms / 10_000 + 1) * 10_000,
    };
    let r = w.h.request_at(
        &w.e,
        "POST",
        "/oauth/token",
        &svc,
        b"grant_type=client_credentials",
        None,
        later,
    );
    assert_eq!(r.status, 200, "a new window");

    let mut w = world(json!({"rate_limits": {"per_address": {"requests": 2, "window": "10s"}}}));
    let svc = form_headers(&[("authorization", &basic("svc", "svc-secret"))]);
    assert_eq!(
        token(&mut w, &svc, b"grant_type=client_credentials").status,
        200
    );
    assert_eq!(token(&mut w, &svc, b"garbage").status, 400);
    assert_error(
        &token(&mut w, &svc, b"grant_type=client_credentials"),
        429,
        "rate_limit_exceeded",
    );
    w.h.source = Some("198.51.100.1".into());
    assert_eq!(
        token(&mut w, &svc, b"grant_type=client_credentials").status,
        200
    );
}

#[test]
fn rfc9449_11_1_a_proof_is_recorded_only_for_an_authenticated_client() {
    // Proofs sent without valid credentials never reach the replay cache: the same proof is
    // still good once the client authenticates, and only then is a second use a replay.
    let mut w = world(json!({}));
    let k = Key::new(Alg::ES256, "k-unauth");
    let proof = k.proof("POST", TOKEN_URL, now_s(), &uuid(), None);
    let before = w.h.shared.bytes();
    for _ in 0..3 {
        let r = token(
            &mut w,
            &form_headers(&[("authorization", &basic("svc", "wrong")), ("dpop", &proof)]),
            b"grant_type=client_credentials",
        );
        assert_error(&r, 401, "invalid_client");
    }
    assert_eq!(w.h.shared.bytes(), before, "nothing written for a stranger");
    let good = form_headers(&[
        ("authorization", &basic("svc", "svc-secret")),
        ("dpop", &proof),
    ]);
    let r = token(&mut w, &good, b"grant_type=client_credentials");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_error(
        &token(&mut w, &good, b"grant_type=client_credentials"),
        400,
        "invalid_dpop_proof",
    );
}

#[test]
fn a_public_clients_budget_is_per_source_address() {
    // Anyone can name a public client: garbage requests from one address must not 429 the
    // client's users elsewhere.
    let mut w = world(json!({"rate_limits": {"per_client": {"requests": 3, "window": "10s"}}}));
    let garbage = b"grant_type=refresh_token&refresh_token=garbage&client_id=pub";
    w.h.source = Some("203.0.113.66".into());
    let statuses: Vec<u16> = (0..5)
        .map(|_| token(&mut w, &form_headers(&[]), garbage).status)
        .collect();
    assert_eq!(statuses, [400, 400, 400, 429, 429]);
    w.h.source = Some("192.0.2.7".into());
    assert_eq!(
        token(&mut w, &form_headers(&[]), garbage).status,
        400,
        "not 429"
    );
}

#[test]
fn fapi2_profile_is_strict() {
    let mut w = world(json!({"profile": "fapi2"}));
    let k = Key::new(Alg::ES256, "d1");
    let t = now_s();
    // Secrets are not enough, and proofs are required.
    let r = token(
        &mut w,
        &form_headers(&[
            ("authorization", &basic("svc", "svc-secret")),
            ("dpop", &k.proof("POST", TOKEN_URL, t, &uuid(), None)),
        ]),
        b"grant_type=client_credentials",
    );
    assert_error(&r, 401, "invalid_client");
    let a = assertion(&w.pk, "pk", json!(ISS), &uuid());
    assert_error(
        &token(&mut w, &form_headers(&[]), &pk_form(&a, "")),
        400,
        "invalid_dpop_proof",
    );
    // The audience is the issuer, as a string.
    for aud in [json!(TOKEN_URL), json!([ISS])] {
        let a = assertion(&w.pk, "pk", aud, &uuid());
        let r = token(
            &mut w,
            &form_headers(&[("dpop", &k.proof("POST", TOKEN_URL, t, &uuid(), None))]),
            &pk_form(&a, ""),
        );
        assert_error(&r, 401, "invalid_client");
    }
    let a = assertion(&w.pk, "pk", json!(ISS), &uuid());
    let r = token(
        &mut w,
        &form_headers(&[("dpop", &k.proof("POST", TOKEN_URL, t, &uuid(), None))]),
        &pk_form(&a, ""),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_body(&r)["token_type"], "DPoP");
    // The whole flow: PAR and token with private_key_jwt and DPoP.
    let a = assertion(&w.pk, "pk", json!(ISS), &uuid());
    let enc_a = format!("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}");
    let code = code_flow(&mut w, &[], "pk", &format!("&{enc_a}"), &[]);
    let a = assertion(&w.pk, "pk", json!(ISS), &uuid());
    let mut body = redeem(&code, "pk");
    body.extend_from_slice(format!("&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}").as_bytes());
    let r = token(
        &mut w,
        &form_headers(&[("dpop", &k.proof("POST", TOKEN_URL, t, &uuid(), None))]),
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Metadata says so.
    let r = w.h.request_inline(
        &w.e,
        "GET",
        "/.well-known/oauth-authorization-server",
        &Headers::default(),
        b"",
        None,
    );
    let m = json_body(&r);
    assert_eq!(m["require_pushed_authorization_requests"], true);
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    assert_eq!(
        m["dpop_signing_alg_values_supported"],
        json!(["EdDSA", "ES256", "PS256", "Ed25519"])
    );
    // Lifetimes over 60 s and RS256 signing are refused with the profile.
    let base = |extra: Value| {
        let mut c = json!({"issuer": ISS, "profile": "fapi2",
            "signing_keys": [generate_jwk(Alg::EdDSA, "as1", &mut SystemRandom).unwrap()]});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        Config::from_json(c.to_string().as_bytes())
    };
    assert!(base(json!({})).is_ok());
    assert!(base(json!({"lifetimes": {"code": "120s"}})).is_err());
    assert!(base(json!({"lifetimes": {"request_uri": "90s"}})).is_err());
    assert!(base(json!({"profile": "fapi3"})).is_err());
}

#[test]
fn fapi2_refresh_tokens_are_not_rotated_and_the_password_grant_is_refused() {
    // FAPI 2.0 Security Profile §5.3.2.1: a client that lost a refresh answer retries with the
    // token it holds and succeeds. Here refresh tokens of (the profile's only, confidential)
    // clients are not rotated: no new one in the answer, the held one keeps working.
    let mut w = world(json!({"profile": "fapi2"}));
    let k = Key::new(Alg::ES256, "d1");
    let t = now_s();
    let auth = |w: &World| {
        format!(
            "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
            assertion(&w.pk, "pk", json!(ISS), &uuid())
        )
    };
    let par_auth = auth(&w);
    let code = code_flow(&mut w, &[], "pk", &par_auth, &[]);
    let mut body = redeem(&code, "pk");
    body.extend_from_slice(auth(&w).as_bytes());
    let r = token(
        &mut w,
        &form_headers(&[("dpop", &k.proof("POST", TOKEN_URL, t, &uuid(), None))]),
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rt = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let body = format!(
            "grant_type=refresh_token&refresh_token={}{}",
            percent(&rt),
            auth(&w)
        );
        let r = token(
            &mut w,
            &form_headers(&[("dpop", &k.proof("POST", TOKEN_URL, t, &uuid(), None))]),
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = json_body(&r);
        assert_eq!(v["token_type"], "DPoP");
        assert!(v.get("refresh_token").is_none(), "not rotated: {v}");
    }
    // §5.3.2.1: the password grant is refused at start under the profile.
    let mut c = json!({"issuer": ISS, "profile": "fapi2",
        "signing_keys": [generate_jwk(Alg::EdDSA, "as1", &mut SystemRandom).unwrap()],
        "password_grant": {"cluster": "users"}});
    let err = Config::from_json(c.to_string().as_bytes()).err().unwrap();
    assert_eq!(err.field, "password_grant", "{err}");
    assert!(err.problem.contains("fapi2"), "{err}");
    c["profile"] = json!("default");
    assert!(Config::from_json(c.to_string().as_bytes()).is_ok());
}

#[test]
fn garbage_assertions_and_proofs_never_panic() {
    let mut w = world(json!({}));
    let svc = basic("svc", "svc-secret");
    let junk = [
        "", ".", "..", "...", "a.b", "e30.e30.e30", "W10.W10.W10", "bnVsbA.bnVsbA.",
        "eyJhbGciOiJFZERTQSIsImp3ayI6W119.e30.AA", "eyJhbGciOiJFZERTQSIsImp3ayI6InN0ciJ9.e30.AA",
        "eyJhbGciOiJFUzI1NiIsInR5cCI6ImRwb3Arand0IiwiandrIjp7Imt0eSI6IkVDIiwiY3J2IjoiUC0yNTYiLCJ4IjoiIiwieSI6IiJ9fQ.e30.AA",
        "\u{0}\u{1}", "eyJ.eyJ.eyJ",
    ];
    for j in junk {
        let r = token(
            &mut w,
            &form_headers(&[("authorization", &svc), ("dpop", j)]),
            b"grant_type=client_credentials",
        );
        assert_eq!(r.status, 400, "{j:?}");
        let body = pk_form(&percent(j), "");
        let r = token(&mut w, &form_headers(&[]), &body);
        assert!(r.status == 401 || r.status == 400, "{j:?}");
        ok(&mut w);
    }
    let long = "A".repeat(20_000);
    let r = token(
        &mut w,
        &form_headers(&[("authorization", &svc), ("dpop", &long)]),
        b"grant_type=client_credentials",
    );
    assert_error(&r, 400, "invalid_dpop_proof");
    ok(&mut w);
}

/// No clients, no keys, shared data only: enough for store-level tests.
struct NoLocal;

impl oauth_edge::flow::Local for NoLocal {
    fn client(&self, _: &str) -> Option<oauth_edge::flow::Lookup> {
        None
    }
    fn jwks(&self, _: &str, _: bool) -> Option<oauth_edge::flow::JwksLookup> {
        None
    }
    fn remote_prerequisite(
        &self,
        _: &oauth_edge::flow::StoreOp,
    ) -> Option<oauth_edge::flow::SessionOp> {
        None
    }
    fn remote(&self) -> bool {
        false
    }
}

#[test]
fn the_replay_cache_holds_several_ids_per_slot_and_catches_every_replay() {
    use oauth_edge::flow::{Ctx, Journal};
    use oauth_edge::replay::{remember_once, seen};
    use oauth_edge::store::Ring;
    let ring = Ring {
        name: "jti",
        size: 1024,
        remote: false,
    };
    let mut shared = common::SharedData::default();
    for k in ring.keys() {
        shared.set(&k, b"", 0).unwrap();
    }
    let mut rng = SystemRandom;
    let mut run = |f: &mut dyn FnMut(&mut Ctx<'_>) -> bool, at: Now| {
        let mut journal = Journal::default();
        let mut ctx = Ctx::new(at, &mut rng, &mut journal, &NoLocal).with_store(&mut shared);
        f(&mut ctx)
    };
    // Four times as many live ids as slots: every one fits, every replay is caught.
    let n = 4 * 1024;
    let exp = NOW.unix_ms + 60_000;
    for i in 0..n {
        let id = format!("jti-{i}");
        assert!(
            run(&mut |c| remember_once(c, ring, &id, exp).unwrap(), NOW),
            "{i}"
        );
    }
    for i in (0..n).step_by(7) {
        let id = format!("jti-{i}");
        assert!(
            !run(&mut |c| remember_once(c, ring, &id, exp).unwrap(), NOW),
            "replay {i}"
        );
        assert!(run(&mut |c| seen(c, ring, &id).unwrap(), NOW));
    }
    assert!(!run(&mut |c| seen(c, ring, "never").unwrap(), NOW));
    // After expiry the same ids are new again, and the space is reused.
    let later = Now { unix_ms: exp + 1 };
    for i in 0..n {
        let id = format!("jti-{i}");
        assert!(run(
            &mut |c| remember_once(c, ring, &id, exp + 60_000).unwrap(),
            later
        ));
    }
}
