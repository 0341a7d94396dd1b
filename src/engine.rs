//! The protocol core as a sans-IO machine. The adapter hands in a request and gets back either
//! a finished [`Response`] or a request for something only the host can do ("look up this
//! client"); it performs that (shared data, a dispatched HTTP call answered in a later callback)
//! and feeds the result back. Nothing here calls the host, so all of it runs under `cargo test`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::client::Client;
use crate::client_auth::{self, Presented};
use crate::config::Config;
use crate::error::OAuthError;
use crate::form::Form;
use crate::grants;
use crate::http::{Headers, Outcome, Response};
use crate::metadata;
use crate::random::Random;
use crate::registry::{self, Call, LocalCache, Lookup};

/// The clock, read once per request by the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub unix_ms: u64,
}

impl Now {
    pub fn secs(self) -> u64 {
        self.unix_ms / 1000
    }
}

/// The endpoints this filter answers; every other path passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Jwks,
    AuthorizationServerMetadata,
    OpenIdConfiguration,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Jwks => "jwks",
            Endpoint::AuthorizationServerMetadata | Endpoint::OpenIdConfiguration => "metadata",
        }
    }
}

/// What to do once the request headers are in.
#[derive(Debug)]
pub enum HeadAction {
    /// Answer now (documents, or an error that needs no body).
    Respond(Response),
    /// Read the whole body, then call [`Engine::token_request`].
    ReadBody,
}

/// A token request waiting for its client's registry record.
#[derive(Debug)]
pub struct Pending {
    presented: Presented,
    form: Form,
}

impl Pending {
    pub fn client_id(&self) -> &str {
        self.presented.client_id()
    }
}

#[derive(Debug)]
pub enum Step {
    Done(Response),
    /// Find this client: shared data first ([`Engine::shared_hit`]), then the registry
    /// ([`Engine::registry_call`] → [`Engine::registry_answer`]).
    LookupClient(Pending),
}

/// A write the adapter should make to shared data (a registry answer to share with the other
/// workers).
#[derive(Debug, PartialEq, Eq)]
pub struct SharedWrite {
    pub key: String,
    pub value: Vec<u8>,
}

/// Things worth counting that happen inside the core; the adapter drains them into metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    pub cache_hits: u32,
    pub registry_not_found: u32,
    pub registry_failures: u32,
}

pub struct Engine {
    pub config: Config,
    as_metadata: Vec<u8>,
    oidc_metadata: Vec<u8>,
    cache: RefCell<LocalCache>,
    events: Cell<Events>,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        let as_metadata = metadata::authorization_server(&config)
            .to_string()
            .into_bytes();
        let oidc_metadata = metadata::openid_configuration(&config)
            .to_string()
            .into_bytes();
        Engine {
            config,
            as_metadata,
            oidc_metadata,
            cache: RefCell::new(LocalCache::default()),
            events: Cell::new(Events::default()),
        }
    }

    /// Which endpoint a request path (query string included or not) belongs to.
    pub fn route(&self, path: &str) -> Option<Endpoint> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let c = &self.config;
        if path == c.token_path {
            Some(Endpoint::Token)
        } else if path == c.jwks_path {
            Some(Endpoint::Jwks)
        } else if path == c.as_metadata_path {
            Some(Endpoint::AuthorizationServerMetadata)
        } else if path == c.oidc_metadata_path {
            Some(Endpoint::OpenIdConfiguration)
        } else {
            None
        }
    }

    /// Decides what to do with a request to one of our endpoints once its headers are in.
    pub fn on_headers(&self, ep: Endpoint, method: &str, headers: &Headers) -> HeadAction {
        match ep {
            Endpoint::Token => {
                if method != "POST" {
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
            Endpoint::Jwks
            | Endpoint::AuthorizationServerMetadata
            | Endpoint::OpenIdConfiguration => {
                if method != "GET" && method != "HEAD" {
                    return HeadAction::Respond(OAuthError::method_not_allowed("GET, HEAD").into());
                }
                let body = match ep {
                    Endpoint::Jwks => self.config.keys.jwks_json().to_vec(),
                    Endpoint::AuthorizationServerMetadata => self.as_metadata.clone(),
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

    /// A complete token request (headers and the whole body).
    pub fn token_request(
        &self,
        headers: &Headers,
        body: &[u8],
        now: Now,
        rng: &mut dyn Random,
    ) -> Step {
        match self.parse_token_request(headers, body) {
            Err(e) => Step::Done(e.into()),
            Ok(pending) => self.continue_with_client(pending, now, rng),
        }
    }

    fn parse_token_request(&self, headers: &Headers, body: &[u8]) -> Result<Pending, OAuthError> {
        if body.len() > self.config.max_body_bytes {
            return Err(OAuthError::payload_too_large());
        }
        let ct = headers
            .single("content-type")
            .map_err(|_| OAuthError::invalid_request("Content-Type repeated"))?
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
        let form = Form::parse(body)?;
        let grant_type = form
            .get("grant_type")
            .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
        if grant_type != grants::CLIENT_CREDENTIALS {
            return Err(OAuthError::unsupported_grant_type(
                "grant_type is not supported",
            ));
        }
        let presented = client_auth::extract(headers, &form)?;
        if !crate::client::valid_client_id(presented.client_id()) {
            return Err(presented.failed("client authentication failed"));
        }
        Ok(Pending { presented, form })
    }

    /// Finds the client in what this worker knows (static clients, its cache) or asks the
    /// adapter to.
    fn continue_with_client(&self, p: Pending, now: Now, rng: &mut dyn Random) -> Step {
        let id = p.client_id();
        if let Some(c) = self.config.clients.get(id) {
            let c = c.clone();
            return Step::Done(self.finish(p, &c, now, rng));
        }
        if self.config.registry.is_none() {
            return Step::Done(p.presented.failed("client authentication failed").into());
        }
        let cached = self.cache.borrow().get(id, now.unix_ms);
        match cached {
            Some(found) => {
                self.bump(|e| e.cache_hits += 1);
                self.with_lookup(p, found.map_or(Lookup::NotFound, Lookup::Found), now, rng)
            }
            None => Step::LookupClient(p),
        }
    }

    /// The shared-data key to try before calling the registry.
    pub fn shared_key(&self, p: &Pending) -> String {
        registry::shared_key(p.client_id())
    }

    /// A shared-data entry for the pending client: `Ok(step)` if it was fresh, the pending
    /// request back if the registry must be asked.
    pub fn shared_hit(
        &self,
        p: Pending,
        entry: &[u8],
        now: Now,
        rng: &mut dyn Random,
    ) -> Result<Step, Pending> {
        match registry::decode_entry(p.client_id(), entry, now.unix_ms) {
            Some((client, expires_at_ms)) => {
                self.bump(|e| e.cache_hits += 1);
                let ttl =
                    std::time::Duration::from_millis(expires_at_ms.saturating_sub(now.unix_ms));
                self.cache
                    .borrow_mut()
                    .put(p.client_id(), Some(client.clone()), now.unix_ms, ttl);
                Ok(Step::Done(self.finish(p, &client, now, rng)))
            }
            None => Err(p),
        }
    }

    /// The registry call to dispatch for a pending request.
    pub fn registry_call(&self, p: &Pending) -> Option<Call> {
        self.config
            .registry
            .as_ref()
            .map(|r| registry::call(r, p.client_id()))
    }

    /// The registry answered (`status` is `None` for a reset or a failed dispatch).
    /// Returns the next step and, for a found client, the shared-data write to make.
    pub fn registry_answer(
        &self,
        p: Pending,
        status: Option<u16>,
        body: &[u8],
        now: Now,
        rng: &mut dyn Random,
    ) -> (Step, Option<SharedWrite>) {
        let lookup = registry::classify(p.client_id(), status, body);
        let write = match (&lookup, &self.config.registry) {
            (Lookup::Found(_), Some(r)) if !r.cache_ttl.is_zero() => Some(SharedWrite {
                key: registry::shared_key(p.client_id()),
                value: registry::encode_entry(now.unix_ms.saturating_add(ms(r.cache_ttl)), body),
            }),
            _ => None,
        };
        if let Some(r) = &self.config.registry {
            match &lookup {
                Lookup::Found(c) => self.cache.borrow_mut().put(
                    p.client_id(),
                    Some(c.clone()),
                    now.unix_ms,
                    r.cache_ttl,
                ),
                Lookup::NotFound => self.cache.borrow_mut().put(
                    p.client_id(),
                    None,
                    now.unix_ms,
                    r.negative_cache_ttl,
                ),
                Lookup::Unavailable(_) => {}
            }
        }
        (self.with_lookup(p, lookup, now, rng), write)
    }

    fn with_lookup(&self, p: Pending, lookup: Lookup, now: Now, rng: &mut dyn Random) -> Step {
        match lookup {
            Lookup::Found(c) => Step::Done(self.finish(p, &c, now, rng)),
            Lookup::NotFound => {
                self.bump(|e| e.registry_not_found += 1);
                Step::Done(p.presented.failed("client authentication failed").into())
            }
            Lookup::Unavailable(_) => {
                self.bump(|e| e.registry_failures += 1);
                Step::Done(OAuthError::server_error("the client registry is unavailable").into())
            }
        }
    }

    /// Authenticates the client and runs the grant.
    fn finish(&self, p: Pending, client: &Rc<Client>, now: Now, rng: &mut dyn Random) -> Response {
        let result = client_auth::authenticate(client, &p.presented).and_then(|()| {
            grants::client_credentials::handle(&self.config, client, &p.form, now.secs(), rng)
        });
        result.unwrap_or_else(Response::from)
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

/// Why a registry lookup failed, for the log (the client only hears "server_error").
pub fn lookup_failure_reason(status: Option<u16>, body: &[u8], client_id: &str) -> Option<String> {
    match registry::classify(client_id, status, body) {
        Lookup::Unavailable(why) => Some(why),
        _ => None,
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
