//! The plugin configuration: JSON as Envoy's wasm filter and Istio's WasmPlugin pass it.
//! Parsed strictly (unknown keys refused, so a typo is an error at start, not a surprise later)
//! and converted once into a validated [`Config`]: keys parsed, durations checked, paths derived.
//! A bad configuration makes `on_configure` fail and Envoy refuse it, with a [`ConfigError`]
//! naming the field; nothing here can fail at request time.
//!
//! One file per section: its raw (serde) form and its validated form, converted by a
//! `TryFrom` or a `build` that takes what else it needs. This file holds [`Config`] and the
//! top-level build, which converts the sections in turn and checks what spans several.

mod clients;
mod crypto;
pub mod endpoints;
mod error;
mod grants;
mod lifetimes;
mod limits;
mod raw;
mod registry;
mod store;
mod user;

#[cfg(test)]
pub mod tests;

use std::collections::HashMap;
use std::rc::Rc;

use crate::client::Client;
use crate::keys::{Alg, KeySet};

pub use crypto::{AssertionConfig, DpopConfig, JwksFetchConfig, Profile};
pub use endpoints::{Endpoint, Endpoints};
pub use error::ConfigError;
pub use grants::{DeviceConfig, PasswordConfig, TokenExchangeConfig, TrustedIssuer};
pub use lifetimes::{Lifetimes, DEFAULT_ACCESS_TOKEN_TTL};
pub use limits::{Limit, RateLimits, DEFAULT_MAX_BODY};
pub use registry::RegistryConfig;
pub use store::{EtcdConfig, Rings, Shares, DEFAULT_REPLAY_SHARE_PERCENT, DEFAULT_SHARE_PERCENT};
pub use user::UserSource;

#[derive(Debug)]
pub struct Config {
    pub issuer: String,
    /// Every endpoint's path and URL (and the issuer's origin).
    pub endpoints: Endpoints,
    pub keys: KeySet,
    /// Places rate-limit and failure counters (see [`crate::rate_limit`]).
    pub counter_key: [u8; 32],
    pub lifetimes: Lifetimes,
    pub access_token_audience: String,
    pub registry: Option<RegistryConfig>,
    pub clients: HashMap<String, Rc<Client>>,
    pub max_body_bytes: usize,
    pub pause_on_request_headers: bool,
    pub require_par: bool,
    pub require_pkce: bool,
    pub user: Option<UserSource>,
    pub login_url: Option<String>,
    /// Where userinfo claims come from (only `sub` without one).
    pub userinfo: Option<crate::oidc_settings::UserinfoSource>,
    pub end_session: crate::oidc_settings::EndSession,
    /// Mutual TLS (RFC 8705), when Envoy terminates TLS with client certificates here.
    pub mtls: Option<crate::mtls::Mtls>,
    pub refresh_cookie_name: String,
    pub rings: Rings,
    /// How much of a ring one owner may fill (see [`crate::ring_share`]).
    pub shares: Shares,
    pub profile: Profile,
    /// Algorithms accepted in client assertions and DPoP proofs.
    pub verify_algs: Vec<Alg>,
    pub jwks_fetch: Option<JwksFetchConfig>,
    pub assertion: AssertionConfig,
    pub dpop: DpopConfig,
    pub rate_limits: RateLimits,
    /// Protected routes of the APIs behind the gateway (see [`crate::protect`]).
    pub protection: crate::protect::config::Protection,
    /// Our own published keys, to read back our access tokens.
    pub own_keys: crate::jwk::JwkSet,
    pub device: Option<DeviceConfig>,
    pub token_exchange: Option<TokenExchangeConfig>,
    pub password_grant: Option<PasswordConfig>,
    /// The remote store for short-lived state; `None`: this process's shared data.
    pub etcd: Option<EtcdConfig>,
}

impl Config {
    /// `scheme://authority` of the issuer: the origin of every endpoint URL.
    pub fn issuer_origin(&self) -> &str {
        &self.endpoints.origin
    }

    /// Where rate-limit and failure counters live (see [`crate::rate_limit`]).
    pub fn counters(&self) -> crate::rate_limit::Counters<'_> {
        crate::rate_limit::Counters {
            ring: self.rings.rate_limits,
            key: &self.counter_key,
        }
    }

    /// A configuration without secret references (any `{"env"}`/`{"file"}` is refused).
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        Self::from_json_with_secrets(bytes, &crate::secret::unavailable)
    }

    /// A configuration whose secret references (see [`crate::secret`]) `resolve` reads: the
    /// gateway's, from the host. Each is read once, here.
    pub fn from_json_with_secrets(
        bytes: &[u8],
        resolve: crate::secret::Resolve<'_>,
    ) -> Result<Config, ConfigError> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(ConfigError::message(
                "",
                "the plugin configuration is empty (issuer and signing_keys are required)",
            ));
        }
        let raw: raw::Raw = serde_json::from_slice(bytes).map_err(|e| parse_error(&e))?;
        Self::build(raw, resolve)
    }

    fn build(raw: raw::Raw, resolve: crate::secret::Resolve<'_>) -> Result<Config, ConfigError> {
        let mtls: Option<crate::mtls::Mtls> = raw
            .mtls
            .map(TryInto::try_into)
            .transpose()
            .map_err(|e| ConfigError::within("mtls", e))?;
        let issuer = raw.issuer;
        let endpoints = Endpoints::build(raw.endpoints, &issuer)?;
        let key_error = |e: String| {
            let section = if e.starts_with("active_signing_key") {
                "active_signing_key"
            } else {
                "signing_keys"
            };
            ConfigError::within(section, e)
        };
        let signing_keys =
            crate::secret::expand_keys(&raw.signing_keys, resolve).map_err(key_error)?;
        let keys = KeySet::from_named(&signing_keys, raw.active_signing_key.as_deref())
            .map_err(key_error)?;
        let access_token_audience = match raw.access_token_audience {
            None => issuer.clone(),
            Some(a) if !a.is_empty() && !a.chars().any(char::is_control) => a,
            Some(_) => {
                return Err(ConfigError::new(
                    "access_token_audience",
                    "must be a non-empty string",
                ))
            }
        };
        let registry = raw.registry.map(RegistryConfig::try_from).transpose()?;
        let clients = clients::build(&raw.clients, &keys, mtls.as_ref())?;

        let profile = Profile::parse(raw.profile.as_deref())?;
        let fapi = profile == Profile::Fapi2;
        // FAPI 2.0 Security Profile §5.3.2.1: "shall reject requests using the resource owner
        // password credentials grant". The profile forbids no other grant this server offers
        // (the implicit and hybrid flows are not offered at all).
        if fapi && raw.password_grant.is_some() {
            return Err(ConfigError::message(
                "password_grant",
                "profile fapi2 forbids the password grant (FAPI 2.0 Security Profile \
                 §5.3.2.1): remove password_grant, or use the default profile",
            ));
        }
        let lifetimes = Lifetimes::build(raw.lifetimes, fapi)?;
        let user = raw.user.map(UserSource::try_from).transpose()?;
        let login_url = user::login_url(raw.login_url)?;
        let refresh_cookie_name = user::cookie_name(raw.refresh_cookie)?;
        let store = store::Store::build(raw.store, resolve)?;
        let verify_algs = profile.verify_algs();
        if fapi && keys.active().is_some_and(|k| !verify_algs.contains(&k.alg)) {
            return Err(ConfigError::message(
                "signing_keys",
                "profile fapi2 signs with PS256, ES256 or EdDSA only: the active key is RS256",
            ));
        }
        let jwks_fetch = raw.jwks_fetch.map(JwksFetchConfig::try_from).transpose()?;
        let assertion = AssertionConfig::try_from(raw.client_assertion)?;
        let dpop = DpopConfig::build(raw.dpop, &keys)?;
        let rate_limits = RateLimits::try_from(raw.rate_limits)?;
        let protection = crate::protect::config::validate(raw.resource_protection, |name, v| {
            lifetimes::optional(
                name,
                v,
                std::time::Duration::from_secs(10),
                std::time::Duration::ZERO,
                std::time::Duration::from_secs(300),
            )
            .map_err(|e| e.to_string())
        })
        .map_err(|e| ConfigError::within("resource_protection", e))?;
        let max_body_bytes = limits::max_body_bytes(&raw.limits)?;
        let own_keys = crate::jwk::JwkSet::from_slice(keys.jwks_json())
            .map_err(|e| ConfigError::at("signing_keys", e))?;
        let device = raw
            .device
            .map(|d| DeviceConfig::build(d, endpoints.url(Endpoint::DeviceVerification)))
            .transpose()?;
        let token_exchange = raw
            .token_exchange
            .map(|t| TokenExchangeConfig::build(t, &issuer, jwks_fetch.is_some()))
            .transpose()?;
        let password_grant = raw
            .password_grant
            .map(PasswordConfig::try_from)
            .transpose()?;
        let userinfo = raw
            .userinfo
            .try_into()
            .map_err(|e| ConfigError::within("userinfo", e))?;
        let end_session = raw
            .end_session
            .try_into()
            .map_err(|e| ConfigError::within("end_session", e))?;
        Ok(Config {
            counter_key: keys.counter_key(),
            issuer,
            endpoints,
            keys,
            lifetimes,
            access_token_audience,
            registry,
            clients,
            max_body_bytes,
            pause_on_request_headers: raw.pause_on_request_headers,
            require_par: raw.require_pushed_authorization_requests || fapi,
            require_pkce: raw.require_pkce || fapi,
            user,
            login_url,
            userinfo,
            end_session,
            mtls,
            refresh_cookie_name,
            rings: store.rings,
            shares: store.shares,
            etcd: store.etcd,
            profile,
            verify_algs,
            jwks_fetch,
            assertion,
            dpop,
            rate_limits,
            protection,
            own_keys,
            device,
            token_exchange,
            password_grant,
        })
    }
}

/// A document serde refused (not JSON, a wrong type, an unknown or missing key). serde_json
/// gives no path, so the field is the key it names, if any.
fn parse_error(e: &serde_json::Error) -> ConfigError {
    let text = e.to_string();
    let field = ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_default()
        .to_string();
    ConfigError::message(field, format!("configuration: {text}"))
}

/// serde's default for switches that are on unless turned off.
fn default_true() -> bool {
    true
}
