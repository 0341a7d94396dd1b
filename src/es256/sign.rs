//! ES256 signing in constant time, on this module's field (`field.rs`).
//!
//! The signature is the one p256 0.14 makes, byte for byte (the tests compare them): ECDSA over
//! P-256 with SHA-256, the nonce k from RFC 6979 (`drbg.rs`: the `rfc6979` crate's HMAC-DRBG,
//! as p256's `ecdsa` uses it, on SHA-256's compression function with per-key precomputation),
//! `r = x(k·G) mod n`, `s = k⁻¹·(z + r·d) mod n`, s not normalised. k·G is computed here; the
//! scalar steps (k⁻¹, s) are p256's constant-time scalar arithmetic, and x = X/Z uses p256's
//! constant-time field inversion.
//!
//! k·G is a fixed-base comb with no doublings: k is recoded into 43 signed digits of W = 6 bits
//! in [−32, 32) (the top window has 4 bits, so no final carry), and the sum Σ d_i·2^(6i)·G is
//! read from a table of j·2^(6i)·G (j = 1..32, affine; built once per VM from public data,
//! about 200 KB). The first row's entry starts the sum; the 42 others are added. Measured in
//! V8, W = 6 beat W = 4, 5 and 7 (fewer additions against longer scans). Constant-time
//! structure:
//! - the recoding is arithmetic on the windows (no branch on them; the window positions are
//!   public);
//! - each table row is scanned whole, every entry combined with a mask (no index depends on k;
//!   [`Fe::lookup`]); the sign of a digit negates y by a masked select. The masks go through an
//!   optimisation barrier ([`opaque`]): without it LLVM saw that they are 0 or −1 and V8's code
//!   branched around all but the selected entry (up to session 6);
//! - the additions are the complete mixed formulas of Renes, Costello and Batina (2015,
//!   Algorithm 5 with Z₂ = 1, as primeorder implements them), correct for every input including
//!   the identity, so there is no special case to branch on; a zero digit keeps the sum by a
//!   masked select (and the first row's zero digit selects the identity);
//! - the field arithmetic is branch-free; the inversions (Z, k) are p256's constant-time
//!   safegcd (Z and k are never 0, so their `None` cases never occur);
//! - the RFC 6979 DRBG runs the same compressions whatever the data.
//!
//! Checked in V8's machine code (`node --no-liftoff --print-wasm-code`, TurboFan, session 7):
//! `mul_base`'s only conditional jumps are the loop bounds, the stack and trap checks and the
//! public window positions. Retrying with the next RFC 6979 candidate when k is not in
//! [1, n) or r or s is 0 (probabilities about 2^−32 and 2^−256) is the only data-dependent
//! branch, as in p256.

use std::sync::OnceLock;

use p256::elliptic_curve::ff::{Field, PrimeField};
use p256::elliptic_curve::ops::Reduce;
use sha2::{Digest, Sha256};

use super::drbg;
use super::field::Fe;
use super::{Jacobian, GX, GY};

type Scalar = p256::Scalar;

/// b of y² = x³ − 3x + b.
const B: [u8; 32] = [
    0x5a, 0xc6, 0x35, 0xd8, 0xaa, 0x3a, 0x93, 0xe7, 0xb3, 0xeb, 0xbd, 0x55, 0x76, 0x98, 0x86, 0xbc,
    0x65, 0x1d, 0x06, 0xb0, 0xcc, 0x53, 0xb0, 0xf6, 0x3b, 0xce, 0x3c, 0x3e, 0x27, 0xd2, 0x60, 0x4b,
];

#[derive(Clone, Copy)]
struct Affine {
    x: Fe,
    y: Fe,
}

/// Homogeneous projective coordinates: x = X/Z, y = Y/Z; the identity is (0 : 1 : 0).
#[derive(Clone, Copy)]
struct Projective {
    x: Fe,
    y: Fe,
    z: Fe,
}

/// The comb's window: k is recoded into [`ROWS`] signed digits of `W` bits.
const W: usize = 6;
/// Entries per row: j·2^(W·i)·G for j = 1..=2^(W−1).
const ENTRIES: usize = 1 << (W - 1);
/// Digits (and rows): enough for 256 bits.
const ROWS: usize = 256_usize.div_ceil(W);
// The top window holds at most W − 2 bits, so with the carry from below its digit stays below
// 2^(W−1) and the recoding needs no final carry row.
const _: () = assert!(256 - W * (ROWS - 1) <= W - 2);

struct Comb {
    /// Row i (entries i·ENTRIES ..): j·2^(W·i)·G for j = 1..=ENTRIES, affine.
    rows: Vec<Affine>,
    b: Fe,
}

fn comb() -> Option<&'static Comb> {
    static COMB: OnceLock<Option<Comb>> = OnceLock::new();
    COMB.get_or_init(build).as_ref()
}

/// The table, from public data only (so the verifier's variable-time formulas may build it).
fn build() -> Option<Comb> {
    let g = super::Affine {
        x: Fe::from_be_bytes(&GX)?,
        y: Fe::from_be_bytes(&GY)?,
    };
    let mut points = Vec::with_capacity(ROWS * ENTRIES);
    let mut base = Jacobian::from_affine(&g);
    for _ in 0..ROWS {
        let mut m = base;
        points.push(m);
        for _ in 1..ENTRIES {
            m = m.add(&base);
            points.push(m);
        }
        // 2^W·base = 2·(2^(W−1)·base)
        base = m.double();
    }
    let rows = super::normalize(&points)?
        .iter()
        .map(|p| Affine { x: p.x, y: p.y })
        .collect();
    Some(Comb {
        rows,
        b: Fe::from_be_bytes(&B)?,
    })
}

/// Builds the table now (about 2.4 ms in V8, `make micro`), so that no request pays for it.
pub fn warm_up() {
    comb();
}

/// All ones if a == b, else zero (a, b in [0, 2^62)).
#[inline(always)]
fn eq_mask(a: i64, b: i64) -> i64 {
    // (a ^ b) − 1 has its top bit set exactly when a == b.
    opaque(-(((a ^ b) - 1) >> 63 & 1))
}

/// A mask the compiler cannot see through (`black_box`: a store and a load in wasm). Without it
/// LLVM knows that a mask from [`eq_mask`] is 0 or −1 and turns the masked select into a
/// conditional: in V8's machine code (`node --print-wasm-code`), the table scan then skipped
/// every entry but the digit's with a branch, and loaded only that one, a timing leak of k.
#[inline(always)]
fn opaque(mask: i64) -> i64 {
    std::hint::black_box(mask)
}

/// The entry for a digit in [−2^(W−1), 2^(W−1)] of a row, and a mask that is all ones for
/// digit 0 (the entry is then (0, 0)). Every entry of the row is read, each combined with its
/// mask ([`Fe::lookup`]); the sign negates y by a masked select.
#[inline(always)]
fn select(row: &[Affine], digit: i64) -> (Affine, i64) {
    let sign = opaque(digit >> 63); // all ones if negative
    let abs = (digit ^ sign) - sign;
    let mut masks = [0i64; ENTRIES];
    for (j, m) in (1i64..).zip(masks.iter_mut()) {
        *m = eq_mask(abs, j);
    }
    let x = Fe::lookup(row.iter().map(|e| &e.x).zip(masks));
    let mut y = Fe::lookup(row.iter().map(|e| &e.y).zip(masks));
    y = Fe::select(&y, &-y, sign);
    (Affine { x, y }, eq_mask(abs, 0))
}

impl Projective {
    const IDENTITY: Projective = Projective {
        x: Fe::ZERO,
        y: Fe::ONE,
        z: Fe::ZERO,
    };

    /// Complete mixed addition, a = −3 (Renes–Costello–Batina 2015, Algorithm 5; the step
    /// numbers are the paper's, as in primeorder). `rhs` must not be the identity (affine
    /// points cannot be).
    #[inline(always)]
    fn add_mixed(&self, rhs: &Affine, b: &Fe) -> Projective {
        let xx = self.x * rhs.x; // 1
        let yy = self.y * rhs.y; // 2
        let xy_pairs = ((self.x + self.y) * (rhs.x + rhs.y)) - (xx + yy); // 3, 4, 5, 6, 7
        let yz_pairs = (rhs.y * self.z) + self.y; // 8, 9 (t4)
        let xz_pairs = (rhs.x * self.z) + self.x; // 10, 11 (y3)

        let bz_part = xz_pairs - (*b * self.z); // 12, 13
        let bz3_part = bz_part.triple(); // 14, 15
        let yy_m_bzz3 = yy - bz3_part; // 16
        let yy_p_bzz3 = yy + bz3_part; // 17

        let z3 = self.z.triple(); // 19, 20
        let bxz_part = (*b * xz_pairs) - (z3 + xx); // 18, 21, 22
        let bxz3_part = bxz_part.triple(); // 23, 24
        let xx3_m_zz3 = xx.triple() - z3; // 25, 26, 27

        Projective {
            x: (yy_p_bzz3 * xy_pairs) - (yz_pairs * bxz3_part), // 28, 32, 33
            y: (yy_p_bzz3 * yy_m_bzz3) + (xx3_m_zz3 * bxz3_part), // 29, 30, 31
            z: (yy_m_bzz3 * yz_pairs) + (xy_pairs * xx3_m_zz3), // 34, 35, 36
        }
    }

    fn select(a: &Projective, b: &Projective, mask: i64) -> Projective {
        Projective {
            x: Fe::select(&a.x, &b.x, mask),
            y: Fe::select(&a.y, &b.y, mask),
            z: Fe::select(&a.z, &b.z, mask),
        }
    }
}

/// k·G, projective.
fn mul_base(k: &[u8; 32], comb: &Comb) -> Projective {
    // k as four 64-bit words, least significant first.
    let mut words = [0u64; 4];
    for (w, c) in words.iter_mut().zip(k.rchunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        *w = u64::from_be_bytes(b);
    }
    // W-bit windows, least significant first, recoded to digits in [−2^(W−1), 2^(W−1)) with a
    // carry (which the top window never produces: see ROWS). The window positions are public.
    let mut digits = [0i64; ROWS];
    let mut carry = 0i64;
    for (i, d) in digits.iter_mut().enumerate() {
        let (word, shift) = ((W * i) / 64, (W * i) % 64);
        let mut bits = words.get(word).copied().unwrap_or(0) >> shift;
        if shift + W > 64 {
            bits |= words.get(word + 1).copied().unwrap_or(0) << (64 - shift);
        }
        let v = (bits & ((1 << W) - 1)) as i64 + carry;
        carry = (v + (1 << (W - 1))) >> W;
        *d = v - (carry << W);
    }
    let mut rows = comb.rows.chunks_exact(ENTRIES).zip(digits);
    // The first row's entry is the sum so far (the identity for digit 0): no addition.
    let mut acc = Projective::IDENTITY;
    if let Some((row, digit)) = rows.next() {
        let (p, zero) = select(row, digit);
        let first = Projective {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        };
        acc = Projective::select(&first, &acc, zero);
    }
    for (row, digit) in rows {
        let (p, zero) = select(row, digit);
        let sum = acc.add_mixed(&p, &comb.b);
        acc = Projective::select(&sum, &acc, zero);
    }
    acc
}

/// p256's field element, for its inversion.
type P256Fe = <p256::NistP256 as p256::elliptic_curve::hazmat::FieldArithmetic>::FieldElement;

/// x = X/Z, big-endian. Z⁻¹ is p256's constant-time inversion (Bernstein–Yang safegcd), faster
/// in V8 than this field's 255 squarings; the conversions are `CtOption`s taken with
/// `unwrap_or` (a masked select: the bytes are canonical and Z is never 0 here).
fn to_affine_x(x: &Fe, z: &Fe) -> [u8; 32] {
    let zp = P256Fe::from_repr(z.to_be_bytes().into()).unwrap_or(P256Fe::ZERO);
    let xp = P256Fe::from_repr(x.to_be_bytes().into()).unwrap_or(P256Fe::ZERO);
    let z_inv = zp.invert().unwrap_or(P256Fe::ZERO);
    (xp * z_inv).to_repr().into()
}

/// The x coordinate of k·G, big-endian (k in [1, n), so k·G is never the identity).
fn mul_base_x(k: &[u8; 32], comb: &Comb) -> [u8; 32] {
    let p = mul_base(k, comb);
    to_affine_x(&p.x, &p.z)
}

/// The pieces of a signature, timed apart by `bench/micro` (not part of the API).
#[doc(hidden)]
pub mod parts {
    use super::*;

    /// The RFC 6979 nonce for key `d` and message hash `h`.
    /// (`h` already reduced mod n; the key's precomputation included, as in a first signature).
    pub fn nonce(d: &[u8; 32], h: &[u8; 32]) -> [u8; 32] {
        super::drbg::KeyState::new(d).generator(h).next()
    }

    /// The same nonce with the key's precomputation done: what a signature pays.
    pub fn nonce_for(key: &SigningKey, h: &[u8; 32]) -> [u8; 32] {
        key.nonce.generator(h).next()
    }

    /// The comb alone: k·G in projective coordinates, returned as (X, Z).
    pub fn comb_only(k: &[u8; 32]) -> Option<(Fe, Fe)> {
        let p = mul_base(k, comb()?);
        Some((p.x, p.z))
    }

    /// Builds the comb's table afresh (what `warm_up` pays once per VM); its size in entries.
    pub fn build_table() -> usize {
        build().map_or(0, |c| c.rows.len())
    }

    /// The affine x from (X, Z).
    pub fn affine_x(x: &Fe, z: &Fe) -> [u8; 32] {
        to_affine_x(x, z)
    }
}

/// A P-256 private key for signing (zeroized when dropped, like p256's).
pub struct SigningKey {
    d: Scalar,
    /// RFC 6979's per-key state (zeroized when dropped).
    nonce: drbg::KeyState,
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        use p256::elliptic_curve::zeroize::Zeroize;
        self.d.zeroize();
    }
}

impl SigningKey {
    /// From a key p256 has validated (d in [1, n)).
    pub fn new(sk: &p256::ecdsa::SigningKey) -> SigningKey {
        use p256::elliptic_curve::zeroize::Zeroize;
        let mut d_bytes: [u8; 32] = sk.to_bytes().into();
        let key = SigningKey {
            d: *sk.as_nonzero_scalar().as_ref(),
            nonce: drbg::KeyState::new(&d_bytes),
        };
        d_bytes.zeroize();
        key
    }

    /// The JWS ES256 signature of `msg` (`r ‖ s`); `None` only if the comb table could not be
    /// built (never, with the curve's constants).
    pub fn sign(&self, msg: &[u8]) -> Option<[u8; 64]> {
        let comb = comb()?;
        let h: [u8; 32] = Sha256::digest(msg).into();
        let z = <Scalar as Reduce<p256::FieldBytes>>::reduce(&h.into());
        // RFC 6979 takes the hash reduced mod n (bits2octets).
        let h_mod_n: [u8; 32] = z.to_repr().into();
        let mut kgen = self.nonce.generator(&h_mod_n);
        loop {
            // The next candidate, retried unless in [1, n) (as the crate's fill_next_k does).
            let k_bytes = kgen.next();
            let Some(k) = Scalar::from_repr(k_bytes.into()).into_option() else {
                continue;
            };
            if bool::from(k.is_zero()) {
                continue;
            }
            let x = mul_base_x(&k_bytes, comb);
            let r = <Scalar as Reduce<p256::FieldBytes>>::reduce(&x.into());
            let Some(k_inv) = k.invert().into_option() else {
                continue;
            };
            let s = k_inv * (z + r * self.d);
            if bool::from(r.is_zero() | s.is_zero()) {
                continue;
            }
            let mut out = [0u8; 64];
            for (o, b) in out
                .iter_mut()
                .zip(r.to_repr().iter().chain(s.to_repr().iter()))
            {
                *o = *b;
            }
            return Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;

    #[test]
    fn digits_and_table() {
        let comb = comb().unwrap();
        assert_eq!(comb.rows.len(), ROWS * ENTRIES);
        // k = 1, n − 1, and multiples of 16^i: against p256.
        let n_minus_1: [u8; 32] = (-Scalar::ONE).to_repr().into();
        let mut cases = vec![n_minus_1];
        for i in 0..32 {
            for v in [1u8, 8, 9, 0xf0, 0x88, 0xff] {
                let mut k = [0u8; 32];
                k[i] = v;
                cases.push(k);
            }
        }
        for k in cases {
            let s = Scalar::from_repr(k.into()).unwrap();
            let expect = (p256::ProjectivePoint::GENERATOR * s).to_affine();
            let expect = p256::ecdsa::VerifyingKey::from_affine(expect).unwrap();
            let sec1 = expect.to_sec1_point(false);
            assert_eq!(
                &mul_base_x(&k, comb)[..],
                sec1.x().unwrap().as_slice(),
                "{k:02x?}"
            );
        }
    }

    #[test]
    fn eq_mask_and_select() {
        for a in 0i64..=8 {
            for b in 0i64..=8 {
                assert_eq!(eq_mask(a, b), if a == b { -1 } else { 0 });
            }
        }
    }

    #[test]
    fn signatures_are_p256s_byte_for_byte() {
        let mut seed = 0xabcdefu64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..300 {
            let mut d = [0u8; 32];
            for b in d.iter_mut() {
                *b = next() as u8;
            }
            if i % 50 == 0 {
                d = (-Scalar::ONE).to_repr().into(); // d = n − 1
            }
            let Ok(sk) = p256::ecdsa::SigningKey::from_slice(&d) else {
                continue;
            };
            let msg: Vec<u8> = (0..(next() % 300)).map(|_| next() as u8).collect();
            let theirs: p256::ecdsa::Signature = sk.sign(&msg);
            let ours = SigningKey::new(&sk).sign(&msg).unwrap();
            assert_eq!(ours[..], theirs.to_bytes()[..], "key {d:02x?}");
        }
    }
}
