//! Whole requests through the engine, as the adapter runs them (an inline store with
//! proxy-wasm's CAS semantics, static clients): every answer is a clean status with a JSON body
//! or a redirect, and the engine keeps answering.
#![no_main]

use std::collections::HashMap;
use libfuzzer_sys::fuzz_target;
use oauth_edge::config::Config;
use oauth_edge::engine::{Engine, HeadAction, Step};
use oauth_edge::flow::{Answer, Lookup, Need, Now, Request, StoreOp, StoreResult, SyncStore, User};
use oauth_edge::http::Headers;
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;

#[derive(Default)]
struct Shared {
    map: HashMap<String, (Vec<u8>, u32)>,
    counter: u32,
}

impl SyncStore for Shared {
    fn run(&mut self, op: &StoreOp) -> StoreResult {
        match op {
            StoreOp::Get { key } => match self.map.get(key) {
                Some((v, c)) => StoreResult::Value { value: Some(v.clone()), cas: u64::from(*c) },
                None => StoreResult::Value { value: None, cas: 0 },
            },
            StoreOp::Cas { key, value, cas, .. } => {
                if let Some((_, c)) = self.map.get(key) {
                    if *cas != 0 && *cas != u64::from(*c) {
                        return StoreResult::Conflict;
                    }
                }
                self.counter += 1;
                self.map.insert(key.clone(), (value.clone(), self.counter));
                StoreResult::Written
            }
        }
    }
}

/// The engine holds Rc/RefCell (one per wasm VM, single-threaded): one per fuzzing thread.
fn engine() -> &'static Engine {
    thread_local! {
        static ENGINE: &'static Engine = Box::leak(Box::new(make_engine()));
    }
    ENGINE.with(|e| *e)
}

fn make_engine() -> Engine {
    let cfg = serde_json::json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).expect("key")],
        "store": {"request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 64,
                  "jti_slots": 64, "rate_limit_slots": 16, "device_slots": 64, "revoked_slots": 64},
        "rate_limits": {"per_client": {"requests": 1000000, "window": "1s"},
                        "per_address": {"requests": 1000000, "window": "1s"}},
        "dpop": {"require_nonce": false},
        "clients": [
            {"client_id": "web", "client_secret": oauth_edge::client::hash_secret("s"),
             "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
             "scope": "openid read", "redirect_uris": ["https://app.example.com/cb"],
             "authorization_details_types": ["a"]},
            {"client_id": "spa", "token_endpoint_auth_method": "none",
             "grant_types": ["authorization_code", "refresh_token"], "scope": "read",
             "redirect_uris": ["https://spa.example.com/cb"], "refresh_token_cookie": true},
            {"client_id": "pk", "token_endpoint_auth_method": "private_key_jwt",
             "jwks": {"keys": [{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]},
             "grant_types": ["client_credentials"], "scope": "read", "dpop_bound_access_tokens": true},
            {"client_id": "tv", "token_endpoint_auth_method": "none", "scope": "read",
             "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]},
            {"client_id": "gw", "client_secret": oauth_edge::client::hash_secret("s"), "scope": "read",
             "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange", "password"],
             "token_exchange_audiences": ["https://api.example"]},
            {"client_id": "pkuri", "token_endpoint_auth_method": "private_key_jwt",
             "jwks_uri": "https://rp.example.com/jwks", "grant_types": ["client_credentials"]},
            {"client_id": "mtls", "token_endpoint_auth_method": "tls_client_auth",
             "tls_client_auth_subject_dn": "CN=mtls", "tls_client_certificate_bound_access_tokens": true,
             "grant_types": ["client_credentials", "authorization_code", "refresh_token"], "scope": "openid read",
             "redirect_uris": ["https://mtls.example.com/cb"], "post_logout_redirect_uris": ["https://mtls.example.com/bye"]}
        ],
        "mtls": {"chain_verified": true},
        "userinfo": {"cluster": "users"},
        "end_session": {"logout_url": "/bye", "clear_cookies": ["login"]},
        "jwks_fetch": {"cluster": "jwks"},
        "device": {"interval": "1s"},
        "token_exchange": {"trusted_issuers": [{"issuer": "https://idp.example", "jwks_uri": "https://idp.example/jwks"}]},
        "password_grant": {"cluster": "users"},
        "resource_protection": {"routes": [
            {"prefix": "/api", "resource": "https://api.example/api", "scopes": {"all": ["read"]}},
            {"prefix": "/pay", "resource": "https://api.example/pay", "dpop": "required"}]}
    });
    Engine::new(Config::from_json(cfg.to_string().as_bytes()).expect("config"))
}

fn shared() -> &'static std::cell::RefCell<Shared> {
    thread_local! {
        static S: &'static std::cell::RefCell<Shared> = {
            let s = Box::leak(Box::new(std::cell::RefCell::new(Shared::default())));
            for ring in engine().rings() {
                for key in ring.keys() {
                    s.borrow_mut().run(&StoreOp::Cas { key: key.clone(), value: vec![], cas: 0, expires_at_ms: 0 });
                }
            }
            s
        };
    }
    S.with(|s| *s)
}

const PATHS: [&str; 15] = [
    "/oauth/token",
    "/oauth/pushed-authorization",
    "/oauth/authorize",
    "/oauth/refresh",
    "/oauth/jwks",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/oauth/revoke",
    "/oauth/introspect",
    "/oauth/device_authorization",
    "/oauth/device",
    "/api/orders",
    "/.well-known/oauth-protected-resource/api",
    "/oauth/userinfo",
    "/oauth/logout",
];
// OPTIONS: CORS preflights (with fuzzed Origin and Access-Control-Request-Method headers).
const METHODS: [&str; 4] = ["POST", "GET", "PUT", "OPTIONS"];
const TYPES: [&str; 3] = ["application/x-www-form-urlencoded", "application/json", "text/plain"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let e = engine();
    let path_idx = usize::from(sel) % PATHS.len();
    let (head, body) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let head = String::from_utf8_lossy(head).into_owned();
    let mut path = PATHS[path_idx].to_string();
    if path_idx == 2 || path_idx == 10 {
        path.push('?');
        path.push_str(&String::from_utf8_lossy(body));
    }
    let method = METHODS[usize::from(sel >> 3) % METHODS.len()];
    let mut headers = vec![("content-type".to_string(), TYPES[usize::from(sel >> 5) % TYPES.len()].to_string())];
    for line in head.split('\n') {
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let headers = Headers(headers);
    let user = (sel & 4 != 0).then(|| User {
        sub: "alice".into(),
        auth_time: Some(1_800_000_000),
        session: (sel & 16 != 0).then(|| "login-1".into()),
    });
    // Half of the requests come over a connection with the mtls client's certificate.
    let client_cert = (sel & 8 != 0).then(|| oauth_edge::mtls::ClientCert {
        sha256: [7; 32],
        subject: Some("CN=mtls".into()),
        dns: None,
        uri: None,
        sans: None,
    });
    let now = Now { unix_ms: 1_800_000_000_000 };
    let Some(ep) = e.route(&path).or_else(|| e.protected(&path, "api.example", method)) else { return };
    let r = match e.on_headers(ep, method, &headers) {
        HeadAction::Respond(r) => r,
        HeadAction::ReadBody | HeadAction::Start => {
            let source = Some("192.0.2.1".to_string());
            let req = Request { method: method.into(), path, headers, body: body.to_vec(), user, source, client_cert };
            let mut st = shared().borrow_mut();
            let mut step = e.start_with(ep, req, now, &mut SystemRandom, Some(&mut *st));
            loop {
                match step {
                    Step::Done(r) => break r,
                    Step::Need(Need::Client(_), p) => {
                        step = e.resume_with(p, Answer::Client(Lookup::NotFound), &mut SystemRandom, Some(&mut *st));
                    }
                    Step::Need(Need::Jwks(url), p) => {
                        // The fuzz input's tail, as the client's JWK Set.
                        let l = e.jwks_from_fetch(&url, Some(200), body, now);
                        step = e.resume_with(p, Answer::Jwks(l), &mut SystemRandom, Some(&mut *st));
                    }
                    Step::Need(Need::Http(_), p) => {
                        let a = oauth_edge::flow::HttpAnswer { status: Some(200), body: body.to_vec() };
                        step = e.resume_with(p, Answer::Http(a), &mut SystemRandom, Some(&mut *st));
                    }
                    Step::Need(Need::Store(op), p) => {
                        let a = st.run(&op);
                        step = e.resume_with(p, Answer::Store(a), &mut SystemRandom, Some(&mut *st));
                    }
                    // Shared data has no etcd session (the gateway answers so too).
                    Step::Need(Need::Session(_), p) => {
                        step = e.resume_with(p, Answer::Session(false), &mut SystemRandom, Some(&mut *st));
                    }
                }
            }
        }
    };
    if r.forward.is_some() {
        // A protected route's request that passed: nothing is answered.
        assert_eq!(r.status, 0);
        return;
    }
    assert!((200..=500).contains(&r.status), "status {}", r.status);
    if r.status == 303 {
        assert!(r.header("location").is_some());
    } else {
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
        if r.status >= 400 {
            assert!(v.get("error").and_then(|x| x.as_str()).is_some());
        }
        if r.status == 500 {
            assert_eq!(v["error"], "server_error");
        }
    }
});
