//! What signatures this server accepts and how it checks them: `profile` (FAPI 2.0's stricter
//! defaults), `client_assertion` (RFC 7523 assertions), `dpop` (RFC 9449 proofs and nonces) and
//! `jwks_fetch` (fetching clients' and trusted issuers' key sets).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::lifetimes::optional;
use super::ConfigError;
use crate::keys::{Alg, KeySet};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwksFetch {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    clusters: HashMap<String, String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    cache_ttl: Option<String>,
    #[serde(default)]
    refetch_cooldown: Option<String>,
    #[serde(default = "super::default_true")]
    require_https: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAssertion {
    #[serde(default)]
    max_lifetime: Option<String>,
    #[serde(default)]
    clock_skew: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDpop {
    #[serde(default)]
    proof_lifetime: Option<String>,
    #[serde(default)]
    clock_skew: Option<String>,
    #[serde(default)]
    require_nonce: bool,
    #[serde(default)]
    nonce_lifetime: Option<String>,
}

/// `profile`: one word for a set of stricter defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Default,
    /// FAPI 2.0 Security Profile: PAR, PKCE S256, private_key_jwt, DPoP-bound tokens, strict
    /// assertion audience, PS256/ES256/EdDSA only, codes and request_uris of at most 60 s.
    Fapi2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksFetchConfig {
    /// The cluster for a jwks_uri whose authority is not in `clusters`.
    pub cluster: Option<String>,
    /// Cluster per jwks_uri authority (`host` or `host:port`, lower case).
    pub clusters: HashMap<String, String>,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    /// A kid missing from the cached set refetches it, at most once per cooldown.
    pub refetch_cooldown: Duration,
    pub require_https: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssertionConfig {
    pub max_lifetime: Duration,
    pub clock_skew: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopConfig {
    pub proof_lifetime: Duration,
    pub clock_skew: Duration,
    pub require_nonce: bool,
    pub nonce_lifetime: Duration,
    /// HMAC key of the stateless nonces, derived from the active signing key so every worker
    /// and every instance with the same configuration agrees on them.
    pub nonce_key: [u8; 32],
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl Profile {
    pub(super) fn parse(p: Option<&str>) -> Result<Profile, ConfigError> {
        match p {
            None | Some("default") => Ok(Profile::Default),
            Some("fapi2") => Ok(Profile::Fapi2),
            Some(p) => Err(ConfigError::new(
                "profile",
                format!("{p:?} is unknown (default, fapi2)"),
            )),
        }
    }

    /// Algorithms accepted in client assertions and DPoP proofs.
    pub(super) fn verify_algs(self) -> Vec<Alg> {
        match self {
            Profile::Fapi2 => vec![Alg::EdDSA, Alg::ES256, Alg::PS256],
            Profile::Default => vec![Alg::EdDSA, Alg::ES256, Alg::PS256, Alg::RS256],
        }
    }
}

impl TryFrom<RawAssertion> for AssertionConfig {
    type Error = ConfigError;

    fn try_from(a: RawAssertion) -> Result<AssertionConfig, ConfigError> {
        Ok(AssertionConfig {
            max_lifetime: optional(
                "client_assertion.max_lifetime",
                a.max_lifetime.as_deref(),
                secs(300),
                secs(1),
                secs(3_600),
            )?,
            clock_skew: optional(
                "client_assertion.clock_skew",
                a.clock_skew.as_deref(),
                secs(30),
                Duration::ZERO,
                secs(300),
            )?,
        })
    }
}

impl DpopConfig {
    /// `keys`: the nonce key derives from the first sealing key.
    pub(super) fn build(d: RawDpop, keys: &KeySet) -> Result<DpopConfig, ConfigError> {
        let nonce_key = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(b"oauth-edge/dpop-nonce/v1\0");
            if let Some(k) = keys.sealing_keys().next() {
                h.update(k);
            }
            h.finalize().into()
        };
        Ok(DpopConfig {
            proof_lifetime: optional(
                "dpop.proof_lifetime",
                d.proof_lifetime.as_deref(),
                secs(60),
                secs(1),
                secs(600),
            )?,
            clock_skew: optional(
                "dpop.clock_skew",
                d.clock_skew.as_deref(),
                secs(10),
                Duration::ZERO,
                secs(300),
            )?,
            require_nonce: d.require_nonce,
            nonce_lifetime: optional(
                "dpop.nonce_lifetime",
                d.nonce_lifetime.as_deref(),
                secs(300),
                secs(1),
                secs(86_400),
            )?,
            nonce_key,
        })
    }
}

impl TryFrom<RawJwksFetch> for JwksFetchConfig {
    type Error = ConfigError;

    fn try_from(j: RawJwksFetch) -> Result<JwksFetchConfig, ConfigError> {
        if j.cluster.as_deref().is_some_and(str::is_empty)
            || j.clusters.values().any(String::is_empty)
            || (j.cluster.is_none() && j.clusters.is_empty())
        {
            return Err(ConfigError::new(
                "jwks_fetch",
                "needs cluster (and/or clusters per authority) naming Envoy clusters",
            ));
        }
        Ok(JwksFetchConfig {
            cluster: j.cluster,
            clusters: j
                .clusters
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            // Never 0: the host reads a zero timeout as "no timeout".
            timeout: optional(
                "jwks_fetch.timeout",
                j.timeout.as_deref(),
                secs(1),
                Duration::from_millis(1),
                secs(60),
            )?,
            cache_ttl: optional(
                "jwks_fetch.cache_ttl",
                j.cache_ttl.as_deref(),
                secs(600),
                secs(1),
                secs(86_400),
            )?,
            refetch_cooldown: optional(
                "jwks_fetch.refetch_cooldown",
                j.refetch_cooldown.as_deref(),
                secs(10),
                Duration::ZERO,
                secs(3_600),
            )?,
            require_https: j.require_https,
        })
    }
}
