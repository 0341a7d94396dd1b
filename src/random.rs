//! Randomness as an input. In the filter it is Envoy's `random_get` (BoringSSL) through
//! getrandom on wasm32-wasip1; natively the OS. Tests can pass a fixed source.

pub trait Random {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomError;

/// The platform's secure random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRandom;

impl Random for SystemRandom {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(dest).map_err(|_| RandomError)
    }
}

/// 128 random bits, base64url: identifiers that must not be guessable (jti, handles).
pub fn token_id(rng: &mut dyn Random) -> Result<String, RandomError> {
    use base64::Engine as _;
    let mut b = [0u8; 16];
    rng.fill(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

#[cfg(test)]
pub mod testing {
    use super::*;

    /// A counter-based source for deterministic tests.
    #[derive(Debug, Default)]
    pub struct Counter(pub u8);

    impl Random for Counter {
        fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomError> {
            for b in dest.iter_mut() {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
            Ok(())
        }
    }

    /// A source that always fails.
    pub struct Broken;
    impl Random for Broken {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), RandomError> {
            Err(RandomError)
        }
    }

    #[test]
    fn ids_are_distinct_and_urlsafe() {
        let mut r = SystemRandom;
        let a = token_id(&mut r).unwrap();
        let b = token_id(&mut r).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
