//! The configuration document as written: [`Raw`], read strictly (unknown keys refused) with
//! serde. Each section's raw form lives beside its validated form; this is the top level.

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{RawAssertion, RawDpop, RawJwksFetch};
use super::endpoints::RawEndpoints;
use super::grants::{RawDevice, RawPassword, RawTokenExchange};
use super::lifetimes::RawLifetimes;
use super::limits::{RawLimits, RawRateLimits};
use super::registry::RawRegistry;
use super::store::RawStore;
use super::user::{RawCookie, RawUser};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    pub issuer: String,
    #[serde(default)]
    pub endpoints: RawEndpoints,
    /// JWKs, or secret references to a JWK or a JWK Set (see [`crate::secret`]).
    pub signing_keys: Vec<Value>,
    #[serde(default)]
    pub active_signing_key: Option<String>,
    #[serde(default)]
    pub lifetimes: RawLifetimes,
    #[serde(default)]
    pub access_token_audience: Option<String>,
    #[serde(default)]
    pub registry: Option<RawRegistry>,
    #[serde(default)]
    pub clients: Vec<Value>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default = "super::default_true")]
    pub pause_on_request_headers: bool,
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    #[serde(default = "super::default_true")]
    pub require_pkce: bool,
    #[serde(default)]
    pub user: Option<RawUser>,
    #[serde(default)]
    pub login_url: Option<String>,
    #[serde(default)]
    pub refresh_cookie: RawCookie,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub jwks_fetch: Option<RawJwksFetch>,
    #[serde(default)]
    pub client_assertion: RawAssertion,
    #[serde(default)]
    pub dpop: RawDpop,
    #[serde(default)]
    pub rate_limits: RawRateLimits,
    #[serde(default)]
    pub resource_protection: crate::protect::config::RawProtection,
    #[serde(default)]
    pub device: Option<RawDevice>,
    #[serde(default)]
    pub token_exchange: Option<RawTokenExchange>,
    #[serde(default)]
    pub password_grant: Option<RawPassword>,
    #[serde(default)]
    pub userinfo: crate::oidc_settings::RawUserinfo,
    #[serde(default)]
    pub end_session: crate::oidc_settings::RawEndSession,
    #[serde(default)]
    pub mtls: Option<crate::mtls::RawMtls>,
}
