//! One upstream lookup per key in flight: the first request that needs a client's registry
//! record (or a `jwks_uri`) dispatches the call, the requests that need the same key meanwhile
//! wait for that call's answer instead of each opening their own connection. Without it, 500
//! concurrent requests for one unknown client id made 408 registry calls, and a flood of made-up
//! ids multiplied into as many upstream connections.
//!
//! Per worker (a wasm VM is single-threaded); the waiters are context ids the gateway wakes.

use std::collections::HashMap;
use std::hash::Hash;

/// What a request that needs `key` should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// Nobody is fetching it: dispatch the call, then [`Flights::land`] with its answer.
    Lead,
    /// A call is already out: wait for it to land.
    Wait,
}

/// Calls in flight, each with the requests waiting for it.
#[derive(Debug)]
pub struct Flights<K, W> {
    out: HashMap<K, Vec<W>>,
    /// A bound on waiters per key: past it, a request leads a call of its own rather than
    /// making the list grow without limit (the upstream's circuit breaker then has its say).
    max_waiters: usize,
}

impl<K: Hash + Eq + Clone, W> Flights<K, W> {
    pub fn new(max_waiters: usize) -> Self {
        Flights {
            out: HashMap::new(),
            max_waiters,
        }
    }

    /// Joins the flight for `key`, or starts it. A `Lead` must be followed by exactly one
    /// [`Flights::land`] (or [`Flights::abort`] when the call could not be made).
    pub fn join(&mut self, key: &K, waiter: W) -> Joined {
        match self.out.get_mut(key) {
            Some(waiting) if waiting.len() < self.max_waiters => {
                waiting.push(waiter);
                Joined::Wait
            }
            Some(_) => Joined::Lead,
            None => {
                self.out.insert(key.clone(), Vec::new());
                Joined::Lead
            }
        }
    }

    /// The call for `key` answered: the requests that waited for it, in arrival order.
    pub fn land(&mut self, key: &K) -> Vec<W> {
        self.out.remove(key).unwrap_or_default()
    }

    /// The leading call could not be dispatched: same as landing (the waiters get the same
    /// failure the leader got).
    pub fn abort(&mut self, key: &K) -> Vec<W> {
        self.land(key)
    }

    /// Keys with a call out (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_per_key_and_every_waiter_woken_once() {
        let mut f: Flights<String, u32> = Flights::new(1000);
        let k = "client-a".to_string();
        assert_eq!(f.join(&k, 1), Joined::Lead);
        for id in 2..=500 {
            assert_eq!(f.join(&k, id), Joined::Wait);
        }
        // Another key flies on its own.
        assert_eq!(f.join(&"client-b".to_string(), 900), Joined::Lead);
        assert_eq!(f.in_flight(), 2);
        let woken = f.land(&k);
        assert_eq!(woken, (2..=500).collect::<Vec<_>>());
        assert!(f.land(&k).is_empty(), "landing twice wakes nobody");
        // The next request after landing leads a new call (the cache answers it in practice).
        assert_eq!(f.join(&k, 501), Joined::Lead);
    }

    #[test]
    fn waiters_are_bounded() {
        let mut f: Flights<&str, u32> = Flights::new(2);
        assert_eq!(f.join(&"k", 1), Joined::Lead);
        assert_eq!(f.join(&"k", 2), Joined::Wait);
        assert_eq!(f.join(&"k", 3), Joined::Wait);
        assert_eq!(f.join(&"k", 4), Joined::Lead);
        assert_eq!(f.abort(&"k"), vec![2, 3]);
    }
}
