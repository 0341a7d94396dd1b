//! RFC 6979 §3.2 nonces for P-256 with SHA-256: the `rfc6979` crate's output, byte for byte (the
//! tests compare), on SHA-256's compression function directly.
//!
//! The crate builds a fresh `SimpleHmac` per step (two compressions for the key's pads every
//! time), and after each candidate runs the DRBG's next update (two HMACs) before any retry asks
//! for it: about 30 compressions per nonce. Here:
//! - the first HMAC's key is K₀ = 0 and its message starts with V₀ ‖ 0x00 ‖ x, so the state after
//!   `ipad(K₀) ‖ V₀ ‖ 0x00 ‖ x[..31]` and `opad(K₀)` is kept per signing key;
//! - each later K's pads are compressed once and serve every HMAC under that K;
//! - the update after a candidate is run only if another candidate is asked for.
//!
//! 15 compressions per nonce. Every step is the same sequence of compressions whatever the data
//! (lengths are public); the only data-dependent branch is the retry when a candidate is not in
//! [1, n) (probability about 2^−32), as in the crate.

use p256::elliptic_curve::zeroize::Zeroize;
use sha2::block_api::compress256;

/// SHA-256's initial state.
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

type State = [u32; 8];

/// The digest of `prefix_len` bytes already compressed into `state` (a multiple of 64) followed
/// by `msg` (at most 119 bytes: with its padding, two blocks).
fn finish(mut state: State, prefix_len: usize, msg: &[u8]) -> [u8; 32] {
    let mut buf = [[0u8; 64]; 2];
    let n = msg.len();
    let blocks = if n + 9 <= 64 { 1 } else { 2 };
    let bits = ((prefix_len + n) as u64) * 8;
    {
        let flat = buf.as_flattened_mut();
        for (o, b) in flat
            .iter_mut()
            .zip(msg.iter().chain(std::iter::once(&0x80u8)))
        {
            *o = *b;
        }
        let end = blocks * 64;
        for (o, b) in flat
            .iter_mut()
            .take(end)
            .skip(end - 8)
            .zip(bits.to_be_bytes())
        {
            *o = b;
        }
    }
    compress256(&mut state, buf.get(..blocks).unwrap_or(&buf));
    buf.zeroize();
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    state.zeroize();
    out
}

/// The states after `key ⊕ ipad` and `key ⊕ opad` (a 32-byte key).
#[derive(Clone)]
struct Pads {
    inner: State,
    outer: State,
}

impl Pads {
    fn new(key: &[u8; 32]) -> Pads {
        let mut block = [[0x36u8; 64]];
        for (b, k) in block.as_flattened_mut().iter_mut().zip(key) {
            *b ^= k;
        }
        let mut inner = IV;
        compress256(&mut inner, &block);
        for b in block.as_flattened_mut().iter_mut() {
            *b ^= 0x36 ^ 0x5c;
        }
        let mut outer = IV;
        compress256(&mut outer, &block);
        block.zeroize();
        Pads { inner, outer }
    }

    /// HMAC(key, msg) for msg of at most 119 bytes.
    fn mac(&self, msg: &[u8]) -> [u8; 32] {
        self.finish(self.inner, 64, msg)
    }

    /// The HMAC from an inner state after `prefix` bytes (`ipad` and the message's first
    /// blocks) and the rest of the message.
    fn finish(&self, inner: State, prefix: usize, rest: &[u8]) -> [u8; 32] {
        let mut h = finish(inner, prefix, rest);
        let out = finish(self.outer, 64, &h);
        h.zeroize();
        out
    }
}

impl Drop for Pads {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// What a signing key keeps: the first HMAC's states (K₀ = 0, message V₀ ‖ 0x00 ‖ x[..31]).
pub struct KeyState {
    /// After `ipad(K₀) ‖ V₀ ‖ 0x00 ‖ x[..31]` (128 bytes).
    first: State,
    /// K₀'s pads (the outer one finishes the first HMAC).
    pads0: Pads,
    x_last: u8,
    x: [u8; 32],
}

impl Drop for KeyState {
    fn drop(&mut self) {
        self.first.zeroize();
        self.x.zeroize();
        self.x_last.zeroize();
    }
}

impl KeyState {
    /// For the private key `x` (32 big-endian bytes, in [1, n)).
    pub fn new(x: &[u8; 32]) -> KeyState {
        let pads0 = Pads::new(&[0u8; 32]);
        let mut block = [[0u8; 64]];
        for (o, b) in block
            .as_flattened_mut()
            .iter_mut()
            .zip([0x01u8; 32].iter().chain(&[0x00u8]).chain(x.iter()))
        {
            *o = *b;
        }
        let mut first = pads0.inner;
        compress256(&mut first, &block);
        block.zeroize();
        KeyState {
            first,
            pads0,
            x_last: x.last().copied().unwrap_or(0),
            x: *x,
        }
    }

    /// The generator for a message whose hash reduced mod n is `h` (bits2octets(H(m))).
    pub fn generator(&self, h: &[u8; 32]) -> Drbg {
        let v0 = [0x01u8; 32];
        // K₁ = HMAC(K₀, V₀ ‖ 0x00 ‖ x ‖ h), from the kept state: x's last byte and h remain.
        let mut rest = [0u8; 33];
        for (o, b) in rest.iter_mut().zip(std::iter::once(&self.x_last).chain(h)) {
            *o = *b;
        }
        let mut k = self.pads0.finish(self.first, 128, &rest);
        let pads = Pads::new(&k);
        let mut v = pads.mac(&v0);
        // K₂ = HMAC(K₁, V₁ ‖ 0x01 ‖ x ‖ h).
        let mut msg = [0u8; 97];
        for (o, b) in msg.iter_mut().zip(
            v.iter()
                .chain(&[0x01u8])
                .chain(self.x.iter())
                .chain(h.iter()),
        ) {
            *o = *b;
        }
        k = pads.mac(&msg);
        msg.zeroize();
        rest.zeroize();
        let pads = Pads::new(&k);
        k.zeroize();
        v = pads.mac(&v);
        Drbg {
            pads,
            v,
            fresh: true,
        }
    }
}

/// HMAC_DRBG after its instantiation: K's pads and V.
pub struct Drbg {
    pads: Pads,
    v: [u8; 32],
    /// No candidate taken since the last update.
    fresh: bool,
}

impl Drop for Drbg {
    fn drop(&mut self) {
        self.v.zeroize();
    }
}

impl Drbg {
    /// The next 32 bytes of output (RFC 6979 §3.2 step h: T = V = HMAC(K, V)); before the
    /// second and later, the update K = HMAC(K, V ‖ 0x00), V = HMAC(K, V) the crate runs after
    /// each output.
    pub fn next(&mut self) -> [u8; 32] {
        if !self.fresh {
            let mut msg = [0u8; 33];
            for (o, b) in msg.iter_mut().zip(&self.v) {
                *o = *b;
            }
            let mut k = self.pads.mac(&msg);
            self.pads = Pads::new(&k);
            k.zeroize();
            self.v = self.pads.mac(&self.v);
        }
        self.fresh = false;
        self.v = self.pads.mac(&self.v);
        self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{KeyInit, Mac};

    #[test]
    fn sha256_and_hmac_agree_with_the_crates() {
        use sha2::Digest;
        for n in 0..=119usize {
            let msg: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(
                finish(IV, 0, &msg)[..],
                sha2::Sha256::digest(&msg)[..],
                "{n}"
            );
            let key = [n as u8; 32];
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
            m.update(&msg);
            assert_eq!(Pads::new(&key).mac(&msg)[..], m.finalize().into_bytes()[..]);
        }
    }

    #[test]
    fn candidates_are_the_crates() {
        // fill_next_k only returns candidates in [1, n); with q = 2^256 − 1 (every 32 bytes but
        // all ones accepted) the crate's raw DRBG output shows, retries included.
        let q = p256::U256::MAX;
        for seed in 0u8..20 {
            let x: [u8; 32] = core::array::from_fn(|i| seed.wrapping_mul(31) ^ (i as u8));
            let h: [u8; 32] = core::array::from_fn(|i| seed.wrapping_add(i as u8).wrapping_mul(3));
            let mut theirs = rfc6979::KGenerator::<sha2::Sha256, p256::U256>::new(&x, &h, &[], &q);
            let mut ours = KeyState::new(&x).generator(&h);
            for _ in 0..4 {
                let mut t = [0u8; 32];
                theirs.fill_next_k(&mut t);
                assert_eq!(ours.next(), t);
            }
        }
    }
}
