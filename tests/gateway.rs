//! The gateway (what one wasm VM does between callbacks) driven natively through a fake host
//! with proxy-wasm's semantics: streams with headers and bodies, shared data, dispatched calls
//! answered in later callbacks, local answers, metrics and the log. This is the same code Envoy
//! runs; only the host calls are fakes. It covers what the flow tests cannot: when the body is
//! read, the lookup order (worker cache, shared data, registry, write back), coalesced lookups,
//! calls the host refuses or answers badly, and the next request still working after each.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::SharedData;
use oauth_edge::client::hash_secret;
use oauth_edge::gateway::{Action, Gateway, Host, HostError, Level, MetricKind, SetError};
use oauth_edge::http::{Call, Headers};
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;
use oauth_edge::secret::SecretRef;
use serde_json::{json, Value};

const ROOT: u32 = 1;

/// A local answer: status, headers, body.
type Local = (u16, Vec<(String, String)>, Vec<u8>);

/// A stream's request as the fake host holds it, and what the gateway did with it.
#[derive(Default)]
struct FakeStream {
    headers: Headers,
    body: Vec<u8>,
    response: Option<Local>,
    continued: bool,
}

#[derive(Default)]
struct FakeHost {
    config: Vec<u8>,
    /// Shared by every worker (VM) of the process.
    shared: Rc<RefCell<SharedData>>,
    streams: RefCell<HashMap<u32, FakeStream>>,
    current: Cell<u32>,
    /// Calls dispatched and not yet answered, by token.
    calls: RefCell<Vec<(u32, Call)>>,
    next_token: Cell<u32>,
    refuse_dispatch: Cell<bool>,
    /// The answer of the call being delivered.
    answer: RefCell<(Option<u16>, Vec<u8>)>,
    logs: RefCell<Vec<(Level, String)>>,
    metrics: RefCell<Vec<(String, i64)>>,
    /// Every host call the gateway made, by name, in order (what crosses into the host).
    host_calls: RefCell<Vec<&'static str>>,
}

impl FakeHost {
    fn called(&self, name: &'static str) {
        self.host_calls.borrow_mut().push(name);
    }

    /// The host calls made since the last time this was asked.
    fn take_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.host_calls.borrow_mut())
    }

    fn new(config: &Value) -> FakeHost {
        FakeHost {
            config: config.to_string().into_bytes(),
            next_token: Cell::new(100),
            ..FakeHost::default()
        }
    }

    /// Another worker of the same process: its own VM, the same shared data.
    fn worker(&self) -> FakeHost {
        FakeHost {
            config: self.config.clone(),
            shared: self.shared.clone(),
            next_token: Cell::new(1000),
            ..FakeHost::default()
        }
    }

    fn metric(&self, name: &str) -> i64 {
        self.metrics
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    fn response(&self, stream: u32) -> Option<(u16, Value)> {
        let s = self.streams.borrow();
        let (status, _, body) = s.get(&stream)?.response.as_ref()?;
        Some((*status, serde_json::from_slice(body).unwrap_or(Value::Null)))
    }

    fn header(&self, stream: u32, name: &str) -> Option<String> {
        let s = self.streams.borrow();
        let v = s.get(&stream)?.headers.all(name).next().map(str::to_string);
        v
    }
}

fn no_stream() -> HostError {
    "no such stream".into()
}

impl Host for FakeHost {
    fn now_nanos(&self) -> u64 {
        self.called("now_nanos");
        common::NOW.unix_ms * 1_000_000
    }
    fn log(&self, level: Level, msg: &str) {
        self.called("log");
        self.logs.borrow_mut().push((level, msg.to_string()));
    }
    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError> {
        self.called("plugin_configuration");
        Ok(self.config.clone())
    }
    fn secret(&self, r: &SecretRef) -> Result<String, String> {
        self.called("secret");
        Err(format!("{r}: no secrets in this host"))
    }
    fn set_tick_period(&self, _: u32) -> Result<(), HostError> {
        self.called("set_tick_period");
        Ok(())
    }
    fn request_header(&self, name: &str) -> Option<String> {
        self.called("request_header");
        self.header(self.current.get(), name)
    }
    fn request_headers(&self) -> Headers {
        self.called("request_headers");
        let s = self.streams.borrow();
        s.get(&self.current.get())
            .map(|s| s.headers.clone())
            .unwrap_or_default()
    }
    fn request_body(&self, max: usize) -> Result<Vec<u8>, HostError> {
        self.called("request_body");
        let s = self.streams.borrow();
        let b = &s.get(&self.current.get()).ok_or_else(no_stream)?.body;
        Ok(b[..b.len().min(max)].to_vec())
    }
    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.called("remove_request_header");
        let mut s = self.streams.borrow_mut();
        let st = s.get_mut(&self.current.get()).ok_or_else(no_stream)?;
        st.headers.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        Ok(())
    }
    fn replace_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        self.called("replace_request_header");
        let mut s = self.streams.borrow_mut();
        let st = s.get_mut(&self.current.get()).ok_or_else(no_stream)?;
        st.headers.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        st.headers.0.push((name.into(), value.into()));
        Ok(())
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.called("property");
        (path == ["source", "address"]).then(|| b"192.0.2.7:40000".to_vec())
    }
    fn set_property(&self, _: &str, _: &str) -> Result<(), HostError> {
        self.called("set_property");
        Ok(())
    }
    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), HostError> {
        self.called("shared_get");
        let (v, cas) = self.shared.borrow().get(key);
        Ok((v, cas.unwrap_or(0)))
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        self.called("shared_set");
        self.shared
            .borrow_mut()
            .set(key, value, cas)
            .map_err(|()| SetError::CasMismatch)
    }
    fn dispatch(&self, call: &Call) -> Result<u32, HostError> {
        self.called("dispatch");
        if self.refuse_dispatch.get() {
            return Err("BadArgument(2)".into());
        }
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        self.calls.borrow_mut().push((token, call.clone()));
        Ok(token)
    }
    fn call_status(&self) -> Result<Option<u16>, HostError> {
        self.called("call_status");
        Ok(self.answer.borrow().0)
    }
    fn call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        self.called("call_body");
        let a = self.answer.borrow();
        Ok(a.1[..a.1.len().min(size)].to_vec())
    }
    fn set_stream(&self, stream: u32) -> Result<(), HostError> {
        self.called("set_stream");
        if !self.streams.borrow().contains_key(&stream) {
            return Err(no_stream());
        }
        self.current.set(stream);
        Ok(())
    }
    fn respond(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        self.called("respond");
        let mut s = self.streams.borrow_mut();
        let st = s.get_mut(&self.current.get()).ok_or_else(no_stream)?;
        assert!(st.response.is_none(), "one answer per stream");
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        st.response = Some((status, headers, body.to_vec()));
        Ok(())
    }
    fn continue_request(&self) -> Result<(), HostError> {
        self.called("continue_request");
        let mut s = self.streams.borrow_mut();
        s.get_mut(&self.current.get())
            .ok_or_else(no_stream)?
            .continued = true;
        Ok(())
    }
    fn define_metric(&self, _: MetricKind, name: &str) -> Option<u32> {
        self.called("define_metric");
        let mut m = self.metrics.borrow_mut();
        m.push((name.to_string(), 0));
        u32::try_from(m.len() - 1).ok()
    }
    fn increment_metric(&self, id: u32, by: i64) {
        self.called("increment_metric");
        if let Some(m) = self.metrics.borrow_mut().get_mut(id as usize) {
            m.1 += by;
        }
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.called("record_metric");
        if let Some(m) = self.metrics.borrow_mut().get_mut(id as usize) {
            m.1 = i64::try_from(value).unwrap_or(i64::MAX);
        }
    }
}

/// A VM: the gateway and its host, configured.
struct Vm {
    g: Gateway,
    h: FakeHost,
    next_stream: u32,
}

impl Vm {
    fn new(h: FakeHost) -> Vm {
        let mut g = Gateway::new();
        g.on_context_create(ROOT, 0);
        assert!(g.on_configure(&h, ROOT), "{:?}", h.logs.borrow());
        Vm {
            g,
            h,
            next_stream: 2,
        }
    }

    /// Sends a request's headers, then its body in one chunk (if any): the stream id.
    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u32 {
        let id = self.next_stream;
        self.next_stream += 1;
        let mut hs = Headers(vec![
            (":method".into(), method.into()),
            (":path".into(), path.into()),
            (":authority".into(), "as.example.com".into()),
        ]);
        hs.0.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.h.streams.borrow_mut().insert(
            id,
            FakeStream {
                headers: hs,
                body: body.to_vec(),
                ..FakeStream::default()
            },
        );
        self.g.on_context_create(id, ROOT);
        self.h.current.set(id);
        let a = self.g.on_request_headers(&self.h, id, body.is_empty());
        if !body.is_empty()
            && self.h.response(id).is_none()
            && !self.h.streams.borrow()[&id].continued
        {
            let b = self.g.on_request_body(&self.h, id, body.len(), true);
            assert_eq!(b, Action::Pause, "a body of ours is held");
        } else if a == Action::Continue {
            self.h.streams.borrow_mut().get_mut(&id).unwrap().continued = true;
        }
        id
    }

    /// Delivers the oldest dispatched call's answer (`None` headers: a reset).
    fn deliver(&mut self, status: Option<u16>, body: &[u8]) -> Call {
        let (token, call) = self.h.calls.borrow_mut().remove(0);
        *self.h.answer.borrow_mut() = (status, body.to_vec());
        let headers = usize::from(status.is_some());
        self.g
            .on_http_call_response(&self.h, token, headers, body.len());
        call
    }

    fn token(&mut self, client: &str, secret: &str) -> u32 {
        let basic = format!("Basic {}", STANDARD.encode(format!("{client}:{secret}")));
        self.send(
            "POST",
            "/oauth/token",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &basic),
            ],
            b"grant_type=client_credentials",
        )
    }
}

fn config() -> Value {
    json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "registry": {"cluster": "registry", "timeout": "200ms", "cache_ttl": "60s", "negative_cache_ttl": "5s"},
        "clients": [
            {"client_id": "svc", "client_secret": hash_secret("svc-secret"),
             "grant_types": ["client_credentials"], "scope": "read"}
        ]
    })
}

fn registry_record(id: &str) -> Vec<u8> {
    json!({"client_id": id, "client_secret": hash_secret("reg-secret"),
           "grant_types": ["client_credentials"], "scope": "read"})
    .to_string()
    .into_bytes()
}

#[test]
fn a_token_request_is_answered_and_counted() {
    let mut vm = Vm::new(FakeHost::new(&config()));
    let s = vm.token("svc", "svc-secret");
    let (status, body) = vm.h.response(s).expect("answered");
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());
    assert!(
        vm.h.calls.borrow().is_empty(),
        "a static client needs no call"
    );
    assert_eq!(vm.h.metric("oauth_edge.requests.token"), 1);
    assert_eq!(
        vm.h.metric("oauth_edge.tokens_issued.client_credentials"),
        1
    );
}

#[test]
fn other_paths_pass_through_untouched() {
    let mut vm = Vm::new(FakeHost::new(&config()));
    let s = vm.send("GET", "/api/things", &[], b"");
    assert!(vm.h.response(s).is_none());
    assert!(vm.h.streams.borrow()[&s].continued);
    // A near-miss of one of our paths never reaches the application.
    let s = vm.send("POST", "/OAUTH/token", &[], b"x=1");
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(404));
}

#[test]
fn registry_lookups_go_worker_cache_then_shared_data_then_registry_and_are_shared() {
    let mut vm = Vm::new(FakeHost::new(&config()));
    // Two requests for the same unknown client: one registry call, the second waits for it.
    let a = vm.token("reg-1", "reg-secret");
    let b = vm.token("reg-1", "reg-secret");
    assert_eq!(
        vm.h.calls.borrow().len(),
        1,
        "the second lookup joins the first"
    );
    assert_eq!(vm.h.metric("oauth_edge.lookups.coalesced"), 1);
    assert!(vm.h.response(a).is_none() && vm.h.response(b).is_none());
    let call = vm.deliver(Some(200), &registry_record("reg-1"));
    assert_eq!(call.cluster, "registry");
    assert_eq!(vm.h.response(a).map(|r| r.0), Some(200));
    assert_eq!(vm.h.response(b).map(|r| r.0), Some(200));
    assert_eq!(vm.h.metric("oauth_edge.registry.calls"), 1);
    // This worker's cache answers next.
    let c = vm.token("reg-1", "reg-secret");
    assert_eq!(vm.h.response(c).map(|r| r.0), Some(200));
    assert!(vm.h.calls.borrow().is_empty());
    // Another worker finds the answer in shared data, without a call.
    let mut other = Vm::new(vm.h.worker());
    let d = other.token("reg-1", "reg-secret");
    assert_eq!(other.h.response(d).map(|r| r.0), Some(200));
    assert!(other.h.calls.borrow().is_empty());
    assert_eq!(other.h.metric("oauth_edge.registry.calls"), 0);
    assert!(other.h.metric("oauth_edge.registry.cache_hits") >= 1);
}

#[test]
fn failed_calls_become_clean_errors_and_the_next_request_works() {
    let mut vm = Vm::new(FakeHost::new(&config()));
    // The host refuses to dispatch (an unknown cluster): a 500, not a trap, and logged.
    vm.h.refuse_dispatch.set(true);
    let s = vm.token("reg-1", "reg-secret");
    let (status, body) = vm.h.response(s).expect("answered at once");
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("server_error"))
    );
    assert!(vm
        .h
        .logs
        .borrow()
        .iter()
        .any(|(l, m)| *l == Level::Error && m.contains("cannot call the cluster")));
    vm.h.refuse_dispatch.set(false);
    // Why, in the log with the endpoint; not in the answer.
    assert!(vm.h.logs.borrow().iter().any(|(l, m)| *l == Level::Error
        && m.contains("token answered 500: ")
        && m.contains("registry")));
    assert!(!body.to_string().contains("BadArgument"));
    // A reset (no headers), a body over the limit, garbage, a 503: each a clean answer.
    for (status, body) in [
        (None, Vec::new()),
        (
            Some(200),
            vec![b'{'; oauth_edge::gateway::MAX_CALL_BODY + 1],
        ),
        (Some(200), b"\xff\xfe not json".to_vec()),
        (Some(503), b"busy".to_vec()),
    ] {
        let s = vm.token("reg-2", "reg-secret");
        vm.deliver(status, &body);
        let (code, json) = vm.h.response(s).expect("answered");
        assert_eq!(
            (code, json["error"].as_str()),
            (500, Some("server_error")),
            "{status:?}"
        );
    }
    // Unknown to the registry: 401, and remembered for a while (no second call).
    let s = vm.token("nobody", "x");
    vm.deliver(Some(404), b"");
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(401));
    let s = vm.token("nobody", "x");
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(401));
    assert!(vm.h.calls.borrow().is_empty());
    // And the gateway still serves.
    let s = vm.token("reg-2", "reg-secret");
    vm.deliver(Some(200), &registry_record("reg-2"));
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(200));
    let s = vm.token("svc", "svc-secret");
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(200));
}

#[test]
fn a_stream_gone_before_its_answer_does_not_stop_the_others() {
    let mut vm = Vm::new(FakeHost::new(&config()));
    let a = vm.token("reg-1", "reg-secret");
    let b = vm.token("reg-1", "reg-secret");
    // The first client left; its stream is gone when the answer lands.
    vm.g.on_delete(a);
    vm.h.streams.borrow_mut().remove(&a);
    vm.deliver(Some(200), &registry_record("reg-1"));
    assert_eq!(vm.h.response(b).map(|r| r.0), Some(200));
}

#[test]
fn bodies_are_read_once_complete_and_limited() {
    let mut vm = Vm::new(FakeHost::new(&config()));
    let basic = format!("Basic {}", STANDARD.encode("svc:svc-secret"));
    // Announced too large: refused on the headers.
    let big = "9".repeat(7);
    let s = vm.send(
        "POST",
        "/oauth/token",
        &[("content-length", &big), ("authorization", &basic)],
        b"",
    );
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(413));
    // A body arriving in chunks is held until its end.
    let body = b"grant_type=client_credentials";
    let id = 99;
    let hs = Headers(vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/oauth/token".into()),
        (
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
        ("authorization".into(), basic.clone()),
    ]);
    vm.h.streams.borrow_mut().insert(
        id,
        FakeStream {
            headers: hs,
            body: body.to_vec(),
            ..FakeStream::default()
        },
    );
    vm.g.on_context_create(id, ROOT);
    vm.h.current.set(id);
    assert_eq!(vm.g.on_request_headers(&vm.h, id, false), Action::Pause);
    assert_eq!(vm.g.on_request_body(&vm.h, id, 10, false), Action::Pause);
    assert!(vm.h.response(id).is_none());
    assert_eq!(
        vm.g.on_request_body(&vm.h, id, body.len(), true),
        Action::Pause
    );
    assert_eq!(vm.h.response(id).map(|r| r.0), Some(200));
    // Growing past the limit while streaming: 413.
    let s = 100;
    vm.h.streams.borrow_mut().insert(
        s,
        FakeStream {
            headers: Headers(vec![
                (":method".into(), "POST".into()),
                (":path".into(), "/oauth/token".into()),
            ]),
            ..FakeStream::default()
        },
    );
    vm.g.on_context_create(s, ROOT);
    vm.h.current.set(s);
    vm.g.on_request_headers(&vm.h, s, false);
    vm.g.on_request_body(&vm.h, s, 1 << 20, false);
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(413));
}

#[test]
fn a_refused_configuration_says_why() {
    let mut cfg = config();
    cfg["issuer"] = json!("not a url");
    let h = FakeHost::new(&cfg);
    let mut g = Gateway::new();
    g.on_context_create(ROOT, 0);
    assert!(!g.on_configure(&h, ROOT));
    assert!(h
        .logs
        .borrow()
        .iter()
        .any(|(l, m)| *l == Level::Critical && m.contains("configuration refused")));
    // Streams of a root without configuration pass through.
    g.on_context_create(5, ROOT);
    assert_eq!(g.on_request_headers(&h, 5, true), Action::Continue);
}

#[test]
fn a_protected_route_forwards_verified_claims_and_drops_spoofed_ones() {
    let orders = "https://api.example.com/orders";
    let mut cfg = config();
    cfg["clients"][0]["scope"] = json!("read orders:read");
    cfg["clients"][0]["allowed_resources"] = json!([orders]);
    cfg["resource_protection"] = json!({"routes": [
        {"prefix": "/orders", "resource": orders, "scopes": {"all": ["orders:read"]},
         "claim_headers": {"sub": "x-oauth-sub"}}
    ]});
    let mut vm = Vm::new(FakeHost::new(&cfg));
    let token = api_token(&mut vm, orders);
    let bearer = format!("Bearer {token}");
    // Passed: continued on the headers, the client's copy of a claim header replaced.
    let s = vm.send(
        "GET",
        "/orders/7",
        &[("authorization", &bearer), ("x-oauth-sub", "admin")],
        b"",
    );
    assert!(vm.h.response(s).is_none());
    assert!(vm.h.streams.borrow()[&s].continued);
    assert_eq!(vm.h.header(s, "x-oauth-sub").as_deref(), Some("svc"));
    assert_eq!(vm.h.metric("oauth_edge.resource.forwarded"), 1);
    // Refused: answered by the filter, never forwarded.
    let s = vm.send("GET", "/orders/7", &[("authorization", "Bearer nope")], b"");
    let (status, json) = vm.h.response(s).expect("refused");
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let www = vm.h.streams.borrow()[&s]
        .response
        .as_ref()
        .unwrap()
        .1
        .clone();
    assert!(www
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer ")));
    // Other paths still pass untouched.
    let s = vm.send("GET", "/public", &[("x-oauth-sub", "admin")], b"");
    assert!(vm.h.response(s).is_none());
    assert_eq!(vm.h.header(s, "x-oauth-sub").as_deref(), Some("admin"));
}

#[test]
fn etcd_state_logs_in_and_leases_once_through_dispatched_calls() {
    use common::etcd::FakeEtcd;
    let cb = "https://rp.example/cb";
    let mut cfg = config();
    cfg["store"] = json!({"backend": "etcd", "rate_limit_slots": 16,
        "etcd": {"cluster": "etcd", "prefix": "/oe/", "username": "oauth-edge", "password": "pw"}});
    cfg["clients"] = json!([{"client_id": "web", "client_secret": hash_secret("w"),
        "grant_types": ["authorization_code"], "redirect_uris": [cb], "scope": "read"}]);
    let mut etcd = FakeEtcd::default();
    etcd.auth = Some(("oauth-edge".into(), "pw".into()));
    let mut vm = Vm::new(FakeHost::new(&cfg));
    let basic = format!("Basic {}", STANDARD.encode("web:w"));
    let body = format!(
        "response_type=code&client_id=web&scope=read&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGcSjSpRoQ&code_challenge_method=S256",
        cb.replace(':', "%3A").replace('/', "%2F")
    );
    let mut par = |vm: &mut Vm| -> (u16, Vec<String>) {
        let s = vm.send(
            "POST",
            "/oauth/pushed-authorization",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &basic),
            ],
            body.as_bytes(),
        );
        let mut paths = Vec::new();
        while !vm.h.calls.borrow().is_empty() {
            let call = vm.h.calls.borrow()[0].1.clone();
            assert_eq!(call.cluster, "etcd");
            let path = call
                .headers
                .iter()
                .find(|(k, _)| *k == ":path")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            paths.push(path);
            let (status, answer) = etcd.handle(&call, common::NOW.unix_ms / 1000);
            vm.deliver(status, &answer);
        }
        (vm.h.response(s).expect("answered").0, paths)
    };
    let (status, paths) = par(&mut vm);
    assert_eq!(status, 201, "{paths:?} {:?}", vm.h.logs.borrow());
    // A login, a lease for the record's lifetime, then the write (and nothing in shared data).
    assert_eq!(
        paths.first().map(String::as_str),
        Some("/v3/auth/authenticate")
    );
    assert!(paths.iter().any(|p| p == "/v3/lease/grant"));
    assert_eq!(paths.last().map(String::as_str), Some("/v3/kv/txn"));
    // The next request reuses both.
    let (status, paths) = par(&mut vm);
    assert_eq!(status, 201);
    assert!(paths.iter().all(|p| p.starts_with("/v3/kv/")), "{paths:?}");
}

/// A worker with one protected route (`/orders`, three claim headers: sub, client_id, scope),
/// and a Bearer access token for it.
fn protected_vm() -> (Vm, String) {
    let orders = "https://api.example.com/orders";
    let mut cfg = config();
    cfg["clients"][0]["scope"] = json!("read orders:read");
    cfg["clients"][0]["allowed_resources"] = json!([orders]);
    cfg["resource_protection"] = json!({"routes": [
        {"prefix": "/orders", "resource": orders, "scopes": {"all": ["orders:read"]},
         "claim_headers": {"sub": "x-oauth-sub", "client_id": "x-oauth-client-id", "scope": "x-oauth-scope"}}
    ]});
    let mut vm = Vm::new(FakeHost::new(&cfg));
    let token = api_token(&mut vm, orders);
    (vm, format!("Bearer {token}"))
}

fn api_token(vm: &mut Vm, resource: &str) -> String {
    let basic = format!("Basic {}", STANDARD.encode("svc:svc-secret"));
    let body = format!("grant_type=client_credentials&scope=orders:read&resource={resource}");
    let s = vm.send(
        "POST",
        "/oauth/token",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &basic),
        ],
        body.as_bytes(),
    );
    let (status, json) = vm.h.response(s).expect("a token");
    assert_eq!(status, 200, "{json}");
    json["access_token"].as_str().expect("a token").to_string()
}

fn revoke(vm: &mut Vm, bearer: &str) {
    let basic = format!("Basic {}", STANDARD.encode("svc:svc-secret"));
    let token = bearer.trim_start_matches("Bearer ");
    let s = vm.send(
        "POST",
        "/oauth/revoke",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &basic),
        ],
        format!("token={token}").as_bytes(),
    );
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(200));
}

/// Sends a call to the protected route: whether it went on upstream, and the host calls made.
fn api_call(vm: &mut Vm, bearer: &str) -> (bool, Vec<&'static str>) {
    vm.h.take_calls();
    let s = vm.send("GET", "/orders/7", &[("authorization", bearer)], b"");
    let calls = vm.h.take_calls();
    let forwarded = vm.h.response(s).is_none() && vm.h.streams.borrow()[&s].continued;
    (forwarded, calls)
}

/// What a forwarded Bearer call costs in host calls once the worker knows the token (each one a
/// crossing out of the VM; docs/host-calls.md, "A protected route's request"): the headers
/// (the path among them: with protected routes configured it is not read alone), the request
/// counter, one clock read for the start and the flow, the revocation
/// epoch, the clock and the duration histogram at the end, the forwarded counter, one replace
/// per claim header.
#[test]
fn a_forwarded_bearer_call_makes_only_the_host_calls_it_needs() {
    let (mut vm, bearer) = protected_vm();
    // The first call verifies the token and reads the deny-list once.
    let (forwarded, _) = api_call(&mut vm, &bearer);
    assert!(forwarded);
    for _ in 0..3 {
        let (forwarded, calls) = api_call(&mut vm, &bearer);
        assert!(forwarded);
        assert_eq!(
            calls,
            [
                "request_headers",
                "increment_metric",
                "now_nanos",
                "shared_get",
                "now_nanos",
                "record_metric",
                "increment_metric",
                "replace_request_header",
                "replace_request_header",
                "replace_request_header",
            ]
        );
    }
    assert_eq!(vm.h.metric("oauth_edge.requests.resource"), 4);
    assert_eq!(vm.h.metric("oauth_edge.resource.forwarded"), 4);
}

/// A request the filter neither answers nor protects costs one read and no more: its path
/// alone when no route is protected; every header at once when some are (a route may also
/// depend on the method and authority), and then not the path again.
#[test]
fn a_pass_through_request_makes_one_read() {
    let (mut vm, bearer) = protected_vm();
    vm.h.take_calls();
    let s = vm.send("GET", "/public/x", &[("authorization", &bearer)], b"");
    assert!(vm.h.response(s).is_none() && vm.h.streams.borrow()[&s].continued);
    assert_eq!(vm.h.take_calls(), ["request_headers"]);

    let mut plain = Vm::new(FakeHost::new(&config()));
    plain.h.take_calls();
    let s = plain.send("GET", "/public/x", &[], b"");
    assert!(plain.h.response(s).is_none() && plain.h.streams.borrow()[&s].continued);
    assert_eq!(plain.h.take_calls(), ["request_header"]);
}

/// The epoch spares the deny-list's reads only while nothing is revoked: a revocation made on
/// another worker is seen on this worker's very next call, and the other tokens are read
/// against the list once more, then not again.
#[test]
fn a_revocation_on_another_worker_is_seen_on_the_next_call() {
    let (mut vm, a) = protected_vm();
    let b = format!(
        "Bearer {}",
        api_token(&mut vm, "https://api.example.com/orders")
    );
    let mut other = Vm::new(vm.h.worker());
    for t in [&a, &b, &a, &b] {
        assert!(api_call(&mut vm, t).0);
    }
    let reads = |calls: &[&str]| calls.iter().filter(|c| **c == "shared_get").count();
    assert_eq!(reads(&api_call(&mut vm, &a).1), 1, "the epoch only");
    revoke(&mut other, &a);
    let (forwarded, _) = api_call(&mut vm, &a);
    assert!(
        !forwarded,
        "revoked on another worker, refused here at once"
    );
    let s = vm.send("GET", "/orders/7", &[("authorization", &a)], b"");
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(401));
    // b: the epoch moved, so the deny-list is read once (two buckets), then no more.
    let (forwarded, calls) = api_call(&mut vm, &b);
    assert!(forwarded);
    assert_eq!(reads(&calls), 3, "{calls:?}");
    let (forwarded, calls) = api_call(&mut vm, &b);
    assert!(forwarded);
    assert_eq!(reads(&calls), 1, "{calls:?}");
}

/// What a client_credentials request of a static client costs in host calls (each one a
/// crossing out of the VM; docs/host-calls.md, "A token request"). On the headers: the path,
/// the request counter, every header at once (the method, the announced length and CORS's
/// headers come from it), the start's clock. Once the body is complete: the body, every header
/// again (a stream waiting for its body keeps none of them), the flow's clock, then the end's
/// clock and the duration histogram, the issued counter and the answer.
#[test]
fn a_token_request_makes_only_the_host_calls_it_needs() {
    // No registry, no rate limit, no ring share: the calls of the request itself.
    let mut cfg = config();
    cfg.as_object_mut().unwrap().remove("registry");
    cfg["store"] = json!({"share_percent": 100, "replay_share_percent": 100});
    let mut vm = Vm::new(FakeHost::new(&cfg));
    let basic = format!("Basic {}", STANDARD.encode("svc:svc-secret"));
    for _ in 0..3 {
        vm.h.take_calls();
        let id = vm.next_stream;
        vm.next_stream += 1;
        let body = b"grant_type=client_credentials";
        vm.h.streams.borrow_mut().insert(
            id,
            FakeStream {
                headers: Headers(vec![
                    (":method".into(), "POST".into()),
                    (":path".into(), "/oauth/token".into()),
                    (":authority".into(), "as.example.com".into()),
                    (
                        "content-type".into(),
                        "application/x-www-form-urlencoded".into(),
                    ),
                    ("content-length".into(), body.len().to_string()),
                    ("authorization".into(), basic.clone()),
                ]),
                body: body.to_vec(),
                ..FakeStream::default()
            },
        );
        vm.g.on_context_create(id, ROOT);
        vm.h.current.set(id);
        assert_eq!(vm.g.on_request_headers(&vm.h, id, false), Action::Pause);
        assert_eq!(
            vm.h.take_calls(),
            [
                "request_header",
                "increment_metric",
                "request_headers",
                "now_nanos"
            ]
        );
        assert_eq!(
            vm.g.on_request_body(&vm.h, id, body.len(), true),
            Action::Pause
        );
        assert_eq!(vm.h.response(id).map(|r| r.0), Some(200));
        assert_eq!(
            vm.h.take_calls(),
            [
                "request_body",
                "request_headers",
                "now_nanos",
                "now_nanos",
                "record_metric",
                "increment_metric",
                "respond",
            ]
        );
        vm.g.on_delete(id);
    }
    assert_eq!(vm.h.metric("oauth_edge.requests.token"), 3);
    assert_eq!(
        vm.h.metric("oauth_edge.tokens_issued.client_credentials"),
        3
    );
}

/// A request without a body that the core answers within its headers callback (JWKS, metadata,
/// a userinfo GET) reads its headers once.
#[test]
fn a_get_endpoint_reads_its_headers_once() {
    let mut vm = Vm::new(FakeHost::new(&config()));
    vm.h.take_calls();
    let s = vm.send("GET", "/oauth/jwks", &[], b"");
    assert_eq!(vm.h.response(s).map(|r| r.0), Some(200));
    let calls = vm.h.take_calls();
    assert_eq!(
        calls.iter().filter(|c| **c == "request_headers").count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| **c == "request_header").count(),
        1,
        "only the path is read alone: {calls:?}"
    );
}
