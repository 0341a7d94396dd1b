//! How a request is run without doing I/O: the endpoint's code is an ordinary function that
//! asks a [`Ctx`] for what it needs from the outside (a client's registry record, a store read or
//! compare-and-swap). When the answer is not there yet, the function stops with
//! [`Interrupt::Need`]; the gateway gets it, possibly in a later callback, and the function runs
//! again from the top with the answers so far. Every answer and every random byte is recorded,
//! so a rerun takes exactly the same path and a write is never made twice.
//!
//! Reruns cost a re-parse of the request (microseconds); in exchange each flow reads as straight
//! code, and the same flows run over shared data (answers at once) or a remote store (answers in
//! a later callback).

use std::rc::Rc;

use crate::client::Client;
use crate::error::OAuthError;
use crate::http::Headers;
use crate::jwk::JwkSet;
use crate::random::Random;

/// The clock, read once per request by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub unix_ms: u64,
}

impl Now {
    pub fn secs(self) -> u64 {
        self.unix_ms / 1000
    }
}

/// The end user as the gateway established it (never from anything the client can set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub sub: String,
    /// When the user authenticated (seconds since the epoch), if the source says.
    pub auth_time: Option<u64>,
    /// The login session's id as the login service names it (e.g. a `sid` claim of its login
    /// token), if the source says: what [`User::sid`] derives this server's `sid` from.
    pub session: Option<String>,
}

impl User {
    /// The OpenID Connect session id (`sid`) of this login: the same for every client the user
    /// authorizes in one login, so RP-initiated logout ends all of them (OIDC RP-Initiated
    /// Logout; OIDC Front-Channel Logout §3 defines the claim). Derived by a one-way hash, so
    /// the login service's own session id never leaves the gateway, and without a key, so every
    /// replica and every signing key agrees: from the login's session id when the source gives
    /// one, else from the subject and the authentication time (a new login, a new `sid`), else
    /// from the subject alone (then a logout ends every session of the user that started
    /// before it).
    pub fn sid(&self) -> String {
        use base64::Engine as _;
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"oauth-edge/sid/v1\0");
        match (&self.session, self.auth_time) {
            (Some(s), _) => {
                h.update(b"session\0");
                h.update(s.as_bytes());
            }
            (None, Some(t)) => {
                h.update(b"login\0");
                h.update(self.sub.as_bytes());
                h.update(b"\0");
                h.update(t.to_be_bytes());
            }
            (None, None) => {
                h.update(b"subject\0");
                h.update(self.sub.as_bytes());
            }
        }
        let d = h.finalize();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.get(..16).unwrap_or_default())
    }
}

/// A complete request to one of our endpoints.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path with the query string.
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub user: Option<User>,
    /// The downstream address Envoy saw (its `source.address`, without the port): for
    /// per-address rate limits. Never taken from a header.
    pub source: Option<String>,
    /// The TLS client certificate (RFC 8705), read only where `mtls` is configured.
    pub client_cert: Option<crate::mtls::ClientCert>,
}

impl Request {
    pub fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |(_, q)| q)
    }
}

/// An operation on the short-lived store. Semantics are those of proxy-wasm shared data:
/// `cas` is the version a `Get` returned; a write with a stale version is refused. A remote
/// store (etcd) answers a missing key with the version [`ABSENT`], and a write at that version
/// creates the key only if it still does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    Get {
        key: String,
    },
    Cas {
        key: String,
        value: Vec<u8>,
        cas: u64,
        /// When the record may be dropped: a remote store attaches a lease that outlives it.
        expires_at_ms: u64,
    },
}

/// What a remote store (etcd) needs before a [`StoreOp`] can be sent: the session the engine
/// keeps with it (see [`crate::etcd::Session`]). Shared data has no such thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOp {
    /// A lease for records that must live `ttl_s` seconds.
    Lease { ttl_s: u64 },
    /// Log in (etcd authentication).
    Authenticate,
}

/// The version of a key a remote store does not hold: writable only by creating it.
pub const ABSENT: u64 = u64::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreResult {
    /// The value (`None` if the key was never written) and its version.
    Value {
        value: Option<Vec<u8>>,
        cas: u64,
    },
    Written,
    /// Somebody wrote the key since it was read.
    Conflict,
    /// The store could not be reached or refused the operation.
    Failed,
}

/// A store that answers at once (Envoy's shared data). With one, store operations run inline
/// and are journaled like any answer; without, each one stops the flow with a [`Need`].
pub trait SyncStore {
    fn run(&mut self, op: &StoreOp) -> StoreResult;
}

/// What a client lookup came to.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Rc<Client>),
    NotFound,
    /// The registry could not answer; the reason is for the log only.
    Unavailable(String),
}

impl Lookup {
    /// The found client, or the right error: unknown → `unknown` (the endpoint's own), registry
    /// trouble → `server_error` (with the reason for the log).
    pub fn found(self, unknown: OAuthError) -> Result<Rc<Client>, OAuthError> {
        match self {
            Lookup::Found(c) => Ok(c),
            Lookup::NotFound => Err(unknown),
            Lookup::Unavailable(why) => {
                Err(OAuthError::server_error("the client registry is unavailable").with_cause(why))
            }
        }
    }
}

/// What fetching a JWK Set came to.
#[derive(Debug, Clone)]
pub enum JwksLookup {
    Found(Rc<JwkSet>),
    /// Unreachable, not 200, or not a JWK Set; the reason is for the log only.
    Unavailable(String),
}

/// Something only the host can provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// This client's record: shared-data cache first, then the registry.
    Client(String),
    Store(StoreOp),
    /// A remote store's login or lease, before a store operation.
    Session(SessionOp),
    /// The JWK Set at this URL (a client's `jwks_uri`), fetched now.
    Jwks(String),
    /// An HTTP call to an Envoy cluster (the password grant's credential check).
    Http(crate::http::Call),
}

/// What a dispatched call came back with (`status` `None`: reset, timeout or no answer).
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

/// The answer to a [`Need`], as recorded for reruns.
#[derive(Debug, Clone)]
pub enum Answer {
    Client(Lookup),
    Store(StoreResult),
    /// Whether the session operation succeeded (the engine keeps what it got).
    Session(bool),
    Jwks(JwksLookup),
    Http(HttpAnswer),
}

/// Answers the core can get without the host: static clients and the worker's caches.
pub trait Local {
    fn client(&self, client_id: &str) -> Option<Lookup>;
    /// A cached JWK Set. `refresh`: the caller missed a kid in the cached set and wants it
    /// fetched again; the cache still answers if it was fetched too recently to refetch.
    fn jwks(&self, url: &str, refresh: bool) -> Option<JwksLookup>;
    /// For a remote store: what must happen before `op` can be sent (log in, get a lease), if
    /// anything. `None` for the shared-data store.
    fn remote_prerequisite(&self, op: &StoreOp) -> Option<SessionOp>;
    /// Whether the short-lived state lives in a remote store (answers in later callbacks).
    fn remote(&self) -> bool;
}

/// Why a flow stopped before answering.
#[derive(Debug)]
pub enum Interrupt {
    Need(Need),
    Error(OAuthError),
}

impl From<OAuthError> for Interrupt {
    fn from(e: OAuthError) -> Self {
        Interrupt::Error(e)
    }
}

pub type FlowResult<T> = Result<T, Interrupt>;

/// The recorded state of a flow between reruns.
#[derive(Debug, Default)]
pub struct Journal {
    pub answers: Vec<Answer>,
    pub random: Vec<u8>,
    /// Which of `answers` were client lookups answered locally (static clients, caches), so a
    /// rerun can tell them from the registry's answers.
    local_clients: Vec<usize>,
    /// Decisions taken on the worker's own state (see [`Ctx::decide`]), in order.
    decisions: Vec<bool>,
}

/// What a flow sees of the world.
pub struct Ctx<'a> {
    pub now: Now,
    rng: &'a mut dyn Random,
    journal: &'a mut Journal,
    next_answer: usize,
    next_random: usize,
    next_decision: usize,
    /// Resolves what it can without the host (static clients, the worker caches).
    local: &'a dyn Local,
    sync_store: Option<&'a mut dyn SyncStore>,
    /// The downstream address as Envoy saw it, when a limit needs it.
    source: Option<&'a str>,
    /// The request's TLS client certificate.
    cert: Option<&'a crate::mtls::ClientCert>,
    /// The client the request named, once found: its origins decide the answer's CORS headers
    /// (see [`crate::cors`]).
    pub cors_client: Option<std::rc::Rc<crate::client::Client>>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        now: Now,
        rng: &'a mut dyn Random,
        journal: &'a mut Journal,
        local: &'a dyn Local,
    ) -> Self {
        Ctx {
            now,
            rng,
            journal,
            next_answer: 0,
            next_random: 0,
            next_decision: 0,
            local,
            sync_store: None,
            source: None,
            cert: None,
            cors_client: None,
        }
    }

    /// Runs store operations inline on a store that answers at once.
    pub fn with_store(mut self, store: &'a mut dyn SyncStore) -> Self {
        self.sync_store = Some(store);
        self
    }

    pub fn with_source(mut self, source: Option<&'a str>) -> Self {
        self.source = source;
        self
    }

    pub fn with_cert(mut self, cert: Option<&'a crate::mtls::ClientCert>) -> Self {
        self.cert = cert;
        self
    }

    /// The request's TLS client certificate (see [`crate::flow::Request::client_cert`]).
    pub fn client_cert(&self) -> Option<&'a crate::mtls::ClientCert> {
        self.cert
    }

    /// The downstream address (see [`crate::flow::Request::source`]).
    pub fn source(&self) -> Option<&str> {
        self.source
    }

    /// A decision taken on this worker's own state rather than on an answer (e.g. whether a
    /// cached token was found clean at the current revocation epoch), which decides what the
    /// flow asks next: the first run's decision is kept, so a rerun asks for the same things in
    /// the same order even if that state changed meanwhile (this request's first run, or another
    /// request, updated it).
    pub fn decide(&mut self, f: impl FnOnce() -> bool) -> bool {
        let d = match self.journal.decisions.get(self.next_decision) {
            Some(d) => *d,
            None => {
                let d = f();
                self.journal.decisions.push(d);
                d
            }
        };
        self.next_decision += 1;
        d
    }

    fn next(&mut self) -> Option<Answer> {
        let a = self.journal.answers.get(self.next_answer).cloned();
        if a.is_some() {
            self.next_answer += 1;
        }
        a
    }

    /// A client's record. Local answers are journaled too, so a rerun sees the same one even if
    /// the worker cache changed in between.
    pub fn client(&mut self, client_id: &str) -> FlowResult<Lookup> {
        self.client_with_origin(client_id).map(|(l, _)| l)
    }

    /// As [`Ctx::client`], and whether the registry answered (`true`) rather than a static
    /// client or a cache.
    pub fn client_with_origin(&mut self, client_id: &str) -> FlowResult<(Lookup, bool)> {
        let at = self.next_answer;
        match self.next() {
            Some(Answer::Client(l)) => Ok((l, !self.journal.local_clients.contains(&at))),
            Some(_) => Err(internal("journal out of order")),
            None => match self.local.client(client_id) {
                Some(l) => {
                    self.journal.local_clients.push(self.journal.answers.len());
                    self.journal.answers.push(Answer::Client(l.clone()));
                    self.next_answer += 1;
                    Ok((l, false))
                }
                None => Err(Interrupt::Need(Need::Client(client_id.to_string()))),
            },
        }
    }

    /// An operation on the short-lived state: inline on shared data, or a remote store's
    /// answer (after logging in or getting a lease if needed; one retry of a failed operation,
    /// which reaches another member of the store's cluster).
    pub fn store(&mut self, op: StoreOp) -> FlowResult<StoreResult> {
        if !self.local.remote() {
            return self.local_store(op);
        }
        // Replays what the journal holds; live, asks for what is missing. Login and lease
        // answers are prerequisites (the engine keeps them); the first failure is retried.
        let mut failures = 0;
        let mut prerequisites = 0;
        loop {
            let r = match self.next() {
                Some(Answer::Store(r)) => r,
                Some(Answer::Session(true)) => {
                    prerequisites += 1;
                    continue;
                }
                // A failed login or lease counts as a failed operation.
                Some(Answer::Session(false)) => StoreResult::Failed,
                Some(_) => return Err(internal("journal out of order")),
                None => {
                    let need = match self.local.remote_prerequisite(&op) {
                        Some(pre) if prerequisites < 4 => Need::Session(pre),
                        _ => Need::Store(op.clone()),
                    };
                    return Err(Interrupt::Need(need));
                }
            };
            match r {
                StoreResult::Failed if failures == 0 => failures += 1,
                r => return Ok(r),
            }
        }
    }

    /// An operation on this process's shared data whatever the state store (rate-limit
    /// counters stay per instance).
    pub fn local_store(&mut self, op: StoreOp) -> FlowResult<StoreResult> {
        match self.next() {
            Some(Answer::Store(r)) => Ok(r),
            Some(_) => Err(internal("journal out of order")),
            None => match self.sync_store.as_mut() {
                Some(s) => {
                    let r = s.run(&op);
                    self.journal.answers.push(Answer::Store(r.clone()));
                    self.next_answer += 1;
                    Ok(r)
                }
                None => Err(Interrupt::Need(Need::Store(op))),
            },
        }
    }

    /// A JWK Set by URL: the worker cache, else fetched by the host. Journaled like a client.
    pub fn jwks(&mut self, url: &str, refresh: bool) -> FlowResult<JwksLookup> {
        match self.next() {
            Some(Answer::Jwks(l)) => Ok(l),
            Some(_) => Err(internal("journal out of order")),
            None => match self.local.jwks(url, refresh) {
                Some(l) => {
                    self.journal.answers.push(Answer::Jwks(l.clone()));
                    self.next_answer += 1;
                    Ok(l)
                }
                None => Err(Interrupt::Need(Need::Jwks(url.to_string()))),
            },
        }
    }

    /// An HTTP call through the host, answered in a later callback. Journaled.
    pub fn http(&mut self, call: crate::http::Call) -> FlowResult<HttpAnswer> {
        match self.next() {
            Some(Answer::Http(a)) => Ok(a),
            Some(_) => Err(internal("journal out of order")),
            None => Err(Interrupt::Need(Need::Http(call))),
        }
    }

    pub fn get(&mut self, key: &str) -> FlowResult<StoreResult> {
        self.store(StoreOp::Get {
            key: key.to_string(),
        })
    }

    /// Writes a record that may be dropped after `expires_at_ms`.
    pub fn cas(
        &mut self,
        key: &str,
        value: Vec<u8>,
        cas: u64,
        expires_at_ms: u64,
    ) -> FlowResult<StoreResult> {
        self.store(StoreOp::Cas {
            key: key.to_string(),
            value,
            cas,
            expires_at_ms,
        })
    }

    pub fn local_get(&mut self, key: &str) -> FlowResult<StoreResult> {
        self.local_store(StoreOp::Get {
            key: key.to_string(),
        })
    }

    pub fn local_cas(&mut self, key: &str, value: Vec<u8>, cas: u64) -> FlowResult<StoreResult> {
        self.local_store(StoreOp::Cas {
            key: key.to_string(),
            value,
            cas,
            expires_at_ms: 0,
        })
    }

    pub fn remote(&self) -> bool {
        self.local.remote()
    }

    /// Random bytes, the same ones on every rerun.
    pub fn random(&mut self, dest: &mut [u8]) -> FlowResult<()> {
        let end = self.next_random + dest.len();
        if self.journal.random.len() < end {
            let mut fresh = vec![0u8; end - self.journal.random.len()];
            self.rng
                .fill(&mut fresh)
                .map_err(|_| internal("no randomness"))?;
            self.journal.random.extend_from_slice(&fresh);
        }
        let src = self
            .journal
            .random
            .get(self.next_random..end)
            .ok_or_else(|| internal("random journal"))?;
        dest.copy_from_slice(src);
        self.next_random = end;
        Ok(())
    }

    /// 128 random bits, base64url.
    pub fn random_id(&mut self) -> FlowResult<String> {
        use base64::Engine as _;
        let mut b = [0u8; 16];
        self.random(&mut b)?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
    }
}

/// An internal failure: the client hears `server_error`, the detail stays out of the answer.
pub fn internal(why: &'static str) -> Interrupt {
    Interrupt::Error(OAuthError::internal(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counting randomness: every byte says which call made it.
    struct Counter(u8);
    impl Random for Counter {
        fn fill(&mut self, dest: &mut [u8]) -> Result<(), crate::random::RandomError> {
            for b in dest {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
            Ok(())
        }
    }

    /// A worker with no static clients or caches; `remote`: state in etcd, which wants a login
    /// before anything (until `logged_in`).
    struct Worker {
        remote: bool,
        logged_in: std::cell::Cell<bool>,
    }
    impl Local for Worker {
        fn client(&self, _: &str) -> Option<Lookup> {
            None
        }
        fn jwks(&self, _: &str, _: bool) -> Option<JwksLookup> {
            None
        }
        fn remote_prerequisite(&self, _: &StoreOp) -> Option<SessionOp> {
            (self.remote && !self.logged_in.get()).then_some(SessionOp::Authenticate)
        }
        fn remote(&self) -> bool {
            self.remote
        }
    }

    const NOW: Now = Now { unix_ms: 1_000 };

    /// A flow: a random id, a registry lookup, then a read; returns what it saw.
    fn flow(ctx: &mut Ctx<'_>) -> FlowResult<(String, bool, StoreResult)> {
        let id = ctx.random_id()?;
        let found = matches!(ctx.client("c")?, Lookup::NotFound);
        let r = ctx.get("k")?;
        Ok((id, found, r))
    }

    fn run(
        journal: &mut Journal,
        local: &Worker,
        rng: &mut Counter,
    ) -> FlowResult<(String, bool, StoreResult)> {
        let mut ctx = Ctx::new(NOW, rng, journal, local);
        flow(&mut ctx)
    }

    fn need(r: FlowResult<(String, bool, StoreResult)>) -> Need {
        match r {
            Err(Interrupt::Need(n)) => n,
            other => panic!("expected a need, got {other:?}"),
        }
    }

    #[test]
    fn a_rerun_takes_the_same_path_with_the_same_random_bytes() {
        let local = Worker {
            remote: false,
            logged_in: false.into(),
        };
        let mut rng = Counter(0);
        let mut j = Journal::default();
        assert_eq!(
            need(run(&mut j, &local, &mut rng)),
            Need::Client("c".into())
        );
        j.answers.push(Answer::Client(Lookup::NotFound));
        // No inline store: the read stops the flow too.
        assert_eq!(
            need(run(&mut j, &local, &mut rng)),
            Need::Store(StoreOp::Get { key: "k".into() })
        );
        j.answers.push(Answer::Store(StoreResult::Value {
            value: None,
            cas: 3,
        }));
        let (id, not_found, r) = run(&mut j, &local, &mut rng).unwrap();
        // The id was drawn once, on the first run, and replayed after.
        assert_eq!(rng.0, 16);
        let first: Vec<u8> = (1..=16).collect();
        use base64::Engine as _;
        assert_eq!(
            id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(first)
        );
        assert!(not_found);
        assert_eq!(
            r,
            StoreResult::Value {
                value: None,
                cas: 3
            }
        );
    }

    #[test]
    fn answers_out_of_order_are_an_internal_error_not_a_wrong_path() {
        let local = Worker {
            remote: false,
            logged_in: false.into(),
        };
        let mut j = Journal::default();
        j.answers.push(Answer::Store(StoreResult::Written));
        match run(&mut j, &local, &mut Counter(0)) {
            Err(Interrupt::Error(e)) => {
                assert_eq!(e.code, crate::error::ErrorCode::ServerError);
                assert_eq!(
                    e.cause.as_deref().map(|c| c.as_ref()),
                    Some("journal out of order")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A remote read: the login first, one retry of a failure, then the answer or the failure.
    fn remote_read(answers: &[Answer]) -> FlowResult<StoreResult> {
        let local = Worker {
            remote: true,
            logged_in: false.into(),
        };
        let mut j = Journal::default();
        j.answers.extend_from_slice(answers);
        let mut rng = Counter(0);
        let mut ctx = Ctx::new(NOW, &mut rng, &mut j, &local);
        ctx.get("k")
    }

    #[test]
    fn a_remote_store_logs_in_first_and_retries_a_failure_once() {
        let get = || Need::Store(StoreOp::Get { key: "k".into() });
        let login = Need::Session(SessionOp::Authenticate);
        assert!(matches!(remote_read(&[]), Err(Interrupt::Need(n)) if n == login));
        // Logged in (the worker remembers; here it still says no: at most 4 logins, then
        // the operation goes anyway).
        let ok = Answer::Session(true);
        assert!(
            matches!(remote_read(std::slice::from_ref(&ok)), Err(Interrupt::Need(n)) if n == login)
        );
        let four = vec![ok.clone(); 4];
        assert!(matches!(remote_read(&four), Err(Interrupt::Need(n)) if n == get()));
        let mut a = four.clone();
        a.push(Answer::Store(StoreResult::Written));
        assert_eq!(remote_read(&a).unwrap(), StoreResult::Written);
        // A failed login is a failure: retried once, then the flow hears it.
        let failed = Answer::Store(StoreResult::Failed);
        let r = remote_read(&[Answer::Session(false), failed.clone()]).unwrap();
        assert_eq!(r, StoreResult::Failed);
        let mut a = four;
        a.push(failed.clone());
        assert!(matches!(remote_read(&a), Err(Interrupt::Need(_))));
        a.push(Answer::Store(StoreResult::Conflict));
        assert_eq!(remote_read(&a).unwrap(), StoreResult::Conflict);
    }

    #[test]
    fn the_sid_is_stable_per_login_and_hides_the_login_session_id() {
        let u = |session: Option<&str>, auth_time| User {
            sub: "alice".into(),
            auth_time,
            session: session.map(str::to_string),
        };
        assert_eq!(u(Some("s1"), Some(1)).sid(), u(Some("s1"), Some(2)).sid());
        assert_ne!(u(Some("s1"), None).sid(), u(Some("s2"), None).sid());
        assert_ne!(u(None, Some(1)).sid(), u(None, Some(2)).sid());
        assert_ne!(u(None, None).sid(), u(None, Some(1)).sid());
        assert!(!u(Some("s1"), None).sid().contains("s1"));
        assert_eq!(u(None, None).sid().len(), 22);
    }
}
