//! A bounded share of each ring per owner: nobody can fill a ring for everybody else.
//!
//! The rings of the short-lived store are fixed (see [`crate::store`]), so whoever fills one
//! takes its slots from every other client. Each record a request creates is therefore charged
//! to its **owner**, and an owner who has created its share of the ring's capacity within one
//! record lifetime gets `429` with `Retry-After` instead of a slot:
//!
//! - an authenticated confidential client (pushed requests, device requests, replay entries);
//! - a public client *at one source address*: anyone can name a public client's `client_id`,
//!   so a stranger fills only the share of their own address, never the one of the client's
//!   users elsewhere (the same rule as the per-client rate limit);
//! - the logged-in user, for authorization codes (`GET /authorize` by a user who is logged in
//!   needs no client credentials).
//!
//! Counted with the rate-limit counters ([`crate::rate_limit`]: keyed placement, buckets), in a
//! window as long as the records live. A record lives at most one window, so an owner holds at
//! most twice its share at any moment (the end of one fixed window and the start of the next).
//! When the counters themselves have no room the record is created uncounted, as a rate limit
//! does: the limiter must not become the outage it prevents. A remote store (etcd) has no fixed
//! rings and is not charged.

use std::time::Duration;

use crate::client::{AuthMethod, Client};
use crate::config::{Config, Limit};
use crate::flow::{Ctx, FlowResult};
use crate::rate_limit::{self, Full};
use crate::store::Ring;

/// Whose record a request creates.
#[derive(Clone, Copy)]
pub enum Owner<'a> {
    /// The client of the request (a public one together with the caller's address).
    Client(&'a Client),
    /// A logged-in user (by subject).
    User(&'a str),
    /// The holder of a DPoP key (by thumbprint) whose access token a protected route accepted.
    Key(&'a str),
}

/// Which ring a record goes into, for its share and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PushedRequest,
    Code,
    DeviceRequest,
    /// A DPoP proof's `jti` in the replay cache.
    DpopProof,
    /// A client assertion's `jti` in the replay cache.
    Assertion,
}

/// Live entries a replay bucket holds comfortably (two choices over buckets of 8, see
/// [`crate::replay`]).
const REPLAY_PER_SLOT: u64 = 4;

impl Kind {
    fn ring(self, cfg: &Config) -> Ring {
        let r = &cfg.rings;
        match self {
            Kind::PushedRequest => r.request_uris,
            Kind::Code => r.codes,
            Kind::DeviceRequest => r.devices,
            Kind::DpopProof | Kind::Assertion => r.jtis,
        }
    }

    /// How long a record of this kind lives, at most.
    fn lifetime(self, cfg: &Config) -> Duration {
        match self {
            Kind::PushedRequest => cfg.lifetimes.request_uri,
            Kind::Code => cfg.lifetimes.code,
            Kind::DeviceRequest => cfg
                .device
                .as_ref()
                .map_or(cfg.lifetimes.code, |d| d.lifetime),
            // A proof's jti lives its lifetime and two skews (see crate::dpop), an assertion's
            // until its `exp` (at most the maximum lifetime) and a skew.
            Kind::DpopProof => cfg.dpop.proof_lifetime + cfg.dpop.clock_skew * 2,
            Kind::Assertion => cfg.assertion.max_lifetime + cfg.assertion.clock_skew,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::PushedRequest => "par",
            Kind::Code => "code",
            Kind::DeviceRequest => "dev",
            Kind::DpopProof => "dpop",
            Kind::Assertion => "assertion",
        }
    }
}

/// How many records one owner may create per lifetime of `kind`; `None` when unbounded.
pub fn allowance(cfg: &Config, kind: Kind) -> Option<u32> {
    let ring = kind.ring(cfg);
    let percent = match kind {
        Kind::DpopProof | Kind::Assertion => cfg.shares.replay,
        _ => cfg.shares.records,
    };
    if ring.remote || percent >= 100 {
        return None;
    }
    // The replay cache's share is split between the two kinds of entry (each counted in a
    // window as long as its entries live), so one owner still holds at most twice its share.
    let capacity = match kind {
        Kind::DpopProof | Kind::Assertion => {
            u64::from(ring.size).saturating_mul(REPLAY_PER_SLOT) / 2
        }
        _ => u64::from(ring.size),
    };
    let n = capacity.saturating_mul(u64::from(percent)) / 100;
    Some(u32::try_from(n).unwrap_or(u32::MAX).max(1))
}

/// Whether any share is bounded (the counters ring is needed, and public clients' shares read
/// the source address).
pub fn enabled(cfg: &Config) -> bool {
    [
        Kind::PushedRequest,
        Kind::Code,
        Kind::DeviceRequest,
        Kind::DpopProof,
        Kind::Assertion,
    ]
    .into_iter()
    .any(|k| allowance(cfg, k).is_some())
}

/// Charges one record of `kind` to `owner`: `Err` with a `429` once the owner's share of this
/// window is used up.
pub fn charge(cfg: &Config, ctx: &mut Ctx<'_>, kind: Kind, owner: Owner<'_>) -> FlowResult<()> {
    let Some(requests) = allowance(cfg, kind) else {
        return Ok(());
    };
    let what = match owner {
        Owner::Client(c) => match (c.auth_method, ctx.source()) {
            (AuthMethod::None, Some(addr)) => {
                format!("share\0{}\0client\0{}\0{addr}", kind.label(), c.client_id)
            }
            _ => format!("share\0{}\0client\0{}", kind.label(), c.client_id),
        },
        Owner::User(sub) => format!("share\0{}\0user\0{sub}", kind.label()),
        Owner::Key(jkt) => format!("share\0{}\0key\0{jkt}", kind.label()),
    };
    let limit = Limit {
        requests,
        window: kind.lifetime(cfg).max(Duration::from_secs(1)),
    };
    rate_limit::hit(ctx, cfg.counters(), &what, limit, Full::Allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(store: serde_json::Value) -> Result<Config, crate::config::ConfigError> {
        let mut v = crate::config::tests::sample();
        v["store"] = store;
        Config::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn allowances_follow_ring_size_and_percent() {
        let c = cfg(
            serde_json::json!({"request_uri_slots": 1000, "code_slots": 16, "jti_slots": 1000}),
        )
        .expect("config");
        assert_eq!(allowance(&c, Kind::PushedRequest), Some(100));
        assert_eq!(allowance(&c, Kind::Code), Some(1));
        assert_eq!(allowance(&c, Kind::DpopProof), Some(500));
        assert_eq!(allowance(&c, Kind::Assertion), Some(500));
        assert!(enabled(&c));
        let c = cfg(serde_json::json!({"share_percent": 100, "replay_share_percent": 100}))
            .expect("config");
        assert!(!enabled(&c));
        for bad in [0, 101] {
            let err = cfg(serde_json::json!({"share_percent": bad})).err();
            assert_eq!(
                err.as_ref().map(|e| e.field.as_str()),
                Some("store.share_percent"),
                "{err:?}"
            );
        }
    }
}
