//! The optional grants' sections: `device` (RFC 8628), `token_exchange` (RFC 8693) and
//! `password_grant` (the resource owner password grant, checked against a verifier service).

use std::time::Duration;

use serde::Deserialize;

use super::lifetimes::optional;
use super::limits::{Limit, RawLimit};
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    #[serde(default)]
    lifetime: Option<String>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    user_code_length: Option<usize>,
    #[serde(default)]
    verification_uri: Option<String>,
    #[serde(default)]
    attempts: Option<RawLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokenExchange {
    #[serde(default)]
    trusted_issuers: Vec<RawTrustedIssuer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustedIssuer {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    audience: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassword {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default = "default_password_path")]
    path: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    failures: Option<RawLimit>,
}

fn default_password_path() -> String {
    "/verify".into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub lifetime: Duration,
    pub interval: Duration,
    pub user_code_length: usize,
    /// Where users are sent (a UI that calls the verification endpoint); the verification
    /// endpoint itself by default.
    pub verification_uri: String,
    /// Verification attempts per user and window (user_code guessing).
    pub attempts: Limit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub jwks_uri: String,
    /// The `aud` its tokens must carry to be exchanged here (default: our issuer).
    pub audience: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExchangeConfig {
    pub trusted_issuers: Vec<TrustedIssuer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordConfig {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    /// Failed attempts per username, and per client, and window.
    pub failures: Limit,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl DeviceConfig {
    /// `verification_url`: our device verification endpoint's URL, the default
    /// `verification_uri`.
    pub(super) fn build(d: RawDevice, verification_url: &str) -> Result<DeviceConfig, ConfigError> {
        Ok(DeviceConfig {
            lifetime: optional(
                "device.lifetime",
                d.lifetime.as_deref(),
                secs(600),
                secs(30),
                secs(3_600),
            )?,
            interval: optional(
                "device.interval",
                d.interval.as_deref(),
                secs(5),
                secs(1),
                secs(60),
            )?,
            user_code_length: match d.user_code_length {
                None => 8,
                Some(n) if (8..=12).contains(&n) => n,
                Some(_) => {
                    return Err(ConfigError::new(
                        "device.user_code_length",
                        "must be 8 to 12",
                    ))
                }
            },
            verification_uri: match d.verification_uri {
                None => verification_url.to_string(),
                Some(u) if u.starts_with("https://") || u.starts_with("http://") => u,
                Some(_) => {
                    return Err(ConfigError::new(
                        "device.verification_uri",
                        "must be an absolute URL",
                    ))
                }
            },
            attempts: Limit::or(
                "device.attempts",
                d.attempts,
                Limit {
                    requests: 10,
                    window: secs(300),
                },
            )?,
        })
    }
}

impl TokenExchangeConfig {
    /// `issuer`: ours (never a trusted one, and the default audience); `jwks_fetch`: whether
    /// the trusted issuers' keys can be fetched.
    pub(super) fn build(
        t: RawTokenExchange,
        issuer: &str,
        jwks_fetch: bool,
    ) -> Result<TokenExchangeConfig, ConfigError> {
        let mut trusted = Vec::new();
        for (i, ti) in t.trusted_issuers.into_iter().enumerate() {
            let field = |f: &str| format!("token_exchange.trusted_issuers[{i}].{f}");
            if ti.issuer.is_empty() || ti.issuer == issuer {
                return Err(ConfigError::new(field("issuer"), "must be another issuer"));
            }
            if !(ti.jwks_uri.starts_with("https://") || ti.jwks_uri.starts_with("http://")) {
                return Err(ConfigError::new(
                    field("jwks_uri"),
                    "must be an absolute URL",
                ));
            }
            trusted.push(TrustedIssuer {
                issuer: ti.issuer,
                jwks_uri: ti.jwks_uri,
                audience: ti.audience.unwrap_or_else(|| issuer.to_string()),
            });
        }
        if !trusted.is_empty() && !jwks_fetch {
            return Err(ConfigError::new(
                "token_exchange.trusted_issuers",
                "needs jwks_fetch to reach their keys",
            ));
        }
        Ok(TokenExchangeConfig {
            trusted_issuers: trusted,
        })
    }
}

impl TryFrom<RawPassword> for PasswordConfig {
    type Error = ConfigError;

    fn try_from(p: RawPassword) -> Result<PasswordConfig, ConfigError> {
        if p.cluster.is_empty() || !p.path.starts_with('/') {
            return Err(ConfigError::new(
                "password_grant",
                "needs a cluster and a path starting with /",
            ));
        }
        Ok(PasswordConfig {
            authority: p.authority.unwrap_or_else(|| p.cluster.clone()),
            timeout: optional(
                "password_grant.timeout",
                p.timeout.as_deref(),
                secs(1),
                Duration::from_millis(1),
                secs(60),
            )?,
            failures: Limit::or(
                "password_grant.failures",
                p.failures,
                Limit {
                    requests: 5,
                    window: secs(300),
                },
            )?,
            cluster: p.cluster,
            path: p.path,
        })
    }
}
