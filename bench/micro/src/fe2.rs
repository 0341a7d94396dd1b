//! Two multiplications modulo 2^255 − 19 at once with wasm SIMD, against two calls of
//! fiat-crypto's 32-bit `fiat_25519_carry_mul` (the field multiplication Ed25519 signing is bound
//! by in V8; docs/wasm-crypto.md, "Ed25519 signing"). Same ten 25.5-bit limbs, same products and
//! carry chain, so the outputs are equal (checked on 2,000 random pairs before the cases run); the
//! two elements ride in lanes 0 and 1 of each limb's vector, and each product pair is one
//! `i64x2.extmul_low_i32x4_u`.
//!
//! What it showed (session 10): no gain. V8 lowers each widening multiply to two lane shuffles
//! and a `pmuludq` on x64, so the shuffles, not the multiplier, set the pace, and the 30 live
//! vectors spill; one SIMD pair costs 1.1–1.3× two scalar multiplications. Kept as the
//! measurement behind that conclusion. Only this module is compiled for `simd128`
//! (`#[target_feature]`), so the rest of the micro-benchmark is built as the filter is.

use core::arch::wasm32::*;
use std::hint::black_box;

use fiat::{fiat_25519_loose_field_element as Loose, fiat_25519_tight_field_element as Tight};
use fiat_crypto::curve25519_32 as fiat;

use super::Case;

/// Two field elements: limb i of each in lanes 0 and 1 of `0[i]` (u32x4; lanes 2 and 3 unused).
#[derive(Clone, Copy)]
pub struct Fe2([v128; 10]);

impl Fe2 {
    #[target_feature(enable = "simd128")]
    fn pack(x: &[u32; 10], y: &[u32; 10]) -> Fe2 {
        Fe2(core::array::from_fn(|i| u32x4(x[i], y[i], 0, 0)))
    }

    #[target_feature(enable = "simd128")]
    fn unpack(&self) -> ([u32; 10], [u32; 10]) {
        (
            core::array::from_fn(|i| u32x4_extract_lane::<0>(self.0[i])),
            core::array::from_fn(|i| u32x4_extract_lane::<1>(self.0[i])),
        )
    }
}

#[inline]
#[target_feature(enable = "simd128")]
fn times19(x: v128) -> v128 {
    // x·19 = x·16 + x·2 + x (u64 lanes; x < 2^40)
    i64x2_add(i64x2_add(i64x2_shl(x, 4), i64x2_shl(x, 1)), x)
}

/// fiat's carry chain, lane by lane: limbs of 26 and 25 bits in turn, the carry out of the
/// last limb times 19 back into the first, then two more short carries (limbs 0 → 1 → 2).
#[inline]
#[target_feature(enable = "simd128")]
fn carry(c: [v128; 10]) -> Fe2 {
    let width = |k: usize| if k.is_multiple_of(2) { 26 } else { 25 };
    let mask = |k: usize| u64x2_splat((1 << width(k)) - 1);
    let mut o = [u64x2_splat(0); 10];
    let mut acc = u64x2_splat(0);
    for (k, (ck, ok)) in c.iter().zip(o.iter_mut()).enumerate() {
        acc = i64x2_add(acc, *ck);
        *ok = v128_and(acc, mask(k));
        acc = u64x2_shr(acc, width(k));
    }
    let [o0, o1, o2, rest @ ..] = o;
    let x0 = i64x2_add(o0, times19(acc));
    let x1 = i64x2_add(u64x2_shr(x0, 26), o1);
    let o2 = i64x2_add(u64x2_shr(x1, 25), o2);
    let (o0, o1) = (v128_and(x0, mask(0)), v128_and(x1, mask(1)));
    let z = u64x2_splat(0);
    let n = |v: v128| i32x4_shuffle::<0, 2, 4, 4>(v, z);
    let mut out = [n(o0), n(o1), n(o2), z, z, z, z, z, z, z];
    for (d, v) in out.iter_mut().skip(3).zip(rest) {
        *d = n(v);
    }
    Fe2(out)
}

/// `x·y` for both lanes: c_k = Σ a_i·b_j (i + j = k) + 19·Σ a_i·b_j (i + j = k + 10), each
/// product doubled when i and j are both odd (the 25.5-bit radix), as fiat computes it.
#[inline]
#[target_feature(enable = "simd128")]
fn mul2(a: &Fe2, b: &Fe2) -> Fe2 {
    let a = &a.0;
    let b = &b.0;
    let n19 = u32x4_splat(19);
    let n38 = u32x4_splat(38);
    // Per column j the four multipliers a row may need: b, 2b, 19b, 38b.
    let f: [[v128; 4]; 10] = core::array::from_fn(|j| {
        [
            b[j],
            i32x4_shl(b[j], 1),
            i32x4_mul(b[j], n19),
            i32x4_mul(b[j], n38),
        ]
    });
    let mut c = [u64x2_splat(0); 10];
    macro_rules! term {
        ($i:expr, $j:expr) => {{
            const I: usize = $i;
            const J: usize = $j;
            let odd = I & 1 == 1 && J & 1 == 1;
            let k = I + J;
            let sel = (if k < 10 { 0 } else { 2 }) + (odd as usize);
            let idx = if k < 10 { k } else { k - 10 };
            c[idx] = i64x2_add(c[idx], u64x2_extmul_low_u32x4(a[I], f[J][sel]));
        }};
    }
    macro_rules! col {
        ($k:expr) => {
            term!(0, ($k + 10 - 0) % 10);
            term!(1, ($k + 10 - 1) % 10);
            term!(2, ($k + 10 - 2) % 10);
            term!(3, ($k + 10 - 3) % 10);
            term!(4, ($k + 10 - 4) % 10);
            term!(5, ($k + 10 - 5) % 10);
            term!(6, ($k + 10 - 6) % 10);
            term!(7, ($k + 10 - 7) % 10);
            term!(8, ($k + 10 - 8) % 10);
            term!(9, ($k + 10 - 9) % 10);
        };
    }
    col!(0);
    col!(1);
    col!(2);
    col!(3);
    col!(4);
    col!(5);
    col!(6);
    col!(7);
    col!(8);
    col!(9);
    carry(c)
}

fn fiat_mul(a: &[u32; 10], b: &[u32; 10]) -> [u32; 10] {
    let mut out = Tight([0; 10]);
    fiat::fiat_25519_carry_mul(&mut out, &Loose(*a), &Loose(*b));
    out.0
}

/// A field element with random limbs in the tight bounds (26/25 bits), from a seed.
fn sample(seed: u32) -> [u32; 10] {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    core::array::from_fn(|i| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s & if i % 2 == 0 { 0x3ff_ffff } else { 0x1ff_ffff }
    })
}

#[target_feature(enable = "simd128")]
fn agrees_with_fiat() -> bool {
    (0..2000u32).all(|t| {
        let (a, b, c, d) = (
            sample(4 * t),
            sample(4 * t + 1),
            sample(4 * t + 2),
            sample(4 * t + 3),
        );
        let (x, y) = mul2(&Fe2::pack(&a, &c), &Fe2::pack(&b, &d)).unpack();
        x == fiat_mul(&a, &b) && y == fiat_mul(&c, &d)
    })
}

/// Multiplications per case run: a chain, so that each depends on the one before.
const CHAIN: usize = 64;

#[target_feature(enable = "simd128")]
fn simd_chain(a: &[u32; 10], c: &[u32; 10], q: &Fe2) -> ([u32; 10], [u32; 10]) {
    let mut p = Fe2::pack(a, c);
    for _ in 0..CHAIN {
        p = mul2(&p, q);
    }
    p.unpack()
}

pub fn cases(out: &mut Vec<Case>) {
    // Calling `simd128` functions is safe in wasm: an engine without SIMD refuses the whole
    // module when it loads it (Node's and Envoy's V8 run it).
    assert!(
        agrees_with_fiat(),
        "fe2: the SIMD multiplication disagrees with fiat-crypto"
    );
    let (a, b, c, d) = (sample(1), sample(2), sample(3), sample(4));
    out.push((
        "fe2: fiat carry_mul, 2 chains ×64",
        Box::new(move || {
            let (mut x, mut y) = (black_box(a), black_box(c));
            for _ in 0..CHAIN {
                x = fiat_mul(&x, &b);
                y = fiat_mul(&y, &d);
            }
            black_box((x, y));
        }),
    ));
    let q = Fe2::pack(&b, &d);
    out.push((
        "fe2: simd128 mul2, 1 chain ×64",
        Box::new(move || {
            black_box(simd_chain(&black_box(a), &black_box(c), &q));
        }),
    ));
}
