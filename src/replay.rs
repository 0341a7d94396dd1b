//! The replay cache and deny-list on shared data: fixed buckets of several entries.
//!
//! A jti (assertion, DPoP proof) or a revoked token id is remembered until a time. One record per
//! slot, as the other rings do, would make a full cache likely long before it is full: with k
//! probes, an insert fails with probability (fullness)^k. Here each of the ring's slots is a
//! bucket of up to [`BUCKET`] entries, and an id may go in either of two buckets (the emptier
//! one, "two choices", which keeps the buckets even): inserts keep succeeding up to about four
//! live ids per slot, and every insert costs two reads and one CAS, whatever the load.
//!
//! A bucket's value is `<id hash>:<expiry ms>;…` (the hash: 16 bytes of SHA-256, base64url).
//! Expired entries are dropped on every write. Concurrent inserts of the same id read the same
//! two buckets; the CAS lets one win and the others re-read and see it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Interrupt, StoreResult};
use crate::store::Ring;

/// A replay cache (assertion and DPoP proof `jti`s, revoked token ids): records `id` as seen
/// until `exp_ms`. `Ok(true)` the first time, `Ok(false)` while an earlier sighting is live. Of
/// concurrent callers with the same id, one wins. On shared data the ring's slots are buckets
/// of several entries (this module); in a remote store each id is its own key
/// ([`crate::store`]).
pub fn remember_once(ctx: &mut Ctx<'_>, ring: Ring, id: &str, exp_ms: u64) -> FlowResult<bool> {
    if ring.remote {
        crate::store::remember_once_remote(ctx, ring, id, exp_ms)
    } else {
        remember_in_buckets(ctx, ring, id, exp_ms)
    }
}

/// Whether `id` was remembered by [`remember_once`] and has not expired (a deny-list lookup).
pub fn seen(ctx: &mut Ctx<'_>, ring: Ring, id: &str) -> FlowResult<bool> {
    if ring.remote {
        crate::store::seen_remote(ctx, ring, id)
    } else {
        seen_in_buckets(ctx, ring, id)
    }
}

/// Entries per bucket.
pub const BUCKET: usize = 8;

struct Entry {
    h: String,
    exp: u64,
}

fn parse(v: &[u8], now: u64) -> Vec<Entry> {
    let Ok(s) = std::str::from_utf8(v) else {
        return Vec::new();
    };
    s.split(';')
        .filter_map(|e| {
            let (h, exp) = e.split_once(':')?;
            let exp: u64 = exp.parse().ok()?;
            (exp > now && h.len() == 22).then(|| Entry {
                h: h.to_string(),
                exp,
            })
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = String::with_capacity(entries.len() * 38);
    for e in entries {
        out.push_str(&e.h);
        out.push(':');
        out.push_str(&e.exp.to_string());
        out.push(';');
    }
    out.into_bytes()
}

/// Live entries in a bucket's value (for the ring fill estimate).
pub fn live_entries(value: &[u8], now_ms: u64) -> usize {
    parse(value, now_ms).len()
}

/// The id's hash and its two buckets.
fn place(ring: Ring, id: &str) -> (String, [String; 2]) {
    let d = Sha256::digest(id.as_bytes());
    let h = B64.encode(d.get(..16).unwrap_or(&[]));
    let word = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(d.get(i..i + 4).unwrap_or(&[0; 4]));
        u32::from_be_bytes(b) % ring.size.max(1)
    };
    let (a, mut b) = (word(16), word(20));
    if b == a {
        b = (a + 1) % ring.size.max(1);
    }
    (h, [ring.key(a), ring.key(b)])
}

fn unavailable() -> Interrupt {
    Interrupt::Error(OAuthError::server_error(
        "the authorization server cannot store state",
    ))
}

/// Reads both buckets: (live entries, version) each.
fn read(ctx: &mut Ctx<'_>, keys: &[String; 2]) -> FlowResult<[(Vec<Entry>, u64); 2]> {
    let now = ctx.now.unix_ms;
    let mut one = |key: &str| -> FlowResult<(Vec<Entry>, u64)> {
        match ctx.get(key)? {
            StoreResult::Value { value, cas } => Ok((
                value.as_deref().map_or_else(Vec::new, |v| parse(v, now)),
                cas,
            )),
            _ => Err(unavailable()),
        }
    };
    let [ka, kb] = keys;
    Ok([one(ka)?, one(kb)?])
}

/// `Ok(true)` the first time `id` is seen (it is then remembered until `exp_ms`), `Ok(false)`
/// while an earlier sighting is live.
fn remember_in_buckets(ctx: &mut Ctx<'_>, ring: Ring, id: &str, exp_ms: u64) -> FlowResult<bool> {
    let (h, keys) = place(ring, id);
    let exp = exp_ms.max(ctx.now.unix_ms.saturating_add(1));
    for _ in 0..4 {
        let buckets = read(ctx, &keys)?;
        if buckets.iter().any(|(e, _)| e.iter().any(|x| x.h == h)) {
            return Ok(false);
        }
        // The emptier bucket; keys never created (version 0) cannot be CAS-written.
        let [(ea, ca), (eb, cb)] = buckets;
        let mut choices = [(ea, ca, &keys[0]), (eb, cb, &keys[1])];
        choices.sort_by_key(|(e, _, _)| e.len());
        let Some((mut entries, cas, key)) = choices
            .into_iter()
            .find(|(e, cas, _)| e.len() < BUCKET && *cas != 0)
        else {
            return Err(Interrupt::Error(OAuthError::server_error(
                "the authorization server is busy, try again",
            )));
        };
        entries.push(Entry { h: h.clone(), exp });
        match ctx.cas(key, encode(&entries), cas, exp)? {
            StoreResult::Written => return Ok(true),
            StoreResult::Conflict => continue,
            _ => return Err(unavailable()),
        }
    }
    Err(unavailable())
}

/// Whether `id` is remembered and not expired.
fn seen_in_buckets(ctx: &mut Ctx<'_>, ring: Ring, id: &str) -> FlowResult<bool> {
    let (h, keys) = place(ring, id);
    let buckets = read(ctx, &keys)?;
    Ok(buckets.iter().any(|(e, _)| e.iter().any(|x| x.h == h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_expire() {
        let e = vec![
            Entry {
                h: "a".repeat(22),
                exp: 10,
            },
            Entry {
                h: "b".repeat(22),
                exp: 20,
            },
        ];
        let v = encode(&e);
        assert_eq!(parse(&v, 5).len(), 2);
        assert_eq!(parse(&v, 10).len(), 1);
        assert_eq!(parse(b"garbage;x:y;", 0).len(), 0);
        assert_eq!(parse(b"{\"h\":\"old record\"}", 0).len(), 0);
    }

    #[test]
    fn two_distinct_buckets() {
        let ring = Ring {
            name: "jti",
            size: 16,
            remote: false,
        };
        for i in 0..200 {
            let (_, [a, b]) = place(ring, &format!("id{i}"));
            assert_ne!(a, b);
        }
    }
}
