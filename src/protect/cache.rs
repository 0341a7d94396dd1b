//! Tokens this worker has verified, so a client calling an API many times pays for the
//! signature once: keyed by the token itself (the map's SipHash with a per-map random key, over
//! the token's length and its signature's last bytes ([`TailHash`]), costs far less than a
//! SHA-256 of the token, and a hit compares the whole token, so nothing short of the exact token
//! ever matches), kept until the token's `exp`, bounded.
//!
//! Two generations: new entries go into the young map; when it holds half the bound, the old
//! map is dropped and the young one becomes old. A hit in the old map moves the entry back to
//! the young one. So memory stays under the bound (entries × the token's length, about 0.5–1 KB
//! each), recently used tokens stay, and nothing is scanned. What is cached is only what cannot
//! change for a given token (signature, `typ`, `iss`, the claims); expiry, audience, scope,
//! revocation and the DPoP proof are checked on every request. For revocation an entry also
//! remembers the deny-list's epoch at which the token was last found not revoked
//! ([`crate::access_token::revocation_epoch`]): while the epoch stays, nothing was revoked in
//! between, and the deny-list itself need not be read.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use crate::access_token::Claims;

/// A verified token's claims, and when it was last seen not revoked.
pub struct Entry {
    pub claims: Claims,
    /// The deny-list epoch of the last check that found the token not revoked (0: none yet).
    pub clean_at: Cell<u64>,
}

impl Entry {
    pub fn new(claims: Claims) -> Entry {
        Entry {
            claims,
            clean_at: Cell::new(0),
        }
    }
}

impl std::ops::Deref for Entry {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.claims
    }
}

/// How many bytes at a token's end its hash covers.
const HASHED_TAIL: usize = 48;

/// The map's keyed SipHash over a token's length and its last [`HASHED_TAIL`] bytes only: the
/// end of a JWS is its signature, which differs between any two tokens we issued, so the hash
/// spreads them as well as the whole token would, at a fraction of the cost (a token is 400–1,000
/// bytes). Equality is still the whole token's, so a lookup matches nothing but the exact
/// token; a string crafted to share a cached token's tail costs one comparison, no more (only
/// tokens we signed are ever inserted, and the key stays secret per map).
#[derive(Clone, Default)]
struct TailHash(RandomState);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher(std::collections::hash_map::DefaultHasher);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = bytes
            .get(bytes.len().saturating_sub(HASHED_TAIL)..)
            .unwrap_or(bytes);
        self.0.write_usize(bytes.len());
        self.0.write(tail);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

pub struct Verified {
    young: HashMap<Box<str>, Rc<Entry>, TailHash>,
    old: HashMap<Box<str>, Rc<Entry>, TailHash>,
    bound: usize,
}

impl Verified {
    pub fn new(bound: usize) -> Verified {
        Verified {
            young: HashMap::default(),
            old: HashMap::default(),
            bound: bound.max(2),
        }
    }

    /// The claims of a token verified before, if it has not expired (`now_s`).
    pub fn get(&mut self, token: &str, now_s: u64) -> Option<Rc<Entry>> {
        if let Some(c) = self.young.get(token) {
            return (c.exp > now_s).then(|| c.clone());
        }
        let (k, c) = self.old.remove_entry(token)?;
        if c.exp <= now_s {
            return None;
        }
        self.insert(k, c.clone());
        Some(c)
    }

    pub fn put(&mut self, token: &str, claims: Rc<Entry>) {
        self.insert(token.into(), claims);
    }

    fn insert(&mut self, token: Box<str>, claims: Rc<Entry>) {
        if self.young.len() >= self.bound / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(token, claims);
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

    fn claims(exp: u64) -> Rc<Entry> {
        Rc::new(Entry::new(
            serde_json::from_value(serde_json::json!({"iss": "i", "sub": "s", "aud": "a",
                "client_id": "c", "iat": 1, "exp": exp, "jti": "j"}))
            .expect("claims"),
        ))
    }

    #[test]
    fn bounded_and_keeps_what_is_used() {
        let mut v = Verified::new(8);
        v.put("hot", claims(100));
        for i in 0..1000 {
            v.put(&format!("t{i}"), claims(100));
            assert!(v.get("hot", 50).is_some(), "a token in use stays");
            assert!(v.len() <= 8);
        }
        assert!(v.get("t0", 50).is_none());
        assert!(v.get("hot", 100).is_none(), "expired");
        assert!(v.get("hot!", 50).is_none(), "only the exact token");
    }

    #[test]
    fn tokens_with_the_same_tail_are_still_told_apart() {
        let tail = "x".repeat(HASHED_TAIL + 10);
        let (a, b) = (format!("a.{tail}"), format!("b.{tail}"));
        let mut v = Verified::new(8);
        v.put(&a, claims(100));
        assert!(v.get(&a, 50).is_some());
        assert!(v.get(&b, 50).is_none(), "same tail, another token");
        assert!(v.get(&tail, 50).is_none(), "a suffix is not the token");
        v.put(&b, claims(200));
        assert_eq!(v.get(&a, 50).map(|c| c.exp), Some(100));
        assert_eq!(v.get(&b, 50).map(|c| c.exp), Some(200));
    }
}
