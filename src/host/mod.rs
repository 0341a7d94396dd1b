//! The thin proxy-wasm adapter: reads what the host has (config, headers, body, clock, shared
//! data, dispatched calls), hands it to the core [`Engine`], and sends back what it answers.
//! No protocol decision is made here.
//!
//! The SDK's trait methods unwrap host statuses; this file calls `proxy_wasm::hostcalls::*`,
//! which return `Result`, and turns every failure into a log line and a clean answer.

mod metrics;
mod user;

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};

use crate::config::Config;
use crate::engine::{Endpoint, Engine, HeadAction, Pending, Step};
use crate::flow::{Answer, Lookup, Need, Now, Request, StoreOp, StoreResult, SyncStore};
use crate::http::{Headers, Response};
use crate::random::SystemRandom;
use crate::registry::Call;

use metrics::Metrics;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic traps the VM; at least say where, at a level operators see.
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("oauth-edge: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { engine: None, metrics: None }) });
}}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

fn now() -> Now {
    let unix_ms = hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Now { unix_ms }
}

struct Root {
    engine: Option<Rc<Engine>>,
    metrics: Option<Rc<Metrics>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            Ok(None) => Vec::new(),
            Err(e) => {
                log(
                    LogLevel::Critical,
                    &format!("oauth-edge: cannot read the plugin configuration: {e:?}"),
                );
                return false;
            }
        };
        match Config::from_json(&raw) {
            Ok(cfg) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "oauth-edge: configured issuer {} with {} static client(s), registry {}",
                        cfg.issuer,
                        cfg.clients.len(),
                        cfg.registry.as_ref().map_or("off", |r| r.cluster.as_str())
                    ),
                );
                let engine = Engine::new(cfg);
                create_ring_keys(&engine);
                self.engine = Some(Rc::new(engine));
                self.metrics = Some(Rc::new(Metrics::define()));
                true
            }
            Err(e) => {
                log(
                    LogLevel::Critical,
                    &format!("oauth-edge: configuration refused: {e}"),
                );
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
            endpoint: None,
            method: String::new(),
            path: String::new(),
            headers: Headers::default(),
            pending: None,
            answered: false,
        }))
    }
}

/// What a dispatched call was for.
enum Waiting {
    /// The registry, about this client id.
    Client(String),
    /// A client's jwks_uri.
    Jwks(String),
    /// A call the core asked for as it is.
    Http,
    /// A store operation on etcd.
    Store(StoreOp),
}

struct Stream {
    id: u32,
    /// `None` only if configuration failed (then Envoy refuses the filter anyway): pass through.
    engine: Option<Rc<Engine>>,
    metrics: Option<Rc<Metrics>>,
    endpoint: Option<Endpoint>,
    method: String,
    path: String,
    headers: Headers,
    /// A request waiting for a dispatched call's answer.
    pending: Option<(Pending, Waiting)>,
    answered: bool,
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some((pending, waiting)) = self.pending.take() else {
            return;
        };
        let Some(engine) = self.engine.clone() else {
            return;
        };
        // A reset arrives with no headers at all; Envoy's own timeout/connect failures as 503/504.
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| {
                std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
            });
        let body = if body_size > 0 {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let answer = self.answer(&engine, waiting, status, &body);
        let step = resume(&engine, pending, answer);
        self.drive(&engine, step);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(engine) = self.engine.clone() else {
            return Action::Continue;
        };
        let path = header(MapType::HttpRequestHeaders, ":path").unwrap_or_default();
        let Some(ep) = engine.route(&path) else {
            return Action::Continue;
        };
        self.endpoint = Some(ep);
        if let Some(m) = &self.metrics {
            m.request(ep);
        }
        self.method = header(MapType::HttpRequestHeaders, ":method").unwrap_or_default();
        self.path = path;
        self.headers = request_headers();
        match engine.on_headers(ep, &self.method, &self.headers) {
            HeadAction::Respond(r) => {
                self.respond(&engine, r);
                Action::Pause
            }
            HeadAction::Start => {
                self.start(&engine, Vec::new());
                Action::Pause
            }
            HeadAction::ReadBody if end_of_stream => {
                self.start(&engine, Vec::new());
                Action::Pause
            }
            HeadAction::ReadBody => {
                // With allow_on_headers_stop_iteration (the default setup) pausing here keeps the
                // router from acting on the headers while the body still reaches us. Without that
                // knob (pause_on_request_headers: false) a buffer filter after this one must hold
                // the router back instead.
                if engine.config.pause_on_request_headers {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(engine) = self.engine.clone() else {
            return Action::Continue;
        };
        if self.endpoint.is_none() {
            return Action::Continue;
        }
        if self.answered || self.pending.is_some() {
            return Action::Pause;
        }
        if let Some(r) = engine.body_too_large(body_size) {
            self.respond(&engine, r);
            return Action::Pause;
        }
        if !end_of_stream {
            // Keep buffering: answer only once the whole body is in, or Envoy closes the
            // connection after the early reply.
            return Action::Pause;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!(
                        "oauth-edge[{}]: cannot read the request body: {e:?}",
                        self.id
                    ),
                );
                let r = crate::error::OAuthError::server_error("internal error").into_response();
                self.respond(&engine, r);
                return Action::Pause;
            }
        };
        self.start(&engine, body);
        Action::Pause
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A body that ends in trailers: its last chunk came without end_of_stream.
        let Some(engine) = self.engine.clone() else {
            return Action::Continue;
        };
        if self.endpoint.is_none() {
            return Action::Continue;
        }
        if self.answered || self.pending.is_some() {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.start(&engine, body);
        Action::Pause
    }
}

impl Stream {
    fn start(&mut self, engine: &Rc<Engine>, body: Vec<u8>) {
        let Some(ep) = self.endpoint else { return };
        let user = if matches!(ep, Endpoint::Authorize | Endpoint::DeviceVerification) {
            user::read(&engine.config)
        } else {
            None
        };
        let source = if engine.config.rate_limits.per_address.is_some() {
            source_address()
        } else {
            None
        };
        let req = Request {
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            headers: std::mem::take(&mut self.headers),
            body,
            user,
            source,
        };
        let step = engine.start_with(ep, req, now(), &mut SystemRandom, Some(&mut SharedData));
        self.drive(engine, step);
    }

    /// Runs the core's steps until it answers or waits for a dispatched call.
    fn drive(&mut self, engine: &Rc<Engine>, mut step: Step) {
        loop {
            let (need, p) = match step {
                Step::Done(r) => {
                    self.respond(engine, r);
                    return;
                }
                Step::Need(need, p) => (need, p),
            };
            let (call, waiting) = match self.outgoing(engine, need) {
                Ok(out) => out,
                Err(answer) => {
                    step = resume(engine, p, answer);
                    continue;
                }
            };
            let headers: Vec<(&str, &str)> =
                call.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            match hostcalls::dispatch_http_call(
                &call.cluster,
                headers,
                call.body.as_deref(),
                vec![],
                call.timeout,
            ) {
                Ok(_token) => {
                    self.pending = Some((p, waiting));
                    return;
                }
                Err(e) => {
                    log(
                        LogLevel::Error,
                        &format!(
                            "oauth-edge[{}]: cannot call the cluster {:?}: {e:?}",
                            self.id, call.cluster
                        ),
                    );
                    // As if the call had been reset.
                    let answer = self.answer(engine, waiting, None, &[]);
                    step = resume(engine, p, answer);
                }
            }
        }
    }

    /// The call a need takes, or its answer when none is needed (shared data, caches, a call
    /// that cannot be made).
    fn outgoing(&self, engine: &Rc<Engine>, need: Need) -> Result<(Call, Waiting), Answer> {
        match need {
            Need::Store(op) => match engine.store_call(&op, now()) {
                Some(call) => Ok((call, Waiting::Store(op))),
                // Shared data answers inline; kept so a Need is always answered.
                None => Err(Answer::Store(SharedData.run(&op))),
            },
            Need::Http(call) => Ok((call, Waiting::Http)),
            Need::Jwks(url) => match engine.jwks_call(&url) {
                Ok(call) => Ok((call, Waiting::Jwks(url))),
                Err(lookup) => {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "oauth-edge[{}]: cannot fetch a jwks_uri: {lookup:?}",
                            self.id
                        ),
                    );
                    Err(Answer::Jwks(lookup))
                }
            },
            Need::Client(client_id) => {
                let key = crate::registry::shared_key(&client_id);
                if let Ok((Some(entry), _)) = hostcalls::get_shared_data(&key) {
                    if let Some(lookup) = engine.client_from_shared(&client_id, &entry, now()) {
                        return Err(Answer::Client(lookup));
                    }
                }
                match engine.registry_call(&client_id) {
                    Some(call) => {
                        if let Some(m) = &self.metrics {
                            m.registry_call();
                        }
                        Ok((call, Waiting::Client(client_id)))
                    }
                    None => {
                        let (lookup, _) = engine.client_from_registry(&client_id, None, &[], now());
                        Err(Answer::Client(lookup))
                    }
                }
            }
        }
    }

    /// What a dispatched call's answer means to the core (`status` `None`: reset, timeout, or
    /// not dispatched at all).
    fn answer(
        &self,
        engine: &Rc<Engine>,
        waiting: Waiting,
        status: Option<u16>,
        body: &[u8],
    ) -> Answer {
        match waiting {
            Waiting::Store(op) => {
                let result = engine.store_answer(&op, status, body, now());
                if result == StoreResult::Failed {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "oauth-edge[{}]: etcd operation failed (status {status:?})",
                            self.id
                        ),
                    );
                }
                Answer::Store(result)
            }
            Waiting::Http => Answer::Http(crate::flow::HttpAnswer {
                status,
                body: body.to_vec(),
            }),
            Waiting::Jwks(url) => {
                let lookup = engine.jwks_from_fetch(&url, status, body, now());
                if let crate::flow::JwksLookup::Unavailable(why) = &lookup {
                    log(
                        LogLevel::Warn,
                        &format!("oauth-edge[{}]: jwks_uri fetch failed: {why}", self.id),
                    );
                }
                Answer::Jwks(lookup)
            }
            Waiting::Client(client_id) => {
                let (lookup, write) = engine.client_from_registry(&client_id, status, body, now());
                if let Lookup::Unavailable(why) = &lookup {
                    log(
                        LogLevel::Warn,
                        &format!("oauth-edge[{}]: registry lookup failed: {why}", self.id),
                    );
                }
                if let Some(w) = write {
                    // cas 0: unconditional; the value carries its own expiry.
                    if let Err(e) = hostcalls::set_shared_data(&w.key, Some(&w.value), None) {
                        log(
                            LogLevel::Warn,
                            &format!(
                                "oauth-edge[{}]: cannot cache the registry answer: {e:?}",
                                self.id
                            ),
                        );
                    }
                }
                Answer::Client(lookup)
            }
        }
    }

    fn respond(&mut self, engine: &Rc<Engine>, r: Response) {
        self.answered = true;
        if let Some(m) = &self.metrics {
            m.outcome(r.outcome);
            m.events(engine.drain_events());
        }
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Err(e) = hostcalls::send_http_response(u32::from(r.status), headers, Some(&r.body)) {
            log(
                LogLevel::Error,
                &format!("oauth-edge[{}]: cannot send the answer: {e:?}", self.id),
            );
        }
    }
}

/// Resumes a flow with the host's answer; store operations run inline on shared data.
fn resume(engine: &Engine, p: Pending, answer: Answer) -> Step {
    engine.resume_with(p, answer, &mut SystemRandom, Some(&mut SharedData))
}

/// Envoy's shared data as the core's store: it answers at once, so flows run its operations
/// inline.
struct SharedData;

impl SyncStore for SharedData {
    fn run(&mut self, op: &StoreOp) -> StoreResult {
        match op {
            StoreOp::Get { key } => match hostcalls::get_shared_data(key) {
                Ok((value, cas)) => StoreResult::Value {
                    value,
                    cas: u64::from(cas.unwrap_or(0)),
                },
                Err(_) => StoreResult::Failed,
            },
            StoreOp::Lease { .. } | StoreOp::Authenticate => StoreResult::Failed,
            StoreOp::Cas {
                key, value, cas, ..
            } => {
                // cas 0 would be an unconditional write; the core never asks for one.
                let Ok(cas) = u32::try_from(*cas) else {
                    return StoreResult::Failed;
                };
                if cas == 0 {
                    return StoreResult::Failed;
                }
                match hostcalls::set_shared_data(key, Some(value), Some(cas)) {
                    Ok(()) => StoreResult::Written,
                    Err(Status::CasMismatch) => StoreResult::Conflict,
                    Err(_) => StoreResult::Failed,
                }
            }
        }
    }
}

/// Creates every ring key once (empty), so each has a version to compare-and-swap on.
/// Envoy configures the main thread's VM before the workers start; a marker per ring and size
/// lets the workers' VMs skip the walk.
fn create_ring_keys(engine: &Engine) {
    for ring in engine.rings() {
        let marker = format!("oauth_edge.{}.created.{}", ring.name, ring.size);
        if let Ok((Some(_), _)) = hostcalls::get_shared_data(&marker) {
            continue;
        }
        for key in ring.keys() {
            if let Ok((_, None)) = hostcalls::get_shared_data(&key) {
                let _ = hostcalls::set_shared_data(&key, Some(&[]), None);
            }
        }
        let _ = hostcalls::set_shared_data(&marker, Some(b"1"), None);
    }
}

/// The downstream peer's address as Envoy sees it (`source.address`, "ip:port"), without the
/// port. Behind trusted proxies, Envoy's `xff_num_trusted_hops` decides what this is; a client
/// cannot set it with a header of its own.
fn source_address() -> Option<String> {
    let raw = hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()?;
    let s = String::from_utf8(raw).ok()?;
    let host = match s.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => s.as_str(),
    };
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

fn header(map: MapType, name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(map, name)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// All request headers, every value kept (a header sent twice shows twice).
fn request_headers() -> Headers {
    let pairs = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
    Headers(
        pairs
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
    )
}
