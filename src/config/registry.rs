//! `registry`: the client registry service clients not declared inline are looked up in (see
//! [`crate::registry`]).

use std::time::Duration;

use serde::Deserialize;

use super::lifetimes::optional;
use super::limits::{Limit, RawLimit};
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default = "default_registry_prefix")]
    path_prefix: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    cache_ttl: Option<String>,
    #[serde(default)]
    negative_cache_ttl: Option<String>,
    #[serde(default)]
    misses_per_address: Option<RawLimit>,
}

fn default_registry_prefix() -> String {
    "/clients/".into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub cluster: String,
    pub authority: String,
    pub path_prefix: String,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub negative_cache_ttl: Duration,
    /// Lookups of ids the registry does not know, per source address: past it, ids that are
    /// not cached get `429` without a registry call.
    pub misses_per_address: Limit,
}

impl TryFrom<RawRegistry> for RegistryConfig {
    type Error = ConfigError;

    fn try_from(r: RawRegistry) -> Result<RegistryConfig, ConfigError> {
        if r.cluster.is_empty() {
            return Err(ConfigError::new(
                "registry.cluster",
                "must name an Envoy cluster",
            ));
        }
        if !r.path_prefix.starts_with('/') || r.path_prefix.contains(['?', '#', ' ']) {
            return Err(ConfigError::new(
                "registry.path_prefix",
                "must be a path starting with /",
            ));
        }
        let secs = Duration::from_secs;
        // A timeout of 0 means "no timeout" to the host: a hung registry would hang requests.
        let timeout = optional(
            "registry.timeout",
            r.timeout.as_deref(),
            Duration::from_millis(500),
            Duration::from_millis(1),
            secs(60),
        )?;
        let cache_ttl = optional(
            "registry.cache_ttl",
            r.cache_ttl.as_deref(),
            secs(60),
            Duration::ZERO,
            secs(86_400),
        )?;
        let negative_cache_ttl = optional(
            "registry.negative_cache_ttl",
            r.negative_cache_ttl.as_deref(),
            secs(5),
            Duration::ZERO,
            secs(3_600),
        )?;
        let misses_per_address = Limit::or(
            "registry.misses_per_address",
            r.misses_per_address,
            Limit {
                requests: 30,
                window: secs(10),
            },
        )?;
        Ok(RegistryConfig {
            authority: r.authority.unwrap_or_else(|| r.cluster.clone()),
            cluster: r.cluster,
            path_prefix: r.path_prefix,
            timeout,
            cache_ttl,
            negative_cache_ttl,
            misses_per_address,
        })
    }
}
