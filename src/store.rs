//! Short-lived state (authorization codes, pushed requests, refresh token families) in fixed
//! rings of reusable slots.
//!
//! Why rings: proxy-wasm shared data has no expiry and no delete (a removed key stays, empty, for
//! the life of the VM id), so one key per code would grow memory forever. A ring has a fixed
//! number of keys, written once at start; a slot is reused once its record has expired. Memory is
//! bounded by design, whatever the churn.
//!
//! Why handles: a code or request_uri is `base64url(slot ‖ 128-bit secret)`. The slot finds the
//! record in one read; the record keeps only SHA-256 of the secret, compared in constant time.
//!
//! Why CAS: every state change is a compare-and-swap on the version read just before, so two
//! workers racing for the same slot or the same code cannot both win. Consume-once = read, check,
//! CAS-write the record marked used; losing the CAS means somebody else used it first.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::OAuthError;
use crate::flow::{internal, Ctx, FlowResult, Interrupt, StoreResult};

/// How many slots an allocation tries before it calls the ring full. Probes are spread
/// pseudo-randomly (no clustering), so at 80 % occupancy the chance of failing is 0.8^32 ≈ 1e-3.
pub const PROBES: u32 = 32;

/// splitmix64: the i-th probe of an allocation, from its random seed.
fn probe(seed: u64, i: u32, size: u32) -> u32 {
    let mut z = seed.wrapping_add(u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % u64::from(size)) as u32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    pub name: &'static str,
    pub size: u32,
    /// In a remote store (etcd): keys are created on demand and expire with leases, so the
    /// "ring" spans every u32 slot and a record is looked for where it would be written, with
    /// few probes (each one is a network round trip).
    pub remote: bool,
}

/// Probes of an allocation or keyed search in a remote ring: with 2^32 slots, the first is
/// free unless astronomically unlucky; the second covers that.
pub const REMOTE_PROBES: u32 = 2;

impl Ring {
    /// A remote ring over all u32 slots (the size given is ignored).
    pub fn remote(name: &'static str) -> Ring {
        Ring {
            name,
            size: u32::MAX,
            remote: true,
        }
    }

    fn probes(&self) -> u32 {
        if self.remote {
            REMOTE_PROBES
        } else {
            PROBES
        }
    }

    pub fn key(&self, slot: u32) -> String {
        format!("oauth_edge.{}.{}", self.name, slot)
    }

    /// Every key of the ring, for the gateway to create at start (so each has a version to CAS on).
    /// None for a remote ring: its keys are created on demand in the remote store.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        let n = if self.remote { 0 } else { self.size };
        (0..n).map(|i| self.key(i))
    }
}

/// A reference to a slot and the secret that proves the holder was given it.
#[derive(Clone, PartialEq, Eq)]
pub struct Handle {
    pub slot: u32,
    secret: [u8; 16],
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle(slot {})", self.slot)
    }
}

impl Handle {
    /// A new handle for `slot` with a fresh secret.
    pub fn fresh(ctx: &mut Ctx<'_>, slot: u32) -> FlowResult<Handle> {
        let mut secret = [0u8; 16];
        ctx.random(&mut secret)?;
        Ok(Handle { slot, secret })
    }

    /// The same secret at another slot (when the slot is only known once the record is written).
    pub fn at_slot(&self, slot: u32) -> Handle {
        Handle {
            slot,
            secret: self.secret,
        }
    }

    /// SHA-256 of the secret, base64url: what a record keeps to recognise the handle.
    pub fn fingerprint(&self) -> String {
        self.secret_hash()
    }

    /// Constant-time comparison with a stored [`Handle::fingerprint`].
    pub fn has_fingerprint(&self, hash: &str) -> bool {
        self.matches(hash)
    }

    pub fn encode(&self) -> String {
        let mut b = [0u8; 20];
        b[..4].copy_from_slice(&self.slot.to_be_bytes());
        b[4..].copy_from_slice(&self.secret);
        B64.encode(b)
    }

    pub fn decode(s: &str) -> Option<Handle> {
        if s.len() != 27 {
            return None;
        }
        let b = B64.decode(s).ok()?;
        let slot = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
        let secret: [u8; 16] = b.get(4..20)?.try_into().ok()?;
        Some(Handle { slot, secret })
    }

    fn secret_hash(&self) -> String {
        B64.encode(Sha256::digest(self.secret))
    }

    fn matches(&self, hash: &str) -> bool {
        bool::from(self.secret_hash().as_bytes().ct_eq(hash.as_bytes()))
    }
}

/// A slot's record: whose it is (secret hash), until when, whether it was used, and the data.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Record<T> {
    /// SHA-256 of the handle's secret, base64url.
    h: String,
    /// Expiry, ms since the epoch. The slot is reusable after it.
    exp: u64,
    /// Used (consumed) records stay until expiry so a replay is recognised as one.
    #[serde(default)]
    used: bool,
    pub data: T,
}

/// A slot can be taken when it was never used, or its record expired (or is unreadable).
pub(crate) fn reusable(value: Option<&[u8]>, now_ms: u64) -> bool {
    #[derive(Deserialize)]
    struct Exp {
        exp: u64,
    }
    match value {
        None => true,
        Some([]) => true,
        Some(v) => serde_json::from_slice::<Exp>(v).map_or(true, |e| e.exp <= now_ms),
    }
}

fn unavailable() -> Interrupt {
    Interrupt::Error(OAuthError::server_error(
        "the authorization server cannot store state",
    ))
}

/// Writes a new record into a free slot of the ring and returns its handle.
pub fn allocate<T: Serialize>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    ttl_ms: u64,
    data: &T,
) -> FlowResult<Handle> {
    if ring.size == 0 {
        return Err(unavailable());
    }
    let mut r = [0u8; 8];
    ctx.random(&mut r)?;
    let seed = u64::from_be_bytes(r);
    let mut secret = [0u8; 16];
    ctx.random(&mut secret)?;
    let exp = ctx.now.unix_ms.saturating_add(ttl_ms);
    // The record does not depend on the slot: encoded once.
    let rec = Record {
        h: Handle { slot: 0, secret }.secret_hash(),
        exp,
        used: false,
        data,
    };
    let bytes = serde_json::to_vec(&rec).map_err(|_| internal("encode"))?;
    for i in 0..ring.probes() {
        let slot = probe(seed, i, ring.size);
        let key = ring.key(slot);
        let cas = if ring.remote {
            // Keys are created on demand and dropped by their lease: create-only, no read.
            crate::flow::ABSENT
        } else {
            match ctx.get(&key)? {
                // cas 0: the key was never created, and a write with cas 0 would be
                // unconditional (it could overwrite a racing writer): skip it.
                StoreResult::Value { value, cas } => {
                    if cas == 0 || !reusable(value.as_deref(), ctx.now.unix_ms) {
                        continue;
                    }
                    cas
                }
                _ => return Err(unavailable()),
            }
        };
        match ctx.cas(&key, bytes.clone(), cas, exp)? {
            StoreResult::Written => return Ok(Handle { slot, secret }),
            StoreResult::Conflict => continue,
            _ => return Err(unavailable()),
        }
    }
    Err(Interrupt::Error(OAuthError::server_error(
        "the authorization server is busy, try again",
    )))
}

/// What a consume attempt found.
#[derive(Debug)]
pub enum Consumed<T> {
    /// The record was live and is now marked used by this request.
    Fresh(T),
    /// The record had already been used (a replay, or the loser of a race).
    Replayed(T),
    /// No live record for this handle: unknown, expired, or the slot was reused.
    Invalid,
}

/// Reads a handle's record without changing it.
pub fn peek<T: DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    h: &Handle,
) -> FlowResult<Option<(Record<T>, u64)>> {
    if h.slot >= ring.size {
        return Ok(None);
    }
    match ctx.get(&ring.key(h.slot))? {
        StoreResult::Value {
            value: Some(v),
            cas,
        } if !v.is_empty() => match serde_json::from_slice::<Record<T>>(&v) {
            Ok(rec) if h.matches(&rec.h) && rec.exp > ctx.now.unix_ms => Ok(Some((rec, cas))),
            _ => Ok(None),
        },
        StoreResult::Value { .. } => Ok(None),
        _ => Err(unavailable()),
    }
}

/// Consumes a handle once: exactly one of any number of concurrent callers gets `Fresh`.
/// `finish` may change the data written with the used mark (e.g. the refresh family issued from
/// a code, so a replay can revoke it).
pub fn consume<T: Serialize + DeserializeOwned + Clone>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    h: &Handle,
    finish: impl Fn(&T) -> T,
) -> FlowResult<Consumed<T>> {
    consume_read(ctx, ring, h, None, finish)
}

/// [`consume`], starting from a record and version [`peek`] just returned (one read less: a
/// round trip in a remote store).
pub fn consume_read<T: Serialize + DeserializeOwned + Clone>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    h: &Handle,
    mut first: Option<(Record<T>, u64)>,
    finish: impl Fn(&T) -> T,
) -> FlowResult<Consumed<T>> {
    // Two rounds: a lost CAS re-reads, and then sees the winner's used mark.
    for _ in 0..2 {
        let read = match first.take() {
            Some(r) => Some(r),
            None => peek::<T>(ctx, ring, h)?,
        };
        let Some((rec, cas)) = read else {
            return Ok(Consumed::Invalid);
        };
        if rec.used {
            return Ok(Consumed::Replayed(rec.data));
        }
        let data = finish(&rec.data);
        let used = Record {
            h: rec.h,
            exp: rec.exp,
            used: true,
            data: data.clone(),
        };
        let bytes = serde_json::to_vec(&used).map_err(|_| internal("encode"))?;
        match ctx.cas(&ring.key(h.slot), bytes, cas, used.exp)? {
            StoreResult::Written => return Ok(Consumed::Fresh(data)),
            StoreResult::Conflict => continue,
            _ => return Err(unavailable()),
        }
    }
    Ok(Consumed::Invalid)
}

/// A record found by its key (see [`find_keyed`]): where it is and the version read.
#[derive(Debug)]
pub struct Found<T> {
    pub slot: u32,
    pub cas: u64,
    pub record: Record<T>,
}

/// Records addressed by a secret identifier instead of a handle (refresh families, whose id is
/// inside the sealed token): the id's hash seeds the probe sequence and is the record's `h`, so
/// every presentation of the id finds the same record, whichever token carried it.
fn keyed(id: &str) -> (u64, String) {
    let digest = Sha256::digest(id.as_bytes());
    let mut seed = [0u8; 8];
    seed.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
    (u64::from_be_bytes(seed), B64.encode(digest))
}

fn starts_with_h(v: &[u8], h: &str) -> bool {
    v.strip_prefix(b"{\"h\":\"")
        .and_then(|rest| rest.strip_prefix(h.as_bytes()))
        .is_some_and(|rest| rest.first() == Some(&b'"'))
}

/// The live record for `id`, the first in its probe sequence. Every probe is read when there is
/// none (a slot before the record may have been freed since it was written).
pub fn find_keyed<T: DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    id: &str,
) -> FlowResult<Option<Found<T>>> {
    let (seed, h) = keyed(id);
    for i in 0..ring.probes() {
        let slot = probe(seed, i, ring.size.max(1));
        match ctx.get(&ring.key(slot))? {
            // Records serialise `h` first: compare that prefix before parsing anything. (The
            // id is a random secret; which slots hold it is not worth hiding from timing.)
            StoreResult::Value {
                value: Some(v),
                cas,
            } if starts_with_h(&v, &h) => {
                if let Ok(record) = serde_json::from_slice::<Record<T>>(&v) {
                    let same = bool::from(record.h.as_bytes().ct_eq(h.as_bytes()));
                    if same && record.exp > ctx.now.unix_ms {
                        return Ok(Some(Found { slot, cas, record }));
                    }
                }
            }
            StoreResult::Value { .. } => {}
            _ => return Err(unavailable()),
        }
    }
    Ok(None)
}

/// The key of the first slot in `id`'s probe sequence: where [`new_keyed`] writes.
pub fn first_key(ring: Ring, id: &str) -> String {
    let (seed, _) = keyed(id);
    ring.key(probe(seed, 0, ring.size.max(1)))
}

/// A keyed record to create: its key, encoded value and expiry (ms).
pub struct NewKeyed {
    pub key: String,
    pub value: Vec<u8>,
    pub exp: u64,
}

/// The record for a new `id` at the first slot of its probe sequence, for a write that creates
/// it: what [`insert_new_keyed`] writes first (and a sealed code's family,
/// [`crate::families::create_or_find`]).
/// Returns the slot and the record.
pub fn new_keyed<T: Serialize>(
    ctx: &Ctx<'_>,
    ring: Ring,
    id: &str,
    ttl_ms: u64,
    data: &T,
) -> FlowResult<(u32, NewKeyed)> {
    let (seed, h) = keyed(id);
    let slot = probe(seed, 0, ring.size.max(1));
    let exp = ctx.now.unix_ms.saturating_add(ttl_ms);
    let rec = Record {
        h,
        exp,
        used: false,
        data,
    };
    let value = serde_json::to_vec(&rec).map_err(|_| internal("encode"))?;
    Ok((
        slot,
        NewKeyed {
            key: ring.key(slot),
            value,
            exp,
        },
    ))
}

/// Writes a record for an `id` that was just drawn at random (a new refresh family): no record
/// can exist for it yet, so the search [`find_or_insert_keyed`] starts with is skipped — 32
/// reads less on shared data, 2 round trips less in a remote store. Returns the slot.
pub fn insert_new_keyed<T: Serialize + DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    id: &str,
    ttl_ms: u64,
    data: &T,
) -> FlowResult<u32> {
    if ring.remote {
        // Create-only at the first probe: a write, no read.
        let (slot, rec) = new_keyed(ctx, ring, id, ttl_ms, data)?;
        match ctx.cas(&rec.key, rec.value, crate::flow::ABSENT, rec.exp)? {
            StoreResult::Written => return Ok(slot),
            StoreResult::Conflict => {}
            _ => return Err(unavailable()),
        }
    }
    match insert_keyed(ctx, ring, id, ttl_ms, data)? {
        Ok(slot) => Ok(slot),
        // The id is random and drawn for this grant: a record for it can only be a concurrent
        // replay's revocation marker (a code redeemed twice at once, the other redemption
        // revoking what this one is issuing: RFC 6749 §4.1.2). The grant is dead; say so.
        Err(_) => Err(Interrupt::Error(OAuthError::invalid_grant(
            "the authorization grant was revoked while its tokens were issued",
        ))),
    }
}

/// Finds the live record for `id`, or writes `data` into the first free slot of its probe
/// sequence and returns that slot. `Ok(Err(found))` when a record already existed.
pub fn find_or_insert_keyed<T: Serialize + DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    id: &str,
    ttl_ms: u64,
    data: &T,
) -> FlowResult<Result<u32, Found<T>>> {
    // A lost CAS means a concurrent insert or reuse of that slot: look again from the start.
    for _ in 0..3 {
        if let Some(found) = find_keyed::<T>(ctx, ring, id)? {
            return Ok(Err(found));
        }
        match insert_once(ctx, ring, id, ttl_ms, data)? {
            Insert::Conflict => continue,
            Insert::Done(r) => return Ok(r),
        }
    }
    Err(unavailable())
}

/// [`find_or_insert_keyed`]'s writing half, retried on conflicts, without the search first.
fn insert_keyed<T: Serialize + DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    id: &str,
    ttl_ms: u64,
    data: &T,
) -> FlowResult<Result<u32, Found<T>>> {
    for _ in 0..3 {
        match insert_once(ctx, ring, id, ttl_ms, data)? {
            Insert::Conflict => continue,
            Insert::Done(r) => return Ok(r),
        }
    }
    Err(unavailable())
}

enum Insert<T> {
    Done(Result<u32, Found<T>>),
    Conflict,
}

/// One pass over the probe sequence: the first free slot gets the record, unless a live record
/// for the same id turns up first.
fn insert_once<T: Serialize + DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    id: &str,
    ttl_ms: u64,
    data: &T,
) -> FlowResult<Insert<T>> {
    {
        let (seed, h) = keyed(id);
        let exp = ctx.now.unix_ms.saturating_add(ttl_ms);
        for i in 0..ring.probes() {
            let slot = probe(seed, i, ring.size.max(1));
            let key = ring.key(slot);
            match ctx.get(&key)? {
                StoreResult::Value { value, cas } => {
                    // Written concurrently since the search above: that record wins.
                    if let Some(record) = value
                        .as_deref()
                        .and_then(|v| serde_json::from_slice::<Record<T>>(v).ok())
                        .filter(|r| {
                            r.exp > ctx.now.unix_ms
                                && bool::from(r.h.as_bytes().ct_eq(h.as_bytes()))
                        })
                    {
                        return Ok(Insert::Done(Err(Found { slot, cas, record })));
                    }
                    if cas == 0 || !reusable(value.as_deref(), ctx.now.unix_ms) {
                        continue;
                    }
                    let rec = Record {
                        h: h.clone(),
                        exp,
                        used: false,
                        data,
                    };
                    let bytes = serde_json::to_vec(&rec).map_err(|_| internal("encode"))?;
                    match ctx.cas(&key, bytes, cas, exp)? {
                        StoreResult::Written => return Ok(Insert::Done(Ok(slot))),
                        StoreResult::Conflict => return Ok(Insert::Conflict),
                        _ => return Err(unavailable()),
                    }
                }
                _ => return Err(unavailable()),
            }
        }
        Err(Interrupt::Error(OAuthError::server_error(
            "the authorization server is busy, try again",
        )))
    }
}

/// Rewrites a found keyed record's data in place (CAS); `Ok(false)` if it changed meanwhile.
pub fn update_keyed<T: Serialize>(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    found: &Found<T>,
    data: &T,
) -> FlowResult<bool> {
    let rec = Record {
        h: found.record.h.clone(),
        exp: found.record.exp,
        used: false,
        data,
    };
    let bytes = serde_json::to_vec(&rec).map_err(|_| internal("encode"))?;
    match ctx.cas(&ring.key(found.slot), bytes, found.cas, rec.exp)? {
        StoreResult::Written => Ok(true),
        StoreResult::Conflict => Ok(false),
        _ => Err(unavailable()),
    }
}

/// Keys a remote replay-cache entry may use: one (a key per id; etcd has room).
const ONCE_PROBES_REMOTE: u32 = 1;

/// [`crate::replay::remember_once`] in a remote store: each id is its own key, created only if
/// absent.
pub(crate) fn remember_once_remote(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    id: &str,
    exp_ms: u64,
) -> FlowResult<bool> {
    let (seed, h) = keyed(id);
    let now = ctx.now.unix_ms;
    for _ in 0..3 {
        let mut free: Option<(String, u64)> = None;
        for i in 0..ONCE_PROBES_REMOTE {
            let key = ring.key(probe(seed, i, ring.size.max(1)));
            match ctx.get(&key)? {
                StoreResult::Value { value, cas } => {
                    if let Some(v) = value.as_deref() {
                        if starts_with_h(v, &h) && !reusable(Some(v), now) {
                            return Ok(false);
                        }
                    }
                    if free.is_none() && cas != 0 && reusable(value.as_deref(), now) {
                        free = Some((key, cas));
                    }
                }
                _ => return Err(unavailable()),
            }
        }
        let Some((key, cas)) = free else {
            // Every slot this id may use holds a live record: fail closed rather than let a
            // replay through.
            return Err(Interrupt::Error(OAuthError::server_error(
                "the authorization server is busy, try again",
            )));
        };
        let rec = Record {
            h: h.clone(),
            exp: exp_ms.max(now.saturating_add(1)),
            used: true,
            data: (),
        };
        let bytes = serde_json::to_vec(&rec).map_err(|_| internal("encode"))?;
        match ctx.cas(&key, bytes, cas, rec.exp)? {
            StoreResult::Written => return Ok(true),
            StoreResult::Conflict => continue,
            _ => return Err(unavailable()),
        }
    }
    Err(unavailable())
}

/// [`crate::replay::seen`] in a remote store.
pub(crate) fn seen_remote(ctx: &mut Ctx<'_>, ring: Ring, id: &str) -> FlowResult<bool> {
    let (seed, h) = keyed(id);
    let now = ctx.now.unix_ms;
    for i in 0..ONCE_PROBES_REMOTE {
        let key = ring.key(probe(seed, i, ring.size.max(1)));
        match ctx.get(&key)? {
            StoreResult::Value { value: Some(v), .. }
                if starts_with_h(&v, &h) && !reusable(Some(&v), now) =>
            {
                return Ok(true)
            }
            StoreResult::Value { .. } => {}
            _ => return Err(unavailable()),
        }
    }
    Ok(false)
}

impl<T> Record<T> {
    /// The same record (hash, expiry, used mark) with other data.
    pub fn with_data<U>(&self, data: U) -> Record<U> {
        Record {
            h: self.h.clone(),
            exp: self.exp,
            used: self.used,
            data,
        }
    }

    pub fn expires_at_ms(&self) -> u64 {
        self.exp
    }
    pub fn is_used(&self) -> bool {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_reject_garbage() {
        let h = Handle {
            slot: 77,
            secret: [9; 16],
        };
        let s = h.encode();
        assert_eq!(s.len(), 27);
        assert_eq!(Handle::decode(&s), Some(h.clone()));
        assert!(format!("{h:?}").contains("77") && !format!("{h:?}").contains("9, 9"));
        for bad in [
            "",
            "x",
            &s[..26],
            &format!("{s}A"),
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert_eq!(Handle::decode(bad), None, "{bad}");
        }
        assert!(h.matches(&h.secret_hash()));
        assert!(!Handle {
            slot: 77,
            secret: [8; 16]
        }
        .matches(&h.secret_hash()));
    }

    #[test]
    fn reusability() {
        assert!(reusable(None, 5));
        assert!(reusable(Some(b""), 5));
        assert!(reusable(Some(br#"{"exp":5}"#), 5));
        assert!(!reusable(Some(br#"{"exp":6}"#), 5));
        assert!(reusable(Some(b"garbage"), 5));
    }
}
