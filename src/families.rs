//! Refresh token families: the rotation state of every grant that has refresh tokens, kept for
//! the family's whole lifetime (`lifetimes.refresh_token`, 24 h by default).
//!
//! Why buckets: a family lives a day, so the ring holds logins/s × 86,400 of them (20 logins/s:
//! 1.7 M). One record per slot, as the short-lived rings keep, would need that many keys of a
//! few hundred bytes of JSON each. Instead each of the ring's `refresh_family_slots` keys (65,536
//! by default, created at start like every ring's) is a bucket of up to [`BUCKET`] fixed 32-byte
//! binary entries, and a family goes into the emptier of its two buckets ("two choices", as the
//! replay cache does: [`crate::replay`]), which keeps the buckets within a few entries of each
//! other. Expired entries are dropped whenever a bucket is written. Every operation is two reads
//! and at most one CAS of a bucket, whatever the load; a CAS lost to a write of another family in
//! the same bucket is retried on the new value.
//!
//! An entry, big-endian, read with bounds-checked slices:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | tag: the first 8 bytes of SHA-256(family id) |
//! | 8..12 | `gen`, the newest refresh token generation |
//! | 12..16 | expiry, unix seconds (the family's absolute expiry) |
//! | 16..24 | `n`, the index of the newest access token issued from the family |
//! | 24..32 | when the family last rotated (ms, low 48 bits) and flags (high 16 bits) |
//!
//! Why these widths: `n` names the access tokens of the family (their `jti` is derived from it:
//! `grants::refresh_token::access_token_jti`), and a family recorded afresh (after a restart, or
//! at another Envoy) starts it at a random point so that its tokens cannot repeat a `jti` of the
//! tokens issued before; 64 random bits make that negligible, 32 would not (a few in 10^8 per
//! re-recorded family). The tag pays for it: 64 bits still make a false match negligible (a
//! lookup compares it with at most 2 × 48 live tags of random families: < 10^-17). The family
//! id is a secret the server drew (sealed inside the refresh token), so an unkeyed hash is
//! enough: nobody can choose ids that crowd one bucket.
//!
//! A bucket's value is a format byte ([`FORMAT`]) and the entries. Anything else (a value of an
//! older version, which kept one JSON record per slot) reads as an empty bucket: the families it
//! held are recorded afresh at their next refresh, as after a restart.
//!
//! In a remote store (etcd) keys cost nothing until used and expire with leases, so a family is
//! a keyed record of its own there ([`crate::store::find_keyed`]), with the same [`Family`] as
//! its data. Both backends sit behind [`find`], [`insert_new`], [`find_or_insert`] and
//! [`update`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Interrupt, StoreResult};
use crate::store::{self, Ring};

/// Entries per bucket. Two choices over 65,536 buckets holding 1.73 M live families (20 logins/s
/// for 24 h) give an average of 26.4 and a fullest bucket of 30 (tests/capacity.rs simulates
/// it). With 48, inserts keep succeeding up to about 42 live families per bucket on average
/// (32 logins/s for 24 h, 1.6 times that); the first fail near 45 (34/s).
pub const BUCKET: usize = 48;

/// Bytes per entry.
pub const ENTRY: usize = 32;

/// The first byte of a bucket's value: this layout.
pub const FORMAT: u8 = 1;

const ROTATED_MASK: u64 = (1 << 48) - 1;
const REVOKED: u64 = 1 << 48;
const TWICE_CURRENT: u64 = 1 << 49;
const TWICE_PREVIOUS: u64 = 1 << 50;

/// A family's rotation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The generation of the newest refresh token.
    pub gen: u32,
    /// The index of the newest access token issued from the family (0: the grant's first).
    pub n: u64,
    /// The family's absolute expiry, unix seconds (rotation never extends it).
    pub exp: u64,
    /// When the family last rotated, ms (the reuse interval counts from it).
    pub rotated_at: u64,
    pub revoked: bool,
    /// The reuse interval's grace handed out generation `gen` a second time.
    pub twice_current: bool,
    /// ... and generation `gen - 1`.
    pub twice_previous: bool,
}

impl Family {
    /// The same family with its newest generation moved to `gen` (not below the current one):
    /// the "handed out twice" marks keep naming the generations they were set for, so those
    /// that fall further behind than `gen - 1` are forgotten (no grace can reach them).
    pub fn at_gen(self, gen: u32) -> Family {
        let (twice_current, twice_previous) = match gen.checked_sub(self.gen) {
            Some(0) => (self.twice_current, self.twice_previous),
            Some(1) => (false, self.twice_current),
            _ => (false, false),
        };
        Family {
            gen,
            twice_current,
            twice_previous,
            ..self
        }
    }

    fn encode(&self, tag: &Tag) -> [u8; ENTRY] {
        let mut e = [0u8; ENTRY];
        let flags = if self.revoked { REVOKED } else { 0 }
            | if self.twice_current { TWICE_CURRENT } else { 0 }
            | if self.twice_previous {
                TWICE_PREVIOUS
            } else {
                0
            };
        let exp = u32::try_from(self.exp).unwrap_or(u32::MAX);
        for (dst, src) in e.iter_mut().zip(
            tag.iter()
                .chain(self.gen.to_be_bytes().iter())
                .chain(exp.to_be_bytes().iter())
                .chain(self.n.to_be_bytes().iter())
                .chain(
                    ((self.rotated_at & ROTATED_MASK) | flags)
                        .to_be_bytes()
                        .iter(),
                ),
        ) {
            *dst = *src;
        }
        e
    }

    fn decode(e: &[u8]) -> Option<Family> {
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(e.get(at..at + 4)?.try_into().ok()?))
        };
        let long = |at: usize| -> Option<u64> {
            Some(u64::from_be_bytes(e.get(at..at + 8)?.try_into().ok()?))
        };
        let last = long(24)?;
        Some(Family {
            gen: word(8)?,
            exp: u64::from(word(12)?),
            n: long(16)?,
            rotated_at: last & ROTATED_MASK,
            revoked: last & REVOKED != 0,
            twice_current: last & TWICE_CURRENT != 0,
            twice_previous: last & TWICE_PREVIOUS != 0,
        })
    }

    /// Of two entries for one family (two concurrent first inserts may land in both of its
    /// buckets), the one that counts: a revoked one, else the newest. Every reader picks the
    /// same one, and writes go to it.
    fn rank(&self) -> (bool, u32, u64) {
        (self.revoked, self.gen, self.n)
    }
}

type Tag = [u8; 8];

/// Where a family lives: its tag and its two buckets (distinct unless the ring has one slot).
pub fn place(size: u32, fam: &str) -> (Tag, [u32; 2]) {
    let d = Sha256::digest(fam.as_bytes());
    let mut tag = [0u8; 8];
    tag.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    let size = size.max(1);
    let word = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(d.get(i..i + 4).unwrap_or(&[0; 4]));
        u32::from_be_bytes(b) % size
    };
    let (a, mut b) = (word(8), word(12));
    if b == a {
        b = (a + 1) % size;
    }
    (tag, [a, b])
}

/// The entries of a bucket's value, live or not (nothing for a value of another format).
fn entries(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = match value.split_first() {
        Some((&FORMAT, rest)) => rest,
        _ => &[],
    };
    body.chunks_exact(ENTRY)
}

/// An entry is live until its expiry (seconds; `now_s` is the current second).
fn live(e: &[u8], now_s: u64) -> bool {
    e.get(12..16)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .is_some_and(|b| u64::from(u32::from_be_bytes(b)) > now_s)
}

/// Live entries in a bucket's value (for the ring fill estimate and the choice of bucket).
pub fn live_entries(value: &[u8], now_ms: u64) -> usize {
    let now_s = now_ms / 1000;
    entries(value).filter(|e| live(e, now_s)).count()
}

/// The live entry for `tag` in a bucket's value.
fn lookup(value: &[u8], tag: &Tag, now_s: u64) -> Option<Family> {
    entries(value)
        .filter(|e| e.get(..8) == Some(tag.as_slice()) && live(e, now_s))
        .filter_map(Family::decode)
        .max_by_key(Family::rank)
}

/// A bucket's value with `entry` as the entry for `tag`: other live entries kept, expired ones
/// (and any older entry for `tag`) dropped.
fn rewrite(value: &[u8], now_s: u64, tag: &Tag, entry: &[u8; ENTRY]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len().max(1) + ENTRY);
    out.push(FORMAT);
    for e in entries(value) {
        if live(e, now_s) && e.get(..8) != Some(tag.as_slice()) {
            out.extend_from_slice(e);
        }
    }
    out.extend_from_slice(entry);
    out
}

/// A found family: its state and where it was read (to write it back by CAS).
#[derive(Debug)]
pub struct Found {
    pub family: Family,
    at: At,
}

#[derive(Debug)]
enum At {
    Bucket {
        key: String,
        cas: u64,
        value: Vec<u8>,
        tag: Tag,
    },
    Remote(store::Found<Stored>),
}

/// A family as a keyed record's data in a remote store. `grace` keeps the older records'
/// meaning (the newest generation handed out twice), which the two marks of [`Family`] encode
/// exactly: the reuse interval only ever asks about `gen` and `gen - 1`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Stored {
    gen: u32,
    #[serde(default)]
    revoked: bool,
    rotated_at: u64,
    #[serde(default)]
    n: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grace: Option<u32>,
}

impl Stored {
    fn of(f: &Family) -> Stored {
        let grace = if f.twice_current {
            Some(f.gen)
        } else if f.twice_previous {
            f.gen.checked_sub(1)
        } else {
            None
        };
        Stored {
            gen: f.gen,
            revoked: f.revoked,
            rotated_at: f.rotated_at,
            n: f.n,
            grace,
        }
    }

    fn family(&self, exp_ms: u64) -> Family {
        Family {
            gen: self.gen,
            n: self.n,
            exp: exp_ms / 1000,
            rotated_at: self.rotated_at,
            revoked: self.revoked,
            twice_current: self.grace == Some(self.gen),
            twice_previous: self
                .gen
                .checked_sub(1)
                .is_some_and(|p| self.grace == Some(p)),
        }
    }
}

fn unavailable() -> Interrupt {
    Interrupt::Error(OAuthError::server_error(
        "the authorization server cannot store state",
    ))
}

fn busy() -> Interrupt {
    // Both buckets full of live families: sizing prevents it (docs/design.md, "State and its limits").
    Interrupt::Error(OAuthError::server_error(
        "the authorization server is busy, try again",
    ))
}

/// A bucket's value (empty if never written) and version.
fn read(ctx: &mut Ctx<'_>, key: &str) -> FlowResult<(Vec<u8>, u64)> {
    match ctx.get(key)? {
        StoreResult::Value { value, cas } => Ok((value.unwrap_or_default(), cas)),
        _ => Err(unavailable()),
    }
}

fn found_remote(f: store::Found<Stored>) -> Found {
    Found {
        family: f.record.data.family(f.record.expires_at_ms()),
        at: At::Remote(f),
    }
}

/// The live family `fam`, if this store knows it.
pub fn find(ctx: &mut Ctx<'_>, ring: Ring, fam: &str) -> FlowResult<Option<Found>> {
    if ring.remote {
        return Ok(store::find_keyed::<Stored>(ctx, ring, fam)?.map(found_remote));
    }
    let (tag, slots) = place(ring.size, fam);
    let now_s = ctx.now.unix_ms / 1000;
    let mut best: Option<Found> = None;
    // Both buckets, always: two racing first inserts may have put the family in each.
    for slot in slots {
        let key = ring.key(slot);
        let (value, cas) = read(ctx, &key)?;
        if let Some(family) = lookup(&value, &tag, now_s) {
            if best
                .as_ref()
                .is_none_or(|b| family.rank() > b.family.rank())
            {
                best = Some(Found {
                    family,
                    at: At::Bucket {
                        key,
                        cas,
                        value,
                        tag,
                    },
                });
            }
        }
    }
    Ok(best)
}

/// Records a family whose id was just drawn at random (a new grant). A record can only exist
/// already if a concurrent replay of the grant's code revoked it first (RFC 6749 §4.1.2): the
/// grant is dead, and this says so.
pub fn insert_new(ctx: &mut Ctx<'_>, ring: Ring, fam: &str, family: &Family) -> FlowResult<()> {
    let dead = || {
        Interrupt::Error(OAuthError::invalid_grant(
            "the authorization grant was revoked while its tokens were issued",
        ))
    };
    if ring.remote {
        let ttl = remote_ttl(ctx, family);
        store::insert_new_keyed(ctx, ring, fam, ttl, &Stored::of(family))?;
        return Ok(());
    }
    match insert_local(ctx, ring, fam, family)? {
        None => Ok(()),
        Some(_) => Err(dead()),
    }
}

/// Creates the record of a family whose id a sealed authorization code carried
/// ([`crate::sealed_code`]): in a remote store the record is the code's used mark, created in
/// one round trip (create-only at the first slot of its probe sequence). `None` when this call
/// created it; the record found when one exists (the code was redeemed before). The record
/// lives at least until `until_ms` (the code's expiry), so a replay always finds it.
pub fn create_or_find(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    fam: &str,
    family: &Family,
    until_ms: u64,
) -> FlowResult<Option<Found>> {
    if !ring.remote {
        return find_or_insert(ctx, ring, fam, family);
    }
    let ttl = remote_ttl(ctx, family).max(until_ms.saturating_sub(ctx.now.unix_ms));
    let (_, rec) = store::new_keyed(ctx, ring, fam, ttl, &Stored::of(family))?;
    match ctx.cas(&rec.key, rec.value, crate::flow::ABSENT, rec.exp)? {
        StoreResult::Written => Ok(None),
        // The first slot is taken: by this family (a replay), or by another one (about one
        // in 2^32 per live family), when this one goes to the next slot.
        StoreResult::Conflict => find_or_insert(ctx, ring, fam, family),
        _ => Err(unavailable()),
    }
}

/// The live family `fam`, or `family` recorded as it: `None` when this call recorded it.
pub fn find_or_insert(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    fam: &str,
    family: &Family,
) -> FlowResult<Option<Found>> {
    if ring.remote {
        let ttl = remote_ttl(ctx, family);
        return Ok(
            match store::find_or_insert_keyed(ctx, ring, fam, ttl, &Stored::of(family))? {
                Ok(_) => None,
                Err(found) => Some(found_remote(found)),
            },
        );
    }
    insert_local(ctx, ring, fam, family)
}

fn remote_ttl(ctx: &Ctx<'_>, family: &Family) -> u64 {
    family
        .exp
        .saturating_mul(1000)
        .saturating_sub(ctx.now.unix_ms)
        .max(1)
}

/// Into the emptier of the family's buckets, unless either already holds it (returned then).
fn insert_local(
    ctx: &mut Ctx<'_>,
    ring: Ring,
    fam: &str,
    family: &Family,
) -> FlowResult<Option<Found>> {
    let (tag, slots) = place(ring.size, fam);
    let entry = family.encode(&tag);
    let now_s = ctx.now.unix_ms / 1000;
    // A lost CAS (another family written into the bucket meanwhile) reads both again.
    for _ in 0..4 {
        let mut read_both = Vec::with_capacity(2);
        let mut existing: Option<Found> = None;
        for slot in slots {
            let key = ring.key(slot);
            let (value, cas) = read(ctx, &key)?;
            if let Some(f) = lookup(&value, &tag, now_s) {
                if existing.as_ref().is_none_or(|b| f.rank() > b.family.rank()) {
                    existing = Some(Found {
                        family: f,
                        at: At::Bucket {
                            key: key.clone(),
                            cas,
                            value: value.clone(),
                            tag,
                        },
                    });
                }
            }
            read_both.push((key, value, cas));
        }
        if existing.is_some() {
            return Ok(existing);
        }
        // A key never created (version 0) cannot be CAS-written: no room there.
        let load = |i: usize| {
            read_both
                .get(i)
                .filter(|(_, _, cas)| *cas != 0)
                .map_or(BUCKET, |(_, v, _)| live_entries_s(v, now_s))
        };
        let Some((key, value, cas)) =
            choose([load(0), load(1)]).and_then(|i| read_both.into_iter().nth(i))
        else {
            return Err(busy());
        };
        let exp_ms = family.exp.saturating_mul(1000);
        match ctx.cas(&key, rewrite(&value, now_s, &tag, &entry), cas, exp_ms)? {
            StoreResult::Written => return Ok(None),
            StoreResult::Conflict => continue,
            _ => return Err(unavailable()),
        }
    }
    Err(unavailable())
}

/// Which of a family's two buckets, holding `live` live entries, a new entry goes into: the
/// emptier (the first on a tie), if it has room. `None`: both are full.
pub fn choose(live: [usize; 2]) -> Option<usize> {
    let [a, b] = live;
    if a.min(b) >= BUCKET {
        None
    } else if b < a {
        Some(1)
    } else {
        Some(0)
    }
}

fn live_entries_s(value: &[u8], now_s: u64) -> usize {
    entries(value).filter(|e| live(e, now_s)).count()
}

/// Writes `next` over a found family. `Ok(false)` if the family changed since it was read (a
/// concurrent rotation or revocation: the caller reads it again); a change to another family
/// of the same bucket is not one, and the write is retried on the bucket's new value.
pub fn update(ctx: &mut Ctx<'_>, ring: Ring, found: &Found, next: &Family) -> FlowResult<bool> {
    let (key, cas, value, tag) = match &found.at {
        At::Remote(f) => return store::update_keyed(ctx, ring, f, &Stored::of(next)),
        At::Bucket {
            key,
            cas,
            value,
            tag,
        } => (key, *cas, value, tag),
    };
    let now_s = ctx.now.unix_ms / 1000;
    let entry = next.encode(tag);
    let (mut value, mut cas) = (value.clone(), cas);
    for _ in 0..4 {
        if lookup(&value, tag, now_s) != Some(found.family) {
            return Ok(false);
        }
        let exp_ms = next.exp.saturating_mul(1000);
        match ctx.cas(key, rewrite(&value, now_s, tag, &entry), cas, exp_ms)? {
            StoreResult::Written => return Ok(true),
            StoreResult::Conflict => (value, cas) = read(ctx, key)?,
            _ => return Err(unavailable()),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Journal, Local, Lookup, Now, StoreOp, SyncStore};
    use crate::random::SystemRandom;
    use std::collections::HashMap;

    /// Shared data with proxy-wasm's CAS semantics, every ring key created.
    #[derive(Default)]
    struct Store {
        map: HashMap<String, (Vec<u8>, u64)>,
        version: u64,
    }

    impl SyncStore for Store {
        fn run(&mut self, op: &StoreOp) -> StoreResult {
            match op {
                StoreOp::Get { key } => {
                    let (v, cas) = self.map.get(key).cloned().unwrap_or_default();
                    StoreResult::Value {
                        value: Some(v),
                        cas,
                    }
                }
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
        name: "rtf",
        size: 16,
        remote: false,
    };
    const NOW_S: u64 = 1_000;

    fn store() -> Store {
        let mut s = Store::default();
        for key in RING.keys() {
            s.version += 1;
            s.map.insert(key, (Vec::new(), s.version));
        }
        s
    }

    fn with<T>(s: &mut Store, f: impl FnOnce(&mut Ctx<'_>) -> FlowResult<T>) -> FlowResult<T> {
        let (mut rng, mut journal, local) = (SystemRandom, Journal::default(), NoLocal);
        let now = Now {
            unix_ms: NOW_S * 1000,
        };
        let mut ctx = Ctx::new(now, &mut rng, &mut journal, &local).with_store(s);
        f(&mut ctx)
    }

    /// Puts `f` for `id` straight into one of its buckets (`which`), as a racing insert may.
    fn put(s: &mut Store, id: &str, which: usize, f: &Family) {
        let (tag, slots) = place(RING.size, id);
        let key = RING.key(slots[which]);
        let (old, _) = s.map.get(&key).cloned().unwrap_or_default();
        s.version += 1;
        let v = rewrite(&old, NOW_S, &tag, &f.encode(&tag));
        s.map.insert(key, (v, s.version));
    }

    #[test]
    fn a_family_in_both_buckets_reads_as_its_revoked_or_newest_entry() {
        let mut s = store();
        put(&mut s, "a", 0, &fam(3));
        put(&mut s, "a", 1, &fam(5));
        let found = with(&mut s, |ctx| find(ctx, RING, "a")).unwrap().unwrap();
        assert_eq!(found.family.gen, 5);
        // A tombstone (a replayed code's revocation) wins over the grant's own entry.
        let tombstone = Family {
            revoked: true,
            ..fam(0)
        };
        put(&mut s, "a", 0, &tombstone);
        let found = with(&mut s, |ctx| find(ctx, RING, "a")).unwrap().unwrap();
        assert!(found.family.revoked);
        // Inserting it again finds it; a new grant with this id is refused.
        let again = with(&mut s, |ctx| find_or_insert(ctx, RING, "a", &fam(0))).unwrap();
        assert!(again.is_some_and(|f| f.family.revoked));
        let Err(Interrupt::Error(e)) = with(&mut s, |ctx| insert_new(ctx, RING, "a", &fam(0)))
        else {
            panic!("a revoked family cannot be started again");
        };
        assert_eq!(e.code, crate::error::ErrorCode::InvalidGrant);
    }

    #[test]
    fn an_update_survives_other_families_writes_but_not_its_own_familys() {
        let mut s = store();
        with(&mut s, |ctx| insert_new(ctx, RING, "x", &fam(0))).unwrap();
        let found = with(&mut s, |ctx| find(ctx, RING, "x")).unwrap().unwrap();
        // Other families written into both of x's buckets since it was read.
        let (_, [a, b]) = place(RING.size, "x");
        let mut others = Vec::new();
        for i in 0..200 {
            let id = format!("other{i}");
            let (_, slots) = place(RING.size, &id);
            if slots.contains(&a) || slots.contains(&b) {
                put(&mut s, &id, usize::from(!slots.contains(&a)), &fam(9));
                others.push(id);
            }
        }
        assert!(others.len() > 10);
        let next = fam(0).at_gen(1);
        assert!(with(&mut s, |ctx| update(ctx, RING, &found, &next)).unwrap());
        let now = with(&mut s, |ctx| find(ctx, RING, "x")).unwrap().unwrap();
        assert_eq!(now.family, next);
        // The stale read of x again: x itself changed, the caller must read it again.
        assert!(!with(&mut s, |ctx| update(ctx, RING, &found, &fam(0).at_gen(2))).unwrap());
        // Every other family is intact.
        for id in &others {
            let other = with(&mut s, |ctx| find(ctx, RING, id)).unwrap().unwrap();
            assert_eq!(other.family, fam(9), "{id}");
        }
    }

    #[test]
    fn full_buckets_refuse_cleanly_and_expired_entries_make_room() {
        let mut s = store();
        let mut refused = 0;
        for i in 0..RING.size as usize * BUCKET + 20 {
            match with(&mut s, |ctx| {
                insert_new(ctx, RING, &format!("f{i}"), &fam(0))
            }) {
                Ok(()) => {}
                Err(Interrupt::Error(e)) => {
                    assert_eq!(e.code, crate::error::ErrorCode::ServerError);
                    refused += 1;
                }
                Err(_) => panic!("no other interruption"),
            }
        }
        assert!(refused >= 20);
        // Past their expiry (second 2,000), the entries are dropped on the next write.
        let later = Family {
            exp: 5_000,
            ..fam(0)
        };
        let (mut rng, mut journal, local) = (SystemRandom, Journal::default(), NoLocal);
        let mut ctx =
            Ctx::new(Now { unix_ms: 2_000_000 }, &mut rng, &mut journal, &local).with_store(&mut s);
        insert_new(&mut ctx, RING, "late", &later).unwrap();
        let (_, [a, b]) = place(RING.size, "late");
        let sizes: Vec<usize> = [a, b]
            .iter()
            .map(|x| s.map.get(&RING.key(*x)).map_or(0, |(v, _)| v.len()))
            .collect();
        assert!(sizes.contains(&(1 + ENTRY)), "{sizes:?}");
    }

    fn fam(gen: u32) -> Family {
        Family {
            gen,
            n: 7,
            exp: 2_000,
            rotated_at: 1_234_567,
            revoked: false,
            twice_current: false,
            twice_previous: true,
        }
    }

    #[test]
    fn entries_round_trip() {
        let f = Family {
            gen: u32::MAX,
            n: u64::MAX,
            exp: 4_000_000_000,
            rotated_at: ROTATED_MASK,
            revoked: true,
            twice_current: true,
            twice_previous: true,
        };
        let tag = [7u8; 8];
        let e = f.encode(&tag);
        assert_eq!(Family::decode(&e), Some(f));
        assert_eq!(&e[..8], &tag);
        assert_eq!(Family::decode(&e[..31]), None);
        let g = fam(3);
        assert_eq!(Family::decode(&g.encode(&tag)), Some(g));
    }

    #[test]
    fn buckets_drop_expired_entries_and_ignore_other_formats() {
        let (a, b) = ([1u8; 8], [2u8; 8]);
        let mut early = fam(0);
        early.exp = 10;
        let v = rewrite(&[], 5, &a, &early.encode(&a));
        let v = rewrite(&v, 5, &b, &fam(1).encode(&b));
        assert_eq!(v.len(), 1 + 2 * ENTRY);
        assert_eq!(live_entries(&v, 9_999), 2);
        assert_eq!(live_entries(&v, 10_000), 1);
        assert_eq!(lookup(&v, &a, 9), Some(early));
        assert_eq!(lookup(&v, &a, 10), None);
        // A write at second 10 drops a's entry.
        let v = rewrite(&v, 10, &b, &fam(2).encode(&b));
        assert_eq!(v.len(), 1 + ENTRY);
        assert_eq!(lookup(&v, &b, 10).map(|f| f.gen), Some(2));
        // An older version's JSON record, a truncated tail, garbage: no entries.
        assert_eq!(live_entries(br#"{"h":"x","exp":99999999999999}"#, 0), 0);
        let mut cut = v.clone();
        cut.pop();
        assert_eq!(live_entries(&cut, 0), 0);
        assert_eq!(live_entries(&[], 0), 0);
    }

    #[test]
    fn the_twice_marks_follow_their_generations() {
        let f = Family {
            twice_current: true,
            twice_previous: false,
            ..fam(4)
        };
        assert_eq!(f.at_gen(4), f);
        let g = f.at_gen(5);
        assert!(!g.twice_current && g.twice_previous && g.gen == 5);
        let h = g.at_gen(6);
        assert!(!h.twice_current && !h.twice_previous);
        let far = f.at_gen(9);
        assert!(!far.twice_current && !far.twice_previous);
    }

    #[test]
    fn the_remote_form_keeps_the_grace_generation() {
        for (cur, prev) in [(false, false), (true, false), (false, true), (true, true)] {
            let f = Family {
                twice_current: cur,
                twice_previous: prev,
                ..fam(4)
            };
            let back = Stored::of(&f).family(2_000_000);
            // Both marks set means: the newest handed out twice is `gen` (the grace is closed
            // either way, and stays closed one generation more).
            assert_eq!(back.twice_current, cur);
            assert_eq!(back.twice_previous, prev && !cur);
            assert_eq!(back.at_gen(5).twice_previous, cur);
        }
        // Records written before `n` and the marks existed.
        let old: Stored = serde_json::from_str(
            r#"{"fam":"x","gen":3,"revoked":false,"rotated_at":5,"cid":"web","ats":[["j",9]],"grace":2}"#,
        )
        .unwrap();
        let f = old.family(7_000);
        assert_eq!((f.gen, f.n, f.exp, f.twice_previous), (3, 0, 7, true));
    }

    #[test]
    fn the_emptier_bucket_with_room() {
        assert_eq!(choose([3, 3]), Some(0));
        assert_eq!(choose([4, 3]), Some(1));
        assert_eq!(choose([BUCKET, BUCKET - 1]), Some(1));
        assert_eq!(choose([BUCKET - 1, BUCKET]), Some(0));
        assert_eq!(choose([BUCKET, BUCKET]), None);
    }

    #[test]
    fn two_distinct_buckets() {
        for i in 0..200 {
            let (_, [a, b]) = place(16, &format!("fam{i}"));
            assert_ne!(a, b);
            assert!(a < 16 && b < 16);
        }
        assert_eq!(place(1, "x").1, [0, 0]);
    }
}
