//! The pieces of an Ed25519 signature (RFC 8032 §5.1.6) as ed25519-dalek computes them, and the
//! fixed-base multiplication with each of curve25519-dalek's basepoint table sizes: where an
//! EdDSA token's signing time goes in V8, and what a larger table would save.

use std::hint::black_box;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, ED25519_BASEPOINT_TABLE};
use curve25519_dalek::edwards::{EdwardsBasepointTableRadix32, EdwardsBasepointTableRadix64};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable;
use sha2::{Digest, Sha512};

use super::Case;

pub fn cases(out: &mut Vec<Case>) {
    let msg = vec![0x5au8; 420];
    let seed = [0x42u8; 32];
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let vk = sk.verifying_key();
    let esk = ed25519_dalek::hazmat::ExpandedSecretKey::from(&seed);
    let r = Scalar::from_bytes_mod_order_wide(&Sha512::digest(&msg).into());
    let k = Scalar::from_bytes_mod_order_wide(&Sha512::digest(b"k").into());

    out.push((
        "ed25519: raw_sign, expanded key",
        Box::new({
            let msg = msg.clone();
            move || {
                black_box(ed25519_dalek::hazmat::raw_sign::<Sha512>(
                    black_box(&esk),
                    black_box(&msg),
                    &vk,
                ));
            }
        }),
    ));
    out.push((
        "ed25519: sha512 452 B",
        Box::new({
            let msg = msg.clone();
            move || {
                let mut h = Sha512::new();
                h.update([7u8; 32]);
                h.update(black_box(&msg));
                black_box(h.finalize());
            }
        }),
    ));
    out.push((
        "ed25519: expand key (sha512 32 B)",
        Box::new(move || {
            black_box(ed25519_dalek::hazmat::ExpandedSecretKey::from(black_box(
                &seed,
            )));
        }),
    ));
    out.push((
        "ed25519: scalar from 64 B hash",
        Box::new(|| {
            black_box(Scalar::from_bytes_mod_order_wide(black_box(&[0x33u8; 64])));
        }),
    ));
    out.push((
        "ed25519: scalar k*s+r",
        Box::new(move || {
            black_box(black_box(k) * black_box(r) + black_box(r));
        }),
    ));
    out.push((
        "ed25519: mul_base radix16 static",
        Box::new(move || {
            black_box(ED25519_BASEPOINT_TABLE.mul_base(black_box(&r)));
        }),
    ));
    // Radix 128 and 256 are left out: their tables (240 and 480 KB) are built on the stack by
    // `create`, which overflows wasm32's 1 MB stack here (silently: it corrupts memory).
    macro_rules! table {
        ($name:literal, $t:ty) => {{
            let t = <$t>::create(&ED25519_BASEPOINT_POINT);
            out.push((
                $name,
                Box::new(move || {
                    black_box(t.mul_base(black_box(&r)));
                }),
            ));
        }};
    }
    table!("ed25519: mul_base radix32", EdwardsBasepointTableRadix32);
    table!("ed25519: mul_base radix64", EdwardsBasepointTableRadix64);
    let p = ED25519_BASEPOINT_TABLE.mul_base(&r);
    out.push((
        "ed25519: compress",
        Box::new(move || {
            black_box(black_box(p).compress());
        }),
    ));
}
