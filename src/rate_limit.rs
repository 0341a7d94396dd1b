//! Rate limits per client and per source address: fixed windows counted in shared data.
//!
//! A counter lives in a slot of a fixed ring (shared data has no delete, so a key per client
//! or per address would grow without bound): the slot is chosen by a hash of what is counted,
//! and holds `{"k": hash, "w": window, "n": count}`. Two keys that land in the same slot in the
//! same window share it: the newer key takes the slot over and starts from zero, so a collision
//! can only let a few requests more through, never lock a client out. Counts are per Envoy
//! process (see the README for Envoy's global rate limit service beside it).
//!
//! Increments are CAS writes; losing a race re-reads. If the store keeps refusing, the request
//! is let through: a limiter must not become the outage it is meant to prevent.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Limit;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, StoreResult};
use crate::store::Ring;

#[derive(Serialize, Deserialize)]
struct Counter {
    k: String,
    w: u64,
    n: u32,
}

/// Where `what` is counted: the slot's key and the counter's own tag.
fn place(ring: Ring, what: &str) -> (String, String) {
    let digest = Sha256::digest(what.as_bytes());
    let mut seed = [0u8; 8];
    seed.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
    let slot = (u64::from_be_bytes(seed) % u64::from(ring.size.max(1))) as u32;
    (ring.key(slot), B64.encode(digest.get(..12).unwrap_or(&[])))
}

/// Seconds until the window of `now` ends (at least 1).
fn retry_after(w: u64, window_ms: u64, now: u64) -> u64 {
    let window_end = w.saturating_add(1).saturating_mul(window_ms);
    window_end.saturating_sub(now).div_ceil(1000).max(1)
}

/// Whether `what` is already over its limit in this window, without counting: `Some(retry
/// after)` if so.
pub fn exceeded(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    what: &str,
    limit: Limit,
) -> FlowResult<Option<u64>> {
    let (key, k) = place(ring, what);
    let window_ms = crate::duration::millis(limit.window).max(1);
    let now = ctx.now.unix_ms;
    let w = now / window_ms;
    let n = match ctx.local_get(&key)? {
        StoreResult::Value { value, .. } => value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<Counter>(v).ok())
            .filter(|c| c.w == w && c.k == k)
            .map_or(0, |c| c.n),
        _ => 0,
    };
    Ok((n >= limit.requests).then(|| retry_after(w, window_ms, now)))
}

/// Counts one request for `what` (e.g. `client:<id>`); `Err` with a 429 once over the limit.
pub fn hit(ctx: &mut Ctx<'_>, ring: Ring, what: &str, limit: Limit) -> FlowResult<()> {
    let (key, k) = place(ring, what);
    let window_ms = crate::duration::millis(limit.window).max(1);
    let now = ctx.now.unix_ms;
    let w = now / window_ms;
    for _ in 0..4 {
        let (n, cas) = match ctx.local_get(&key)? {
            StoreResult::Value { value, cas } if cas != 0 => {
                let n = value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<Counter>(v).ok())
                    .filter(|c| c.w == w && c.k == k)
                    .map_or(0, |c| c.n);
                (n, cas)
            }
            _ => return Ok(()),
        };
        if n >= limit.requests {
            return Err(OAuthError::rate_limited(retry_after(w, window_ms, now)).into());
        }
        let bytes = match serde_json::to_vec(&Counter {
            k: k.clone(),
            w,
            n: n + 1,
        }) {
            Ok(b) => b,
            Err(_) => return Ok(()),
        };
        match ctx.local_cas(&key, bytes, cas)? {
            StoreResult::Written => return Ok(()),
            StoreResult::Conflict => continue,
            _ => return Ok(()),
        }
    }
    Ok(())
}
