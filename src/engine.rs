//! The protocol core as a sans-IO machine. The gateway hands in a request and gets back either
//! a finished [`Response`] or a [`Need`] (look up this client, read or CAS this store key) with
//! the [`Pending`] request; it performs the need (shared data, a dispatched HTTP call answered in a
//! later callback) and resumes with the answer. Nothing here calls the host, so all of it runs
//! under `cargo test`. How a flow is rerun with its answers: see [`crate::flow`].

use std::cell::{Cell, RefCell};

use crate::config::Config;
use crate::endpoints;
use crate::error::OAuthError;
use crate::flow::{
    Answer, Ctx, Interrupt, Journal, JwksLookup, Local, Lookup, Need, Now, Request, SessionOp,
    StoreOp, StoreResult, SyncStore,
};
use crate::http::Call;
use crate::http::{Headers, Outcome, Response};
use crate::jwks_fetch::{self, JwksCache};
use crate::metadata;
use crate::random::Random;
use crate::registry::{self, LocalCache};
use crate::store::Ring;

/// The endpoints this filter answers (one table: see [`crate::config::endpoints`]).
pub use crate::config::endpoints::Endpoint;

/// What to do once the request headers are in.
#[derive(Debug)]
pub enum HeadAction {
    /// Answer now (documents, or an error that needs no body).
    Respond(Response),
    /// Read the whole body, then call [`Engine::start`].
    ReadBody,
    /// No body is needed: call [`Engine::start`] now.
    Start,
}

/// A request waiting for an answer from the host.
#[derive(Debug)]
pub struct Pending {
    ep: Endpoint,
    /// At [`Endpoint::Resource`]: the protected route, as the headers found it (by index).
    route: Option<usize>,
    req: Request,
    now: Now,
    journal: Journal,
}

// A step lives for one hop and is moved, never stored in bulk: boxing the pending request
// would only add an allocation per hop.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    Done(Response),
    Need(Need, Pending),
}

/// A write the gateway should make to shared data (a registry answer to share with the other
/// workers).
#[derive(Debug, PartialEq, Eq)]
pub struct SharedWrite {
    pub key: String,
    pub value: Vec<u8>,
}

/// Things worth counting that happen inside the core; the gateway drains them into metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    pub cache_hits: u32,
    pub registry_not_found: u32,
    pub registry_failures: u32,
}

pub struct Engine {
    pub config: Config,
    /// Our endpoint paths, exactly as configured.
    paths: Vec<(String, Endpoint)>,
    /// The same in their comparison form (see [`crate::path_variant`]), with their last segment.
    canonical_paths: Vec<(String, String, Endpoint)>,
    as_metadata: Vec<u8>,
    oidc_metadata: Vec<u8>,
    cache: RefCell<LocalCache>,
    jwks_cache: RefCell<JwksCache>,
    /// The etcd login token and leases (remote store only).
    etcd: RefCell<crate::etcd::Session>,
    events: Cell<Events>,
    /// What the checks of protected routes keep (verified tokens, the userinfo route).
    pub guard: crate::protect::guard::Guard,
    /// The RFC 9728 documents, by [`Endpoint::ResourceMetadata`] index.
    resource_docs: Vec<Vec<u8>>,
    /// The origins CORS preflights are answered for (see [`crate::cors`]).
    cors: crate::cors::Origins,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        let as_metadata = metadata::authorization_server(&config)
            .to_string()
            .into_bytes();
        let oidc_metadata = metadata::openid_configuration(&config)
            .to_string()
            .into_bytes();
        let mut paths = Engine::endpoint_paths(&config);
        let mut resource_docs: Vec<Vec<u8>> = Vec::new();
        for route in &config.protection.routes {
            if paths.iter().any(|(p, _)| *p == route.metadata_path) {
                continue;
            }
            let Ok(i) = u16::try_from(resource_docs.len()) else {
                break;
            };
            resource_docs.push(
                crate::protect::metadata::document(&config, route)
                    .to_string()
                    .into_bytes(),
            );
            paths.push((route.metadata_path.clone(), Endpoint::ResourceMetadata(i)));
        }
        let guard = crate::protect::guard::Guard::new(&config);
        let canonical_paths = paths
            .iter()
            .map(|(p, e)| {
                let c = crate::path_variant::canonical(p);
                let last = c.rsplit('/').next().unwrap_or_default().to_string();
                (c, last, *e)
            })
            .collect();
        let cors = crate::cors::Origins::new(config.clients.values());
        Engine {
            config,
            paths,
            canonical_paths,
            as_metadata,
            oidc_metadata,
            cache: RefCell::new(LocalCache::default()),
            jwks_cache: RefCell::new(JwksCache::default()),
            etcd: RefCell::new(crate::etcd::Session::default()),
            events: Cell::new(Events::default()),
            guard,
            resource_docs,
            cors,
        }
    }

    /// The store rings whose keys the gateway creates at start.
    pub fn rings(&self) -> Vec<Ring> {
        let r = &self.config.rings;
        let c = &self.config;
        let mut out = vec![r.request_uris, r.codes, r.families, r.jtis, r.revoked];
        let l = &c.rate_limits;
        if l.per_client.is_some()
            || l.per_address.is_some()
            || c.registry.is_some()
            || c.device.is_some()
            || c.password_grant.is_some()
            || crate::ring_share::enabled(c)
        {
            out.push(r.rate_limits);
        }
        if c.device.is_some() {
            out.push(r.devices);
        }
        // Rings in etcd have no keys to create here (their keys are made on demand there).
        out.retain(|ring| !ring.remote);
        out
    }

    /// The endpoint paths this configuration answers (the device endpoints only when the device
    /// flow is configured).
    fn endpoint_paths(config: &Config) -> Vec<(String, Endpoint)> {
        config
            .endpoints
            .paths()
            .filter(|(e, _)| config.device.is_some() || !e.row().device_only)
            .map(|(e, p)| (p.to_string(), e))
            .collect()
    }

    /// Whether any policy reads the downstream address of a request to `ep` (rate limits,
    /// registry misses, ring shares): only then does the gateway ask the host for it. Never at a
    /// protected route, whose checks charge the token's key, not an address (a property read
    /// per API call saved).
    pub fn needs_source_address(&self, ep: Endpoint) -> bool {
        let c = &self.config;
        if ep == Endpoint::Resource {
            return false;
        }
        c.rate_limits.per_address.is_some()
            || c.rate_limits.per_client.is_some()
            || c.registry.is_some()
            || crate::ring_share::enabled(c)
    }

    /// Whether any route is protected: only then does the gateway look at other requests.
    pub fn protects_routes(&self) -> bool {
        !self.config.protection.routes.is_empty()
    }

    /// Whether a request to another path falls under a protected route.
    pub fn protected(&self, path: &str, authority: &str, method: &str) -> Option<Endpoint> {
        self.protected_route(path, authority, method)
            .map(|_| Endpoint::Resource)
    }

    /// The protected route (its index) a request to another path falls under: given to
    /// [`Engine::start_protected`], it is not looked for again.
    pub fn protected_route(&self, path: &str, authority: &str, method: &str) -> Option<usize> {
        crate::protect::find_index(&self.config, path, authority, method)
    }

    /// Which endpoint a request path (query string included or not) belongs to.
    pub fn route(&self, path: &str) -> Option<Endpoint> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        self.paths
            .iter()
            .find(|(p, _)| p.as_str() == path)
            .map(|(_, e)| *e)
    }

    /// A path that is not one of ours byte for byte but that an upstream would take for one
    /// (`/oauth/token/`, `/OAUTH/TOKEN`, `/oauth%2Ftoken`, ...): answered with a 404 so a
    /// client's credentials never reach the application. Cheap for ordinary paths: the full
    /// comparison runs only when the path has a percent-escape or holds, in any case, the last
    /// segment of one of our paths.
    pub fn path_variant(&self, path: &str) -> Option<Endpoint> {
        let raw = path.split_once('?').map_or(path, |(p, _)| p);
        let maybe = raw.contains('%')
            || self
                .canonical_paths
                .iter()
                .any(|(_, last, _)| contains_ignore_case(raw, last));
        if !maybe {
            return None;
        }
        let canonical = crate::path_variant::canonical(raw);
        self.canonical_paths
            .iter()
            .find(|(c, _, _)| *c == canonical)
            .map(|(_, _, e)| *e)
    }

    /// Decides what to do with a request to one of our endpoints once its headers are in.
    /// `headers` needs only `content-length`, `origin` and `access-control-request-method`.
    pub fn on_headers(&self, ep: Endpoint, method: &str, headers: &Headers) -> HeadAction {
        let Some(kind) = crate::cors::Kind::of(ep) else {
            return self.head_action(ep, method, headers);
        };
        if crate::cors::is_preflight(method, headers) {
            return HeadAction::Respond(crate::cors::preflight(kind, ep, &self.cors, headers));
        }
        match self.head_action(ep, method, headers) {
            HeadAction::Respond(mut r) => {
                crate::cors::decorate(kind, &self.cors, headers, None, &mut r);
                HeadAction::Respond(r)
            }
            other => other,
        }
    }

    fn head_action(&self, ep: Endpoint, method: &str, headers: &Headers) -> HeadAction {
        match ep {
            Endpoint::DeviceVerification | Endpoint::Userinfo | Endpoint::EndSession
                if method == "GET" =>
            {
                HeadAction::Start
            }
            Endpoint::Token
            | Endpoint::Refresh
            | Endpoint::PushedAuthorization
            | Endpoint::Revocation
            | Endpoint::Introspection
            | Endpoint::DeviceAuthorization
            | Endpoint::DeviceVerification
            | Endpoint::Userinfo
            | Endpoint::EndSession => {
                if method != "POST" {
                    if matches!(
                        ep,
                        Endpoint::DeviceVerification | Endpoint::Userinfo | Endpoint::EndSession
                    ) {
                        return HeadAction::Respond(
                            OAuthError::method_not_allowed("GET, POST").into(),
                        );
                    }
                    return HeadAction::Respond(OAuthError::method_not_allowed("POST").into());
                }
                // Refuse an announced oversized body before reading it.
                match headers.single("content-length") {
                    Ok(Some(v)) => match v.trim().parse::<u64>() {
                        Ok(n) if n > self.config.max_body_bytes as u64 => {
                            HeadAction::Respond(OAuthError::payload_too_large().into())
                        }
                        Ok(_) => HeadAction::ReadBody,
                        Err(_) => HeadAction::Respond(
                            OAuthError::invalid_request("malformed Content-Length").into(),
                        ),
                    },
                    Ok(None) => HeadAction::ReadBody,
                    Err(()) => HeadAction::Respond(
                        OAuthError::invalid_request("Content-Length repeated").into(),
                    ),
                }
            }
            Endpoint::Authorize => {
                // GET only: an authorization request has effects (it issues a code).
                if method != "GET" {
                    return HeadAction::Respond(OAuthError::method_not_allowed("GET").into());
                }
                HeadAction::Start
            }
            // Any method: the route's checks do not depend on it (a route may list methods).
            Endpoint::Resource => HeadAction::Start,
            Endpoint::Jwks
            | Endpoint::AuthorizationServerMetadata
            | Endpoint::OpenIdConfiguration
            | Endpoint::ResourceMetadata(_) => {
                if method != "GET" && method != "HEAD" {
                    return HeadAction::Respond(OAuthError::method_not_allowed("GET, HEAD").into());
                }
                let body = match ep {
                    Endpoint::Jwks => self.config.keys.jwks_json().to_vec(),
                    Endpoint::AuthorizationServerMetadata => self.as_metadata.clone(),
                    Endpoint::ResourceMetadata(i) => self
                        .resource_docs
                        .get(usize::from(i))
                        .cloned()
                        .unwrap_or_default(),
                    _ => self.oidc_metadata.clone(),
                };
                let mut r = Response::json(200, body, Outcome::Served);
                // Public documents: cacheable, but not for long so key rotation is seen soon.
                r.headers
                    .push(("cache-control", "public, max-age=300".into()));
                // HEAD gets the same answer: Envoy sends only the headers (with the right
                // Content-Type and Content-Length; an empty local body would lose both).
                HeadAction::Respond(r)
            }
        }
    }

    /// The body grew past the limit while streaming in (no or a false Content-Length).
    pub fn body_too_large(&self, size: usize) -> Option<Response> {
        (size > self.config.max_body_bytes).then(|| OAuthError::payload_too_large().into())
    }

    /// A complete request (headers, the whole body, the gateway's user if any). Every store
    /// operation comes back as a [`Need`].
    pub fn start(&self, ep: Endpoint, req: Request, now: Now, rng: &mut dyn Random) -> Step {
        self.start_with(ep, req, now, rng, None)
    }

    /// As [`Engine::start`], with a store that answers at once (Envoy's shared data): its
    /// operations run inline, without stopping and rerunning the flow.
    pub fn start_with(
        &self,
        ep: Endpoint,
        req: Request,
        now: Now,
        rng: &mut dyn Random,
        store: Option<&mut dyn SyncStore>,
    ) -> Step {
        self.start_at(ep, None, req, now, rng, store)
    }

    /// As [`Engine::start_with`], for a request to the protected route `route` (from
    /// [`Engine::protected_route`]).
    pub fn start_protected(
        &self,
        route: usize,
        req: Request,
        now: Now,
        rng: &mut dyn Random,
        store: Option<&mut dyn SyncStore>,
    ) -> Step {
        self.start_at(Endpoint::Resource, Some(route), req, now, rng, store)
    }

    fn start_at(
        &self,
        ep: Endpoint,
        route: Option<usize>,
        req: Request,
        now: Now,
        rng: &mut dyn Random,
        store: Option<&mut dyn SyncStore>,
    ) -> Step {
        if req.body.len() > self.config.max_body_bytes {
            return Step::Done(OAuthError::payload_too_large().into());
        }
        let mut req = req;
        if let Some(cert) = self.forwarded_cert(&req) {
            req.client_cert = cert;
        }
        let p = Pending {
            ep,
            route,
            req,
            now,
            journal: Journal::default(),
        };
        self.run(p, rng, store)
    }

    /// With `mtls.source: "xfcc"`, the certificate is the one the trusted hop before this Envoy
    /// names in the last `x-forwarded-client-cert` element (see [`crate::mtls`]); `None`: the
    /// certificate stays what the gateway read from the connection.
    fn forwarded_cert(&self, req: &Request) -> Option<Option<crate::mtls::ClientCert>> {
        let m = self.config.mtls.as_ref()?;
        if m.source != crate::mtls::CertSource::Xfcc {
            return None;
        }
        let all: Vec<&str> = req.headers.all("x-forwarded-client-cert").collect();
        Some(crate::mtls::ClientCert::from_xfcc(&all.join(",")))
    }

    /// The host's answer to the last [`Need`].
    pub fn resume(&self, p: Pending, answer: Answer, rng: &mut dyn Random) -> Step {
        self.resume_with(p, answer, rng, None)
    }

    /// As [`Engine::resume`], with a store that answers at once.
    pub fn resume_with(
        &self,
        mut p: Pending,
        answer: Answer,
        rng: &mut dyn Random,
        store: Option<&mut dyn SyncStore>,
    ) -> Step {
        match &answer {
            Answer::Client(Lookup::NotFound) => self.bump(|e| e.registry_not_found += 1),
            Answer::Client(Lookup::Unavailable(_)) => self.bump(|e| e.registry_failures += 1),
            _ => {}
        }
        p.journal.answers.push(answer);
        self.run(p, rng, store)
    }

    fn run(&self, mut p: Pending, rng: &mut dyn Random, store: Option<&mut dyn SyncStore>) -> Step {
        let local = LocalAnswers {
            engine: self,
            now: p.now,
        };
        let (result, client) = {
            let mut ctx = Ctx::new(p.now, rng, &mut p.journal, &local)
                .with_source(p.req.source.as_deref())
                .with_cert(p.req.client_cert.as_ref());
            if let Some(s) = store {
                ctx = ctx.with_store(s);
            }
            let result = match self.per_address_limit(p.ep, &p.req, &mut ctx) {
                Err(e) => Err(e),
                Ok(()) => self.dispatch(p.ep, p.route, &p.req, &mut ctx),
            };
            (result, ctx.cors_client.take())
        };
        let mut r = match result {
            Ok(r) => r,
            Err(Interrupt::Error(e)) => self.challenge(e).into(),
            Err(Interrupt::Need(n)) => return Step::Need(n, p),
        };
        if let Some(kind) = crate::cors::Kind::of(p.ep) {
            crate::cors::decorate(kind, &self.cors, &p.req.headers, client.as_deref(), &mut r);
        }
        Step::Done(r)
    }

    /// Under the FAPI 2.0 profile no endpoint takes Basic: a 401 that names no challenge of its
    /// own names private_key_jwt, the one method there is (Basic attempts still hear Basic).
    fn challenge(&self, e: OAuthError) -> OAuthError {
        if self.config.profile == crate::config::Profile::Fapi2 && e.challenge.is_none() {
            e.with_challenge(crate::error::challenge::PRIVATE_KEY_JWT)
        } else {
            e
        }
    }

    /// Counts the request against its source address's limit: every endpoint that creates
    /// state, costs a signature or can be called without credentials (all but the documents).
    fn per_address_limit(
        &self,
        ep: Endpoint,
        req: &Request,
        ctx: &mut Ctx<'_>,
    ) -> crate::flow::FlowResult<()> {
        let (Some(limit), Some(addr)) = (self.config.rate_limits.per_address, &req.source) else {
            return Ok(());
        };
        if !matches!(
            ep,
            Endpoint::Token
                | Endpoint::Refresh
                | Endpoint::Authorize
                | Endpoint::PushedAuthorization
                | Endpoint::Revocation
                | Endpoint::Introspection
                | Endpoint::DeviceAuthorization
                | Endpoint::DeviceVerification
                | Endpoint::Userinfo
                | Endpoint::EndSession
        ) {
            return Ok(());
        }
        crate::rate_limit::hit(
            ctx,
            self.config.counters(),
            &format!("address\0{addr}"),
            limit,
            crate::rate_limit::Full::Allow,
        )
    }

    fn dispatch(
        &self,
        ep: Endpoint,
        route: Option<usize>,
        req: &Request,
        ctx: &mut Ctx<'_>,
    ) -> crate::flow::FlowResult<Response> {
        {
            match ep {
                Endpoint::Token => endpoints::token::handle(&self.config, req, ctx),
                Endpoint::Refresh => endpoints::refresh::handle(&self.config, req, ctx),
                Endpoint::PushedAuthorization => endpoints::par::handle(&self.config, req, ctx),
                Endpoint::Authorize => endpoints::authorize::handle(&self.config, req, ctx),
                Endpoint::Revocation => endpoints::revocation::handle(&self.config, req, ctx),
                Endpoint::Introspection => endpoints::introspection::handle(&self.config, req, ctx),
                Endpoint::DeviceAuthorization => {
                    endpoints::device_authorization::handle(&self.config, req, ctx)
                }
                Endpoint::DeviceVerification => {
                    endpoints::device_verification::handle(&self.config, req, ctx)
                }
                Endpoint::Userinfo => {
                    endpoints::userinfo::handle(&self.config, &self.guard, req, ctx)
                }
                Endpoint::EndSession => endpoints::end_session::handle(&self.config, req, ctx),
                Endpoint::Resource => {
                    crate::protect::handle(&self.config, &self.guard, route, req, ctx)
                }
                _ => Err(Interrupt::Error(
                    OAuthError::invalid_request("not found").with_status(404),
                )),
            }
        }
    }

    /// Static clients, then this worker's cache of registry answers. `None`: ask the host.
    fn local_client(&self, id: &str, now: Now) -> Option<Lookup> {
        if let Some(c) = self.config.clients.get(id) {
            return Some(Lookup::Found(c.clone()));
        }
        if self.config.registry.is_none() {
            return Some(Lookup::NotFound);
        }
        let cached = self.cache.borrow().get(id, now.unix_ms);
        cached.map(|found| {
            self.bump(|e| e.cache_hits += 1);
            found.map_or(Lookup::NotFound, Lookup::Found)
        })
    }

    /// The call to dispatch for a client's `jwks_uri`; `Err` (resume with it) when it cannot be
    /// made (no `jwks_fetch` configured, a plain-http URL where https is required, ...).
    pub fn jwks_call(&self, url: &str) -> Result<Call, JwksLookup> {
        let Some(cfg) = &self.config.jwks_fetch else {
            return Err(JwksLookup::Unavailable(
                "jwks_uri needs the jwks_fetch configuration".into(),
            ));
        };
        jwks_fetch::call(cfg, url).map_err(|e| JwksLookup::Unavailable(e.into()))
    }

    /// The call for a store operation when the state lives in etcd (`None` with shared data).
    pub fn store_call(&self, op: &StoreOp, now: Now) -> Option<Call> {
        let cfg = self.config.etcd.as_ref()?;
        Some(self.etcd.borrow().call(cfg, op, now.unix_ms))
    }

    /// etcd's answer to a store operation.
    pub fn store_answer(&self, op: &StoreOp, status: Option<u16>, body: &[u8]) -> StoreResult {
        self.etcd.borrow_mut().answer(op, status, body)
    }

    /// The call for an etcd login or lease (`None` with shared data).
    pub fn session_call(&self, op: &SessionOp) -> Option<Call> {
        let cfg = self.config.etcd.as_ref()?;
        Some(self.etcd.borrow().session_call(cfg, op))
    }

    /// etcd's answer to a login or lease, kept for the operations that follow.
    pub fn session_answer(
        &self,
        op: &SessionOp,
        status: Option<u16>,
        body: &[u8],
        now: Now,
    ) -> bool {
        self.etcd
            .borrow_mut()
            .session_answer(op, status, body, now.unix_ms)
    }

    /// The answer to a `jwks_uri` fetch (`status` `None` for a reset or a failed dispatch).
    pub fn jwks_from_fetch(
        &self,
        url: &str,
        status: Option<u16>,
        body: &[u8],
        now: Now,
    ) -> JwksLookup {
        let lookup = jwks_fetch::classify(status, body);
        match &lookup {
            JwksLookup::Found(set) => {
                self.jwks_cache
                    .borrow_mut()
                    .put(url, set.clone(), now.unix_ms)
            }
            JwksLookup::Unavailable(why) => {
                self.jwks_cache
                    .borrow_mut()
                    .put_failure(url, why, now.unix_ms)
            }
        }
        lookup
    }

    /// A shared-data entry for a client: the lookup if it was fresh.
    pub fn client_from_shared(&self, client_id: &str, entry: &[u8], now: Now) -> Option<Lookup> {
        let (client, expires_at_ms) = registry::decode_entry(client_id, entry, now.unix_ms)?;
        self.bump(|e| e.cache_hits += 1);
        let ttl = std::time::Duration::from_millis(expires_at_ms.saturating_sub(now.unix_ms));
        self.cache
            .borrow_mut()
            .put(client_id, Some(client.clone()), now.unix_ms, ttl);
        Some(Lookup::Found(client))
    }

    /// The registry call to dispatch for a client.
    pub fn registry_call(&self, client_id: &str) -> Option<Call> {
        self.config
            .registry
            .as_ref()
            .map(|r| registry::call(r, client_id))
    }

    /// The registry answered (`status` is `None` for a reset or a failed dispatch). Returns the
    /// lookup to resume with and, for a found client, the shared-data write to make.
    pub fn client_from_registry(
        &self,
        client_id: &str,
        status: Option<u16>,
        body: &[u8],
        now: Now,
    ) -> (Lookup, Option<SharedWrite>) {
        let lookup = registry::classify(client_id, status, body);
        let Some(r) = &self.config.registry else {
            return (lookup, None);
        };
        let write = match &lookup {
            Lookup::Found(c) => {
                self.cache
                    .borrow_mut()
                    .put(client_id, Some(c.clone()), now.unix_ms, r.cache_ttl);
                (!r.cache_ttl.is_zero()).then(|| SharedWrite {
                    key: registry::shared_key(client_id),
                    value: registry::encode_entry(
                        now.unix_ms
                            .saturating_add(crate::duration::millis(r.cache_ttl)),
                        body,
                    ),
                })
            }
            Lookup::NotFound => {
                self.cache
                    .borrow_mut()
                    .put(client_id, None, now.unix_ms, r.negative_cache_ttl);
                None
            }
            Lookup::Unavailable(_) => None,
        };
        (lookup, write)
    }

    /// Counts since the last drain.
    pub fn drain_events(&self) -> Events {
        self.events.replace(Events::default())
    }

    fn bump(&self, f: impl FnOnce(&mut Events)) {
        let mut e = self.events.get();
        f(&mut e);
        self.events.set(e);
    }
}

impl Pending {
    pub fn endpoint(&self) -> Endpoint {
        self.ep
    }
}

/// What the engine answers without the host, for one run of a flow.
struct LocalAnswers<'e> {
    engine: &'e Engine,
    now: Now,
}

impl Local for LocalAnswers<'_> {
    fn client(&self, client_id: &str) -> Option<Lookup> {
        self.engine.local_client(client_id, self.now)
    }

    fn remote(&self) -> bool {
        self.engine.config.etcd.is_some()
    }

    fn remote_prerequisite(&self, op: &StoreOp) -> Option<SessionOp> {
        let cfg = self.engine.config.etcd.as_ref()?;
        self.engine
            .etcd
            .borrow()
            .prerequisite(cfg, op, self.now.unix_ms)
    }

    fn jwks(&self, url: &str, refresh: bool) -> Option<JwksLookup> {
        let cfg = self.engine.config.jwks_fetch.as_ref()?;
        self.engine
            .jwks_cache
            .borrow()
            .get(cfg, url, refresh, self.now.unix_ms)
    }
}

/// ASCII case-insensitive substring test, without allocating.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}
