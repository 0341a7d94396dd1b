//! Per-primitive micro-benchmark: the signatures and hashes the filter computes, timed where they
//! run in production (wasm32-wasip1 in V8). Built with the filter's release profile and run by
//! `bench/micro/run.mjs` under Node's V8 (node:wasi), by `bench/micro/envoy.py` inside Envoy's
//! own V8 (the same module, see `envoy.rs`); natively with `cargo run --release` for comparison.
//! See bench/README.md.
//!
//! Every primitive runs once per round for about `MS` milliseconds; rounds interleave the
//! primitives (a noisy neighbour then slows all of them alike), and the report gives the median
//! µs per operation over the rounds and the min–max.
//!
//! Arguments: `[rounds] [ms per primitive and round] [filter substring]`.

use std::hint::black_box;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use oauth_edge::jwk::PublicJwk;
use oauth_edge::jws::{Alg, Untrusted};
use oauth_edge::keys::{generate_jwk, KeySet};
use oauth_edge::random::SystemRandom;
use p256::elliptic_curve::ff::PrimeField as _;
use p256::elliptic_curve::group::Group;
use serde_json::{json, Value};

/// P-256's base field element (p256 does not name the type; its field trait does).
type Fe = <p256::NistP256 as p256::elliptic_curve::hazmat::FieldArithmetic>::FieldElement;

mod ed25519;
#[cfg(target_arch = "wasm32")]
mod envoy;
#[cfg(target_arch = "wasm32")]
mod fe2;
mod flows;

type Case = (&'static str, Box<dyn FnMut()>);

/// A DPoP-proof-shaped ES256 or EdDSA JWS signed by a fresh key: (token, public JWK).
fn proof(alg: Alg, n: usize) -> (String, Value) {
    let jwk = generate_jwk(alg, "k", &mut SystemRandom).unwrap_or_default();
    let ks = KeySet::from_jwks(std::slice::from_ref(&jwk), None).ok();
    let mut public = jwk.clone();
    if let Some(o) = public.as_object_mut() {
        o.remove("d");
        o.remove("kid");
        o.remove("alg");
        o.remove("use");
    }
    let header = json!({"typ":"dpop+jwt","alg":alg.as_str(),"jwk":public});
    let claims = json!({"jti": format!("jti-{n}"), "htm":"POST",
        "htu":"https://as.bench.example/oauth/token", "iat": 1_780_000_000});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = ks
        .as_ref()
        .and_then(|k| k.active())
        .and_then(|k| k.sign(input.as_bytes()))
        .unwrap_or_default();
    (format!("{input}.{}", B64.encode(sig)), public)
}

/// The DPoP path: the key is read from the proof's header, then the signature checked.
fn verify_proof(token: &str) -> bool {
    let Ok(jws) = Untrusted::parse(token, &[Alg::ES256, Alg::EdDSA]) else {
        return false;
    };
    let Some(jwk) = jws.header.jwk.clone() else {
        return false;
    };
    let Ok(key) = PublicJwk::parse(&jwk) else {
        return false;
    };
    jws.verify(&key).is_ok()
}

fn cases() -> Vec<Case> {
    let mut out: Vec<Case> = Vec::new();
    flows::cases(&mut out);
    ed25519::cases(&mut out);
    #[cfg(target_arch = "wasm32")]
    fe2::cases(&mut out);
    let msg = vec![0x5au8; 420];

    out.push((
        "sha256 420 B",
        Box::new({
            let msg = msg.clone();
            move || {
                use sha2::Digest;
                black_box(sha2::Sha256::digest(black_box(&msg)));
            }
        }),
    ));
    out.push((
        "hmac-sha256 420 B",
        Box::new({
            let msg = msg.clone();
            move || {
                use hmac::{KeyInit, Mac};
                if let Ok(mut m) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&[7u8; 32]) {
                    m.update(black_box(&msg));
                    black_box(m.finalize().into_bytes());
                }
            }
        }),
    ));

    // Signing, as tokens are signed (KeySet::sign).
    for alg in [Alg::EdDSA, Alg::ES256] {
        let jwk = generate_jwk(alg, "k", &mut SystemRandom).unwrap_or_default();
        let ks = KeySet::from_jwks(std::slice::from_ref(&jwk), None).ok();
        let msg = msg.clone();
        let name = if alg == Alg::EdDSA {
            "sign EdDSA"
        } else {
            "sign ES256"
        };
        out.push((
            name,
            Box::new(move || {
                if let Some(k) = ks.as_ref().and_then(|k| k.active()) {
                    black_box(k.sign(black_box(&msg)));
                }
            }),
        ));
    }

    // The pieces of src/es256/sign.rs: the RFC 6979 nonce, the comb (k·G projective), the affine
    // x (one field inversion).
    {
        use oauth_edge::es256::sign::parts;
        let d = [0x42u8; 32];
        let h = [0x17u8; 32];
        let key = p256::ecdsa::SigningKey::from_slice(&d)
            .ok()
            .map(|sk| oauth_edge::es256::sign::SigningKey::new(&sk));
        out.push((
            "sign ES256: nonce (rfc6979)",
            Box::new(move || {
                if let Some(key) = &key {
                    black_box(parts::nonce_for(key, black_box(&h)));
                }
            }),
        ));
        let k = parts::nonce(&d, &h);
        out.push((
            "sign ES256: comb k*G",
            Box::new(move || {
                black_box(parts::comb_only(black_box(&k)));
            }),
        ));
        out.push((
            "sign ES256: comb table build",
            Box::new(|| {
                black_box(parts::build_table());
            }),
        ));
        if let Some((x, z)) = parts::comb_only(&k) {
            out.push((
                "sign ES256: affine x",
                Box::new(move || {
                    black_box(parts::affine_x(black_box(&x), black_box(&z)));
                }),
            ));
        }
    }

    // ES256 signing with p256 0.14 directly (what KeySet::sign did before src/es256/sign.rs).
    {
        use p256::ecdsa::signature::Signer;
        let sk = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).ok();
        let msg = msg.clone();
        out.push((
            "sign ES256, p256 0.14",
            Box::new(move || {
                if let Some(k) = &sk {
                    let s: p256::ecdsa::Signature = k.sign(black_box(&msg));
                    black_box(s);
                }
            }),
        ));
    }

    // ES256 verification alone: p256 0.14 (what the filter used before) and src/es256.rs with the
    // key's table cached ("seen key") or built first ("new key": the cache emptied every time).
    {
        use p256::ecdsa::signature::{Signer, Verifier};
        let sk = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).ok();
        let sig: Option<p256::ecdsa::Signature> = sk.as_ref().map(|k| k.sign(&msg));
        let vk = sk.as_ref().map(|k| *k.verifying_key());
        let key = vk.as_ref().and_then(oauth_edge::es256::PublicKey::new);
        let raw = sig.map(|s| s.to_bytes().to_vec()).unwrap_or_default();
        let (m1, m2, m3) = (msg.clone(), msg.clone(), msg.clone());
        let (k2, k3) = (key.clone(), key);
        let (r2, r3) = (raw.clone(), raw);
        out.push((
            "ES256 verify, p256 0.14",
            Box::new(move || {
                if let (Some(vk), Some(sig)) = (&vk, &sig) {
                    assert!(vk.verify(black_box(&m1), sig).is_ok());
                }
            }),
        ));
        out.push((
            "ES256 verify, es256 seen key",
            Box::new(move || {
                if let Some(k) = &k2 {
                    assert!(oauth_edge::es256::verify(k, black_box(&m2), &r2));
                }
            }),
        ));
        out.push((
            "ES256 verify, es256 new key",
            Box::new(move || {
                oauth_edge::es256::clear_cache();
                if let Some(k) = &k3 {
                    assert!(oauth_edge::es256::verify(k, black_box(&m3), &r3));
                }
            }),
        ));
    }

    // Proof verification, the whole DPoP signature path (parse JWS, parse the header's JWK,
    // verify). "seen key": the same key every time; "new key": a pool of keys, more than the
    // verifier caches, in turn.
    for alg in [Alg::EdDSA, Alg::ES256] {
        let (t, _) = proof(alg, 0);
        let name = if alg == Alg::EdDSA {
            "DPoP proof EdDSA, seen key"
        } else {
            "DPoP proof ES256, seen key"
        };
        out.push((
            name,
            Box::new(move || {
                assert!(verify_proof(black_box(&t)));
            }),
        ));
    }
    let pool: Vec<String> = (0..(oauth_edge::es256::CACHE_KEYS + 64))
        .map(|i| proof(Alg::ES256, i).0)
        .collect();
    let mut i = 0usize;
    out.push((
        "DPoP proof ES256, new key",
        Box::new(move || {
            i = (i + 1) % pool.len();
            if let Some(t) = pool.get(i) {
                assert!(verify_proof(black_box(t)));
            }
        }),
    ));
    // Parsing alone (so the verification share can be told apart).
    let (t, public) = proof(Alg::ES256, 1);
    out.push((
        "ES256 JWK + JWS parse only",
        Box::new(move || {
            black_box(Untrusted::parse(black_box(&t), &[Alg::ES256]).is_ok());
            black_box(PublicJwk::parse(black_box(&public)).is_ok());
        }),
    ));

    // p256 building blocks.
    let a = Fe::from_u64(0x1234_5678_9abc_def1).square().square();
    let b = a.square() + a;
    out.push((
        "p256 field mul",
        Box::new(move || {
            black_box(black_box(a) * black_box(b));
        }),
    ));
    out.push((
        "p256 field square",
        Box::new(move || {
            black_box(black_box(a).square());
        }),
    ));
    out.push((
        "p256 field add",
        Box::new(move || {
            black_box(black_box(a) + black_box(b));
        }),
    ));
    out.push((
        "p256 field invert",
        Box::new(move || {
            black_box(black_box(a).invert());
        }),
    ));
    // The verifier's own field (src/es256/field.rs).
    {
        use oauth_edge::es256::field::Fe as Own;
        let a = Own::from_be_bytes(&a.to_repr().into()).unwrap_or(Own::ONE);
        let b = Own::from_be_bytes(&b.to_repr().into()).unwrap_or(Own::ONE);
        out.push((
            "es256 field mul",
            Box::new(move || {
                black_box(black_box(a) * black_box(b));
            }),
        ));
        out.push((
            "es256 field square",
            Box::new(move || {
                black_box(black_box(a).square());
            }),
        ));
        out.push((
            "es256 field add",
            Box::new(move || {
                black_box(black_box(a) + black_box(b));
            }),
        ));
        out.push((
            "es256 field invert",
            Box::new(move || {
                black_box(black_box(a).invert());
            }),
        ));
    }
    let s = p256::Scalar::from(0x1234_5678_9abc_def1u64)
        .square()
        .square();
    out.push((
        "p256 scalar mul",
        Box::new(move || {
            black_box(black_box(s) * black_box(s));
        }),
    ));
    out.push((
        "p256 scalar invert_vartime",
        Box::new(move || {
            black_box(black_box(s).invert_vartime());
        }),
    ));
    out.push((
        "p256 scalar invert (ct)",
        Box::new(move || {
            black_box(black_box(s).invert());
        }),
    ));
    let p = p256::ProjectivePoint::generator() * s;
    let q = p.double();
    let qa = p256::AffinePoint::from(q);
    out.push((
        "p256 point double",
        Box::new(move || {
            black_box(black_box(p).double());
        }),
    ));
    out.push((
        "p256 point add",
        Box::new(move || {
            black_box(black_box(p) + black_box(q));
        }),
    ));
    out.push((
        "p256 point add mixed",
        Box::new(move || {
            black_box(black_box(p) + black_box(qa));
        }),
    ));
    out.push((
        "p256 k*G (table, ct)",
        Box::new(move || {
            black_box(p256::ProjectivePoint::mul_by_generator(black_box(&s)));
        }),
    ));
    out.push((
        "p256 k*P (variable base, ct)",
        Box::new(move || {
            black_box(black_box(p) * black_box(s));
        }),
    ));
    out.push((
        "p256 to_affine",
        Box::new(move || {
            black_box(p256::AffinePoint::from(black_box(p)));
        }),
    ));
    out
}

/// One line to stdout in one write: Envoy's WASI logs every fd_write as a line of its own.
fn say(line: String) {
    use std::io::Write as _;
    let _ = std::io::stdout()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Before/after pairs whose ratio is taken round by round (same round: the same load).
const RATIOS: [(&str, &str); 6] = [
    ("sign ES256", "sign ES256, p256 0.14"),
    ("ES256 verify, es256 seen key", "ES256 verify, p256 0.14"),
    ("ES256 verify, es256 new key", "ES256 verify, p256 0.14"),
    ("es256 field mul", "p256 field mul"),
    ("es256 field square", "p256 field square"),
    ("DPoP proof ES256, seen key", "DPoP proof EdDSA, seen key"),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // No argv[0] at all: started by a proxy-wasm host (Envoy calls `_start` when it starts a VM),
    // which runs the benchmark from proxy_on_configure (envoy.rs).
    if let Some((_, rest)) = args.split_first() {
        run(rest);
    }
}

/// The benchmark: `args` are `[rounds] [ms per primitive and round] [filter substring]`.
fn run(args: &[String]) {
    let rounds: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let ms: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(300.0);
    let filter = args.get(2).cloned().unwrap_or_default();
    let mut cases: Vec<Case> = cases()
        .into_iter()
        .filter(|(n, _)| n.contains(filter.as_str()))
        .collect();
    // Warm-up (JIT tiers, lazily built tables), and a per-case batch size of about 1 ms.
    let mut batch = Vec::new();
    for (_, f) in cases.iter_mut() {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed().as_secs_f64() < 0.2 {
            f();
            n += 1;
        }
        let per = 0.2 / n as f64;
        batch.push(((0.001 / per).ceil() as u64).max(1));
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in cases.iter_mut().enumerate() {
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed().as_secs_f64() * 1000.0 < ms {
                for _ in 0..batch[i] {
                    f();
                }
                n += batch[i];
            }
            samples[i].push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    say(format!(
        "{:<32} {:>12} {:>20}",
        "primitive", "µs/op median", "min–max over rounds"
    ));
    for (i, (name, _)) in cases.iter().enumerate() {
        let s = &mut samples[i];
        let m = median(s);
        let lo = s.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = s.iter().cloned().fold(0.0, f64::max);
        say(format!(
            "{:<32} {:>12.3} {:>20}",
            name,
            m,
            format!("{lo:.3}–{hi:.3}")
        ));
    }
    let index = |n: &str| cases.iter().position(|(c, _)| *c == n);
    for (a, b) in RATIOS {
        let (Some(i), Some(j)) = (index(a), index(b)) else {
            continue;
        };
        let mut r: Vec<f64> = samples[i]
            .iter()
            .zip(&samples[j])
            .map(|(x, y)| x / y)
            .collect();
        let m = median(&mut r);
        let lo = r.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = r.iter().cloned().fold(0.0, f64::max);
        say(format!(
            "ratio {a} / {b}: {m:.3} ({lo:.3}–{hi:.3}) per round"
        ));
    }
}
