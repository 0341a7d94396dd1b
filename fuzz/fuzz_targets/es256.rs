//! Differential: the ES256 verifier of `src/es256.rs` against p256 0.14's, which it replaced,
//! on signatures made from the input (valid ones, valid ones with bits flipped, their high-s
//! twins, edge-case r and s) and on arbitrary keys and signatures; the constant-time signer's
//! signatures against p256's (the same bytes: RFC 6979 nonces); and its field arithmetic
//! (`src/es256/field.rs`) against p256's on the input's first two 32-byte values. They must
//! always agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oauth_edge::es256;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::elliptic_curve::ff::PrimeField as _;

/// n − 1, n, p − n − 1, p − n and p − n + 1 (big-endian): where `x ≡ r (mod n)` changes form.
const EDGES: [[u8; 32]; 5] = {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    const PN: [u8; 32] = [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x43, 0x19, 0x05, 0x53, 0x58, 0xe8, 0x61,
        0x7b, 0x0c, 0x46, 0x35, 0x3d, 0x03, 0x9c, 0xda, 0xae,
    ];
    let mut n1 = N;
    n1[31] -= 1;
    let mut pn1 = PN;
    pn1[31] -= 1;
    let mut pn2 = PN;
    pn2[31] += 1;
    [n1, N, pn1, PN, pn2]
};

fn reference(vk: &p256::ecdsa::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    sig.len() == 64
        && p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
}

fn check(vk: &p256::ecdsa::VerifyingKey, msg: &[u8], sig: &[u8]) {
    let key = es256::PublicKey::new(vk).expect("a p256 key converts");
    assert_eq!(
        es256::verify(&key, msg, sig),
        reference(vk, msg, sig),
        "key {:02x?} msg {:02x?} sig {:02x?}",
        key.xy(),
        msg,
        sig
    );
}

type Ref = <p256::NistP256 as p256::elliptic_curve::hazmat::FieldArithmetic>::FieldElement;

fn field(a: &[u8; 32], b: &[u8; 32]) {
    use es256::field::Fe;
    let (Some(x), Some(y)) = (Fe::from_be_bytes(a), Fe::from_be_bytes(b)) else {
        assert!(
            Ref::from_repr((*a).into()).is_none().into()
                || Ref::from_repr((*b).into()).is_none().into()
        );
        return;
    };
    let rx = Ref::from_repr((*a).into()).expect("below p");
    let ry = Ref::from_repr((*b).into()).expect("below p");
    let bytes = |r: Ref| -> [u8; 32] { r.to_repr().into() };
    assert_eq!((x * y).to_be_bytes(), bytes(rx * ry));
    assert_eq!((x + y).to_be_bytes(), bytes(rx + ry));
    assert_eq!((x - y).to_be_bytes(), bytes(rx - ry));
    assert_eq!((-x).to_be_bytes(), bytes(-rx));
    assert_eq!(x.square().to_be_bytes(), bytes(rx.square()));
    assert_eq!((x * y * y).to_be_bytes(), bytes(rx * ry * ry));
    assert_eq!(x == y, a == b);
    if let Some(i) = x.invert() {
        assert_eq!(i.to_be_bytes(), bytes(rx.invert().expect("nonzero")));
    }
}

fuzz_target!(|data: &[u8]| {
    if let (Some(a), Some(b)) = (data.get(..32), data.get(32..64)) {
        if let (Ok(a), Ok(b)) = (a.try_into(), b.try_into()) {
            field(a, b);
        }
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if rest.len() < 32 {
        return;
    }
    let (d, rest) = rest.split_at(32);
    if mode & 0x80 != 0 {
        // An arbitrary key (x ‖ y) and signature: p256 must accept the key first.
        if rest.len() < 64 {
            return;
        }
        let (sig, msg) = rest.split_at(64);
        let mut sec1 = vec![4u8];
        sec1.extend_from_slice(d);
        sec1.extend_from_slice(msg.get(..32).unwrap_or(msg));
        if let Ok(vk) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1) {
            check(&vk, msg, sig);
        }
        return;
    }
    let Ok(sk) = p256::ecdsa::SigningKey::from_slice(d) else {
        return;
    };
    let vk = *sk.verifying_key();
    let (mask, msg) = rest.split_at(rest.len().min(64));
    let sig: p256::ecdsa::Signature = sk.sign(msg);
    let good = sig.to_bytes();
    // The constant-time signer makes p256's signature, byte for byte (RFC 6979 nonces).
    assert_eq!(
        es256::sign::SigningKey::new(&sk)
            .sign(msg)
            .map(|s| s.to_vec()),
        Some(good.to_vec())
    );
    let mut s = good.to_vec();
    match mode % 6 {
        0 => {}
        1 => {
            for (b, m) in s.iter_mut().zip(mask) {
                *b ^= m;
            }
        }
        2 => {
            s = mask.to_vec();
        }
        3 => {
            let (r, sc) = sig.split_scalars();
            s = p256::ecdsa::Signature::from_scalars(r.to_repr(), (-*sc).to_repr())
                .map(|x| x.to_bytes().to_vec())
                .unwrap_or_default();
        }
        4 => {
            let e = EDGES[usize::from(mask.first().copied().unwrap_or(0)) % EDGES.len()];
            if mode & 0x40 != 0 {
                s[..32].copy_from_slice(&e);
            } else {
                s[32..].copy_from_slice(&e);
            }
        }
        _ => {
            // The signature over another message.
            check(&vk, mask, &good);
        }
    }
    check(&vk, msg, &s);
});
