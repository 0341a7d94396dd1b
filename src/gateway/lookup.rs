//! The lookup policy: how each [`Need`] of a flow is met. A client is looked for in this
//! worker's cache (inside the engine), then in shared data (another worker's registry answer),
//! then at the registry, whose answer is written back to shared data for the other workers; a
//! `jwks_uri` in the worker cache, then fetched; a store operation runs inline on shared data,
//! or becomes an etcd call. Every failure, including a call the host would not dispatch,
//! becomes an answer the flow turns into a clean OAuth error.

use crate::engine::Engine;
use crate::flow::{
    Answer, HttpAnswer, JwksLookup, Lookup, Need, Now, SessionOp, StoreOp, StoreResult, SyncStore,
};
use crate::http::Call;

use super::host::{Host, Level, SetError};

/// What a dispatched call was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The registry, about this client id.
    Client(String),
    /// A client's jwks_uri.
    Jwks(String),
    /// A call the core asked for as it is.
    Http,
    /// A store operation on etcd.
    Store(StoreOp),
    /// An etcd login or lease.
    Session(SessionOp),
}

/// The lookups that requests waiting for the same answer share (see [`crate::flights`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FlightKey {
    Client(String),
    Jwks(String),
}

impl Waiting {
    pub fn flight(&self) -> Option<FlightKey> {
        match self {
            Waiting::Client(id) => Some(FlightKey::Client(id.clone())),
            Waiting::Jwks(url) => Some(FlightKey::Jwks(url.clone())),
            Waiting::Http | Waiting::Store(_) | Waiting::Session(_) => None,
        }
    }
}

/// The call a need takes, or its answer when none is needed (shared data, caches, a call that
/// cannot be made).
pub fn outgoing(
    engine: &Engine,
    host: &dyn Host,
    need: Need,
    now: Now,
) -> Result<(Call, Waiting), Answer> {
    match need {
        Need::Store(op) => match engine.store_call(&op, now) {
            Some(call) => Ok((call, Waiting::Store(op))),
            // Shared data answers inline; kept so a Need is always answered.
            None => Err(Answer::Store(SharedStore(host).run(&op))),
        },
        Need::Session(op) => match engine.session_call(&op) {
            Some(call) => Ok((call, Waiting::Session(op))),
            // Shared data has no session; the flow never asks for one there.
            None => Err(Answer::Session(false)),
        },
        Need::Http(call) => Ok((call, Waiting::Http)),
        Need::Jwks(url) => match engine.jwks_call(&url) {
            Ok(call) => Ok((call, Waiting::Jwks(url))),
            Err(lookup) => {
                host.log(
                    Level::Warn,
                    &format!("oauth-edge: cannot fetch a jwks_uri: {lookup:?}"),
                );
                Err(Answer::Jwks(lookup))
            }
        },
        Need::Client(client_id) => {
            let key = crate::registry::shared_key(&client_id);
            if let Ok((Some(entry), _)) = host.shared_get(&key) {
                if let Some(lookup) = engine.client_from_shared(&client_id, &entry, now) {
                    return Err(Answer::Client(lookup));
                }
            }
            match engine.registry_call(&client_id) {
                Some(call) => Ok((call, Waiting::Client(client_id))),
                None => {
                    let (lookup, _) = engine.client_from_registry(&client_id, None, &[], now);
                    Err(Answer::Client(lookup))
                }
            }
        }
    }
}

/// What a dispatched call's answer means to the core (`status` `None`: no answer: a reset, a
/// timeout, a response cut off, or a call not dispatched at all).
pub fn answer(
    engine: &Engine,
    host: &dyn Host,
    waiting: Waiting,
    status: Option<u16>,
    body: &[u8],
    now: Now,
) -> Answer {
    match waiting {
        Waiting::Store(op) => {
            let result = engine.store_answer(&op, status, body);
            if result == StoreResult::Failed {
                host.log(
                    Level::Warn,
                    &format!("oauth-edge: etcd operation failed (status {status:?})"),
                );
            }
            Answer::Store(result)
        }
        Waiting::Session(op) => {
            let ok = engine.session_answer(&op, status, body, now);
            if !ok {
                host.log(
                    Level::Warn,
                    &format!("oauth-edge: etcd {op:?} failed (status {status:?})"),
                );
            }
            Answer::Session(ok)
        }
        Waiting::Http => {
            if status.is_none_or(|s| s >= 500) {
                host.log(
                    Level::Warn,
                    &format!("oauth-edge: a dispatched call failed (status {status:?})"),
                );
            }
            Answer::Http(HttpAnswer {
                status,
                body: body.to_vec(),
            })
        }
        Waiting::Jwks(url) => {
            let lookup = engine.jwks_from_fetch(&url, status, body, now);
            if let JwksLookup::Unavailable(why) = &lookup {
                host.log(
                    Level::Warn,
                    &format!("oauth-edge: jwks_uri fetch failed: {why}"),
                );
            }
            Answer::Jwks(lookup)
        }
        Waiting::Client(client_id) => {
            let (lookup, write) = engine.client_from_registry(&client_id, status, body, now);
            if let Lookup::Unavailable(why) = &lookup {
                host.log(
                    Level::Warn,
                    &format!("oauth-edge: registry lookup failed: {why}"),
                );
            }
            if let Some(w) = write {
                // cas 0: unconditional; the value carries its own expiry.
                if let Err(e) = host.shared_set(&w.key, &w.value, 0) {
                    host.log(
                        Level::Warn,
                        &format!("oauth-edge: cannot cache the registry answer: {e:?}"),
                    );
                }
            }
            Answer::Client(lookup)
        }
    }
}

/// The host's shared data as the core's store: it answers at once, so flows run its
/// operations inline.
pub struct SharedStore<'h>(pub &'h dyn Host);

impl SyncStore for SharedStore<'_> {
    fn run(&mut self, op: &StoreOp) -> StoreResult {
        match op {
            StoreOp::Get { key } => match self.0.shared_get(key) {
                Ok((value, cas)) => StoreResult::Value {
                    value,
                    cas: u64::from(cas),
                },
                Err(_) => StoreResult::Failed,
            },
            StoreOp::Cas {
                key, value, cas, ..
            } => {
                // cas 0 is an unconditional write: only the revocation epoch asks for one (any
                // write moves its version, which is all it carries); a ring slot never does.
                let Ok(cas) = u32::try_from(*cas) else {
                    return StoreResult::Failed;
                };
                if cas == 0 && key != crate::access_token::EPOCH_KEY {
                    return StoreResult::Failed;
                }
                match self.0.shared_set(key, value, cas) {
                    Ok(()) => StoreResult::Written,
                    Err(SetError::CasMismatch) => StoreResult::Conflict,
                    Err(SetError::Other(_)) => StoreResult::Failed,
                }
            }
        }
    }
}
