//! What the checks of protected routes keep per worker, built once from the configuration:
//! the access tokens already verified (see [`super::cache`]), the DPoP algorithms a challenge
//! names, and the userinfo endpoint as a protected route of its own.

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::Config;

use super::cache::{Entry, Verified};
use super::config::Route;

pub struct Guard {
    verified: RefCell<Verified>,
    /// The DPoP algorithms accepted, space-separated (the `algs` of a DPoP challenge).
    dpop_algs: String,
    /// The userinfo endpoint as a protected resource (see [`crate::endpoints::userinfo`]).
    pub userinfo_route: Route,
}

impl Guard {
    pub fn new(config: &Config) -> Guard {
        let dpop_algs = config
            .verify_algs
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Guard {
            verified: RefCell::new(Verified::new(config.protection.verified_cache_entries)),
            dpop_algs,
            userinfo_route: Route::userinfo(
                config.issuer_origin(),
                config.endpoints.path(crate::config::Endpoint::Userinfo),
            ),
        }
    }

    /// The DPoP proof algorithms accepted, space-separated.
    pub fn dpop_algs(&self) -> &str {
        &self.dpop_algs
    }

    /// A verified access token's claims from this worker's cache (if it expires after `now_s`).
    pub fn verified(&self, token: &str, now_s: u64) -> Option<Rc<Entry>> {
        self.verified.borrow_mut().get(token, now_s)
    }

    pub fn remember(&self, token: &str, claims: Rc<Entry>) {
        self.verified.borrow_mut().put(token, claims);
    }
}
