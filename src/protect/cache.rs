//! Tokens this worker has verified, so a client calling an API many times pays for the
//! signature once: keyed by SHA-256 of the token, kept until the token's `exp`, bounded.
//!
//! Two generations: new entries go into the young map; when it holds half the bound, the old
//! map is dropped and the young one becomes old. A hit in the old map moves the entry back to
//! the young one. So memory stays under the bound, recently used tokens stay, and nothing is
//! scanned. What is cached is only what cannot change for a given token (signature, `typ`,
//! `iss`, the claims); expiry, audience, scope, revocation and the DPoP proof are checked on
//! every request.

use std::collections::HashMap;
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::access_token::Claims;

pub type Key = [u8; 32];

pub struct Verified {
    young: HashMap<Key, Rc<Claims>>,
    old: HashMap<Key, Rc<Claims>>,
    bound: usize,
}

impl Verified {
    pub fn new(bound: usize) -> Verified {
        Verified {
            young: HashMap::new(),
            old: HashMap::new(),
            bound: bound.max(2),
        }
    }

    pub fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The claims of a token verified before, if it has not expired (`now_s`).
    pub fn get(&mut self, key: &Key, now_s: u64) -> Option<Rc<Claims>> {
        if let Some(c) = self.young.get(key) {
            return (c.exp > now_s).then(|| c.clone());
        }
        let c = self.old.remove(key)?;
        if c.exp <= now_s {
            return None;
        }
        self.put(*key, c.clone());
        Some(c)
    }

    pub fn put(&mut self, key: Key, claims: Rc<Claims>) {
        if self.young.len() >= self.bound / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, claims);
    }

    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Rc<Claims> {
        Rc::new(
            serde_json::from_value(serde_json::json!({"iss": "i", "sub": "s", "aud": "a",
                "client_id": "c", "iat": 1, "exp": exp, "jti": "j"}))
            .expect("claims"),
        )
    }

    #[test]
    fn bounded_and_keeps_what_is_used() {
        let mut v = Verified::new(8);
        let hot = Verified::key("hot");
        v.put(hot, claims(100));
        for i in 0..1000 {
            v.put(Verified::key(&format!("t{i}")), claims(100));
            assert!(v.get(&hot, 50).is_some(), "a token in use stays");
            assert!(v.len() <= 8);
        }
        assert!(v.get(&Verified::key("t0"), 50).is_none());
        assert!(v.get(&hot, 100).is_none(), "expired");
    }
}
