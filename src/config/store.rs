//! `store`: where short-lived state lives (this process's shared data, or etcd), the ring sizes
//! in shared data, and how much of a ring one owner may fill.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::lifetimes::optional;
use super::ConfigError;
use crate::store::Ring;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default = "default_etcd_prefix")]
    prefix: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    username: Option<String>,
    /// A string, or a secret reference (see [`crate::secret`]).
    #[serde(default)]
    password: Option<Value>,
}

fn default_etcd_prefix() -> String {
    "/oauth-edge/".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    etcd: Option<RawEtcd>,
    #[serde(default)]
    request_uri_slots: Option<u32>,
    #[serde(default)]
    code_slots: Option<u32>,
    #[serde(default)]
    refresh_family_slots: Option<u32>,
    #[serde(default)]
    jti_slots: Option<u32>,
    #[serde(default)]
    rate_limit_slots: Option<u32>,
    #[serde(default)]
    device_slots: Option<u32>,
    #[serde(default)]
    revoked_slots: Option<u32>,
    #[serde(default)]
    share_percent: Option<u32>,
    #[serde(default)]
    replay_share_percent: Option<u32>,
}

/// etcd through its v3 JSON gateway (`store.backend: "etcd"`).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    pub cluster: String,
    pub authority: String,
    /// Every key starts with it (an etcd role can be limited to it).
    pub prefix: String,
    pub timeout: Duration,
    /// etcd authentication (`/v3/auth/authenticate`), if on.
    pub credentials: Option<(String, String)>,
}

// The password never goes to a log.
impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rings {
    pub request_uris: Ring,
    pub codes: Ring,
    pub families: Ring,
    /// Replay cache of assertion and DPoP proof `jti`s.
    pub jtis: Ring,
    /// Rate limit counters (created only when a limit or a feature that throttles is on).
    pub rate_limits: Ring,
    /// Device authorization requests.
    pub devices: Ring,
    /// Revoked access token `jti`s, until the tokens expire.
    pub revoked: Ring,
}

/// The share of a ring's capacity one owner may create per record lifetime, in percent (100:
/// unbounded). See [`crate::ring_share`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// Pushed requests, codes, device requests.
    pub records: u32,
    /// The replay cache (DPoP proof and client assertion `jti`s).
    pub replay: u32,
}

pub const DEFAULT_SHARE_PERCENT: u32 = 10;
pub const DEFAULT_REPLAY_SHARE_PERCENT: u32 = 25;

/// The store section, validated.
pub(super) struct Store {
    pub rings: Rings,
    pub shares: Shares,
    /// The remote store for short-lived state; `None`: this process's shared data.
    pub etcd: Option<EtcdConfig>,
}

impl Store {
    /// `resolve` reads the etcd password's secret reference, if it has one.
    pub(super) fn build(
        s: RawStore,
        resolve: crate::secret::Resolve<'_>,
    ) -> Result<Store, ConfigError> {
        let etcd = match (s.backend.as_deref(), s.etcd) {
            (None | Some("shared_data"), None) => None,
            (Some("etcd"), Some(e)) => Some(etcd(e, resolve)?),
            (Some("etcd"), None) => {
                return Err(ConfigError::new("store.backend", "etcd needs store.etcd"))
            }
            (None | Some("shared_data"), Some(_)) => {
                return Err(ConfigError::message(
                    "store.etcd",
                    "store.etcd is set but store.backend is not \"etcd\"",
                ))
            }
            (Some(b), _) => {
                return Err(ConfigError::new(
                    "store.backend",
                    format!("{b:?} is unknown (shared_data, etcd)"),
                ))
            }
        };
        let mut rings = Rings {
            request_uris: ring("par", "request_uri_slots", s.request_uri_slots, 16_384)?,
            codes: ring("code", "code_slots", s.code_slots, 16_384)?,
            families: ring(
                "rtf",
                "refresh_family_slots",
                s.refresh_family_slots,
                65_536,
            )?,
            jtis: ring("jti", "jti_slots", s.jti_slots, 65_536)?,
            rate_limits: ring("rl", "rate_limit_slots", s.rate_limit_slots, 4_096)?,
            devices: ring("dev", "device_slots", s.device_slots, 4_096)?,
            revoked: ring("rev", "revoked_slots", s.revoked_slots, 65_536)?,
        };
        let shares = Shares {
            records: share("share_percent", s.share_percent, DEFAULT_SHARE_PERCENT)?,
            replay: share(
                "replay_share_percent",
                s.replay_share_percent,
                DEFAULT_REPLAY_SHARE_PERCENT,
            )?,
        };
        if etcd.is_some() {
            // State lives in etcd; only the rate-limit counters stay in shared data.
            for r in [
                &mut rings.request_uris,
                &mut rings.codes,
                &mut rings.families,
                &mut rings.jtis,
                &mut rings.devices,
                &mut rings.revoked,
            ] {
                *r = Ring::remote(r.name);
            }
        }
        Ok(Store {
            rings,
            shares,
            etcd,
        })
    }
}

fn ring(
    name: &'static str,
    field: &str,
    v: Option<u32>,
    default: u32,
) -> Result<Ring, ConfigError> {
    let size = v.unwrap_or(default);
    if !(16..=4_194_304).contains(&size) {
        return Err(ConfigError::new(
            format!("store.{field}"),
            "must be between 16 and 4194304",
        ));
    }
    Ok(Ring {
        name,
        size,
        remote: false,
    })
}

fn share(field: &str, v: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    let p = v.unwrap_or(default);
    if !(1..=100).contains(&p) {
        return Err(ConfigError::new(
            format!("store.{field}"),
            "must be between 1 and 100",
        ));
    }
    Ok(p)
}

fn etcd(e: RawEtcd, resolve: crate::secret::Resolve<'_>) -> Result<EtcdConfig, ConfigError> {
    if e.cluster.is_empty() {
        return Err(ConfigError::new(
            "store.etcd.cluster",
            "must name an Envoy cluster",
        ));
    }
    if !e.prefix.starts_with('/') || e.prefix.len() < 2 || !e.prefix.ends_with('/') {
        return Err(ConfigError::new(
            "store.etcd.prefix",
            "must look like /oauth-edge/",
        ));
    }
    let password = match e.password {
        None => None,
        Some(p) => Some(
            crate::secret::string("store.etcd.password", &p, resolve)
                .map_err(|m| ConfigError::message("store.etcd.password", m))?,
        ),
    };
    let credentials = match (e.username, password) {
        (None, None) => None,
        (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
        _ => {
            return Err(ConfigError::new(
                "store.etcd",
                "needs both username and password, or neither",
            ))
        }
    };
    Ok(EtcdConfig {
        authority: e.authority.unwrap_or_else(|| e.cluster.clone()),
        cluster: e.cluster,
        prefix: e.prefix,
        timeout: optional(
            "store.etcd.timeout",
            e.timeout.as_deref(),
            Duration::from_millis(500),
            Duration::from_millis(1),
            Duration::from_secs(10),
        )?,
        credentials,
    })
}
