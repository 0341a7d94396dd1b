//! Fetching clients' `jwks_uri` (for private_key_jwt): the call to dispatch, the answer's
//! classification, and the per-worker cache of parsed key sets.
//!
//! The call goes to one configured Envoy cluster with the URL's authority and path: in
//! production a dynamic forward proxy cluster (Envoy resolves the host and does TLS), in tests a
//! static one. URLs come only from registered client metadata, never from a request, and the
//! cache holds at most [`MAX_ENTRIES`] sets, so nothing a caller sends can grow it.

use std::collections::HashMap;
use std::rc::Rc;

use crate::config::JwksFetchConfig;
use crate::flow::JwksLookup;
use crate::http::Call;
use crate::jwk::JwkSet;

pub const MAX_ENTRIES: usize = 1_024;

/// The dispatch for `url`, or why it cannot be made.
pub fn call(cfg: &JwksFetchConfig, url: &str) -> Result<Call, &'static str> {
    let (scheme, rest) = url.split_once("://").ok_or("jwks_uri is not a URL")?;
    match scheme {
        "https" => {}
        "http" if !cfg.require_https => {}
        _ => return Err("jwks_uri must be an https URL"),
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("/")),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("jwks_uri has no host");
    }
    let cluster = cfg
        .clusters
        .get(&authority.to_ascii_lowercase())
        .or(cfg.cluster.as_ref())
        .ok_or("no jwks_fetch cluster for this jwks_uri's host")?;
    Ok(Call {
        cluster: cluster.clone(),
        headers: vec![
            (":method", "GET".into()),
            (":path", path.to_string()),
            (":authority", authority.to_string()),
            (
                "accept",
                "application/jwk-set+json, application/json".into(),
            ),
            ("user-agent", "oauth-edge".into()),
        ],
        timeout: cfg.timeout,
        body: None,
    })
}

/// One place that decides what an answer means.
pub fn classify(status: Option<u16>, body: &[u8]) -> JwksLookup {
    match status {
        None => JwksLookup::Unavailable("jwks_uri fetch failed (reset or no answer)".into()),
        Some(200) => match JwkSet::from_slice(body) {
            Ok(set) => JwksLookup::Found(Rc::new(set)),
            Err(e) => JwksLookup::Unavailable(format!("jwks_uri answer refused: {e}")),
        },
        Some(s) => JwksLookup::Unavailable(format!("jwks_uri answered {s}")),
    }
}

struct Entry {
    set: Option<Rc<JwkSet>>,
    fetched_ms: u64,
    /// The last fetch failed, then, and why: remembered for `refetch_cooldown` so a client
    /// whose key server is down (or a caller naming it over and over) does not make every
    /// request wait for another failing call.
    failed: Option<(u64, String)>,
}

/// Parsed key sets by URL, per worker.
#[derive(Default)]
pub struct JwksCache {
    entries: HashMap<String, Entry>,
}

impl JwksCache {
    pub fn get(
        &self,
        cfg: &JwksFetchConfig,
        url: &str,
        refresh: bool,
        now_ms: u64,
    ) -> Option<JwksLookup> {
        let e = self.entries.get(url)?;
        let cooldown = crate::duration::millis(cfg.refetch_cooldown);
        if let Some((at, why)) = &e.failed {
            if now_ms.saturating_sub(*at) < cooldown {
                // A set fetched before the failure still serves; none: the failure itself.
                return Some(match &e.set {
                    Some(set) => JwksLookup::Found(set.clone()),
                    None => JwksLookup::Unavailable(why.clone()),
                });
            }
        }
        let set = e.set.as_ref()?;
        let age = now_ms.saturating_sub(e.fetched_ms);
        let fresh = if refresh {
            // Refetch on a kid miss, but not more often than the cooldown: a caller sending
            // made-up kids must not make us hammer the client's server.
            age < cooldown
        } else {
            age < crate::duration::millis(cfg.cache_ttl)
        };
        fresh.then(|| JwksLookup::Found(set.clone()))
    }

    pub fn put(&mut self, url: &str, set: Rc<JwkSet>, now_ms: u64) {
        self.make_room(url);
        self.entries.insert(
            url.to_string(),
            Entry {
                set: Some(set),
                fetched_ms: now_ms,
                failed: None,
            },
        );
    }

    /// A fetch of `url` failed: remember it briefly (see [`Entry::failed`]).
    pub fn put_failure(&mut self, url: &str, why: &str, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(url) {
            e.failed = Some((now_ms, why.to_string()));
            return;
        }
        self.make_room(url);
        self.entries.insert(
            url.to_string(),
            Entry {
                set: None,
                fetched_ms: now_ms,
                failed: Some((now_ms, why.to_string())),
            },
        );
    }

    fn make_room(&mut self, url: &str) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(url) {
            // Failures first: they are the cheapest to lose.
            self.entries.retain(|_, e| e.set.is_some());
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> JwksFetchConfig {
        JwksFetchConfig {
            cluster: Some("jwks".into()),
            clusters: [("keys.rp.example".to_string(), "rp_keys".to_string())].into(),
            timeout: Duration::from_secs(1),
            cache_ttl: Duration::from_secs(600),
            refetch_cooldown: Duration::from_secs(10),
            require_https: true,
        }
    }

    #[test]
    fn calls() {
        let c = call(&cfg(), "https://rp.example:8443/keys?v=1").unwrap();
        assert_eq!(c.cluster, "jwks");
        assert!(c
            .headers
            .contains(&(":authority", "rp.example:8443".into())));
        assert!(c.headers.contains(&(":path", "/keys?v=1".into())));
        assert!(call(&cfg(), "http://rp.example/keys").is_err());
        let mut plain = cfg();
        plain.require_https = false;
        assert!(call(&plain, "http://127.0.0.1:9/k").is_ok());
        assert!(call(&plain, "ftp://x/k").is_err());
        assert!(call(&plain, "http:///k").is_err());
        assert_eq!(
            call(&cfg(), "https://Keys.RP.example/k").unwrap().cluster,
            "rp_keys"
        );
        let mut only_map = cfg();
        only_map.cluster = None;
        assert!(call(&only_map, "https://other.example/k").is_err());
        assert_eq!(
            call(&cfg(), "https://rp.example").unwrap().headers[1].1,
            "/"
        );
    }

    #[test]
    fn classification_and_cache() {
        assert!(matches!(classify(None, b""), JwksLookup::Unavailable(_)));
        assert!(matches!(
            classify(Some(500), b""),
            JwksLookup::Unavailable(_)
        ));
        assert!(matches!(
            classify(Some(200), b"x"),
            JwksLookup::Unavailable(_)
        ));
        let JwksLookup::Found(set) = classify(Some(200), br#"{"keys":[]}"#) else {
            panic!()
        };
        let c = cfg();
        let mut cache = JwksCache::default();
        assert!(cache.get(&c, "u", false, 0).is_none());
        cache.put("u", set, 1_000);
        assert!(cache.get(&c, "u", false, 500_000).is_some());
        assert!(cache.get(&c, "u", false, 700_000).is_none());
        assert!(
            cache.get(&c, "u", true, 5_000).is_some(),
            "within the cooldown"
        );
        assert!(
            cache.get(&c, "u", true, 12_000).is_none(),
            "refetch allowed"
        );
    }

    #[test]
    fn failures_are_remembered_for_the_cooldown() {
        let c = cfg();
        let mut cache = JwksCache::default();
        cache.put_failure("u", "jwks_uri answered 503", 1_000);
        assert!(matches!(
            cache.get(&c, "u", false, 2_000),
            Some(JwksLookup::Unavailable(_))
        ));
        assert!(
            cache.get(&c, "u", false, 1_000 + 10_000).is_none(),
            "asked again after the cooldown"
        );
        // A set fetched earlier keeps serving while its refetch is failing.
        let set = Rc::new(JwkSet::from_slice(br#"{"keys":[]}"#).unwrap());
        cache.put("v", set, 0);
        cache.put_failure("v", "reset", 5_000);
        assert!(matches!(
            cache.get(&c, "v", true, 6_000),
            Some(JwksLookup::Found(_))
        ));
        // A success clears the failure.
        let set = Rc::new(JwkSet::from_slice(br#"{"keys":[]}"#).unwrap());
        cache.put("u", set, 20_000);
        assert!(matches!(
            cache.get(&c, "u", false, 20_001),
            Some(JwksLookup::Found(_))
        ));
    }
}
