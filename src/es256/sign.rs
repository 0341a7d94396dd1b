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
//! V8, W = 6 beat W = 4, 5 and 7 (fewer additions against longer scans; W = 5 about even with
//! the Jacobian additions, in noisy runs). Constant-time structure:
//! - the recoding is arithmetic on the windows (no branch on them; the window positions are
//!   public);
//! - each table row is scanned whole, every entry combined with a mask (no index depends on k;
//!   [`Fe::lookup`]); the sign of a digit negates y by a masked select. The masks go through an
//!   optimisation barrier ([`opaque`]): without it LLVM saw that they are 0 or −1 and V8's code
//!   branched around all but the selected entry (up to session 6);
//! - rows 1 to 41 are added with Jacobian mixed additions (madd-2004-hmv, 8M + 3S), which are
//!   not complete: the two cases that can occur, the sum still the identity (all digits so far
//!   0) and a zero digit, are handled by masked selects, and [`mul_base`] proves that the
//!   others (the sum equal to ± the entry) cannot; the last row (whose term is too large for
//!   that proof) is added with the complete mixed formulas of Renes, Costello and Batina (2015,
//!   Algorithm 5 with Z₂ = 1, as primeorder implements them) after a change to homogeneous
//!   coordinates;
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
use super::{GX, GY};

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
/// The top row's digits are in [0, 2^(256 − W·(ROWS − 1))]: only that many entries are scanned.
const LAST_ENTRIES: usize = 1 << (256 - W * (ROWS - 1));

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
    let mut base = super::Jacobian::from_affine(&g);
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

/// Jacobian coordinates: x = X/Z², y = Y/Z³ (the comb's accumulator, but for its last row).
#[derive(Clone, Copy)]
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Jacobian {
    /// self + q by the Explicit-Formulas Database's madd-2004-hmv (8M + 3S; madd-2007-bl's
    /// 7M + 4S needs seven more additions, which cost about half a multiplication each here).
    /// Not for self = ±q or self the identity: [`mul_base`] shows it never asks for those.
    #[inline(always)]
    fn add_affine(&self, q: &Affine) -> Jacobian {
        let z1z1 = self.z.square();
        let u2 = q.x * z1z1;
        let s2 = q.y * (self.z * z1z1);
        let h = u2 - self.x;
        let r = s2 - self.y;
        let hh = h.square();
        let hhh = h * hh;
        let v = self.x * hh;
        let x3 = r.square() - hhh - v.double();
        let y3 = r * (v - x3) - self.y * hhh;
        Jacobian {
            x: x3,
            y: y3,
            z: self.z * h,
        }
    }

    fn select(a: &Jacobian, b: &Jacobian, mask: i64) -> Jacobian {
        Jacobian {
            x: Fe::select(&a.x, &b.x, mask),
            y: Fe::select(&a.y, &b.y, mask),
            z: Fe::select(&a.z, &b.z, mask),
        }
    }

    /// Homogeneous coordinates (X·Z, Y, Z³) of the same point.
    fn to_projective(self) -> Projective {
        Projective {
            x: self.x * self.z,
            y: self.y,
            z: self.z.square() * self.z,
        }
    }
}

// The bound the proof in `mul_base` needs: (2^(W−1) + 1)·2^(W·(ROWS−2)) < 2^(W·(ROWS−1)) ≤ 2^255.
const _: () = assert!(W * (ROWS - 1) <= 255);

/// k·G, projective, for any 256-bit k (k mod n).
///
/// The comb adds one table entry per row to an accumulator. Rows 1 … ROWS − 2 use Jacobian mixed
/// addition ([`Jacobian::add_affine`]), whose formulas are wrong when the accumulator is the
/// identity or equal to ± the entry; the last row uses the complete formulas
/// ([`Projective::add_mixed`]). Why that is enough, with B = 2^W and h = 2^(W−1):
///
/// - The recoding is exact over the integers: k = Σ d_i·B^i, with d_i in [−h, h) for
///   i < ROWS − 1 and the top digit in [0, LAST_ENTRIES] (its window has t = 256 − W·(ROWS − 1)
///   bits, plus a carry of at most 1; no carry leaves it). Nothing is reduced mod n, and there is
///   no k → n − k step.
/// - Before row i the accumulator is S_i·G with S_i = Σ_{r<i} d_r·B^r, and
///   |S_i| ≤ h·(B^i − 1)/(B − 1) < B^i.
/// - S_i = 0 exactly when d_0 … d_{i−1} are all 0 (if d_j is the lowest nonzero digit,
///   S_i ≡ d_j·B^j ≢ 0 mod B^(j+1), as 0 < |d_j| < B); and S_i ≠ 0 is never ≡ 0 mod n, since
///   |S_i| < B^i ≤ 2^255 < n. So the accumulator is the identity exactly while `inf` (every digit so
///   far 0) is set: the entry is then taken as it is (a masked select), not added.
/// - A zero digit selects no entry (the lookup gives (0, 0)); the sum is then discarded by a
///   masked select, whatever the formulas made of it.
/// - Otherwise, in row i with 1 ≤ i ≤ ROWS − 2: the entry is T_i·G with T_i = d_i·B^i,
///   B^i ≤ |T_i| ≤ h·B^i. The excluded cases are S_i ≡ ±T_i (mod n). But S_i ∓ T_i is a nonzero
///   integer (|T_i| ≥ B^i > |S_i|) of magnitude below (h + 1)·B^i ≤ (h + 1)·B^(ROWS−2) < 2^255 < n
///   (the assertion above), so it is not a multiple of n. (With W = 6: rows 1 … 41, |S_i ∓ T_i|
///   < 33·2^246 < 2^252.)
/// - In the last row the term is up to 16·2^252 = 2^256 > n and this bound no longer holds. (A
///   finer argument on n's exact value and k < 2^256 still rules the doubling out, and madd
///   happens to give Z = 0 for the one sum that is the identity, k = n; not worth the fragility
///   for about 1 % of the comb.) So the accumulator goes to homogeneous coordinates (or the
///   identity, if `inf`) and the complete formulas add the last entry: the result is right for
///   every k, by the simple argument.
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
    // Row 0: its entry is the sum so far (Z = 1), no addition; `inf` is all ones while every
    // digit so far is 0 (the sum is then the identity, and `acc` meaningless).
    let (mut acc, mut inf) = match rows.next() {
        Some((row, digit)) => {
            let (p, zero) = select(row, digit);
            let first = Jacobian {
                x: p.x,
                y: p.y,
                z: Fe::ONE,
            };
            (first, zero)
        }
        None => (
            Jacobian {
                x: Fe::ONE,
                y: Fe::ONE,
                z: Fe::ZERO,
            },
            -1,
        ),
    };
    // Rows 1 … ROWS − 2: Jacobian mixed additions (see above for why they are never exceptional).
    for (row, digit) in rows.by_ref().take(ROWS - 2) {
        let (p, zero) = select(row, digit);
        let fresh = Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        };
        let sum = acc.add_affine(&p);
        let next = Jacobian::select(&sum, &fresh, inf);
        acc = Jacobian::select(&next, &acc, zero);
        inf &= zero;
    }
    // The last row: the complete formulas, on the accumulator in homogeneous coordinates. Its
    // digit is in [0, LAST_ENTRIES]: the entries above are never selected, so not scanned.
    let mut acc = Projective::select(&acc.to_projective(), &Projective::IDENTITY, inf);
    if let Some((row, digit)) = rows.next() {
        let (p, zero) = select(row.get(..LAST_ENTRIES).unwrap_or(row), digit);
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

    /// (x, y) of a projective point, big-endian, or `None` for the identity.
    fn affine(p: &Projective) -> Option<([u8; 32], [u8; 32])> {
        let z_inv = p.z.invert()?;
        Some(((p.x * z_inv).to_be_bytes(), (p.y * z_inv).to_be_bytes()))
    }

    /// k·G by p256 (k reduced mod n), as `affine` gives it.
    fn reference(k: &[u8; 32]) -> Option<([u8; 32], [u8; 32])> {
        use p256::elliptic_curve::sec1::ToSec1Point;
        let s = <Scalar as Reduce<p256::FieldBytes>>::reduce(&(*k).into());
        let point = (p256::ProjectivePoint::GENERATOR * s).to_affine();
        let sec1 = point.to_sec1_point(false);
        Some((
            sec1.x()?.as_slice().try_into().ok()?,
            sec1.y()?.as_slice().try_into().ok()?,
        ))
    }

    /// The comb's accumulator passes through every case its formulas must handle: digits 0 at
    /// the start (the identity, for many rows), 0 in the middle and at the top (the entry not
    /// added), the extreme digits ±32 and the top digit 16, sums next to a row's term
    /// (64^i − 1 = 64^i + (−1)), and k ≥ n (the last row's complete formulas). Both coordinates
    /// against p256's k·G.
    #[test]
    fn comb_digit_patterns_match_p256() {
        let comb = comb().unwrap();
        let from_u128 = |v: u128| {
            let mut k = [0u8; 32];
            k[16..].copy_from_slice(&v.to_be_bytes());
            k
        };
        // k = v·2^s for a small v (as bytes: shifted left by s bits).
        let shifted = |v: u64, s: usize| {
            let mut k = [0u8; 32];
            for bit in 0..64 {
                let pos = bit + s;
                if v >> bit & 1 == 1 && pos < 256 {
                    k[31 - pos / 8] |= 1 << (pos % 8);
                }
            }
            k
        };
        let n: [u8; 32] = super::super::N;
        let minus = |j: u8| {
            let s = -Scalar::from(u64::from(j));
            <[u8; 32]>::from(s.to_repr())
        };
        let mut cases: Vec<[u8; 32]> = (0u128..=300).map(from_u128).collect();
        for i in 0..ROWS {
            for v in [1u64, 31, 32, 33, 63, 64, 65, 0x7df] {
                cases.push(shifted(v, W * i));
                // 64^i·v − 1: a run of −1 digits… or all 63s.
                let mut k = shifted(v, W * i);
                let s = Scalar::from_repr(k.into()).into_option();
                if let Some(s) = s {
                    k = (s - Scalar::ONE).to_repr().into();
                    cases.push(k);
                }
            }
        }
        for bit in 0..256 {
            cases.push(shifted(1, bit));
        }
        for j in 1..=40 {
            cases.push(minus(j)); // n − j: top digit 16, then long runs of high digits
        }
        // Random scalars with about half their windows zeroed (whole rows of zero digits).
        let mut seed = 0x1234_5678_u64;
        for _ in 0..200 {
            let mut k = [0u8; 32];
            for b in k.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let keep = seed;
            for i in 0..ROWS {
                if keep >> (i % 64) & 1 == 0 {
                    for bit in W * i..(W * i + W).min(256) {
                        k[31 - bit / 8] &= !(1 << (bit % 8));
                    }
                }
            }
            cases.push(k);
        }
        // k ≥ n: n itself (the identity), n + 1, 2^256 − 1.
        cases.push(n);
        let mut n_plus_1 = n;
        n_plus_1[31] += 1;
        cases.push(n_plus_1);
        cases.push([0xff; 32]);
        for k in cases {
            assert_eq!(affine(&mul_base(&k, comb)), reference(&k), "{k:02x?}");
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
