//! Rate limits (per client, per source address) and failure counters (the password grant's, the
//! device verification's): fixed windows counted in shared data.
//!
//! Counters live in a fixed ring (shared data has no delete, so a key per client or address
//! would grow without bound). Two things keep a counter honest against someone who chooses the
//! names being counted (usernames, client ids, addresses):
//!
//! - **Keyed placement.** A counter's two candidate slots and its tag come from HMAC-SHA256 with
//!   a key derived from the private signing key ([`crate::keys::KeySet::counter_key`]). Which
//!   names share a slot cannot be computed offline: finding a collision with a victim's
//!   username means guessing, with the server counting the guesses.
//! - **Buckets, never a takeover.** A slot holds up to [`BUCKET`] counters, each
//!   `{"k": tag, "e": window end (ms), "n": count}`; a counter goes into the emptier of its two
//!   slots ("two choices", as the replay cache does). A counter whose window has ended is dead
//!   and its place free; a live counter is never overwritten by another name. When both slots
//!   are full of live counters, the caller's [`Full`] decides: a rate limit lets the request
//!   through uncounted (a limiter must not become the outage it prevents), a failure counter
//!   refuses it (unlimited password guesses must never be the fallback).
//!
//! Increments are CAS writes; losing a race re-reads. If the store keeps refusing, a rate limit
//! lets the request through. Counts are per Envoy process (docs/features.md, "Rate limits", on
//! Envoy's global rate limit service beside it).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::config::Limit;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, StoreResult};
use crate::store::Ring;

/// Counters per slot.
pub const BUCKET: usize = 4;

/// Where counters are kept: the ring and the key that places names in it.
#[derive(Clone, Copy)]
pub struct Counters<'a> {
    pub ring: Ring,
    pub key: &'a [u8; 32],
}

/// What to do when a name finds no room (both its slots full of other live counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Let the request through uncounted: for rate limits.
    Allow,
    /// Refuse it (429): for failure counters, where counting is the protection.
    Refuse,
}

#[derive(Serialize, Deserialize, Clone)]
struct Counter {
    k: String,
    e: u64,
    n: u32,
}

/// The tag of `what` and its two slots.
fn place(c: Counters<'_>, what: &str) -> (String, [String; 2]) {
    let digest: [u8; 32] = match <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(c.key) {
        Ok(mut mac) => {
            mac.update(what.as_bytes());
            mac.finalize().into_bytes().into()
        }
        // An HMAC takes a key of any length; kept total anyway.
        Err(_) => [0u8; 32],
    };
    let size = c.ring.size.max(1);
    let word = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(digest.get(i..i + 4).unwrap_or(&[0; 4]));
        u32::from_be_bytes(b) % size
    };
    let (a, mut b) = (word(16), word(20));
    if b == a {
        b = (a + 1) % size;
    }
    (
        B64.encode(digest.get(..12).unwrap_or(&[])),
        [c.ring.key(a), c.ring.key(b)],
    )
}

/// The live counters of a slot's value.
fn live(value: Option<&[u8]>, now: u64) -> Vec<Counter> {
    value
        .and_then(|v| serde_json::from_slice::<Vec<Counter>>(v).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.e > now)
        .take(BUCKET)
        .collect()
}

/// The end of the window `now` is in.
fn window_end(window_ms: u64, now: u64) -> u64 {
    (now / window_ms)
        .saturating_add(1)
        .saturating_mul(window_ms)
}

/// Seconds until `end` (at least 1).
fn retry_after(end: u64, now: u64) -> u64 {
    end.saturating_sub(now).div_ceil(1000).max(1)
}

/// A slot's live counters and its CAS version.
type Slot = (Vec<Counter>, u64);

/// Both slots; `None` when the store has no usable answer.
fn read(ctx: &mut Ctx<'_>, keys: &[String; 2], now: u64) -> FlowResult<Option<[Slot; 2]>> {
    let mut out: [Slot; 2] = [(Vec::new(), 0), (Vec::new(), 0)];
    for (slot, key) in out.iter_mut().zip(keys) {
        match ctx.local_get(key)? {
            StoreResult::Value { value, cas } if cas != 0 => {
                *slot = (live(value.as_deref(), now), cas)
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Whether `what` is already over its limit in this window, without counting: `Some(retry
/// after)` if so.
pub fn exceeded(
    ctx: &mut Ctx<'_>,
    c: Counters<'_>,
    what: &str,
    limit: Limit,
) -> FlowResult<Option<u64>> {
    let (tag, keys) = place(c, what);
    let now = ctx.now.unix_ms;
    let Some(slots) = read(ctx, &keys, now)? else {
        return Ok(None);
    };
    Ok(slots
        .iter()
        .flat_map(|(s, _)| s.iter())
        .find(|x| x.k == tag)
        .filter(|x| x.n >= limit.requests)
        .map(|x| retry_after(x.e, now)))
}

/// Counts one request for `what` (e.g. `client\0<id>`); `Err` with a 429 once over the limit
/// (or, with [`Full::Refuse`], when there is no room to count it).
pub fn hit(
    ctx: &mut Ctx<'_>,
    c: Counters<'_>,
    what: &str,
    limit: Limit,
    full: Full,
) -> FlowResult<()> {
    let (tag, keys) = place(c, what);
    let window_ms = crate::duration::millis(limit.window).max(1);
    let now = ctx.now.unix_ms;
    for _ in 0..4 {
        let Some(slots) = read(ctx, &keys, now)? else {
            return Ok(());
        };
        // Where the counter is, else the slot with more room.
        let at = slots
            .iter()
            .position(|(s, _)| s.iter().any(|x| x.k == tag))
            .unwrap_or(usize::from(slots[0].0.len() > slots[1].0.len()));
        let Some((counters, cas)) = slots.get(at) else {
            return Ok(());
        };
        let mut counters = counters.clone();
        let room = counters.len() < BUCKET;
        match counters.iter_mut().find(|x| x.k == tag) {
            Some(x) if x.n >= limit.requests => {
                return Err(OAuthError::rate_limited(retry_after(x.e, now)).into());
            }
            Some(x) => x.n += 1,
            None if !room => {
                return match full {
                    Full::Allow => Ok(()),
                    Full::Refuse => {
                        let soonest = counters.iter().map(|x| x.e).min().unwrap_or(now);
                        Err(OAuthError::rate_limited(retry_after(soonest, now)).into())
                    }
                };
            }
            None => counters.push(Counter {
                k: tag.clone(),
                e: window_end(window_ms, now),
                n: 1,
            }),
        }
        let Ok(bytes) = serde_json::to_vec(&counters) else {
            return Ok(());
        };
        let Some(key) = keys.get(at) else {
            return Ok(());
        };
        match ctx.local_cas(key, bytes, *cas)? {
            StoreResult::Written => return Ok(()),
            StoreResult::Conflict => continue,
            _ => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Journal, Local, Lookup, Now, StoreOp, SyncStore};
    use crate::random::SystemRandom;
    use std::collections::HashMap;
    use std::time::Duration;

    /// Shared data with proxy-wasm's CAS rules.
    #[derive(Default)]
    struct Store {
        map: HashMap<String, (Vec<u8>, u64)>,
        version: u64,
    }

    impl SyncStore for Store {
        fn run(&mut self, op: &StoreOp) -> StoreResult {
            match op {
                StoreOp::Get { key } => match self.map.get(key) {
                    Some((v, cas)) => StoreResult::Value {
                        value: Some(v.clone()),
                        cas: *cas,
                    },
                    None => StoreResult::Value {
                        value: None,
                        cas: 0,
                    },
                },
                StoreOp::Cas {
                    key, value, cas, ..
                } => match self.map.get(key) {
                    Some((_, current)) if current != cas => StoreResult::Conflict,
                    _ => {
                        self.version += 1;
                        self.map.insert(key.clone(), (value.clone(), self.version));
                        StoreResult::Written
                    }
                },
            }
        }
    }

    struct NoLocal;
    impl Local for NoLocal {
        fn client(&self, _: &str) -> Option<Lookup> {
            None
        }
        fn jwks(&self, _: &str, _: bool) -> Option<crate::flow::JwksLookup> {
            None
        }
        fn remote_prerequisite(&self, _: &StoreOp) -> Option<crate::flow::SessionOp> {
            None
        }
        fn remote(&self) -> bool {
            false
        }
    }

    const RING: Ring = Ring {
        name: "rl",
        size: 16,
        remote: false,
    };
    const KEY: [u8; 32] = [7; 32];

    fn store() -> Store {
        let mut s = Store::default();
        for slot in 0..RING.size {
            s.version += 1;
            s.map.insert(RING.key(slot), (Vec::new(), s.version));
        }
        s
    }

    fn run(store: &mut Store, now: u64, what: &str, limit: Limit, full: Full) -> bool {
        let mut rng = SystemRandom;
        let mut journal = Journal::default();
        let local = NoLocal;
        let mut ctx =
            Ctx::new(Now { unix_ms: now }, &mut rng, &mut journal, &local).with_store(store);
        let c = Counters {
            ring: RING,
            key: &KEY,
        };
        hit(&mut ctx, c, what, limit, full).is_ok()
    }

    fn limit(n: u32) -> Limit {
        Limit {
            requests: n,
            window: Duration::from_secs(60),
        }
    }

    /// Names whose two slots are exactly the victim's: what an attacker would need, found here
    /// only because the test knows the key.
    fn colliders(victim: &str, n: usize) -> Vec<String> {
        let c = Counters {
            ring: RING,
            key: &KEY,
        };
        let (_, want) = place(c, victim);
        (0..)
            .map(|i| format!("attacker-{i}"))
            .filter(|name| {
                let (_, got) = place(c, name);
                got == want || got == [want[1].clone(), want[0].clone()]
            })
            .take(n)
            .collect()
    }

    #[test]
    fn placement_depends_on_the_key() {
        let a = place(
            Counters {
                ring: RING,
                key: &KEY,
            },
            "alice",
        );
        let b = place(
            Counters {
                ring: Ring {
                    size: 65_536,
                    ..RING
                },
                key: &[8; 32],
            },
            "alice",
        );
        let c = place(
            Counters {
                ring: Ring {
                    size: 65_536,
                    ..RING
                },
                key: &KEY,
            },
            "alice",
        );
        assert_ne!(a.0, b.0);
        assert_ne!(b.1, c.1);
        assert_ne!(a.1[0], a.1[1], "two different slots");
    }

    #[test]
    fn colliding_names_never_reset_a_live_counter() {
        let mut s = store();
        let now = 1_000_000;
        let victim = "password-user\0alice";
        let attackers = colliders(victim, 12);
        let mut allowed = 0;
        for round in 0..10 {
            if run(&mut s, now + round, victim, limit(3), Full::Refuse) {
                allowed += 1;
            }
            // Alternate with every colliding name: they fill the victim's slots, never take
            // over its counter.
            for a in &attackers {
                run(&mut s, now + round, a, limit(3), Full::Refuse);
            }
        }
        assert_eq!(allowed, 3, "exactly the limit, however the names collide");
    }

    #[test]
    fn a_full_bucket_refuses_failure_counting_and_lets_rate_limits_through() {
        let mut s = store();
        let now = 5_000;
        let victim = "x";
        let fill = colliders(victim, 2 * BUCKET);
        for a in &fill {
            assert!(run(&mut s, now, a, limit(5), Full::Refuse));
        }
        assert!(
            !run(&mut s, now, victim, limit(5), Full::Refuse),
            "no room: refused"
        );
        assert!(
            run(&mut s, now, victim, limit(5), Full::Allow),
            "no room: let through"
        );
        // A new window frees the slots.
        assert!(run(&mut s, now + 60_000, victim, limit(5), Full::Refuse));
    }

    #[test]
    fn counts_per_window_and_retry_after() {
        let mut s = store();
        let now = 59_500; // half a second before the window ends
        for _ in 0..2 {
            assert!(run(&mut s, now, "c", limit(2), Full::Allow));
        }
        let mut rng = SystemRandom;
        let mut journal = Journal::default();
        let local = NoLocal;
        let mut ctx =
            Ctx::new(Now { unix_ms: now }, &mut rng, &mut journal, &local).with_store(&mut s);
        let c = Counters {
            ring: RING,
            key: &KEY,
        };
        match hit(&mut ctx, c, "c", limit(2), Full::Allow) {
            Err(crate::flow::Interrupt::Error(e)) => {
                let r = e.into_response();
                assert_eq!((r.status, r.header("retry-after")), (429, Some("1")));
            }
            _ => panic!("third request in the window must be refused"),
        }
        assert_eq!(exceeded(&mut ctx, c, "c", limit(2)).ok().flatten(), Some(1));
        assert!(
            run(&mut s, 60_000, "c", limit(2), Full::Allow),
            "a new window"
        );
    }
}
