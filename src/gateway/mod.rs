//! The gateway: everything one wasm VM (one Envoy worker) keeps between callbacks, and what it
//! does on each: which requests are ours, when the body is read, how a request waits for a
//! dispatched call and is resumed, which lookups are shared by waiting requests, what is
//! counted. It reaches the host only through the primitive I/O of [`Host`], so all of it runs
//! natively under `cargo test` with a fake host; `crate::host` implements [`Host`] over
//! proxy-wasm and forwards the callbacks here.
//!
//! Per stream only what the request needs is kept: the endpoint and method from the headers
//! (the other headers are read once the body is complete), so a stream held open with its body
//! unfinished costs a few hundred bytes of the VM's heap, which never shrinks.

pub mod host;
pub mod lookup;
pub mod metrics;
pub mod rings;
pub mod user;

use std::collections::HashMap;
use std::rc::Rc;

use crate::config::Config;
use crate::engine::{Endpoint, Engine, HeadAction, Pending, Step};
use crate::error::OAuthError;
use crate::flights::{Flights, Joined};
use crate::flow::{Answer, Now, Request};
use crate::http::{Forward, Headers, Outcome, Response};
use crate::random::SystemRandom;

pub use host::{Host, HostError, Level, MetricKind, SetError};
use lookup::{FlightKey, SharedStore, Waiting};
use metrics::Metrics;

/// The most of a dispatched call's answer the filter reads (registry records, JWK Sets and etcd
/// answers are a few KiB): a larger answer is a failed lookup, and the VM's heap does not grow
/// by what an upstream chose to send.
pub const MAX_CALL_BODY: usize = 1 << 20;

/// Requests that may wait for one registry or jwks_uri call: past it, a request makes its own.
const MAX_WAITERS: usize = 4096;

/// How often each worker estimates the rings' fill.
pub const TICK_MS: u32 = 10_000;

/// What the host does with the stream after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// Everything the VM (one per worker) keeps between callbacks.
pub struct Gateway {
    roots: HashMap<u32, Root>,
    streams: HashMap<u32, Stream>,
    /// Dispatched calls by token: who waits for the answer, and what for.
    calls: HashMap<u32, Outstanding>,
    /// Registry and jwks_uri lookups in flight, per root, with the streams waiting for them.
    flights: Flights<(u32, FlightKey), u32>,
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

/// One HTTP stream: `active` only on the filter's own endpoints.
struct Stream {
    root: u32,
    active: Option<Box<Active>>,
}

/// A request to one of the filter's endpoints.
struct Active {
    endpoint: Endpoint,
    method: String,
    /// The request headers, read in the headers callback and kept only until the core starts
    /// within it (a request without a body, a protected route) or when the filter continued on
    /// them (body mode `buffer`); otherwise read again once the body is complete, while the
    /// headers are still held.
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
    /// A protected route's request: the route the headers matched (found once).
    route: Option<usize>,
}

/// A dispatched call.
struct Outstanding {
    root: u32,
    stream: u32,
    waiting: Waiting,
}

type RootParts = (Rc<Engine>, Option<Rc<Metrics>>);

/// Envoy's response code details for every answer of the filter's own, so the shipped
/// local_reply_config tells them apart from Envoy's replies.
pub const DETAILS: &str = "oauth_edge";

fn now(host: &dyn Host) -> Now {
    Now {
        unix_ms: host.now_nanos() / 1_000_000,
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway::new()
    }
}

impl Gateway {
    pub fn new() -> Gateway {
        Gateway {
            roots: HashMap::new(),
            streams: HashMap::new(),
            calls: HashMap::new(),
            flights: Flights::new(MAX_WAITERS),
        }
    }

    // -------------------------------------------------------------- root callbacks

    pub fn on_context_create(&mut self, context: u32, parent: u32) {
        if parent == 0 {
            self.roots.insert(context, Root::default());
        } else {
            self.streams.insert(
                context,
                Stream {
                    root: parent,
                    active: None,
                },
            );
        }
    }

    pub fn on_delete(&mut self, context: u32) {
        if self.streams.remove(&context).is_none() {
            self.roots.remove(&context);
        }
    }

    /// Reads and checks the configuration; `false` makes Envoy refuse the filter.
    pub fn on_configure(&mut self, host: &dyn Host, root: u32) -> bool {
        let raw = match host.plugin_configuration() {
            Ok(b) => b,
            Err(e) => {
                host.log(
                    Level::Critical,
                    &format!("oauth-edge: cannot read the plugin configuration: {e}"),
                );
                return false;
            }
        };
        let cfg = match Config::from_json_with_secrets(&raw, &|r| host.secret(r)) {
            Ok(cfg) => cfg,
            Err(e) => {
                host.log(
                    Level::Critical,
                    &format!("oauth-edge: configuration refused: {e}"),
                );
                return false;
            }
        };
        host.log(
            Level::Info,
            &format!(
                "oauth-edge: configured issuer {} with {} static client(s), registry {}",
                cfg.issuer,
                cfg.clients.len(),
                cfg.registry.as_ref().map_or("off", |r| r.cluster.as_str())
            ),
        );
        if cfg.keys.signer_for(crate::keys::Alg::RS256).is_none() {
            // OIDC Registration §2: clients that register no id_token_signed_response_alg
            // expect RS256; they get the active key's algorithm instead.
            host.log(
                Level::Warn,
                "oauth-edge: no RS256 signing key: ID tokens of clients without id_token_signed_response_alg are signed with the active key (OpenID Connect's default is RS256)",
            );
        }
        if cfg.verify_algs.contains(&crate::keys::Alg::ES256)
            || cfg.keys.signer_for(crate::keys::Alg::ES256).is_some()
        {
            // The ES256 generator tables (about a millisecond or two), at VM start rather than
            // in the first request that signs or verifies ES256.
            crate::es256::warm_up();
        }
        let engine = Engine::new(cfg);
        rings::create_keys(host, &engine);
        let metrics = Metrics::define(host, &engine);
        if let Err(e) = host.set_tick_period(TICK_MS) {
            host.log(
                Level::Warn,
                &format!("oauth-edge: no timer, ring fill is not measured: {e}"),
            );
        }
        let r = self.roots.entry(root).or_default();
        r.engine = Some(Rc::new(engine));
        r.metrics = Some(Rc::new(metrics));
        true
    }

    /// Estimates how full each ring is (see [`rings::measure`]).
    pub fn on_tick(&mut self, host: &dyn Host, root: u32) {
        let Some(r) = self.roots.get_mut(&root) else {
            return;
        };
        let Some(engine) = r.engine.clone() else {
            return;
        };
        r.ticks = r.ticks.wrapping_add(1);
        rings::measure(host, &engine, r.metrics.as_deref(), r.ticks, &mut r.warned);
    }

    // -------------------------------------------------------------- stream callbacks

    pub fn on_request_headers(
        &mut self,
        host: &dyn Host,
        context: u32,
        end_of_stream: bool,
    ) -> Action {
        let Some((engine, metrics)) = self.stream_root(context) else {
            return Action::Continue;
        };
        // With protected routes, any request may need its method, authority and credentials,
        // so every header is read at once, `:path` among them: one host call (and one entry
        // into the VM for the copy) fewer per request than reading `:path` first. Without
        // them, most requests need only the path, the smallest read there is.
        let mut read = engine.protects_routes().then(|| host.request_headers());
        let path = match &read {
            Some(h) => h.all(":path").next().unwrap_or_default().to_string(),
            None => host.request_header(":path").unwrap_or_default(),
        };
        // Every header, read once (one host call instead of one per header): a protected
        // route's request keeps them for the check; a request to one of our endpoints keeps
        // them only if the core runs before this stream's headers are handed on (see below).
        let mut all_headers = None;
        let mut route = None;
        let (ep, (method, action)) = match engine.route(&path) {
            Some(ep) => {
                if let Some(m) = &metrics {
                    m.request(host, ep);
                }
                let headers = read.take().unwrap_or_else(|| host.request_headers());
                let first = |name| headers.all(name).next().map(str::to_string);
                let method = first(":method").unwrap_or_default();
                // Only what the decision needs: the body's announced length, and for CORS the
                // Origin and a preflight's requested method; each header's first value, as a
                // read of that one header (proxy_get_header_map_value) gives it.
                let mut head = Headers::default();
                for name in ["content-length", "origin", "access-control-request-method"] {
                    if let Some(v) = first(name) {
                        head.0.push((name.into(), v));
                    }
                }
                let action = engine.on_headers(ep, &method, &head);
                // Kept when the core starts within this callback (a request without a body),
                // or when the headers are handed on before the body is in (body mode
                // `buffer`). A request paused for its body does not keep them: a stream held
                // open with its body unfinished costs the VM's heap (which never shrinks) only
                // its endpoint and method; they are read again once the body is complete.
                let keep = match &action {
                    HeadAction::Respond(_) => false,
                    HeadAction::Start => true,
                    HeadAction::ReadBody => {
                        end_of_stream || !engine.config.pause_on_request_headers
                    }
                };
                if keep {
                    all_headers = Some(headers);
                }
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
                    let headers = read.take().unwrap_or_else(|| host.request_headers());
                    let method = headers
                        .all(":method")
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let authority = headers.all(":authority").next().unwrap_or_default();
                    match engine.protected_route(&path, authority, &method) {
                        Some(i) => {
                            let ep = Endpoint::Resource;
                            if let Some(m) = &metrics {
                                m.request(host, ep);
                            }
                            all_headers = Some(headers);
                            route = Some(i);
                            (ep, (method, HeadAction::Start))
                        }
                        None => return Action::Continue,
                    }
                }
                None => return Action::Continue,
            },
        };
        drop(path);
        let Some(stream) = self.streams.get_mut(&context) else {
            return Action::Continue;
        };
        // One clock read: the request's start for the duration histogram, and the flow's `now`
        // when the core runs within this callback.
        let started_ns = host.now_nanos();
        let at_headers = Now {
            unix_ms: started_ns / 1_000_000,
        };
        stream.active = Some(Box::new(Active {
            endpoint: ep,
            method,
            headers: all_headers,
            pending: None,
            answered: false,
            in_headers: false,
            proceed: false,
            started_ns,
            route,
        }));
        match action {
            HeadAction::Respond(r) => {
                self.finish(host, context, &engine, &metrics, r);
                Action::Pause
            }
            HeadAction::Start => {
                if let Some(a) = self.active(context) {
                    a.in_headers = true;
                }
                self.start(
                    host,
                    context,
                    &engine,
                    &metrics,
                    Vec::new(),
                    Some(at_headers),
                );
                match self.active(context) {
                    Some(a) if a.proceed => {
                        // Forwarded at once: the rest of the stream is not ours.
                        if let Some(s) = self.streams.get_mut(&context) {
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
                self.start(
                    host,
                    context,
                    &engine,
                    &metrics,
                    Vec::new(),
                    Some(at_headers),
                );
                Action::Pause
            }
            HeadAction::ReadBody => {
                // With allow_on_headers_stop_iteration (the default setup) pausing here keeps
                // the router from acting on the headers while the body still reaches us.
                // Without that knob (pause_on_request_headers: false) a buffer filter after
                // this one must hold the router back instead.
                if engine.config.pause_on_request_headers {
                    Action::Pause
                } else {
                    // Envoy lets a filter read the request headers only while it holds them:
                    // continuing hands them on, so they were kept above.
                    Action::Continue
                }
            }
        }
    }

    pub fn on_request_body(
        &mut self,
        host: &dyn Host,
        context: u32,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        let Some((engine, metrics)) = self.stream_root(context) else {
            return Action::Continue;
        };
        match self.active(context) {
            None => return Action::Continue,
            Some(a) if a.answered || a.pending.is_some() => return Action::Pause,
            Some(_) => {}
        }
        if let Some(r) = engine.body_too_large(body_size) {
            self.finish(host, context, &engine, &metrics, r);
            return Action::Pause;
        }
        if !end_of_stream {
            // Keep buffering: answer only once the whole body is in, or Envoy closes the
            // connection after the early reply.
            return Action::Pause;
        }
        self.read_body_and_start(host, context, &engine, &metrics, body_size);
        Action::Pause
    }

    /// A body that ends in trailers: its last chunk came without end_of_stream.
    pub fn on_request_trailers(&mut self, host: &dyn Host, context: u32) -> Action {
        let Some((engine, metrics)) = self.stream_root(context) else {
            return Action::Continue;
        };
        match self.active(context) {
            None => return Action::Continue,
            Some(a) if a.answered || a.pending.is_some() => return Action::Pause,
            Some(_) => {}
        }
        let limit = engine.config.max_body_bytes.saturating_add(1);
        self.read_body_and_start(host, context, &engine, &metrics, limit);
        Action::Pause
    }

    /// A dispatched call answered. A call that failed (reset, timeout, connect failure, a
    /// response cut off after its headers) may arrive with no headers at all: that is "no
    /// answer", never a reason to read a map the host does not have.
    pub fn on_http_call_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let Some(out) = self.calls.remove(&token) else {
            return;
        };
        let status = if num_headers == 0 {
            None
        } else {
            match host.call_status() {
                Ok(s) => s,
                Err(e) => {
                    host.log(
                        Level::Warn,
                        &format!("oauth-edge: a dispatched call's headers are unreadable: {e}"),
                    );
                    None
                }
            }
        };
        let (status, body) = if status.is_none() || body_size == 0 {
            (status, Vec::new())
        } else if body_size > MAX_CALL_BODY {
            host.log(
                Level::Warn,
                &format!(
                    "oauth-edge: a dispatched call answered {body_size} bytes (at most \
                     {MAX_CALL_BODY} are read): treated as a failed call"
                ),
            );
            (None, Vec::new())
        } else {
            match host.call_body(body_size) {
                Ok(b) => (status, b),
                Err(e) => {
                    host.log(
                        Level::Warn,
                        &format!("oauth-edge: a dispatched call's body is unreadable: {e}"),
                    );
                    (status, Vec::new())
                }
            }
        };
        self.landed(host, out, status, &body);
    }

    // -------------------------------------------------------------- the request machine

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
        host: &dyn Host,
        context: u32,
        engine: &Rc<Engine>,
        metrics: &Option<Rc<Metrics>>,
        max: usize,
    ) {
        match host.request_body(max) {
            Ok(b) => self.start(host, context, engine, metrics, b, None),
            Err(e) => {
                host.log(
                    Level::Error,
                    &format!("oauth-edge[{context}]: cannot read the request body: {e}"),
                );
                // Already logged with its cause.
                let r = OAuthError::server_error("internal error").into();
                self.finish(host, context, engine, metrics, r);
            }
        }
    }

    /// The whole request is in: reads the headers now (not while the body was still coming)
    /// and starts the core. `at`: the time already read in this callback (`None`: read it now,
    /// as the body completed later).
    fn start(
        &mut self,
        host: &dyn Host,
        context: u32,
        engine: &Rc<Engine>,
        metrics: &Option<Rc<Metrics>>,
        body: Vec<u8>,
        at: Option<Now>,
    ) {
        let Some(a) = self.active(context) else {
            return;
        };
        let ep = a.endpoint;
        let route = a.route;
        let method = std::mem::take(&mut a.method);
        let headers = a.headers.take();
        let user = if matches!(
            ep,
            Endpoint::Authorize | Endpoint::DeviceVerification | Endpoint::EndSession
        ) {
            user::read(host, &engine.config)
        } else {
            None
        };
        let source = if engine.needs_source_address(ep) {
            source_address(host)
        } else {
            None
        };
        let headers = headers.unwrap_or_else(|| host.request_headers());
        let path = headers.all(":path").next().unwrap_or_default().to_string();
        let client_cert = match &engine.config.mtls {
            Some(m) if m.source == crate::mtls::CertSource::Connection => connection_cert(host),
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
        let at = at.unwrap_or_else(|| now(host));
        let store = Some(&mut SharedStore(host) as &mut dyn crate::flow::SyncStore);
        let step = match route {
            Some(i) => engine.start_protected(i, req, at, &mut SystemRandom, store),
            None => engine.start_with(ep, req, at, &mut SystemRandom, store),
        };
        self.drive(host, context, engine, metrics, step);
    }

    /// Runs the core's steps until it answers or waits for a dispatched call.
    fn drive(
        &mut self,
        host: &dyn Host,
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
                    self.finish(host, context, engine, metrics, r);
                    return;
                }
                Step::Need(need, p) => (need, p),
            };
            let (call, waiting) = match lookup::outgoing(engine, host, need, now(host)) {
                Ok(out) => out,
                Err(answer) => {
                    step = resume(host, engine, p, answer);
                    continue;
                }
            };
            let flight = waiting.flight();
            if let Some(key) = &flight {
                if self.flights.join(&(root, key.clone()), context) == Joined::Wait {
                    if let Some(m) = metrics {
                        m.coalesced(host);
                    }
                    if let Some(a) = self.active(context) {
                        a.pending = Some(p);
                    }
                    return;
                }
            }
            match host.dispatch(&call) {
                Ok(token) => {
                    // Counted here, once made: a lookup that joined another's call is not one.
                    if let (Some(m), Waiting::Client(_)) = (metrics, &waiting) {
                        m.registry_call(host);
                    }
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
                    host.log(
                        Level::Error,
                        &format!(
                            "oauth-edge[{context}]: cannot call the cluster {:?}: {e}",
                            call.cluster
                        ),
                    );
                    // As if the call had been reset (nobody can have joined the flight yet).
                    if let Some(key) = flight {
                        self.flights.abort(&(root, key));
                    }
                    let answer = lookup::answer(engine, host, waiting, None, &[], now(host));
                    step = resume(host, engine, p, answer);
                }
            }
        }
    }

    /// A call's answer: resumes the request that made it and every request that waited for
    /// the same lookup, each on its own stream.
    fn landed(&mut self, host: &dyn Host, out: Outstanding, status: Option<u16>, body: &[u8]) {
        let Some((engine, metrics)) = self.root_parts(out.root) else {
            return;
        };
        let flight = out.waiting.flight();
        let answer = lookup::answer(&engine, host, out.waiting, status, body, now(host));
        let waiters = flight.map_or_else(Vec::new, |k| self.flights.land(&(out.root, k)));
        for stream in std::iter::once(out.stream).chain(waiters) {
            // The stream may be gone (its client left); the answer is still cached for others.
            let Some(p) = self.active(stream).and_then(|a| a.pending.take()) else {
                continue;
            };
            if let Err(e) = host.set_stream(stream) {
                host.log(
                    Level::Warn,
                    &format!("oauth-edge[{stream}]: cannot resume the request: {e}"),
                );
                continue;
            }
            let step = resume(host, &engine, p, answer.clone());
            self.drive(host, stream, &engine, &metrics, step);
        }
    }

    fn finish(
        &mut self,
        host: &dyn Host,
        context: u32,
        engine: &Rc<Engine>,
        metrics: &Option<Rc<Metrics>>,
        r: Response,
    ) {
        if let (Some(m), Some(a)) = (metrics, self.active(context)) {
            let us = host.now_nanos().saturating_sub(a.started_ns) / 1000;
            m.duration(host, a.endpoint, us);
        }
        if let Some(fwd) = r.forward {
            forward(host, metrics, &fwd);
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
            if let Err(e) = host.continue_request() {
                host.log(
                    Level::Error,
                    &format!("oauth-edge[{context}]: cannot resume the request: {e}"),
                );
            }
            return;
        }
        let endpoint = self.active(context).map(|a| {
            a.answered = true;
            a.endpoint
        });
        if let Some(cause) = &r.cause {
            let at = endpoint.map_or("?", |e| e.name());
            host.log(
                Level::Error,
                &format!("oauth-edge[{context}]: {at} answered {}: {cause}", r.status),
            );
        }
        respond(host, metrics, engine, r);
    }
}

/// Resumes a flow with the host's answer; store operations run inline on shared data.
fn resume(host: &dyn Host, engine: &Engine, p: Pending, answer: Answer) -> Step {
    engine.resume_with(p, answer, &mut SystemRandom, Some(&mut SharedStore(host)))
}

/// Hands a protected route's request on: the client's copies of the claim headers removed,
/// the verified claims set, and the same claims as filter state (`wasm.oauth_edge.<claim>`).
fn forward(host: &dyn Host, metrics: &Option<Rc<Metrics>>, f: &Forward) {
    if let Some(m) = metrics {
        m.outcome(host, Outcome::Forwarded);
    }
    for name in &f.remove {
        if let Err(e) = host.remove_request_header(name) {
            host.log(
                Level::Warn,
                &format!("oauth-edge: cannot remove the request header {name}: {e}"),
            );
        }
    }
    for (name, value) in &f.set {
        if let Err(e) = host.replace_request_header(name, value) {
            host.log(
                Level::Warn,
                &format!("oauth-edge: cannot set the request header {name}: {e}"),
            );
        }
    }
    for (key, value) in &f.state {
        // Filter state is a nicety for RBAC and logs; a host without it still forwards.
        let _ = host.set_property(key, value);
    }
}

/// Sends the core's answer on the current stream.
fn respond(host: &dyn Host, metrics: &Option<Rc<Metrics>>, engine: &Engine, r: Response) {
    if let Some(m) = metrics {
        m.outcome(host, r.outcome);
        m.events(host, engine.drain_events());
    }
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Err(e) = host.respond(r.status, &headers, &r.body) {
        host.log(
            Level::Error,
            &format!("oauth-edge: cannot send the answer: {e}"),
        );
    }
}

/// The downstream peer's address as Envoy sees it (`source.address`, "ip:port"), without the
/// port. Behind trusted proxies, Envoy's `xff_num_trusted_hops` decides what this is; a client
/// cannot set it with a header of its own.
fn source_address(host: &dyn Host) -> Option<String> {
    let raw = host.property(&["source", "address"])?;
    let s = String::from_utf8(raw).ok()?;
    let h = match s.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => s.as_str(),
    };
    Some(h.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// The TLS client certificate of the downstream connection, from Envoy's connection attributes
/// (see [`crate::mtls`]): `None` without TLS or without a client certificate.
fn connection_cert(host: &dyn Host) -> Option<crate::mtls::ClientCert> {
    let text = |leaf: &str| {
        host.property(&["connection", leaf])
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
