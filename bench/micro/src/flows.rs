//! Whole requests through the core in V8: the token endpoint as `make bench` drives it
//! (client_credentials with a client secret, an EdDSA-signed token; the same with a DPoP proof),
//! run by the native flow tests' fake host (tests/common: shared data with proxy-wasm's
//! semantics, answered inline as the adapter does). Set against `make bench`'s Envoy CPU per
//! request, this tells the core's share from Envoy's and the host calls'.

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

/// `n` ES256 DPoP proofs for the token endpoint, one key, each its own `jti`.
fn proofs(n: usize) -> Vec<String> {
    let jwk = generate_jwk(Alg::ES256, "p", &mut SystemRandom).unwrap_or_default();
    let ks = KeySet::from_jwks(std::slice::from_ref(&jwk), None).expect("key");
    let header = json!({"typ": "dpop+jwt", "alg": "ES256",
        "jwk": {"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]}});
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
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bench-dpop:bench-secret")
    );
    let (e, mut h) = engine();
    // Enough for the warm-up and rounds at a few hundred µs each (run.mjs's defaults); used in
    // turn, each once.
    let pool = proofs(12_000);
    let mut i = 0usize;
    out.push((
        "token: client_credentials + ES256 DPoP",
        Box::new(move || {
            let Some(p) = pool.get(i) else {
                panic!("the DPoP proof pool is used up: fewer rounds or ms");
            };
            i += 1;
            let headers = form_headers(&[("authorization", auth.as_str()), ("dpop", p.as_str())]);
            let r = h.request_inline(&e, "POST", "/oauth/token", &headers, black_box(BODY), None);
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }),
    ));
}
