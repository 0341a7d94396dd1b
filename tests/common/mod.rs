//! A fake host for native flow tests: shared data with proxy-wasm's exact CAS semantics, a
//! registry as a closure, and the same stepping the proxy-wasm adapter does.
#![allow(dead_code)]

pub mod etcd;
pub mod io;

use std::collections::HashMap;

use oauth_edge::engine::{Endpoint, Engine, HeadAction, Pending, Step};
use oauth_edge::flow::{
    Answer, HttpAnswer, Need, Now, Request, StoreOp, StoreResult, SyncStore, User,
};
use oauth_edge::http::{Call as HttpCall, Headers, Response};
use oauth_edge::random::SystemRandom;

/// proxy-wasm shared data as proxy-wasm-cpp-host implements it: one process-wide version
/// counter; `cas == 0` writes unconditionally; a non-zero cas is checked only if the key exists;
/// nothing expires and nothing is deleted.
#[derive(Default)]
pub struct SharedData {
    map: HashMap<String, (Vec<u8>, u32)>,
    counter: u32,
}

impl SharedData {
    pub fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.map.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    pub fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), ()> {
        if let Some((_, current)) = self.map.get(key) {
            if cas != 0 && cas != *current {
                return Err(());
            }
        }
        self.counter += 1;
        self.map
            .insert(key.to_string(), (value.to_vec(), self.counter));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.map.iter().map(|(k, (v, _))| k.len() + v.len()).sum()
    }
}

/// The fake shared data as an inline store, as the adapter runs it.
impl SyncStore for SharedData {
    fn run(&mut self, op: &StoreOp) -> StoreResult {
        match op {
            StoreOp::Get { key } => {
                let (value, cas) = self.get(key);
                StoreResult::Value {
                    value,
                    cas: u64::from(cas.unwrap_or(0)),
                }
            }
            StoreOp::Cas {
                key, value, cas, ..
            } => {
                let Ok(cas) = u32::try_from(*cas) else {
                    return StoreResult::Failed;
                };
                if cas == 0 {
                    return StoreResult::Failed;
                }
                match self.set(key, value, cas) {
                    Ok(()) => StoreResult::Written,
                    Err(()) => StoreResult::Conflict,
                }
            }
        }
    }
}

pub type Registry = Box<dyn FnMut(&str) -> (Option<u16>, Vec<u8>)>;

pub struct Host {
    pub shared: SharedData,
    pub registry: Registry,
    pub registry_calls: usize,
    /// JWK Sets served at jwks_uri URLs (status, body), and how often each was fetched.
    pub jwks: HashMap<String, (Option<u16>, Vec<u8>)>,
    pub jwks_calls: HashMap<String, usize>,
    /// The downstream address requests come from.
    pub source: Option<String>,
    /// The TLS client certificate of the connection requests come over (RFC 8705).
    pub cert: Option<oauth_edge::mtls::ClientCert>,
    /// Other dispatched calls (the password grant's credential check), and how many were made.
    pub http: Box<dyn FnMut(&HttpCall) -> HttpAnswer>,
    pub http_calls: usize,
    /// The etcd the engine's remote store operations go to (shared between hosts = replicas).
    pub etcd: Option<std::rc::Rc<std::cell::RefCell<etcd::FakeEtcd>>>,
}

pub const NOW: Now = Now {
    unix_ms: 1_800_000_000_000,
};

impl Host {
    pub fn new(registry: Registry) -> Self {
        Host {
            shared: SharedData::default(),
            registry,
            registry_calls: 0,
            jwks: HashMap::new(),
            jwks_calls: HashMap::new(),
            source: Some("192.0.2.7".into()),
            cert: None,
            http: Box::new(|_: &HttpCall| HttpAnswer {
                status: None,
                body: vec![],
            }),
            http_calls: 0,
            etcd: None,
        }
    }

    pub fn without_registry() -> Self {
        Self::new(Box::new(|_: &str| panic!("no registry call expected")))
    }

    /// What the adapter does at configure time: create every ring key, empty.
    pub fn init(&mut self, e: &Engine) {
        oauth_edge::gateway::rings::create_keys(&io::SharedIo::new(&mut self.shared), e);
    }

    pub fn store(&mut self, op: StoreOp) -> StoreResult {
        self.shared.run(&op)
    }

    /// A whole request with the store answering inline (how the adapter runs shared data).
    pub fn request_inline(
        &mut self,
        e: &Engine,
        method: &str,
        path: &str,
        headers: &Headers,
        body: &[u8],
        user: Option<User>,
    ) -> Response {
        let authority = headers.all(":authority").next().unwrap_or("");
        let ep = e
            .route(path)
            .or_else(|| e.protected(path, authority, method))
            .expect("an OAuth path or a protected route");
        match e.on_headers(ep, method, headers) {
            HeadAction::Respond(r) => r,
            HeadAction::ReadBody | HeadAction::Start => {
                let req = self.request(method, path, headers, body, user);
                let mut step =
                    e.start_with(ep, req, NOW, &mut SystemRandom, Some(&mut self.shared));
                loop {
                    match step {
                        Step::Done(r) => return r,
                        Step::Need(Need::Store(_), _) if self.etcd.is_none() => {
                            panic!("the inline store answers every store operation")
                        }
                        Step::Need(n, p) => {
                            let a = self.answer(e, n, NOW);
                            step = e.resume_with(p, a, &mut SystemRandom, Some(&mut self.shared));
                        }
                    }
                }
            }
        }
    }

    /// A complete request from this host's downstream address.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &Headers,
        body: &[u8],
        user: Option<User>,
    ) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: headers.clone(),
            body: body.to_vec(),
            user,
            source: self.source.clone(),
            client_cert: self.cert.clone(),
        }
    }

    /// One need, answered by the core's lookup policy (the adapter's): the calls it makes are
    /// served by this host's registry, jwks_uri documents, etcd and HTTP closure.
    pub fn answer(&mut self, e: &Engine, need: Need, now: Now) -> Answer {
        use oauth_edge::gateway::lookup::{self, Waiting};
        let out = {
            let io = io::SharedIo::new(&mut self.shared);
            lookup::outgoing(e, &io, need, now)
        };
        let (call, waiting) = match out {
            Ok(out) => out,
            Err(answer) => return answer,
        };
        let (status, body) = match &waiting {
            Waiting::Store(_) | Waiting::Session(_) => {
                let etcd = self.etcd.as_ref().expect("a store call goes to etcd");
                etcd.borrow_mut().handle(&call, now.unix_ms / 1000)
            }
            Waiting::Client(id) => {
                self.registry_calls += 1;
                (self.registry)(id)
            }
            Waiting::Jwks(url) => {
                *self.jwks_calls.entry(url.clone()).or_default() += 1;
                self.jwks.get(url).cloned().unwrap_or((Some(404), vec![]))
            }
            Waiting::Http => {
                self.http_calls += 1;
                let a = (self.http)(&call);
                (a.status, a.body)
            }
        };
        let io = io::SharedIo::new(&mut self.shared);
        lookup::answer(e, &io, waiting, status, &body, now)
    }

    /// Runs a step to its answer.
    pub fn drive(&mut self, e: &Engine, mut step: Step, now: Now) -> Response {
        loop {
            match step {
                Step::Done(r) => return r,
                Step::Need(n, p) => {
                    let a = self.answer(e, n, now);
                    step = e.resume(p, a, &mut SystemRandom);
                }
            }
        }
    }

    /// A whole request, as the adapter handles it.
    #[allow(clippy::too_many_arguments)]
    pub fn request_at(
        &mut self,
        e: &Engine,
        method: &str,
        path: &str,
        headers: &Headers,
        body: &[u8],
        user: Option<User>,
        now: Now,
    ) -> Response {
        let authority = headers.all(":authority").next().unwrap_or("");
        let ep = e
            .route(path)
            .or_else(|| e.protected(path, authority, method))
            .expect("an OAuth path or a protected route");
        match e.on_headers(ep, method, headers) {
            HeadAction::Respond(r) => r,
            HeadAction::ReadBody | HeadAction::Start => {
                let req = self.request(method, path, headers, body, user);
                let s = e.start(ep, req, now, &mut SystemRandom);
                self.drive(e, s, now)
            }
        }
    }

    pub fn token(&mut self, e: &Engine, headers: &Headers, body: &[u8]) -> Response {
        self.request_at(e, "POST", "/oauth/token", headers, body, None, NOW)
    }

    /// Starts a request and runs it until it needs to write (a CAS), for race tests.
    pub fn until_cas(
        &mut self,
        e: &Engine,
        ep: Endpoint,
        req: Request,
        now: Now,
    ) -> Result<(Pending, Need), Response> {
        let mut step = e.start(ep, req, now, &mut SystemRandom);
        loop {
            match step {
                Step::Done(r) => return Err(r),
                Step::Need(n @ Need::Store(StoreOp::Cas { .. }), p) => return Ok((p, n)),
                Step::Need(n, p) => {
                    let a = self.answer(e, n, now);
                    step = e.resume(p, a, &mut SystemRandom);
                }
            }
        }
    }
}

pub fn form_headers(extra: &[(&str, &str)]) -> Headers {
    let mut h = vec![(
        "content-type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    h.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    Headers(h)
}

pub fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

pub fn json_body(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&r.body)))
}

pub fn assert_error(r: &Response, status: u16, code: &str) {
    let v = json_body(r);
    assert_eq!(
        (r.status, v["error"].as_str().unwrap_or("")),
        (status, code),
        "body: {v}"
    );
    assert!(v["error_description"].is_string());
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(2),
        "flat error body: {v}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-type"), Some("application/json"));
}

pub fn jwt_parts(token: &str) -> (serde_json::Value, serde_json::Value) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    (
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap(),
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap(),
    )
}
