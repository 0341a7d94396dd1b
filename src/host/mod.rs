//! The thin proxy-wasm adapter: reads what the host has (config, headers, body, clock, shared
//! data, dispatched calls), hands it to the core [`Engine`], and sends back what it answers.
//! No protocol decision is made here.
//!
//! It speaks the ABI itself (`abi` for host calls, `exports` for callbacks) rather than through
//! the SDK, whose host calls panic on statuses they do not expect: here every host outcome is a
//! value, and every failure becomes a log line and a clean answer. The host calls, and what each
//! failure becomes, are listed in docs/host-calls.md.
//!
//! Per stream only what the request needs is kept: the endpoint and method from the headers
//! (the other headers are read once the body is complete), so a stream held open with its body
//! unfinished costs a few hundred bytes of the VM's heap, which never shrinks.

mod abi;
mod exports;
mod metrics;
mod secrets;
mod user;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::config::Config;
use crate::engine::{Endpoint, Engine, HeadAction, Pending, Step};
use crate::error::OAuthError;
use crate::flights::{Flights, Joined};
use crate::flow::{Answer, Lookup, Need, Now, Request, StoreOp, StoreResult, SyncStore};
use crate::http::{Call, Forward, Headers, Outcome, Response};
use crate::random::SystemRandom;

use abi::{Buffer, LogLevel, Map};
use metrics::Metrics;

/// The most of a dispatched call's answer the filter reads (registry records, JWK Sets and etcd
/// answers are a few KiB): a larger answer is a failed lookup, and the VM's heap does not grow
/// by what an upstream chose to send.
const MAX_CALL_BODY: usize = 1 << 20;

/// Requests that may wait for one registry or jwks_uri call: past it, a request makes its own.
const MAX_WAITERS: usize = 4096;

/// Envoy's response code details for every answer of the filter's own, so the shipped
/// local_reply_config tells them apart from Envoy's replies.
const DETAILS: &str = "oauth_edge";

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub(crate) enum Action {
    Continue = 0,
    Pause = 1,
}

thread_local! {
    static FILTER: RefCell<Filter> = RefCell::new(Filter::new());
}

/// Everything the VM (one per worker) keeps between callbacks.
struct Filter {
    roots: HashMap<u32, Root>,
    streams: HashMap<u32, Stream>,
    /// Dispatched calls by token: who waits for the answer, and what for.
    calls: HashMap<u32, Outstanding>,
    /// Registry and jwks_uri lookups in flight, per root, with the streams waiting for them.
    flights: Flights<(u32, FlightKey), u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FlightKey {
    Client(String),
    Jwks(String),
}

/// One plugin configuration (a root context).
#[derive(Default)]
struct Root {
    engine: Option<Rc<Engine>>,
    metrics: Option<Rc<Metrics>>,
    /// Ticks so far (moves the ring sample's offset).
    ticks: u32,
    /// When each ring's fill was last warned about (ms), so the log is not flooded.
    warned: HashMap<&'static str, u64>,
}

/// How often each worker estimates the rings' fill.
const TICK_MS: u32 = 10_000;
/// At most one fill warning per ring per worker in this long.
const WARN_EVERY_MS: u64 = 60_000;

/// One HTTP stream: `active` only on the filter's own endpoints.
struct Stream {
    root: u32,
    active: Option<Box<Active>>,
}

/// A request to one of the filter's endpoints.
struct Active {
    endpoint: Endpoint,
    method: String,
    /// The request headers, kept only when the filter continued on them (body mode `buffer`);
    /// otherwise read once the body is complete, while the headers are still held.
    headers: Option<Headers>,
    /// A request waiting for a dispatched call (its own, or one it joined).
    pending: Option<Pending>,
    answered: bool,
    /// The core is running inside `on_request_headers` (a forwarded request then just
    /// continues; later, it must be resumed).
    in_headers: bool,
    /// A protected route's request passed while in `on_request_headers`: continue it.
    proceed: bool,
    /// When the headers came in (ns), for the request duration histogram.
    started_ns: u64,
}

/// A dispatched call.
struct Outstanding {
    root: u32,
    stream: u32,
    waiting: Waiting,
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

impl Waiting {
    fn flight(&self) -> Option<FlightKey> {
        match self {
            Waiting::Client(id) => Some(FlightKey::Client(id.clone())),
            Waiting::Jwks(url) => Some(FlightKey::Jwks(url.clone())),
            Waiting::Http | Waiting::Store(_) => None,
        }
    }
}

impl Filter {
    fn new() -> Filter {
        Filter {
            roots: HashMap::new(),
            streams: HashMap::new(),
            calls: HashMap::new(),
            flights: Flights::new(MAX_WAITERS),
        }
    }
}

/// Runs `f` on the VM's state. The host never calls back into the VM while a callback runs
/// (Envoy defers re-entrant callbacks), but should it ever, the inner call does nothing rather
/// than trap.
fn with_filter<R>(default: R, f: impl FnOnce(&mut Filter) -> R) -> R {
    FILTER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut filter) => f(&mut filter),
        Err(_) => {
            log(
                LogLevel::Error,
                "oauth-edge: re-entrant host callback ignored",
            );
            default
        }
    })
}

fn log(level: LogLevel, msg: &str) {
    abi::log(level, msg);
}

fn now() -> Now {
    let unix_ms = abi::now_nanos().map_or(0, |ns| ns / 1_000_000);
    Now { unix_ms }
}

// ------------------------------------------------------------------ root callbacks

pub(crate) fn on_context_create(context: u32, parent: u32) {
    with_filter((), |f| {
        if parent == 0 {
            f.roots.insert(context, Root::default());
        } else {
            f.streams.insert(
                context,
                Stream {
                    root: parent,
                    active: None,
                },
            );
        }
    });
}

pub(crate) fn on_delete(context: u32) {
    with_filter((), |f| {
        if f.streams.remove(&context).is_none() {
            f.roots.remove(&context);
        }
    });
}

pub(crate) fn on_configure(root: u32) -> bool {
    let raw = match abi::buffer(Buffer::PluginConfiguration, 0, usize::MAX) {
        Ok(b) => b.unwrap_or_default(),
        Err(e) => {
            log(
                LogLevel::Critical,
                &format!("oauth-edge: cannot read the plugin configuration: {e}"),
            );
            return false;
        }
    };
    let cfg = match Config::from_json_with_secrets(&raw, &secrets::read) {
        Ok(cfg) => cfg,
        Err(e) => {
            log(
                LogLevel::Critical,
                &format!("oauth-edge: configuration refused: {e}"),
            );
            return false;
        }
    };
    log(
        LogLevel::Info,
        &format!(
            "oauth-edge: configured issuer {} with {} static client(s), registry {}",
            cfg.issuer,
            cfg.clients.len(),
            cfg.registry.as_ref().map_or("off", |r| r.cluster.as_str())
        ),
    );
    if cfg.keys.signer_for(crate::keys::Alg::RS256).is_none() {
        // OIDC Registration §2: clients that register no id_token_signed_response_alg expect
        // RS256; they get the active key's algorithm instead.
        log(
            LogLevel::Warn,
            "oauth-edge: no RS256 signing key: ID tokens of clients without id_token_signed_response_alg are signed with the active key (OpenID Connect's default is RS256)",
        );
    }
    if cfg.verify_algs.contains(&crate::keys::Alg::ES256)
        || cfg.keys.signer_for(crate::keys::Alg::ES256).is_some()
    {
        // The ES256 generator tables (about a millisecond or two), at VM start rather than in
        // the first request that signs or verifies ES256.
        crate::es256::warm_up();
    }
    let engine = Engine::new(cfg);
    create_ring_keys(&engine);
    let metrics = Metrics::define(&engine);
    if let Err(e) = abi::set_tick_period(TICK_MS) {
        log(
            LogLevel::Warn,
            &format!("oauth-edge: no timer, ring fill is not measured: {e}"),
        );
    }
    with_filter(false, |f| {
        let r = f.roots.entry(root).or_default();
        r.engine = Some(Rc::new(engine));
        r.metrics = Some(Rc::new(metrics));
        true
    })
}

/// Estimates how full each ring is (see [`crate::ring_fill`]): a gauge per ring, and a warning
/// in Envoy's log past 80 %.
pub(crate) fn on_tick(root: u32) {
    with_filter((), |f| {
        let Some(r) = f.roots.get_mut(&root) else {
            return;
        };
        let Some(engine) = r.engine.clone() else {
            return;
        };
        r.ticks = r.ticks.wrapping_add(1);
        // A prime stride moves the sample across the whole ring over the ticks.
        let offset = r.ticks.wrapping_mul(7_919);
        let now_ms = now().unix_ms;
        for ring in engine.rings() {
            let Some(kind) = crate::ring_fill::kind(&ring) else {
                continue;
            };
            let loads: Vec<f64> = crate::ring_fill::sample_slots(&ring, offset)
                .map(|slot| {
                    let value = abi::shared_get(&ring.key(slot)).ok().and_then(|(v, _)| v);
                    crate::ring_fill::slot_load(kind, value.as_deref(), now_ms)
                })
                .collect();
            let fill = crate::ring_fill::estimate(&loads);
            if let Some(m) = &r.metrics {
                m.ring_fill(ring.name, (fill * 100.0).round() as u64);
            }
            let last = r.warned.get(ring.name).copied().unwrap_or(0);
            if fill >= crate::ring_fill::WARN_AT
                && (last == 0 || now_ms.saturating_sub(last) >= WARN_EVERY_MS)
            {
                r.warned.insert(ring.name, now_ms);
                log(
                    LogLevel::Warn,
                    &format!(
                        "oauth-edge: the {} ring is about {:.0} % full ({} slots): when it is \
                         full, requests that need a slot fail; raise store.{} or shorten the \
                         lifetimes",
                        crate::ring_fill::label(&ring),
                        fill * 100.0,
                        ring.size,
                        crate::ring_fill::setting(&ring),
                    ),
                );
            }
        }
    });
}

// ------------------------------------------------------------------ stream callbacks

pub(crate) fn on_request_headers(context: u32, end_of_stream: bool) -> Action {
    with_filter(Action::Continue, |f| {
        let Some((engine, metrics)) = f.stream_root(context) else {
            return Action::Continue;
        };
        let path = header_string(":path").unwrap_or_default();
        // A protected route's request: every header, read once here (one host call instead of
        // one per header), kept for the check.
        let mut all_headers = None;
        let (ep, action) = match engine.route(&path) {
            Some(ep) => {
                if let Some(m) = &metrics {
                    m.request(ep);
                }
                let method = header_string(":method").unwrap_or_default();
                // Only what the decision needs: the body's announced length, and for CORS the
                // Origin and a preflight's requested method.
                let mut head = Headers::default();
                for name in ["content-length", "origin", "access-control-request-method"] {
                    if let Some(v) = header_string(name) {
                        head.0.push((name.into(), v));
                    }
                }
                let action = engine.on_headers(ep, &method, &head);
                (ep, (method, action))
            }
            // Never let a client's credentials reach the application under a near-miss of one
            // of our paths.
            None => match engine.path_variant(&path) {
                Some(ep) => {
                    let r = OAuthError::invalid_request("no such endpoint").with_status(404);
                    (ep, (String::new(), HeadAction::Respond(r.into())))
                }
                // An API behind the gateway: its protected routes are checked here.
                None if engine.protects_routes() => {
                    let headers = request_headers();
                    let method = headers
                        .all(":method")
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let authority = headers.all(":authority").next().unwrap_or_default();
                    match engine.protected(&path, authority, &method) {
                        Some(ep) => {
                            if let Some(m) = &metrics {
                                m.request(ep);
                            }
                            all_headers = Some(headers);
                            (ep, (method, HeadAction::Start))
                        }
                        None => return Action::Continue,
                    }
                }
                None => return Action::Continue,
            },
        };
        drop(path);
        let (method, action) = action;
        let Some(stream) = f.streams.get_mut(&context) else {
            return Action::Continue;
        };
        stream.active = Some(Box::new(Active {
            endpoint: ep,
            method,
            headers: all_headers,
            pending: None,
            answered: false,
            in_headers: false,
            proceed: false,
            started_ns: abi::now_nanos().unwrap_or(0),
        }));
        match action {
            HeadAction::Respond(r) => {
                f.finish(context, &engine, &metrics, r);
                Action::Pause
            }
            HeadAction::Start => {
                if let Some(a) = f.active(context) {
                    a.in_headers = true;
                }
                f.start(context, &engine, &metrics, Vec::new());
                match f.active(context) {
                    Some(a) if a.proceed => {
                        // Forwarded at once: the rest of the stream is not ours.
                        if let Some(s) = f.streams.get_mut(&context) {
                            s.active = None;
                        }
                        Action::Continue
                    }
                    Some(a) => {
                        a.in_headers = false;
                        Action::Pause
                    }
                    None => Action::Pause,
                }
            }
            HeadAction::ReadBody if end_of_stream => {
                f.start(context, &engine, &metrics, Vec::new());
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
                    // Envoy lets a filter read the request headers only while it holds them:
                    // continuing hands them on, so keep them now.
                    if let Some(a) = f.active(context) {
                        a.headers = Some(request_headers());
                    }
                    Action::Continue
                }
            }
        }
    })
}

pub(crate) fn on_request_body(context: u32, body_size: usize, end_of_stream: bool) -> Action {
    with_filter(Action::Continue, |f| {
        let Some((engine, metrics)) = f.stream_root(context) else {
            return Action::Continue;
        };
        match f.active(context) {
            None => return Action::Continue,
            Some(a) if a.answered || a.pending.is_some() => return Action::Pause,
            Some(_) => {}
        }
        if let Some(r) = engine.body_too_large(body_size) {
            f.finish(context, &engine, &metrics, r);
            return Action::Pause;
        }
        if !end_of_stream {
            // Keep buffering: answer only once the whole body is in, or Envoy closes the
            // connection after the early reply.
            return Action::Pause;
        }
        f.read_body_and_start(context, &engine, &metrics, body_size);
        Action::Pause
    })
}

pub(crate) fn on_request_trailers(context: u32) -> Action {
    // A body that ends in trailers: its last chunk came without end_of_stream.
    with_filter(Action::Continue, |f| {
        let Some((engine, metrics)) = f.stream_root(context) else {
            return Action::Continue;
        };
        match f.active(context) {
            None => return Action::Continue,
            Some(a) if a.answered || a.pending.is_some() => return Action::Pause,
            Some(_) => {}
        }
        let limit = engine.config.max_body_bytes.saturating_add(1);
        f.read_body_and_start(context, &engine, &metrics, limit);
        Action::Pause
    })
}

/// A dispatched call answered. A call that failed (reset, timeout, connect failure, a
/// response cut off after its headers) may arrive with no headers at all: that is "no answer",
/// never a reason to read a map the host does not have.
pub(crate) fn on_http_call_response(token: u32, num_headers: usize, body_size: usize) {
    with_filter((), |f| {
        let Some(out) = f.calls.remove(&token) else {
            return;
        };
        let status = if num_headers == 0 {
            None
        } else {
            match abi::header(Map::CallResponseHeaders, ":status") {
                Ok(v) => v.and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u16>().ok()),
                Err(e) => {
                    log(
                        LogLevel::Warn,
                        &format!("oauth-edge: a dispatched call's headers are unreadable: {e}"),
                    );
                    None
                }
            }
        };
        let body = if status.is_none() || body_size == 0 {
            Vec::new()
        } else if body_size > MAX_CALL_BODY {
            log(
                LogLevel::Warn,
                &format!(
                    "oauth-edge: a dispatched call answered {body_size} bytes (at most \
                     {MAX_CALL_BODY} are read): treated as a failed call"
                ),
            );
            Vec::new()
        } else {
            match abi::buffer(Buffer::CallResponseBody, 0, body_size) {
                Ok(b) => b.unwrap_or_default(),
                Err(e) => {
                    log(
                        LogLevel::Warn,
                        &format!("oauth-edge: a dispatched call's body is unreadable: {e}"),
                    );
                    Vec::new()
                }
            }
        };
        let status = if body_size > MAX_CALL_BODY {
            None
        } else {
            status
        };
        f.landed(out, status, &body);
    });
}

// ------------------------------------------------------------------ the request machine

type RootParts = (Rc<Engine>, Option<Rc<Metrics>>);

impl Filter {
    /// The engine and metrics of a stream's root; `None` (pass through) if configuration
    /// failed, in which case Envoy refuses the filter anyway.
    fn stream_root(&self, context: u32) -> Option<RootParts> {
        let root = self.streams.get(&context)?.root;
        self.root_parts(root)
    }

    fn root_parts(&self, root: u32) -> Option<RootParts> {
        let r = self.roots.get(&root)?;
        Some((r.engine.clone()?, r.metrics.clone()))
    }

    fn active(&mut self, context: u32) -> Option<&mut Active> {
        self.streams.get_mut(&context)?.active.as_deref_mut()
    }

    /// Reads up to `max` bytes of the request body and starts the request (a body that cannot
    /// be read is a `500`).
    fn read_body_and_start(
        &mut self,
        context: u32,
        engine: &Rc<Engine>,
        metrics: &Option<Rc<Metrics>>,
        max: usize,
    ) {
        match abi::buffer(Buffer::RequestBody, 0, max) {
            Ok(b) => self.start(context, engine, metrics, b.unwrap_or_default()),
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("oauth-edge[{context}]: cannot read the request body: {e}"),
                );
                let r = OAuthError::server_error("internal error").into();
                self.finish(context, engine, metrics, r);
            }
        }
    }

    /// The whole request is in: reads the headers now (not while the body was still coming)
    /// and starts the core.
    fn start(
        &mut self,
        context: u32,
        engine: &Rc<Engine>,
        metrics: &Option<Rc<Metrics>>,
        body: Vec<u8>,
    ) {
        let Some(a) = self.active(context) else {
            return;
        };
        let ep = a.endpoint;
        let method = std::mem::take(&mut a.method);
        let headers = a.headers.take();
        let user = if matches!(
            ep,
            Endpoint::Authorize | Endpoint::DeviceVerification | Endpoint::EndSession
        ) {
            user::read(&engine.config)
        } else {
            None
        };
        let source = if engine.needs_source_address(ep) {
            source_address()
        } else {
            None
        };
        let headers = headers.unwrap_or_else(request_headers);
        let path = headers.all(":path").next().unwrap_or_default().to_string();
        let client_cert = match &engine.config.mtls {
            Some(m) if m.source == crate::mtls::CertSource::Connection => connection_cert(),
            _ => None,
        };
        let req = Request {
            method,
            path,
            headers,
            body,
            user,
            source,
            client_cert,
        };
        let step = engine.start_with(ep, req, now(), &mut SystemRandom, Some(&mut SharedData));
        self.drive(context, engine, metrics, step);
    }

    /// Runs the core's steps until it answers or waits for a dispatched call.
    fn drive(
        &mut self,
        context: u32,
        engine: &Rc<Engine>,
        metrics: &Option<Rc<Metrics>>,
        mut step: Step,
    ) {
        let Some(root) = self.streams.get(&context).map(|s| s.root) else {
            return;
        };
        loop {
            let (need, p) = match step {
                Step::Done(r) => {
                    self.finish(context, engine, metrics, r);
                    return;
                }
                Step::Need(need, p) => (need, p),
            };
            let (call, waiting) = match outgoing(engine, metrics, need) {
                Ok(out) => out,
                Err(answer) => {
                    step = resume(engine, p, answer);
                    continue;
                }
            };
            let flight = waiting.flight();
            if let Some(key) = &flight {
                if self.flights.join(&(root, key.clone()), context) == Joined::Wait {
                    if let Some(m) = metrics {
                        m.coalesced();
                    }
                    if let Some(a) = self.active(context) {
                        a.pending = Some(p);
                    }
                    return;
                }
            }
            match dispatch(&call) {
                Ok(token) => {
                    self.calls.insert(
                        token,
                        Outstanding {
                            root,
                            stream: context,
                            waiting,
                        },
                    );
                    if let Some(a) = self.active(context) {
                        a.pending = Some(p);
                    }
                    return;
                }
                Err(e) => {
                    log(
                        LogLevel::Error,
                        &format!(
                            "oauth-edge[{context}]: cannot call the cluster {:?}: {e}",
                            call.cluster
                        ),
                    );
                    // As if the call had been reset (nobody can have joined the flight yet).
                    if let Some(key) = flight {
                        self.flights.abort(&(root, key));
                    }
                    let answer = answer(engine, waiting, None, &[]);
                    step = resume(engine, p, answer);
                }
            }
        }
    }

    /// A call's answer: resumes the request that made it and every request that waited for the
    /// same lookup, each on its own stream.
    fn landed(&mut self, out: Outstanding, status: Option<u16>, body: &[u8]) {
        let Some((engine, metrics)) = self.root_parts(out.root) else {
            return;
        };
        let flight = out.waiting.flight();
        let answer = answer(&engine, out.waiting, status, body);
        let waiters = flight.map_or_else(Vec::new, |k| self.flights.land(&(out.root, k)));
        for stream in std::iter::once(out.stream).chain(waiters) {
            // The stream may be gone (its client left); the answer is still cached for others.
            let Some(p) = self.active(stream).and_then(|a| a.pending.take()) else {
                continue;
            };
            if let Err(e) = abi::set_effective_context(stream) {
                log(
                    LogLevel::Warn,
                    &format!("oauth-edge[{stream}]: cannot resume the request: {e}"),
                );
                continue;
            }
            let step = resume(&engine, p, answer.clone());
            self.drive(stream, &engine, &metrics, step);
        }
    }

    fn finish(
        &mut self,
        context: u32,
        engine: &Rc<Engine>,
        metrics: &Option<Rc<Metrics>>,
        r: Response,
    ) {
        if let (Some(m), Some(a)) = (metrics, self.active(context)) {
            let us = abi::now_nanos().unwrap_or(0).saturating_sub(a.started_ns) / 1000;
            m.duration(a.endpoint, us);
        }
        if let Some(fwd) = r.forward {
            forward(metrics, &fwd);
            let Some(a) = self.active(context) else {
                return;
            };
            if a.in_headers {
                a.proceed = true;
                return;
            }
            if let Some(s) = self.streams.get_mut(&context) {
                s.active = None;
            }
            if let Err(e) = abi::continue_request() {
                log(
                    LogLevel::Error,
                    &format!("oauth-edge[{context}]: cannot resume the request: {e}"),
                );
            }
            return;
        }
        if let Some(a) = self.active(context) {
            a.answered = true;
        }
        respond(metrics, engine, r);
    }
}

/// Hands a protected route's request on: the client's copies of the claim headers removed,
/// the verified claims set, and the same claims as filter state (`wasm.oauth_edge.<claim>`).
fn forward(metrics: &Option<Rc<Metrics>>, f: &Forward) {
    if let Some(m) = metrics {
        m.outcome(Outcome::Forwarded);
    }
    for name in &f.remove {
        if let Err(e) = abi::remove_header(abi::Map::RequestHeaders, name) {
            log(
                LogLevel::Warn,
                &format!("oauth-edge: cannot remove the request header {name}: {e}"),
            );
        }
    }
    for (name, value) in &f.set {
        if let Err(e) = abi::replace_header(abi::Map::RequestHeaders, name, value) {
            log(
                LogLevel::Warn,
                &format!("oauth-edge: cannot set the request header {name}: {e}"),
            );
        }
    }
    for (key, value) in &f.state {
        // Filter state is a nicety for RBAC and logs; a host without it still forwards.
        let _ = abi::set_property(key, value);
    }
}

/// Sends the core's answer on the current stream.
fn respond(metrics: &Option<Rc<Metrics>>, engine: &Engine, r: Response) {
    if let Some(m) = metrics {
        m.outcome(r.outcome);
        m.events(engine.drain_events());
    }
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Err(e) = abi::send_response(u32::from(r.status), DETAILS, &headers, &r.body) {
        log(
            LogLevel::Error,
            &format!("oauth-edge: cannot send the answer: {e}"),
        );
    }
}

fn dispatch(call: &Call) -> abi::HostResult<u32> {
    let headers: Vec<(&str, &str)> = call.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let timeout_ms = u32::try_from(call.timeout.as_millis()).unwrap_or(u32::MAX);
    abi::http_call(&call.cluster, &headers, call.body.as_deref(), timeout_ms)
}

/// The call a need takes, or its answer when none is needed (shared data, caches, a call that
/// cannot be made).
fn outgoing(
    engine: &Engine,
    metrics: &Option<Rc<Metrics>>,
    need: Need,
) -> Result<(Call, Waiting), Answer> {
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
                    &format!("oauth-edge: cannot fetch a jwks_uri: {lookup:?}"),
                );
                Err(Answer::Jwks(lookup))
            }
        },
        Need::Client(client_id) => {
            let key = crate::registry::shared_key(&client_id);
            if let Ok((Some(entry), _)) = abi::shared_get(&key) {
                if let Some(lookup) = engine.client_from_shared(&client_id, &entry, now()) {
                    return Err(Answer::Client(lookup));
                }
            }
            match engine.registry_call(&client_id) {
                Some(call) => {
                    if let Some(m) = metrics {
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

/// What a dispatched call's answer means to the core (`status` `None`: no answer: a reset, a
/// timeout, a response cut off, or a call not dispatched at all).
fn answer(engine: &Engine, waiting: Waiting, status: Option<u16>, body: &[u8]) -> Answer {
    match waiting {
        Waiting::Store(op) => {
            let result = engine.store_answer(&op, status, body, now());
            if result == StoreResult::Failed {
                log(
                    LogLevel::Warn,
                    &format!("oauth-edge: etcd operation failed (status {status:?})"),
                );
            }
            Answer::Store(result)
        }
        Waiting::Http => {
            if status.is_none_or(|s| s >= 500) {
                log(
                    LogLevel::Warn,
                    &format!("oauth-edge: a dispatched call failed (status {status:?})"),
                );
            }
            Answer::Http(crate::flow::HttpAnswer {
                status,
                body: body.to_vec(),
            })
        }
        Waiting::Jwks(url) => {
            let lookup = engine.jwks_from_fetch(&url, status, body, now());
            if let crate::flow::JwksLookup::Unavailable(why) = &lookup {
                log(
                    LogLevel::Warn,
                    &format!("oauth-edge: jwks_uri fetch failed: {why}"),
                );
            }
            Answer::Jwks(lookup)
        }
        Waiting::Client(client_id) => {
            let (lookup, write) = engine.client_from_registry(&client_id, status, body, now());
            if let Lookup::Unavailable(why) = &lookup {
                log(
                    LogLevel::Warn,
                    &format!("oauth-edge: registry lookup failed: {why}"),
                );
            }
            if let Some(w) = write {
                // cas 0: unconditional; the value carries its own expiry.
                if let Err(e) = abi::shared_set(&w.key, &w.value, 0) {
                    log(
                        LogLevel::Warn,
                        &format!("oauth-edge: cannot cache the registry answer: {e}"),
                    );
                }
            }
            Answer::Client(lookup)
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
            StoreOp::Get { key } => match abi::shared_get(key) {
                Ok((value, cas)) => StoreResult::Value {
                    value,
                    cas: u64::from(cas),
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
                match abi::shared_set(key, value, cas) {
                    Ok(()) => StoreResult::Written,
                    Err(abi::Status::CAS_MISMATCH) => StoreResult::Conflict,
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
        if let Ok((Some(_), _)) = abi::shared_get(&marker) {
            continue;
        }
        for key in ring.keys() {
            if let Ok((_, 0)) = abi::shared_get(&key) {
                let _ = abi::shared_set(&key, &[], 0);
            }
        }
        let _ = abi::shared_set(&marker, b"1", 0);
    }
}

/// The downstream peer's address as Envoy sees it (`source.address`, "ip:port"), without the
/// port. Behind trusted proxies, Envoy's `xff_num_trusted_hops` decides what this is; a client
/// cannot set it with a header of its own.
fn source_address() -> Option<String> {
    let raw = abi::property(&["source", "address"]).ok().flatten()?;
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

/// The TLS client certificate of the downstream connection, from Envoy's connection attributes
/// (see [`crate::mtls`]): `None` without TLS or without a client certificate.
fn connection_cert() -> Option<crate::mtls::ClientCert> {
    let text = |leaf: &str| {
        abi::property(&["connection", leaf])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let digest = text("sha256_peer_certificate_digest")?;
    crate::mtls::ClientCert::from_digest_hex(
        &digest,
        text("subject_peer_certificate"),
        text("dns_san_peer_certificate"),
        text("uri_san_peer_certificate"),
    )
}

/// One request header of the current stream.
fn header_string(name: &str) -> Option<String> {
    abi::header(Map::RequestHeaders, name)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// All request headers, every value kept (a header sent twice shows twice).
fn request_headers() -> Headers {
    let pairs = abi::header_pairs(Map::RequestHeaders).unwrap_or_default();
    Headers(
        pairs
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect(),
    )
}
