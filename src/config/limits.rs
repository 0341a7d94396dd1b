//! `rate_limits` and `limits`: request budgets per client and per address, the body size cap;
//! and [`Limit`], the shape every budget in the configuration shares (registry misses, device
//! verification attempts, password failures).

use std::time::Duration;

use serde::Deserialize;

use super::lifetimes::bounded;
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    requests: u32,
    window: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimits {
    #[serde(default)]
    per_client: Option<RawLimit>,
    #[serde(default)]
    per_address: Option<RawLimit>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default)]
    max_body_bytes: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub requests: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    pub per_client: Option<Limit>,
    pub per_address: Option<Limit>,
}

pub const DEFAULT_MAX_BODY: usize = 16 * 1024;

impl Limit {
    /// `name`: the budget's dotted path (`registry.misses_per_address`). A window of at least
    /// 100 ms and at most a day.
    pub(super) fn build(name: &str, l: RawLimit) -> Result<Limit, ConfigError> {
        if l.requests == 0 {
            return Err(ConfigError::new(
                format!("{name}.requests"),
                "must be at least 1",
            ));
        }
        let window = bounded(
            &format!("{name}.window"),
            &l.window,
            Duration::from_millis(100),
            Duration::from_secs(86_400),
        )?;
        Ok(Limit {
            requests: l.requests,
            window,
        })
    }

    /// An optional budget, `default` when absent.
    pub(super) fn or(
        name: &str,
        l: Option<RawLimit>,
        default: Limit,
    ) -> Result<Limit, ConfigError> {
        l.map_or(Ok(default), |l| Limit::build(name, l))
    }
}

impl TryFrom<RawRateLimits> for RateLimits {
    type Error = ConfigError;

    fn try_from(r: RawRateLimits) -> Result<RateLimits, ConfigError> {
        let limit = |name: &str, l: Option<RawLimit>| {
            l.map(|l| Limit::build(&format!("rate_limits.{name}"), l))
                .transpose()
        };
        Ok(RateLimits {
            per_client: limit("per_client", r.per_client)?,
            per_address: limit("per_address", r.per_address)?,
        })
    }
}

/// `limits.max_body_bytes`, checked.
pub(super) fn max_body_bytes(l: &RawLimits) -> Result<usize, ConfigError> {
    let max = l.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    if !(256..=1024 * 1024).contains(&max) {
        return Err(ConfigError::new(
            "limits.max_body_bytes",
            "must be between 256 and 1048576",
        ));
    }
    Ok(max)
}
