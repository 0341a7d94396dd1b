//! Whole requests through the core in V8: the token endpoint as `make bench` drives it
//! (client_credentials with a client secret, an EdDSA-signed token; the same with an ES256 or an
//! EdDSA DPoP proof), run by the native flow tests' fake host (tests/common: shared data with
//! proxy-wasm's semantics, answered inline as the adapter does). Set against `make bench`'s Envoy
//! CPU per request, this tells the core's share from Envoy's and the host calls'.

use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use oauth_edge::config::Config;
use oauth_edge::engine::Engine;
use oauth_edge::keys::{generate_jwk, Alg, KeySet};
use oauth_edge::random::SystemRandom;
use serde_json::json;

#[path = "../../../tests/common/mod.rs"]
#[allow(clippy::all, unused)]
mod common;

use common::{form_headers, Host, NOW};

use crate::Case;

const ISSUER: &str = "https://as.bench.example";
const TOKEN_URL: &str = "https://as.bench.example/oauth/token";
const BODY: &[u8] = b"grant_type=client_credentials&scope=read%20write";

fn engine() -> (Engine, Host) {
    let key = generate_jwk(Alg::EdDSA, "bench-eddsa", &mut SystemRandom).unwrap_or_default();
    let secret = oauth_edge::client::hash_secret("bench-secret");
    let cfg = json!({
        "issuer": ISSUER,
        "signing_keys": [key],
        "lifetimes": {"access_token": "300s"},
        "access_token_audience": "https://api.bench.example",
        "store": {"share_percent": 100, "replay_share_percent": 100, "jti_slots": 262144},
        "dpop": {"proof_lifetime": "600s"},
        "resource_protection": {"routes": [{"prefix": "/api", "resource": "https://api.bench.example/api",
            "audience": "https://api.bench.example", "scopes": {"all": ["read"]}}]},
        "clients": [
            {"client_id": "bench-client", "client_secret": secret,
             "token_endpoint_auth_method": "client_secret_basic",
             "grant_types": ["client_credentials"], "scope": "read write"},
            {"client_id": "bench-dpop", "client_secret": secret,
             "token_endpoint_auth_method": "client_secret_basic", "dpop_bound_access_tokens": true,
             "grant_types": ["client_credentials"], "scope": "read write"}
        ]
    });
    let e = Engine::new(Config::from_json(cfg.to_string().as_bytes()).expect("config"));
    let mut h = Host::without_registry();
    h.init(&e);
    (e, h)
}

/// `n` DPoP proofs for the token endpoint, one `alg` key, each its own `jti`.
fn proofs(alg: Alg, n: usize) -> Vec<String> {
    let jwk = generate_jwk(alg, "p", &mut SystemRandom).unwrap_or_default();
    let ks = KeySet::from_jwks(std::slice::from_ref(&jwk), None).expect("key");
    let mut public = jwk.clone();
    if let Some(o) = public.as_object_mut() {
        for k in ["d", "kid", "alg", "use"] {
            o.remove(k);
        }
    }
    let header = json!({"typ": "dpop+jwt", "alg": alg.as_str(), "jwk": public});
    let h = B64.encode(header.to_string());
    (0..n)
        .map(|i| {
            let claims = json!({"jti": format!("bench-{i:08}"),
                "htm": "POST", "htu": TOKEN_URL, "iat": NOW.unix_ms / 1000});
            let input = format!("{h}.{}", B64.encode(claims.to_string()));
            let sig = ks
                .active()
                .and_then(|k| k.sign(input.as_bytes()))
                .unwrap_or_default();
            format!("{input}.{}", B64.encode(sig))
        })
        .collect()
}

pub fn cases(out: &mut Vec<Case>) {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bench-client:bench-secret")
    );
    let (e, mut h) = engine();
    out.push((
        "token: client_credentials, EdDSA",
        Box::new(move || {
            let headers = form_headers(&[("authorization", auth.as_str())]);
            let r = h.request_inline(&e, "POST", "/oauth/token", &headers, black_box(BODY), None);
            assert_eq!(r.status, 200);
        }),
    ));
    // A protected route's check of a Bearer token this worker has verified before (the
    // signature is cached): what `make bench`'s "bearer" row adds to a pass-through request,
    // apart from the host calls.
    {
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bench-client:bench-secret")
        );
        let (e, mut h) = engine();
        let headers = form_headers(&[("authorization", auth.as_str())]);
        let r = h.request_inline(&e, "POST", "/oauth/token", &headers, BODY, None);
        let token = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_string))
            .unwrap_or_default();
        let headers = oauth_edge::http::Headers(vec![
            (":authority".into(), "api.bench.example".into()),
            ("authorization".into(), format!("Bearer {token}")),
            ("user-agent".into(), "wrk".into()),
        ]);
        out.push((
            "protected route: Bearer, cached",
            Box::new(move || {
                let r = h.request_inline(&e, "GET", "/api/x", &headers, b"", None);
                assert!(r.forward.is_some(), "{}", String::from_utf8_lossy(&r.body));
            }),
        ));
    }
    for (alg, name) in [
        (Alg::ES256, "token: client_credentials + ES256 DPoP"),
        (Alg::EdDSA, "token: client_credentials + EdDSA DPoP"),
    ] {
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bench-dpop:bench-secret")
        );
        let (e, mut h) = engine();
        // Used in turn, each once. When the pool runs out (about 1.5 s of requests in V8, fewer
        // than the default rounds take), the host's shared data starts afresh, replay cache and
        // all, and the pool is used again: one ring setup per 8,000 requests.
        let pool = proofs(alg, 8_000);
        let mut i = 0usize;
        out.push((
            name,
            Box::new(move || {
                if i == pool.len() {
                    h = Host::without_registry();
                    h.init(&e);
                    i = 0;
                }
                let Some(p) = pool.get(i) else {
                    panic!("the DPoP proof pool is empty");
                };
                i += 1;
                let headers =
                    form_headers(&[("authorization", auth.as_str()), ("dpop", p.as_str())]);
                let r =
                    h.request_inline(&e, "POST", "/oauth/token", &headers, black_box(BODY), None);
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            }),
        ));
    }
}
