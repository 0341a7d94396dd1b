//! The client registry contract (docs/registry.md): `GET {path_prefix}{client_id}` on an Envoy
//! cluster, answered with RFC 7591 client metadata (200), or 404 for an unknown client.
//!
//! Answers are cached twice: per worker in memory (no JSON parse on the hot path), and in
//! Envoy's shared data so every worker of the process shares one registry call. Shared data has
//! no expiry and no delete, so an entry carries its own expiry time, and only *found* clients
//! are written there: the set of keys is bounded by the number of real clients, while unknown
//! ids (which anybody can invent) are remembered only in the bounded per-worker cache.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::client::Client;
use crate::config::RegistryConfig;

/// Everything but unreserved characters (RFC 3986 §2.3) is escaped in the path segment.
pub const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

use crate::http::Call;

pub fn call(cfg: &RegistryConfig, client_id: &str) -> Call {
    let path = format!(
        "{}{}",
        cfg.path_prefix,
        utf8_percent_encode(client_id, SEGMENT)
    );
    Call {
        cluster: cfg.cluster.clone(),
        headers: vec![
            (":method", "GET".into()),
            (":path", path),
            (":authority", cfg.authority.clone()),
            ("accept", "application/json".into()),
            ("user-agent", "oauth-edge".into()),
        ],
        timeout: cfg.timeout,
        body: None,
    }
}

pub use crate::flow::Lookup;

/// Classifies a registry answer in one place: no status (reset), 404, 2xx, anything else.
/// `status` is `None` when the call failed without an HTTP answer.
pub fn classify(client_id: &str, status: Option<u16>, body: &[u8]) -> Lookup {
    match status {
        None => Lookup::Unavailable("registry call failed (reset or no answer)".into()),
        Some(404) => Lookup::NotFound,
        Some(200) => match Client::from_slice(body) {
            Ok(c) if c.client_id == client_id => Lookup::Found(Rc::new(c)),
            Ok(_) => Lookup::Unavailable("registry answered for another client_id".into()),
            Err(e) => {
                Lookup::Unavailable(format!("registry answer is not valid client metadata: {e}"))
            }
        },
        Some(s) => Lookup::Unavailable(format!("registry answered status {s}")),
    }
}

/// The shared-data key of a client's cached registry answer.
pub fn shared_key(client_id: &str) -> String {
    format!("oauth_edge.client.{client_id}")
}

/// A shared-data cache entry: `c1 <expires_at_ms>\n<registry body>`.
pub fn encode_entry(expires_at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut v = format!("c1 {expires_at_ms}\n").into_bytes();
    v.extend_from_slice(body);
    v
}

/// The client in a shared-data entry if it is still fresh and names the same client.
pub fn decode_entry(client_id: &str, entry: &[u8], now_ms: u64) -> Option<(Rc<Client>, u64)> {
    let nl = entry.iter().position(|b| *b == b'\n')?;
    let head = std::str::from_utf8(entry.get(..nl)?).ok()?;
    let expires: u64 = head.strip_prefix("c1 ")?.parse().ok()?;
    if now_ms >= expires {
        return None;
    }
    let c = Client::from_slice(entry.get(nl + 1..)?).ok()?;
    (c.client_id == client_id).then(|| (Rc::new(c), expires))
}

/// The per-worker cache of registry answers, found and not found, bounded in size.
#[derive(Debug, Default)]
pub struct LocalCache {
    /// Registry answers for real clients: bounded by the registry's own client count, since
    /// only the registry can make an entry here.
    found: HashMap<String, (Rc<Client>, u64)>,
    /// Ids the registry does not know: anyone can invent them, so they live apart, at most
    /// [`NEGATIVE_MAX`], the oldest evicted first. A flood of made-up ids never pushes a real
    /// client out.
    unknown: HashMap<String, u64>,
    unknown_order: VecDeque<String>,
}

/// Found clients kept per worker. Past it (only a registry with more clients than this gets
/// here) expired entries go first, then the whole map.
pub const LOCAL_CACHE_MAX: usize = 10_000;
/// Unknown ids remembered per worker.
pub const NEGATIVE_MAX: usize = 4_096;

impl LocalCache {
    /// `Some(Some(client))` found, `Some(None)` known unknown, `None` ask further.
    pub fn get(&self, client_id: &str, now_ms: u64) -> Option<Option<Rc<Client>>> {
        if let Some((c, exp)) = self.found.get(client_id) {
            if now_ms < *exp {
                return Some(Some(c.clone()));
            }
        }
        match self.unknown.get(client_id) {
            Some(exp) if now_ms < *exp => Some(None),
            _ => None,
        }
    }

    pub fn put(&mut self, client_id: &str, client: Option<Rc<Client>>, now_ms: u64, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let expires = now_ms.saturating_add(crate::duration::millis(ttl));
        match client {
            Some(c) => {
                self.forget_unknown(client_id);
                if self.found.len() >= LOCAL_CACHE_MAX && !self.found.contains_key(client_id) {
                    self.found.retain(|_, (_, exp)| *exp > now_ms);
                    if self.found.len() >= LOCAL_CACHE_MAX {
                        self.found.clear();
                    }
                }
                self.found.insert(client_id.to_string(), (c, expires));
            }
            None => {
                self.found.remove(client_id);
                if self
                    .unknown
                    .insert(client_id.to_string(), expires)
                    .is_none()
                {
                    self.unknown_order.push_back(client_id.to_string());
                }
                while self.unknown.len() > NEGATIVE_MAX {
                    match self.unknown_order.pop_front() {
                        Some(oldest) => {
                            self.unknown.remove(&oldest);
                        }
                        None => break,
                    }
                }
            }
        }
    }

    fn forget_unknown(&mut self, client_id: &str) {
        if self.unknown.remove(client_id).is_some() {
            self.unknown_order.retain(|id| id != client_id);
        }
    }

    pub fn len(&self) -> usize {
        self.found.len() + self.unknown.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::hash_secret;

    fn cfg() -> RegistryConfig {
        RegistryConfig {
            cluster: "registry".into(),
            authority: "reg.local".into(),
            path_prefix: "/clients/".into(),
            timeout: Duration::from_millis(300),
            cache_ttl: Duration::from_secs(60),
            negative_cache_ttl: Duration::from_secs(5),
            misses_per_address: crate::config::Limit {
                requests: 30,
                window: Duration::from_secs(10),
            },
        }
    }

    fn body(id: &str) -> Vec<u8> {
        serde_json::json!({"client_id": id, "client_secret": hash_secret("s"), "grant_types": ["client_credentials"], "extra": 1})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn call_escapes_the_id() {
        let c = call(&cfg(), "a b/../c?x");
        assert!(c
            .headers
            .contains(&(":path", "/clients/a%20b%2F..%2Fc%3Fx".into())));
        assert!(c.headers.contains(&(":authority", "reg.local".into())));
        assert!(c.headers.contains(&(":method", "GET".into())));
        assert_eq!(c.timeout, Duration::from_millis(300));
    }

    #[test]
    fn classification() {
        assert!(matches!(
            classify("c", Some(200), &body("c")),
            Lookup::Found(_)
        ));
        assert!(matches!(
            classify("c", Some(404), b"whatever"),
            Lookup::NotFound
        ));
        for (status, b) in [
            (None, &b""[..]),
            (Some(500), &b"{}"[..]),
            (Some(503), &body("c")[..]),
            (Some(200), &b"<html>"[..]),
            (Some(200), &b""[..]),
            (Some(200), &body("other")[..]),
            (
                Some(200),
                &br#"{"client_id":"c","client_secret":"plain"}"#[..],
            ),
            (Some(302), &b""[..]),
        ] {
            assert!(
                matches!(classify("c", status, b), Lookup::Unavailable(_)),
                "{status:?}"
            );
        }
    }

    #[test]
    fn shared_entries_expire_and_check_the_id() {
        let e = encode_entry(1_000, &body("c"));
        assert!(decode_entry("c", &e, 999).is_some());
        assert!(decode_entry("c", &e, 1_000).is_none());
        assert!(decode_entry("d", &e, 0).is_none());
        for garbage in [&b""[..], b"\n", b"c1 x\n{}", b"c1 5", b"", &[0xff, b'\n']] {
            assert!(decode_entry("c", garbage, 0).is_none());
        }
    }

    #[test]
    fn local_cache_is_bounded_and_expires() {
        let mut lc = LocalCache::default();
        lc.put("x", None, 0, Duration::from_millis(10));
        assert_eq!(lc.get("x", 5), Some(None));
        assert_eq!(lc.get("x", 10), None);
        lc.put("y", None, 0, Duration::ZERO);
        assert_eq!(lc.get("y", 0), None);
        for i in 0..(LOCAL_CACHE_MAX + 10) {
            lc.put(&format!("id{i}"), None, 0, Duration::from_millis(100));
        }
        assert!(lc.len() <= LOCAL_CACHE_MAX);
    }

    #[test]
    fn made_up_ids_never_evict_a_found_client() {
        let mut lc = LocalCache::default();
        let client = Rc::new(Client::from_slice(&body("good")).unwrap());
        lc.put("good", Some(client), 0, Duration::from_secs(60));
        for i in 0..(NEGATIVE_MAX * 5) {
            lc.put(&format!("ghost{i}"), None, 0, Duration::from_secs(60));
        }
        assert!(matches!(lc.get("good", 1), Some(Some(_))));
        assert_eq!(lc.len(), NEGATIVE_MAX + 1);
        // The newest unknown ids are remembered, the oldest were evicted first.
        let last = format!("ghost{}", NEGATIVE_MAX * 5 - 1);
        assert_eq!(lc.get(&last, 1), Some(None));
        assert_eq!(lc.get("ghost0", 1), None);
        // An id that becomes known leaves the unknown list.
        let later = Rc::new(Client::from_slice(&body(&last)).unwrap());
        lc.put(&last, Some(later), 1, Duration::from_secs(60));
        assert!(matches!(lc.get(&last, 2), Some(Some(_))));
    }
}
