//! ES256 signature verification (ECDSA over P-256 with SHA-256, RFC 7518 §3.4), shaped for
//! Envoy's V8: DPoP proofs and `private_key_jwt` assertions are verified here.
//!
//! What it accepts is exactly what p256 0.14's `VerifyingKey::verify` accepts (the tests hold it
//! to that on the Wycheproof vectors and on random inputs, and `fuzz/fuzz_targets/es256.rs`
//! compares the two on arbitrary ones): a 64-byte `r ‖ s`, `0 < r, s < n` (high `s` is accepted:
//! P-256 ECDSA is not normalised, as with p256), `z` the SHA-256 of the message reduced mod `n`,
//! and `x(z·s⁻¹·G + r·s⁻¹·Q) ≡ r (mod n)` with the sum not the point at infinity. Keys are
//! validated by p256 when a JWK is read (on the curve, coordinates below `p`).
//!
//! Only public data goes in (key, message, signature), so the arithmetic is variable-time:
//! - the sum is one Straus (interleaved) multi-scalar multiplication with width-w NAF digits;
//! - each scalar is cut into [`BLOCKS`] blocks of [`BLOCK_BITS`] bits and each base comes with
//!   its multiples by `2^(32·j)`, so the whole sum needs 32 doublings instead of 256;
//! - the generator's table (odd multiples of each `2^(32·j)·G`, affine) is built once per VM;
//!   a key's table (the same, narrower window) is built the first time the key is seen and kept
//!   in a bounded per-worker LRU cache ([`CACHE_KEYS`] keys), so a client's DPoP or assertion key
//!   pays for it once; each block's odd multiples are a co-Z chain (5M + 2S an addition);
//! - points are Jacobian with the a = −3 doubling and mixed (Jacobian + affine) addition of the
//!   Explicit-Formulas Database, cheaper than p256's complete formulas; the rare cases those
//!   formulas exclude (doubling inside an addition, the point at infinity) are checked;
//! - the final `x ≡ r` test is done projectively (`X = r·Z²`, or `(r + n)·Z²`), without an
//!   inversion.
//!
//! The field arithmetic is this module's own (`field.rs`: nine 29-bit limbs, so that every limb
//! product is one native `i64.mul` in wasm, and a Montgomery reduction P-256 makes free of
//! multiplications), checked against p256's field. Scalars (mod n) are p256's. Signing is
//! `sign.rs` (constant time, p256's signatures byte for byte).

mod drbg;
pub mod field;
pub mod sign;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Neg;
use std::rc::Rc;
use std::sync::OnceLock;

use p256::elliptic_curve::ff::{Field, PrimeField};
use sha2::{Digest, Sha256};

use field::Fe;
type Scalar = p256::Scalar;

/// Blocks each scalar is cut into; the multiplication needs `BLOCK_BITS` doublings.
pub const BLOCKS: usize = 8;
pub const BLOCK_BITS: usize = 256 / BLOCKS;
/// NAF width for a key: digits odd in (−2^(W−1), 2^(W−1)), 2^(W−2) odd multiples per block.
const W_KEY: u32 = 4;
/// NAF width for the generator (a larger table, built once per VM).
const W_GEN: u32 = 7;
/// Keys whose tables a worker keeps (about 4.6 KiB each: at most about 600 KB per worker).
pub const CACHE_KEYS: usize = 128;

/// The group order n, big-endian.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// p − n: an `x` coordinate reduced mod n can be `r + n` only when `r < p − n`.
const P_MINUS_N: [u8; 32] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x43, 0x19, 0x05, 0x53, 0x58, 0xe8, 0x61, 0x7b,
    0x0c, 0x46, 0x35, 0x3d, 0x03, 0x9c, 0xda, 0xae,
];
/// The generator (NIST SP 800-186 §G.1.2).
const GX: [u8; 32] = [
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2,
    0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
];
const GY: [u8; 32] = [
    0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16,
    0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
];

fn fe(bytes: &[u8; 32]) -> Option<Fe> {
    Fe::from_be_bytes(bytes)
}

fn is_zero(a: &Fe) -> bool {
    a.is_zero()
}

fn eq(a: &Fe, b: &Fe) -> bool {
    a == b
}

/// An affine point (never the point at infinity here).
#[derive(Clone, Copy, Debug)]
struct Affine {
    x: Fe,
    y: Fe,
}

impl Neg for Affine {
    type Output = Affine;
    fn neg(self) -> Affine {
        Affine {
            x: self.x,
            y: -self.y,
        }
    }
}

/// Jacobian coordinates: x = X/Z², y = Y/Z³; Z = 0 is the point at infinity.
#[derive(Clone, Copy, Debug)]
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Jacobian {
    const INFINITY: Jacobian = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };

    fn from_affine(p: &Affine) -> Jacobian {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        }
    }

    fn is_infinity(&self) -> bool {
        is_zero(&self.z)
    }

    /// dbl-2001-b (a = −3): 3M + 5S. P-256 has no point of order 2, so this is complete.
    fn double(&self) -> Jacobian {
        self.double_co_z().0
    }

    /// [`Jacobian::double`], and this point rescaled to the double's Z: Z₃ = 2YZ, so the point
    /// is also (4XY², 8Y⁴, Z₃), both already computed. The start of a co-Z chain.
    fn double_co_z(&self) -> (Jacobian, Jacobian) {
        if self.is_infinity() {
            return (*self, *self);
        }
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x * gamma;
        let t = (self.x - delta) * (self.x + delta);
        let alpha = t.double() + t;
        let beta4 = beta.double().double();
        let x3 = alpha.square() - beta4.double();
        let z3 = (self.y + self.z).square() - gamma - delta;
        let gamma8 = gamma.square().double().double().double();
        let y3 = alpha * (beta4 - x3) - gamma8;
        (
            Jacobian {
                x: x3,
                y: y3,
                z: z3,
            },
            Jacobian {
                x: beta4,
                y: gamma8,
                z: z3,
            },
        )
    }

    /// Co-Z addition with update (Meloni 2007), for points with the same Z: self + q, and
    /// self rescaled to the sum's Z, in 5M + 2S (add-2007-bl takes 11M + 5S). `None` when the
    /// x's are equal (self = ±q), which the general formulas handle.
    fn add_co_z(&self, q: &Jacobian) -> Option<(Jacobian, Jacobian)> {
        let dx = q.x - self.x;
        if is_zero(&dx) {
            return None;
        }
        let dy = q.y - self.y;
        let a = dx.square();
        let b = self.x * a;
        let c = q.x * a;
        let x3 = dy.square() - b - c;
        let e = self.y * (c - b);
        let y3 = dy * (b - x3) - e;
        let z3 = self.z * dx;
        Some((
            Jacobian {
                x: x3,
                y: y3,
                z: z3,
            },
            Jacobian { x: b, y: e, z: z3 },
        ))
    }

    /// madd-2007-bl: 7M + 4S; the cases it excludes (self at infinity, self = ±q) are handled.
    fn add_affine(&self, q: &Affine) -> Jacobian {
        if self.is_infinity() {
            return Jacobian::from_affine(q);
        }
        let z1z1 = self.z.square();
        let u2 = q.x * z1z1;
        let s2 = q.y * self.z * z1z1;
        let h = u2 - self.x;
        let r = (s2 - self.y).double();
        if is_zero(&h) {
            return if is_zero(&r) {
                self.double()
            } else {
                Jacobian::INFINITY
            };
        }
        let hh = h.square();
        let i = hh.double().double();
        let j = h * i;
        let v = self.x * i;
        let x3 = r.square() - j - v.double();
        let y3 = r * (v - x3) - (self.y * j).double();
        let z3 = (self.z + h).square() - z1z1 - hh;
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// add-2007-bl: 11M + 5S, with its excluded cases handled (tables only).
    fn add(&self, q: &Jacobian) -> Jacobian {
        if self.is_infinity() {
            return *q;
        }
        if q.is_infinity() {
            return *self;
        }
        let z1z1 = self.z.square();
        let z2z2 = q.z.square();
        let u1 = self.x * z2z2;
        let u2 = q.x * z1z1;
        let s1 = self.y * q.z * z2z2;
        let s2 = q.y * self.z * z1z1;
        let h = u2 - u1;
        let r = (s2 - s1).double();
        if is_zero(&h) {
            return if is_zero(&r) {
                self.double()
            } else {
                Jacobian::INFINITY
            };
        }
        let i = h.double().square();
        let j = h * i;
        let v = u1 * i;
        let x3 = r.square() - j - v.double();
        let y3 = r * (v - x3) - (s1 * j).double();
        let z3 = ((self.z + q.z).square() - z1z1 - z2z2) * h;
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }
}

/// Affine forms of points none of which is at infinity (one inversion for all: Montgomery's
/// trick). `None` if one is.
fn normalize(points: &[Jacobian]) -> Option<Vec<Affine>> {
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = Fe::ONE;
    for p in points {
        prefix.push(acc);
        acc = acc * p.z;
    }
    let mut inv = acc.invert()?;
    let mut out = vec![
        Affine {
            x: Fe::ZERO,
            y: Fe::ZERO
        };
        points.len()
    ];
    for ((p, before), slot) in points.iter().zip(prefix).zip(out.iter_mut()).rev() {
        let zinv = inv * before;
        inv = inv * p.z;
        let zinv2 = zinv.square();
        *slot = Affine {
            x: p.x * zinv2,
            y: p.y * zinv2 * zinv,
        };
    }
    Some(out)
}

/// For each block j, the odd multiples 1, 3, …, 2^(w−1) − 1 of 2^(32·j)·P, affine, block after
/// block.
///
/// The odd multiples are a co-Z chain (Longa and Miri's precomputation): 2B and B share a Z
/// after the doubling, and each co-Z addition gives the next multiple and brings 2B to its Z,
/// at 5M + 2S instead of 11M + 5S. That is most of what a key's first verification pays
/// besides its doublings.
fn table(p: &Affine, w: u32) -> Option<Vec<Affine>> {
    let odd = 1usize << (w - 2);
    let mut jac = Vec::with_capacity(BLOCKS * odd);
    let mut base = Jacobian::from_affine(p);
    for j in 0..BLOCKS {
        if j > 0 {
            for _ in 0..BLOCK_BITS {
                base = base.double();
            }
        }
        let (mut twice, mut m) = base.double_co_z();
        jac.push(m);
        for _ in 1..odd {
            // 2B = ±(2i − 1)·B would need B of order dividing 2i ± 1 ≤ 15: P-256's points
            // (but infinity) all have prime order n, so this never fails for a key on the curve.
            let (next, t) = twice.add_co_z(&m)?;
            m = next;
            twice = t;
            jac.push(m);
        }
    }
    normalize(&jac)
}

/// Width-w NAF of a scalar given big-endian: 257 digits, least significant first, each 0 or odd
/// with |d| < 2^(w−1).
fn wnaf(k: &[u8; 32], w: u32) -> [i8; 257] {
    // Little-endian 64-bit limbs, one spare for the carry of a negative digit.
    let mut limbs = [0u64; 5];
    for (limb, chunk) in limbs.iter_mut().zip(k.rchunks(8)) {
        let mut b = [0u8; 8];
        for (d, s) in b.iter_mut().zip(chunk) {
            *d = *s;
        }
        *limb = u64::from_be_bytes(b);
    }
    let width = 1i64 << w;
    let half = width >> 1;
    let mut out = [0i8; 257];
    for digit in out.iter_mut() {
        if limbs.iter().all(|l| *l == 0) {
            break;
        }
        let low = limbs.first().copied().unwrap_or(0);
        if low & 1 == 1 {
            let mut d = (low as i64) & (width - 1);
            if d >= half {
                d -= width;
            }
            *digit = d as i8;
            // limbs -= d (d odd, |d| < 2^(w−1)): the low w bits become 0.
            if d > 0 {
                sub_small(&mut limbs, d as u64);
            } else {
                add_small(&mut limbs, d.unsigned_abs());
            }
        }
        // limbs >>= 1
        let mut carry = 0u64;
        for l in limbs.iter_mut().rev() {
            let next = *l & 1;
            *l = (*l >> 1) | (carry << 63);
            carry = next;
        }
    }
    out
}

fn add_small(limbs: &mut [u64; 5], v: u64) {
    let mut carry = v;
    for l in limbs.iter_mut() {
        let (s, c) = l.overflowing_add(carry);
        *l = s;
        carry = u64::from(c);
        if carry == 0 {
            break;
        }
    }
}

fn sub_small(limbs: &mut [u64; 5], v: u64) {
    let mut borrow = v;
    for l in limbs.iter_mut() {
        let (s, b) = l.overflowing_sub(borrow);
        *l = s;
        borrow = u64::from(b);
        if borrow == 0 {
            break;
        }
    }
}

/// Adds the table entry for `digit` (odd, nonzero) of block `block`.
fn add_digit(acc: &mut Jacobian, table: &[Affine], odd: usize, block: usize, digit: i8) {
    let i = block * odd + usize::from(digit.unsigned_abs() >> 1);
    if let Some(p) = table.get(i) {
        *acc = if digit > 0 {
            acc.add_affine(p)
        } else {
            acc.add_affine(&-*p)
        };
    }
}

/// u1·G + u2·Q, from the tables of G and Q.
fn mul2(u1: &Scalar, u2: &Scalar, gen: &[Affine], key: &[Affine]) -> Jacobian {
    let d1 = wnaf(&u1.to_repr().into(), W_GEN);
    let d2 = wnaf(&u2.to_repr().into(), W_KEY);
    let (g_odd, k_odd) = (1usize << (W_GEN - 2), 1usize << (W_KEY - 2));
    let mut acc = Jacobian::INFINITY;
    // Block j holds digit positions 32j .. 32j + 31; the last block also position 256.
    for t in (0..=BLOCK_BITS).rev() {
        acc = acc.double();
        for j in 0..BLOCKS {
            if t == BLOCK_BITS && j + 1 != BLOCKS {
                continue;
            }
            let pos = j * BLOCK_BITS + t;
            if let Some(&d) = d1.get(pos) {
                if d != 0 {
                    add_digit(&mut acc, gen, g_odd, j, d);
                }
            }
            if let Some(&d) = d2.get(pos) {
                if d != 0 {
                    add_digit(&mut acc, key, k_odd, j, d);
                }
            }
        }
    }
    acc
}

/// The generator's table, built on first use (about a millisecond in V8: [`warm_up`] it at VM
/// start).
fn generator_table() -> &'static [Affine] {
    static TABLE: OnceLock<Vec<Affine>> = OnceLock::new();
    TABLE.get_or_init(|| {
        match (fe(&GX), fe(&GY)) {
            (Some(x), Some(y)) => table(&Affine { x, y }, W_GEN),
            _ => None,
        }
        .unwrap_or_default()
    })
}

/// Builds the generator's tables (verification and signing) now, so that no request pays for
/// them.
pub fn warm_up() {
    generator_table();
    sign::warm_up();
}

/// A P-256 public key ready for verification.
#[derive(Clone)]
pub struct PublicKey {
    /// x ‖ y, big-endian: the cache key.
    xy: [u8; 64],
    point: Affine,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("es256::PublicKey")
    }
}

impl PublicKey {
    /// From a key p256 has validated (on the curve, not the identity).
    pub fn new(vk: &p256::ecdsa::VerifyingKey) -> Option<PublicKey> {
        let sec1 = vk.to_sec1_point(false);
        let x: [u8; 32] = sec1.x()?.as_slice().try_into().ok()?;
        let y: [u8; 32] = sec1.y()?.as_slice().try_into().ok()?;
        let mut xy = [0u8; 64];
        for (d, s) in xy.iter_mut().zip(x.iter().chain(y.iter())) {
            *d = *s;
        }
        Some(PublicKey {
            xy,
            point: Affine {
                x: fe(&x)?,
                y: fe(&y)?,
            },
        })
    }

    /// The key as SEC1 uncompressed coordinates x ‖ y.
    pub fn xy(&self) -> &[u8; 64] {
        &self.xy
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.xy == other.xy
    }
}

struct Cache {
    tables: HashMap<[u8; 64], (Rc<Vec<Affine>>, u64)>,
    clock: u64,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache { tables: HashMap::new(), clock: 0 });
}

/// The key's table: from the worker's cache, or built and cached (evicting the least recently
/// used key when the cache is full).
fn key_table(key: &PublicKey) -> Option<Rc<Vec<Affine>>> {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.clock += 1;
        let now = c.clock;
        if let Some((t, used)) = c.tables.get_mut(&key.xy) {
            *used = now;
            return Some(t.clone());
        }
        let t = Rc::new(table(&key.point, W_KEY)?);
        if c.tables.len() >= CACHE_KEYS {
            let oldest = c
                .tables
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                c.tables.remove(&k);
            }
        }
        c.tables.insert(key.xy, (t.clone(), now));
        Some(t)
    })
}

/// Empties this worker's key cache (benchmarks and tests).
pub fn clear_cache() {
    CACHE.with(|c| c.borrow_mut().tables.clear());
}

/// Keys in this worker's cache.
pub fn cached_keys() -> usize {
    CACHE.with(|c| c.borrow().tables.len())
}

fn scalar(bytes: &[u8]) -> Option<Scalar> {
    let b: [u8; 32] = bytes.try_into().ok()?;
    let s = Scalar::from_repr(b.into()).into_option()?;
    (!bool::from(s.is_zero())).then_some(s)
}

/// a < b, both big-endian.
fn less(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a < b
}

/// a + b, big-endian, wrapping (callers ensure it does not overflow).
fn add_be(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for ((o, x), y) in out.iter_mut().zip(a).zip(b).rev() {
        let s = u16::from(*x) + u16::from(*y) + carry;
        *o = s as u8;
        carry = s >> 8;
    }
    out
}

/// The SHA-256 of the message as a scalar: the digest mod n (it is below 2n).
fn digest_scalar(msg: &[u8]) -> Option<Scalar> {
    let d: [u8; 32] = Sha256::digest(msg).into();
    let d = if less(&d, &N) {
        d
    } else {
        // d − n = d + (2^256 − n), wrapping.
        let mut neg_n = [0u8; 32];
        let mut borrow = 0i16;
        for (o, x) in neg_n.iter_mut().zip(N.iter()).rev() {
            let v = -i16::from(*x) - borrow;
            *o = v.rem_euclid(256) as u8;
            borrow = i16::from(v < 0);
        }
        add_be(&d, &neg_n)
    };
    Scalar::from_repr(d.into()).into_option()
}

/// Verifies a JWS ES256 signature (`r ‖ s`, 64 bytes) of `msg` with `key`.
pub fn verify(key: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    verify_inner(key, msg, sig).unwrap_or(false)
}

fn verify_inner(key: &PublicKey, msg: &[u8], sig: &[u8]) -> Option<bool> {
    if sig.len() != 64 {
        return Some(false);
    }
    let (r_bytes, s_bytes) = sig.split_at(32);
    let r = scalar(r_bytes)?;
    let s = scalar(s_bytes)?;
    let z = digest_scalar(msg)?;
    let s_inv = s.invert_vartime().into_option()?;
    let u1 = z * s_inv;
    let u2 = r * s_inv;
    let key_table = key_table(key)?;
    let sum = mul2(&u1, &u2, generator_table(), &key_table);
    if sum.is_infinity() {
        return Some(false);
    }
    // x = X / Z² ≡ r (mod n): x = r, or x = r + n when that is below p.
    let z2 = sum.z.square();
    let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
    if eq(&sum.x, &(fe(&r_bytes)? * z2)) {
        return Some(true);
    }
    if less(&r_bytes, &P_MINUS_N) {
        let r_plus_n = add_be(&r_bytes, &N);
        return Some(eq(&sum.x, &(fe(&r_plus_n)? * z2)));
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::elliptic_curve::group::Group;

    fn rng_bytes<const L: usize>(seed: &mut u64) -> [u8; L] {
        // xorshift: reproducible, no dependency.
        let mut out = [0u8; L];
        for b in out.iter_mut() {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *b = *seed as u8;
        }
        out
    }

    fn reference(vk: &p256::ecdsa::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        sig.len() == 64
            && p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
    }

    fn affine_of(p: &p256::ProjectivePoint) -> Affine {
        let vk = p256::ecdsa::VerifyingKey::from_affine(p.to_affine()).unwrap();
        PublicKey::new(&vk).unwrap().point
    }

    fn same(a: &Jacobian, b: &p256::ProjectivePoint) -> bool {
        if a.is_infinity() {
            return bool::from(b.is_identity());
        }
        let n = normalize(&[*a]).unwrap();
        let e = affine_of(b);
        eq(&n[0].x, &e.x) && eq(&n[0].y, &e.y)
    }

    #[test]
    fn generator_constants_are_p256s() {
        let g = affine_of(&p256::ProjectivePoint::generator());
        assert!(eq(&g.x, &fe(&GX).unwrap()) && eq(&g.y, &fe(&GY).unwrap()));
        let n_minus_1 = -Scalar::ONE;
        let mut n = n_minus_1.to_repr();
        n[31] += 1;
        assert_eq!(n.as_slice(), N);
        // (p − n) + n = p
        let mut p = [0u8; 32];
        p[..4].copy_from_slice(&[0xff; 4]);
        p[7] = 1;
        p[20..].copy_from_slice(&[0xff; 12]);
        assert_eq!(add_be(&P_MINUS_N, &N), p);
    }

    #[test]
    fn point_formulas_match_p256() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let g = p256::ProjectivePoint::generator();
        for _ in 0..50 {
            let a = Scalar::from_repr(rng_bytes::<32>(&mut seed).into()).unwrap_or(Scalar::ONE);
            let b = Scalar::from_repr(rng_bytes::<32>(&mut seed).into()).unwrap_or(Scalar::ONE);
            let (pa, pb) = (g * a, g * b);
            let (ja, ab) = (Jacobian::from_affine(&affine_of(&pa)), affine_of(&pb));
            // Jacobian with Z ≠ 1: a doubled point.
            let ja2 = ja.double();
            assert!(same(&ja2, &pa.double()));
            assert!(same(&ja2.add_affine(&ab), &(pa.double() + pb)));
            assert!(same(
                &ja2.add(&ja2.add_affine(&ab)),
                &(pa.double() * Scalar::from(2u64) + pb)
            ));
            // The excluded cases.
            assert!(same(&ja.add_affine(&affine_of(&pa)), &pa.double()));
            assert!(ja.add_affine(&-affine_of(&pa)).is_infinity());
            assert!(same(&Jacobian::INFINITY.add_affine(&ab), &pb));
            assert!(same(&ja2.add(&ja2), &pa.double().double()));
            assert!(same(&ja2.add(&Jacobian::INFINITY), &pa.double()));
            // The double multiplication.
            let key = affine_of(&pb);
            let t = table(&key, W_KEY).unwrap();
            assert!(same(
                &mul2(&a, &b, generator_table(), &t),
                &(g * a + pb * b)
            ));
        }
    }

    #[test]
    fn co_z_chain_gives_the_odd_multiples() {
        let mut seed = 0x000d_dc02_u64;
        let g = p256::ProjectivePoint::generator();
        for _ in 0..20 {
            let k = Scalar::from_repr(rng_bytes::<32>(&mut seed).into()).unwrap_or(Scalar::ONE);
            let p = g * k;
            // Co-Z addition and its update, from a doubled (Z ≠ 1) point.
            let (twice, b) = Jacobian::from_affine(&affine_of(&p)).double().double_co_z();
            assert!(same(&b, &p.double()));
            assert!(same(&twice, &p.double().double()));
            let (sum, t) = twice.add_co_z(&b).unwrap();
            assert!(same(&sum, &(p.double() * Scalar::from(3u64))));
            assert!(same(&t, &p.double().double()) && eq(&t.z, &sum.z));
            assert!(b.add_co_z(&b).is_none());
            // Every table entry: (2i + 1)·2^(32j)·P.
            for w in [W_KEY, 4] {
                let t = table(&affine_of(&p), w).unwrap();
                let odd = 1usize << (w - 2);
                assert_eq!(t.len(), BLOCKS * odd);
                let mut base = p;
                for j in 0..BLOCKS {
                    for i in 0..odd {
                        let want = affine_of(&(base * Scalar::from(2 * i as u64 + 1)));
                        let got = t[j * odd + i];
                        assert!(eq(&got.x, &want.x) && eq(&got.y, &want.y), "block {j}, {i}");
                    }
                    for _ in 0..BLOCK_BITS {
                        base = base.double();
                    }
                }
            }
        }
    }

    #[test]
    fn wnaf_digits_sum_to_the_scalar() {
        let mut seed = 99u64;
        for w in [4, 5, 6, 7] {
            for _ in 0..200 {
                let mut k = rng_bytes::<32>(&mut seed);
                if seed % 3 == 0 {
                    k = [0xff; 32];
                }
                let d = wnaf(&k, w);
                // Σ d_i 2^i mod n against k mod n.
                let mut acc = Scalar::ZERO;
                for digit in d.iter().rev() {
                    acc = acc.double();
                    let v = Scalar::from(u64::from(digit.unsigned_abs()));
                    acc = if *digit < 0 { acc - v } else { acc + v };
                    assert!(
                        *digit == 0 || (digit % 2 != 0 && i32::from(digit.abs()) < (1 << (w - 1)))
                    );
                }
                let expect = digest_like(&k);
                assert_eq!(acc, expect);
                // No two nonzero digits within w positions.
                let nz: Vec<usize> = (0..257).filter(|i| d[*i] != 0).collect();
                assert!(nz.windows(2).all(|p| p[1] - p[0] >= w as usize));
            }
        }
    }

    /// k mod n for any 256-bit k.
    fn digest_like(k: &[u8; 32]) -> Scalar {
        let mut acc = Scalar::ZERO;
        for b in k {
            acc = acc * Scalar::from(256u64) + Scalar::from(u64::from(*b));
        }
        acc
    }

    #[test]
    fn digest_reduction() {
        for msg in [&b""[..], b"abc", b"x".repeat(1000).as_slice()] {
            let d: [u8; 32] = Sha256::digest(msg).into();
            assert_eq!(digest_scalar(msg).unwrap(), digest_like(&d));
        }
        // A digest ≥ n reduces: check the helper on n + 5 directly.
        let big = add_be(&N, &{
            let mut f = [0u8; 32];
            f[31] = 5;
            f
        });
        assert_eq!(digest_like(&big), Scalar::from(5u64));
    }

    #[test]
    fn random_signatures_agree_with_p256() {
        let mut seed = 0xfeed_beefu64;
        for i in 0..300 {
            let d = rng_bytes::<32>(&mut seed);
            let Ok(sk) = p256::ecdsa::SigningKey::from_slice(&d) else {
                continue;
            };
            let vk = *sk.verifying_key();
            let key = PublicKey::new(&vk).unwrap();
            let msg = rng_bytes::<40>(&mut seed);
            let sig: p256::ecdsa::Signature = sk.sign(&msg);
            let mut bytes = sig.to_bytes().to_vec();
            assert!(verify(&key, &msg, &bytes), "{i}");
            assert!(reference(&vk, &msg, &bytes));
            // High s (n − s) verifies too, as with p256.
            let (r, s) = sig.split_scalars();
            let high = p256::ecdsa::Signature::from_scalars(r.to_repr(), (-*s).to_repr()).unwrap();
            assert_eq!(
                verify(&key, &msg, &high.to_bytes()),
                reference(&vk, &msg, &high.to_bytes())
            );
            assert!(verify(&key, &msg, &high.to_bytes()));
            // Flipped bits anywhere: both refuse (or, never, both accept).
            let bit = (seed % 512) as usize;
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(verify(&key, &msg, &bytes), reference(&vk, &msg, &bytes));
            let mut m2 = msg;
            m2[(seed % 40) as usize] ^= 1;
            assert!(!verify(&key, &m2, &sig.to_bytes()));
        }
    }

    #[test]
    fn cache_is_bounded_and_keeps_recent_keys() {
        clear_cache();
        let mut seed = 7u64;
        let mut keys = Vec::new();
        while keys.len() < CACHE_KEYS + 5 {
            if let Ok(sk) = p256::ecdsa::SigningKey::from_slice(&rng_bytes::<32>(&mut seed)) {
                keys.push(sk);
            }
        }
        for sk in &keys {
            let key = PublicKey::new(sk.verifying_key()).unwrap();
            let sig: p256::ecdsa::Signature = sk.sign(b"m");
            assert!(verify(&key, b"m", &sig.to_bytes()));
            // The first key stays in use: never the least recent.
            let first = PublicKey::new(keys[0].verifying_key()).unwrap();
            let s0: p256::ecdsa::Signature = keys[0].sign(b"m");
            assert!(verify(&first, b"m", &s0.to_bytes()));
        }
        assert_eq!(cached_keys(), CACHE_KEYS);
        CACHE.with(|c| {
            let c = c.borrow();
            let first = PublicKey::new(keys[0].verifying_key()).unwrap();
            assert!(c.tables.contains_key(first.xy()));
            let second = PublicKey::new(keys[1].verifying_key()).unwrap();
            assert!(!c.tables.contains_key(second.xy()));
        });
    }

    #[test]
    fn malformed_signatures_refused() {
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let key = PublicKey::new(sk.verifying_key()).unwrap();
        let sig: p256::ecdsa::Signature = sk.sign(b"m");
        let good = sig.to_bytes();
        assert!(verify(&key, b"m", &good));
        let mut cases: Vec<Vec<u8>> = vec![vec![], good[..63].to_vec(), [&good[..], &[0]].concat()];
        for (r, s) in [
            ([0u8; 32], good[32..].to_vec()),
            (good[..32].try_into().unwrap(), vec![0u8; 32]),
            (N, good[32..].to_vec()),
            (good[..32].try_into().unwrap(), N.to_vec()),
            ([0xff; 32], good[32..].to_vec()),
        ] {
            cases.push([&r[..], &s[..]].concat());
        }
        for c in cases {
            assert!(!verify(&key, b"m", &c));
        }
    }
}
