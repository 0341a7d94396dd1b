//! `lifetimes`: how long tokens, codes and pushed requests live; and the duration helpers every
//! section uses (a duration string parsed, then held within bounds).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLifetimes {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    request_uri: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(300);

/// The lifetimes, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub access_token: Duration,
    pub id_token: Duration,
    pub code: Duration,
    pub request_uri: Duration,
    pub refresh_token: Duration,
}

impl Lifetimes {
    /// `fapi`: FAPI 2.0 §5.3.2.1, codes live at most 60 s; request_uris as briefly.
    pub(super) fn build(lt: RawLifetimes, fapi: bool) -> Result<Lifetimes, ConfigError> {
        let short_max = if fapi { 60 } else { 600 };
        Ok(Lifetimes {
            access_token: lifetime(
                "lifetimes.access_token",
                lt.access_token.as_deref(),
                300,
                1,
                86_400,
            )?,
            id_token: lifetime("lifetimes.id_token", lt.id_token.as_deref(), 300, 1, 86_400)?,
            code: lifetime("lifetimes.code", lt.code.as_deref(), 60, 1, short_max)?,
            request_uri: lifetime(
                "lifetimes.request_uri",
                lt.request_uri.as_deref(),
                if fapi { 60 } else { 90 },
                1,
                short_max,
            )?,
            refresh_token: lifetime(
                "lifetimes.refresh_token",
                lt.refresh_token.as_deref(),
                86_400,
                60,
                90 * 86_400,
            )?,
        })
    }
}

fn lifetime(
    name: &str,
    v: Option<&str>,
    default_s: u64,
    min_s: u64,
    max_s: u64,
) -> Result<Duration, ConfigError> {
    optional(
        name,
        v,
        Duration::from_secs(default_s),
        Duration::from_secs(min_s),
        Duration::from_secs(max_s),
    )
}

/// An optional duration: `default` when absent, else parsed and within `min..=max`.
pub(super) fn optional(
    name: &str,
    v: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    v.map_or(Ok(default), |s| bounded(name, s, min, max))
}

/// A duration parsed and within `min..=max`.
pub(super) fn bounded(
    name: &str,
    s: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let d = crate::duration::parse(s).map_err(|e| ConfigError::at(name, e))?;
    if d < min || d > max {
        return Err(ConfigError::new(
            name,
            format!("must be between {min:?} and {max:?}"),
        ));
    }
    Ok(d)
}
