//! Arithmetic modulo p = 2^256 − 2^224 + 2^192 + 2^96 − 1, shaped for wasm32 in V8.
//!
//! p256 0.14 keeps a field element in four 64-bit limbs; wasm has no 64×64→128 multiplication,
//! so every limb product there is a multi-instruction emulation (a call to `__multi3`). Here an
//! element is nine limbs of 29 bits held in `i64`: a limb product is one native `i64.mul` and a
//! column of nine products still fits in 63 bits, so the 81 products of a multiplication need no
//! carry handling until the end.
//!
//! Reduction is Montgomery's with R = 2^261, which P-256 makes cheap: −p⁻¹ ≡ 1 (mod 2^29), so
//! each round's multiplier is the low limb itself, and adding m·p = m·(2^256 − 2^224 + 2^192 +
//! 2^96 − 1) is four shifted additions, no multiplication. Elements are kept in Montgomery form
//! (x·R mod p) and only partly reduced: every value is below 2^257, additions and subtractions
//! fold what lies above 2^256 back with 2^256 ≡ 2^224 − 2^192 − 2^96 + 1 (an addition before its
//! single carry pass, a subtraction after one); comparisons bring both sides to the canonical
//! representative first.
//!
//! Bounds (why nothing overflows): inputs below 2^258 with limbs below 2^29 give columns below
//! 9·2^58 < 2^61.2; the reduction adds at most four terms below 2^53 and a carry per limb; the
//! result (T + M·p)/R is below T/R + p < 2^255 + p < 2^257. A sum or difference (with 8p added,
//! 8p > 2^258) is below 2^260 and folds to below 2^257.
//!
//! No branch or memory index depends on the values (the verifier that uses this module only
//! handles public data, but nothing here needs to know). Tested against p256's field on random
//! and edge-case inputs (below), and through the verifier (Wycheproof, the differential fuzz
//! target).

use std::ops::{Add, Mul, Neg, Sub};

const MASK: i64 = (1 << 29) - 1;

/// p in 29-bit limbs, least significant first.
const P: [i64; 9] = [
    536870911, 536870911, 536870911, 511, 0, 0, 262144, 534773760, 16777215,
];
/// 8p, added before a subtraction so that the difference stays positive.
const P8: [i64; 9] = [
    536870904, 536870911, 536870911, 4095, 0, 0, 2097152, 520093696, 134217727,
];
/// R mod p: one, in Montgomery form.
const R: [i64; 9] = [
    32, 0, 0, 536854528, 536870911, 536870911, 528482303, 67108863, 0,
];
/// R² mod p: multiplying by it enters Montgomery form.
const R2: [i64; 9] = [
    3072, 0, 536805376, 534773759, 532676607, 536870911, 536870911, 536870910, 19,
];

/// An element of the field in Montgomery form: nine limbs below 2^29, value below 2^257.
#[derive(Clone, Copy, Debug)]
pub struct Fe([i64; 9]);

/// Signed limbs to limbs below 2^29 (the value must be nonnegative and below 2^261).
#[inline(always)]
fn normalize(t: [i64; 9]) -> Fe {
    let mut out = [0i64; 9];
    let mut carry = 0i64;
    for (o, x) in out.iter_mut().zip(t) {
        let v = x + carry;
        *o = v & MASK;
        carry = v >> 29;
    }
    Fe(out)
}

/// A nonnegative value below 2^261 in signed limbs, to below 2^257 with normalized limbs.
#[inline(always)]
fn settle(t: [i64; 9]) -> Fe {
    let Fe([l0, l1, l2, l3, l4, l5, l6, l7, l8]) = normalize(t);
    // bit 256 is bit 24 of limb 8.
    let h = l8 >> 24;
    normalize([
        l0 + h,
        l1,
        l2,
        l3 - (h << 9),
        l4,
        l5,
        l6 - (h << 18),
        l7 + (h << 21),
        l8 & ((1 << 24) - 1),
    ])
}

/// A sum of two elements (limbs below 2^30, so nothing is pending but one carry per limb) to
/// below 2^257 with normalized limbs, in one carry pass: the fold takes whatever limb 8 holds
/// above bit 24 — h·2^256 becomes h·(2^224 − 2^192 − 2^96 + 1) whatever the pending carries —
/// so the value stays congruent, nonnegative and below 2^256 + 2^234 (see the module's bounds).
#[inline(always)]
fn settle_sum(t: [i64; 9]) -> Fe {
    let [l0, l1, l2, l3, l4, l5, l6, l7, l8] = t;
    let h = l8 >> 24;
    normalize([
        l0 + h,
        l1,
        l2,
        l3 - (h << 9),
        l4,
        l5,
        l6 - (h << 18),
        l7 + (h << 21),
        l8 & ((1 << 24) - 1),
    ])
}

/// v − p if v ≥ p, else v (v normalized).
#[inline(always)]
fn minus_p_if_needed(v: [i64; 9]) -> [i64; 9] {
    let mut d = [0i64; 9];
    let mut carry = 0i64;
    for ((o, x), y) in d.iter_mut().zip(v).zip(P) {
        let t = x - y + carry;
        *o = t & MASK;
        carry = t >> 29;
    }
    // carry is −1 when v < p: keep v.
    let keep = carry; // 0 or −1 (all ones)
    let mut out = [0i64; 9];
    for ((o, x), y) in out.iter_mut().zip(v).zip(d) {
        *o = (x & keep) | (y & !keep);
    }
    out
}

/// Montgomery reduction of the 17 column sums of a product: (T + M·p) / 2^261.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn reduce(
    [t0, mut t1, mut t2, mut t3, mut t4, mut t5, mut t6, mut t7, mut t8, mut t9, mut t10, mut t11, mut t12, mut t13, mut t14, mut t15, mut t16, t17]: [i64; 18],
) -> Fe {
    let m = t0 & MASK;
    t1 += t0 >> 29;
    t3 += m << 9;
    t6 += m << 18;
    t7 -= m << 21;
    t8 += m << 24;
    let m = t1 & MASK;
    t2 += t1 >> 29;
    t4 += m << 9;
    t7 += m << 18;
    t8 -= m << 21;
    t9 += m << 24;
    let m = t2 & MASK;
    t3 += t2 >> 29;
    t5 += m << 9;
    t8 += m << 18;
    t9 -= m << 21;
    t10 += m << 24;
    let m = t3 & MASK;
    t4 += t3 >> 29;
    t6 += m << 9;
    t9 += m << 18;
    t10 -= m << 21;
    t11 += m << 24;
    let m = t4 & MASK;
    t5 += t4 >> 29;
    t7 += m << 9;
    t10 += m << 18;
    t11 -= m << 21;
    t12 += m << 24;
    let m = t5 & MASK;
    t6 += t5 >> 29;
    t8 += m << 9;
    t11 += m << 18;
    t12 -= m << 21;
    t13 += m << 24;
    let m = t6 & MASK;
    t7 += t6 >> 29;
    t9 += m << 9;
    t12 += m << 18;
    t13 -= m << 21;
    t14 += m << 24;
    let m = t7 & MASK;
    t8 += t7 >> 29;
    t10 += m << 9;
    t13 += m << 18;
    t14 -= m << 21;
    t15 += m << 24;
    let m = t8 & MASK;
    t9 += t8 >> 29;
    t11 += m << 9;
    t14 += m << 18;
    t15 -= m << 21;
    t16 += m << 24;
    normalize([t9, t10, t11, t12, t13, t14, t15, t16, t17])
}

impl Fe {
    pub const ZERO: Fe = Fe([0; 9]);
    pub const ONE: Fe = Fe(R);

    /// From 32 big-endian bytes; `None` unless below p.
    pub fn from_be_bytes(b: &[u8; 32]) -> Option<Fe> {
        let p_bytes = Fe(P).canonical_bytes();
        if b >= &p_bytes {
            return None;
        }
        Some(Fe::from_bytes_unchecked(b) * Fe(R2))
    }

    /// The limbs of a 256-bit big-endian integer (not in Montgomery form).
    fn from_bytes_unchecked(b: &[u8; 32]) -> Fe {
        let mut limbs = [0i64; 9];
        for (i, byte) in b.iter().rev().enumerate() {
            let bit = i * 8;
            let (limb, shift) = (bit / 29, bit % 29);
            let v = i64::from(*byte) << shift;
            if let Some(l) = limbs.get_mut(limb) {
                *l |= v & MASK;
            }
            if let Some(l) = limbs.get_mut(limb + 1) {
                *l |= v >> 29;
            }
        }
        Fe(limbs)
    }

    /// The limbs as a big-endian integer (they must hold a value below 2^256).
    fn canonical_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().rev().enumerate() {
            let bit = i * 8;
            let (limb, shift) = (bit / 29, bit % 29);
            let lo = self.0.get(limb).copied().unwrap_or(0) >> shift;
            let hi = self.0.get(limb + 1).copied().unwrap_or(0) << (29 - shift);
            *byte = ((lo | hi) & 0xff) as u8;
        }
        out
    }

    /// The canonical representative (below p), still in Montgomery form.
    fn canonical(&self) -> [i64; 9] {
        minus_p_if_needed(minus_p_if_needed(self.0))
    }

    pub fn to_be_bytes(self) -> [u8; 32] {
        // Out of Montgomery form: x·R · 1 / R.
        let x = self * Fe([1, 0, 0, 0, 0, 0, 0, 0, 0]);
        Fe(x.canonical()).canonical_bytes()
    }

    pub fn is_zero(&self) -> bool {
        self.canonical().iter().fold(0, |acc, l| acc | l) == 0
    }

    pub fn double(&self) -> Fe {
        *self + *self
    }

    /// 3·a in one carry pass (limbs below 3·2^29: `settle_sum`'s fold still leaves a value below
    /// 2^257, since limb 8 is below 3·2^25 and the carries into it below 4).
    #[inline]
    pub fn triple(&self) -> Fe {
        settle_sum(self.0.map(|x| 3 * x))
    }

    #[inline]
    pub fn square(&self) -> Fe {
        let [a0, a1, a2, a3, a4, a5, a6, a7, a8] = self.0;
        let [_, d1, d2, d3, d4, d5, d6, d7, d8] = self.0.map(|x| x << 1);
        let t0 = a0 * a0;
        let t1 = a0 * d1;
        let t2 = a0 * d2 + a1 * a1;
        let t3 = a0 * d3 + a1 * d2;
        let t4 = a0 * d4 + a1 * d3 + a2 * a2;
        let t5 = a0 * d5 + a1 * d4 + a2 * d3;
        let t6 = a0 * d6 + a1 * d5 + a2 * d4 + a3 * a3;
        let t7 = a0 * d7 + a1 * d6 + a2 * d5 + a3 * d4;
        let t8 = a0 * d8 + a1 * d7 + a2 * d6 + a3 * d5 + a4 * a4;
        let t9 = a1 * d8 + a2 * d7 + a3 * d6 + a4 * d5;
        let t10 = a2 * d8 + a3 * d7 + a4 * d6 + a5 * a5;
        let t11 = a3 * d8 + a4 * d7 + a5 * d6;
        let t12 = a4 * d8 + a5 * d7 + a6 * a6;
        let t13 = a5 * d8 + a6 * d7;
        let t14 = a6 * d8 + a7 * a7;
        let t15 = a7 * d8;
        let t16 = a8 * a8;
        let t17 = 0i64;
        reduce([
            t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15, t16, t17,
        ])
    }

    /// a^(p − 2) = a⁻¹ for a ≠ 0 (Fermat); `None` for 0.
    pub fn invert(&self) -> Option<Fe> {
        if self.is_zero() {
            return None;
        }
        Some(self.pow_p_minus_2())
    }

    /// `b` where `mask` is all ones, `a` where it is zero; the same instructions either way,
    /// provided the compiler cannot tell the mask is 0 or −1 (the signer's masks go through
    /// `black_box`; otherwise LLVM may make a branch of it).
    #[inline(always)]
    pub fn select(a: &Fe, b: &Fe, mask: i64) -> Fe {
        let mut out = [0i64; 9];
        for ((o, x), y) in out.iter_mut().zip(a.0).zip(b.0) {
            *o = (x & !mask) | (y & mask);
        }
        Fe(out)
    }

    /// The OR of `entry & mask` over `entries`: the entry whose mask is all ones when exactly one
    /// is and the others are zero, zero when none is. Every limb of every entry is read whatever
    /// the masks (a constant-time table lookup). Three limbs at a time, in three passes, so that
    /// V8 keeps the three sums and the mask in registers (with nine at once it kept them on the
    /// stack). The masks must be opaque to the compiler, as for [`Fe::select`].
    #[inline(always)]
    pub fn lookup<'a>(entries: impl Iterator<Item = (&'a Fe, i64)> + Clone) -> Fe {
        let (mut l0, mut l1, mut l2) = (0i64, 0i64, 0i64);
        for (Fe([a, b, c, ..]), m) in entries.clone() {
            l0 |= a & m;
            l1 |= b & m;
            l2 |= c & m;
        }
        let (mut l3, mut l4, mut l5) = (0i64, 0i64, 0i64);
        for (Fe([_, _, _, a, b, c, ..]), m) in entries.clone() {
            l3 |= a & m;
            l4 |= b & m;
            l5 |= c & m;
        }
        let (mut l6, mut l7, mut l8) = (0i64, 0i64, 0i64);
        for (Fe([.., a, b, c]), m) in entries {
            l6 |= a & m;
            l7 |= b & m;
            l8 |= c & m;
        }
        Fe([l0, l1, l2, l3, l4, l5, l6, l7, l8])
    }

    /// a^(p − 2): a⁻¹ for a ≠ 0 and 0 for 0, by a fixed chain of squarings and multiplications
    /// (constant time).
    pub fn pow_p_minus_2(&self) -> Fe {
        // p − 2 = ffffffff 00000001 00000000 00000000 00000000 ffffffff ffffffff fffffffd, with
        // x_k = a^(2^k − 1) for the runs of ones.
        let x1 = *self;
        let x2 = x1.sqn(1) * x1;
        let x4 = x2.sqn(2) * x2;
        let x8 = x4.sqn(4) * x4;
        let x16 = x8.sqn(8) * x8;
        let x32 = x16.sqn(16) * x16;
        let x30 = x16.sqn(14) * x8.sqn(6) * x4.sqn(2) * x2;
        let mut t = x32.sqn(32) * x1; // ffffffff 00000001
        t = t.sqn(128) * x32; // 00000000 × 3, ffffffff
        t = t.sqn(32) * x32; // ffffffff
        t = t.sqn(30) * x30; // fffffffd: 30 ones,
        t.sqn(2) * x1 // then 0, 1
    }

    fn sqn(&self, n: usize) -> Fe {
        let mut t = *self;
        for _ in 0..n {
            t = t.square();
        }
        t
    }
}

impl PartialEq for Fe {
    fn eq(&self, other: &Fe) -> bool {
        self.canonical() == other.canonical()
    }
}

impl Eq for Fe {}

impl Add for Fe {
    type Output = Fe;
    #[inline]
    fn add(self, rhs: Fe) -> Fe {
        let mut t = [0i64; 9];
        for ((o, x), y) in t.iter_mut().zip(self.0).zip(rhs.0) {
            *o = x + y;
        }
        settle_sum(t)
    }
}

impl Sub for Fe {
    type Output = Fe;
    #[inline]
    fn sub(self, rhs: Fe) -> Fe {
        let mut t = [0i64; 9];
        for (((o, x), y), e) in t.iter_mut().zip(self.0).zip(rhs.0).zip(P8) {
            *o = x + e - y;
        }
        settle(t)
    }
}

impl Neg for Fe {
    type Output = Fe;
    fn neg(self) -> Fe {
        Fe::ZERO - self
    }
}

impl Mul for Fe {
    type Output = Fe;
    #[inline]
    fn mul(self, rhs: Fe) -> Fe {
        let [a0, a1, a2, a3, a4, a5, a6, a7, a8] = self.0;
        let [b0, b1, b2, b3, b4, b5, b6, b7, b8] = rhs.0;
        let t0 = a0 * b0;
        let t1 = a0 * b1 + a1 * b0;
        let t2 = a0 * b2 + a1 * b1 + a2 * b0;
        let t3 = a0 * b3 + a1 * b2 + a2 * b1 + a3 * b0;
        let t4 = a0 * b4 + a1 * b3 + a2 * b2 + a3 * b1 + a4 * b0;
        let t5 = a0 * b5 + a1 * b4 + a2 * b3 + a3 * b2 + a4 * b1 + a5 * b0;
        let t6 = a0 * b6 + a1 * b5 + a2 * b4 + a3 * b3 + a4 * b2 + a5 * b1 + a6 * b0;
        let t7 = a0 * b7 + a1 * b6 + a2 * b5 + a3 * b4 + a4 * b3 + a5 * b2 + a6 * b1 + a7 * b0;
        let t8 =
            a0 * b8 + a1 * b7 + a2 * b6 + a3 * b5 + a4 * b4 + a5 * b3 + a6 * b2 + a7 * b1 + a8 * b0;
        let t9 = a1 * b8 + a2 * b7 + a3 * b6 + a4 * b5 + a5 * b4 + a6 * b3 + a7 * b2 + a8 * b1;
        let t10 = a2 * b8 + a3 * b7 + a4 * b6 + a5 * b5 + a6 * b4 + a7 * b3 + a8 * b2;
        let t11 = a3 * b8 + a4 * b7 + a5 * b6 + a6 * b5 + a7 * b4 + a8 * b3;
        let t12 = a4 * b8 + a5 * b7 + a6 * b6 + a7 * b5 + a8 * b4;
        let t13 = a5 * b8 + a6 * b7 + a7 * b6 + a8 * b5;
        let t14 = a6 * b8 + a7 * b7 + a8 * b6;
        let t15 = a7 * b8 + a8 * b7;
        let t16 = a8 * b8;
        let t17 = 0i64;
        reduce([
            t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15, t16, t17,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::ff::PrimeField;

    type Ref = <p256::NistP256 as p256::elliptic_curve::hazmat::FieldArithmetic>::FieldElement;

    fn pow2(k: usize) -> Ref {
        (0..k).fold(Ref::ONE, |a, _| a.double())
    }

    /// The element a represents, computed with p256 from its limbs: Σ l_i·2^(29i) / 2^261.
    fn reference(a: &Fe) -> Ref {
        let v = a.0.iter().enumerate().fold(Ref::ZERO, |acc, (i, l)| {
            acc + Ref::from_u64(*l as u64) * pow2(29 * i)
        });
        v * pow2(261).invert().unwrap()
    }

    /// Limbs below 2^29 and a value below 2^257 (limb 8 below 2^25): the invariant every
    /// operation must keep.
    fn well_formed(a: &Fe) -> bool {
        a.0.iter().all(|l| (0..=MASK).contains(l)) && a.0[8] < 1 << 25
    }

    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Any representation the invariant allows, with a bias to extreme limbs.
    fn random(seed: &mut u64) -> Fe {
        let mut l = [0i64; 9];
        for x in l.iter_mut() {
            *x = match xorshift(seed) % 8 {
                0 => 0,
                1 => MASK,
                _ => (xorshift(seed) as i64) & MASK,
            };
        }
        l[8] &= (1 << 25) - 1;
        Fe(l)
    }

    fn edges() -> Vec<Fe> {
        let mut max = [MASK; 9];
        max[8] = (1 << 25) - 1; // 2^257 − 1, the largest value allowed
        let mut v = vec![
            Fe::ZERO,
            Fe::ONE,
            Fe(P),
            Fe(max),
            Fe(R2),
            Fe([1, 0, 0, 0, 0, 0, 0, 0, 0]),
        ];
        let mut p2 = [0i64; 9];
        let mut carry = 0;
        for (o, x) in p2.iter_mut().zip(P) {
            let t = 2 * x + carry;
            *o = t & MASK;
            carry = t >> 29;
        }
        v.push(Fe(p2)); // 2p
        let mut pm1 = P;
        pm1[0] -= 1;
        v.push(Fe(pm1));
        v.push(normalize([
            P[0] + 1,
            P[1],
            P[2],
            P[3],
            P[4],
            P[5],
            P[6],
            P[7],
            P[8],
        ]));
        for k in (0..257).step_by(13) {
            let mut l = [0i64; 9];
            l[k / 29] = 1 << (k % 29);
            v.push(Fe(l));
        }
        for b in [[0u8; 32], [0xff; 32], [0x80; 32], [1; 32]] {
            if let Some(f) = Fe::from_be_bytes(&b) {
                v.push(f);
            }
        }
        v
    }

    fn check(a: Fe, b: Fe) {
        let (ra, rb) = (reference(&a), reference(&b));
        for (r, expect, what) in [
            (a * b, ra * rb, "mul"),
            (a + b, ra + rb, "add"),
            (a - b, ra - rb, "sub"),
            (a.square(), ra.square(), "square"),
            (-a, -ra, "neg"),
            (a.double(), ra.double(), "double"),
            (a.triple(), ra.double() + ra, "triple"),
        ] {
            assert_eq!(reference(&r), expect, "{what} {a:?} {b:?}");
            assert!(well_formed(&r), "{what} {a:?} {b:?} gave {r:?}");
        }
        assert_eq!(a == b, ra == rb);
        assert_eq!(a.is_zero(), bool::from(ra.is_zero()));
    }

    #[test]
    fn agrees_with_p256_on_edges() {
        let e = edges();
        for a in &e {
            assert!(well_formed(a), "{a:?}");
            for b in &e {
                check(*a, *b);
            }
        }
    }

    #[test]
    fn agrees_with_p256_on_random_inputs() {
        let mut seed = 0x5eed_u64;
        for _ in 0..5_000 {
            let (a, b) = (random(&mut seed), random(&mut seed));
            check(a, b);
            check(a, a);
        }
    }

    #[test]
    fn bytes_and_montgomery_form() {
        let p_bytes = Fe(P).canonical_bytes();
        assert_eq!(Fe::from_be_bytes(&p_bytes), None);
        assert_eq!(Fe::from_be_bytes(&[0xff; 32]), None);
        assert_eq!(reference(&Fe::ONE), Ref::ONE);
        let mut seed = 9u64;
        for _ in 0..300 {
            let mut b = [0u8; 32];
            for x in b.iter_mut() {
                *x = xorshift(&mut seed) as u8;
            }
            let ours = Fe::from_be_bytes(&b);
            let theirs = Ref::from_repr(b.into()).into_option();
            assert_eq!(ours.is_some(), theirs.is_some());
            if let (Some(a), Some(r)) = (ours, theirs) {
                assert_eq!(reference(&a), r);
                assert_eq!(a.to_be_bytes(), b);
            }
            let a = random(&mut seed);
            assert_eq!(a.to_be_bytes(), <[u8; 32]>::from(reference(&a).to_repr()));
        }
    }

    #[test]
    fn inversion() {
        assert_eq!(Fe::ZERO.invert(), None);
        assert_eq!(Fe(P).invert(), None);
        let mut seed = 3u64;
        let mut all = edges();
        all.extend((0..100).map(|_| random(&mut seed)));
        for a in all.into_iter().filter(|a| !a.is_zero()) {
            let inv = a.invert().unwrap();
            assert_eq!(a * inv, Fe::ONE);
            assert_eq!(reference(&inv), reference(&a).invert().unwrap());
        }
    }
}
