//! The plugin configuration: JSON as Envoy's wasm filter and Istio's WasmPlugin pass it.
//! Parsed strictly (unknown keys refused, so a typo is an error at start, not a surprise later)
//! and converted once into a validated [`Config`]: keys parsed, durations checked, paths derived.
//! A bad configuration makes `on_configure` fail and Envoy refuse it; nothing here can fail at
//! request time.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::client::Client;
use crate::duration;
use crate::keys::{Alg, KeySet};
use crate::store::Ring;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    issuer: String,
    #[serde(default)]
    endpoints: RawEndpoints,
    /// JWKs, or secret references to a JWK or a JWK Set (see [`crate::secret`]).
    signing_keys: Vec<Value>,
    #[serde(default)]
    active_signing_key: Option<String>,
    #[serde(default)]
    lifetimes: RawLifetimes,
    #[serde(default)]
    access_token_audience: Option<String>,
    #[serde(default)]
    registry: Option<RawRegistry>,
    #[serde(default)]
    clients: Vec<Value>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default = "default_true")]
    pause_on_request_headers: bool,
    #[serde(default)]
    require_pushed_authorization_requests: bool,
    #[serde(default = "default_true")]
    require_pkce: bool,
    #[serde(default)]
    user: Option<RawUser>,
    #[serde(default)]
    login_url: Option<String>,
    #[serde(default)]
    refresh_cookie: RawCookie,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    jwks_fetch: Option<RawJwksFetch>,
    #[serde(default)]
    client_assertion: RawAssertion,
    #[serde(default)]
    dpop: RawDpop,
    #[serde(default)]
    rate_limits: RawRateLimits,
    #[serde(default)]
    resource_protection: crate::protect::config::RawProtection,
    #[serde(default)]
    device: Option<RawDevice>,
    #[serde(default)]
    token_exchange: Option<RawTokenExchange>,
    #[serde(default)]
    password_grant: Option<RawPassword>,
    #[serde(default)]
    userinfo: crate::oidc_settings::RawUserinfo,
    #[serde(default)]
    end_session: crate::oidc_settings::RawEndSession,
    #[serde(default)]
    mtls: Option<crate::mtls::RawMtls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
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
struct RawTokenExchange {
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
struct RawPassword {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwksFetch {
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
    #[serde(default = "default_true")]
    require_https: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAssertion {
    #[serde(default)]
    max_lifetime: Option<String>,
    #[serde(default)]
    clock_skew: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDpop {
    #[serde(default)]
    proof_lifetime: Option<String>,
    #[serde(default)]
    clock_skew: Option<String>,
    #[serde(default)]
    require_nonce: bool,
    #[serde(default)]
    nonce_lifetime: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    #[serde(default)]
    per_client: Option<RawLimit>,
    #[serde(default)]
    per_address: Option<RawLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    requests: u32,
    window: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    #[serde(default)]
    metadata_namespace: Option<String>,
    #[serde(default)]
    metadata_key: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default = "default_sub_claim")]
    subject_claim: String,
    #[serde(default = "default_auth_time_claim")]
    auth_time_claim: String,
    #[serde(default = "default_session_claim")]
    session_claim: String,
}

fn default_session_claim() -> String {
    "sid".into()
}

fn default_sub_claim() -> String {
    "sub".into()
}
fn default_auth_time_claim() -> String {
    "iat".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCookie {
    #[serde(default = "default_cookie_name")]
    name: String,
}

impl Default for RawCookie {
    fn default() -> Self {
        RawCookie {
            name: default_cookie_name(),
        }
    }
}

fn default_cookie_name() -> String {
    "oauth_edge_rt".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
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
struct RawStore {
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

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoints {
    #[serde(default = "default_token_path")]
    token: String,
    #[serde(default = "default_jwks_path")]
    jwks: String,
    #[serde(default = "default_par_path")]
    pushed_authorization: String,
    #[serde(default = "default_authorize_path")]
    authorize: String,
    #[serde(default = "default_refresh_path")]
    refresh: String,
    #[serde(default = "default_revocation_path")]
    revocation: String,
    #[serde(default = "default_introspection_path")]
    introspection: String,
    #[serde(default = "default_device_authorization_path")]
    device_authorization: String,
    #[serde(default = "default_device_verification_path")]
    device_verification: String,
    #[serde(default = "default_userinfo_path")]
    userinfo: String,
    #[serde(default = "default_end_session_path")]
    end_session: String,
}

fn default_userinfo_path() -> String {
    "/oauth/userinfo".into()
}
fn default_end_session_path() -> String {
    "/oauth/logout".into()
}

fn default_revocation_path() -> String {
    "/oauth/revoke".into()
}
fn default_introspection_path() -> String {
    "/oauth/introspect".into()
}
fn default_device_authorization_path() -> String {
    "/oauth/device_authorization".into()
}
fn default_device_verification_path() -> String {
    "/oauth/device".into()
}

impl Default for RawEndpoints {
    fn default() -> Self {
        RawEndpoints {
            token: default_token_path(),
            jwks: default_jwks_path(),
            pushed_authorization: default_par_path(),
            authorize: default_authorize_path(),
            refresh: default_refresh_path(),
            revocation: default_revocation_path(),
            introspection: default_introspection_path(),
            device_authorization: default_device_authorization_path(),
            device_verification: default_device_verification_path(),
            userinfo: default_userinfo_path(),
            end_session: default_end_session_path(),
        }
    }
}

fn default_par_path() -> String {
    "/oauth/pushed-authorization".into()
}
fn default_authorize_path() -> String {
    "/oauth/authorize".into()
}
fn default_refresh_path() -> String {
    "/oauth/refresh".into()
}

fn default_token_path() -> String {
    "/oauth/token".into()
}
fn default_jwks_path() -> String {
    "/oauth/jwks".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLifetimes {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    max_body_bytes: Option<usize>,
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

#[derive(Debug)]
pub struct Config {
    pub issuer: String,
    pub token_path: String,
    pub jwks_path: String,
    /// RFC 8414 §3: `/.well-known/oauth-authorization-server` + the issuer's path.
    pub as_metadata_path: String,
    /// OIDC Discovery §4: the issuer + `/.well-known/openid-configuration`.
    pub oidc_metadata_path: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub keys: KeySet,
    /// Places rate-limit and failure counters (see [`crate::rate_limit`]).
    pub counter_key: [u8; 32],
    pub access_token_ttl: Duration,
    pub access_token_audience: String,
    pub registry: Option<RegistryConfig>,
    pub clients: HashMap<String, Rc<Client>>,
    pub max_body_bytes: usize,
    pub pause_on_request_headers: bool,
    pub par_path: String,
    pub authorize_path: String,
    pub refresh_path: String,
    pub par_endpoint: String,
    pub authorize_endpoint: String,
    pub id_token_ttl: Duration,
    pub code_ttl: Duration,
    pub request_uri_ttl: Duration,
    pub refresh_token_ttl: Duration,
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
    /// The token and PAR endpoint URLs as DPoP `htu` is compared (normalised).
    pub token_htu: String,
    pub par_htu: String,
    /// Our own published keys, to read back our access tokens.
    pub own_keys: crate::jwk::JwkSet,
    pub revocation_path: String,
    pub introspection_path: String,
    pub device_authorization_path: String,
    pub device_verification_path: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    pub userinfo_endpoint: String,
    pub end_session_endpoint: String,
    pub userinfo_path: String,
    pub end_session_path: String,
    pub device_authorization_endpoint: String,
    pub device: Option<DeviceConfig>,
    pub token_exchange: Option<TokenExchangeConfig>,
    pub password_grant: Option<PasswordConfig>,
    /// The remote store for short-lived state; `None`: this process's shared data.
    pub etcd: Option<EtcdConfig>,
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

/// `profile`: one word for a set of stricter defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Default,
    /// FAPI 2.0 Security Profile: PAR, PKCE S256, private_key_jwt, DPoP-bound tokens, strict
    /// assertion audience, PS256/ES256/EdDSA only, codes and request_uris of at most 60 s.
    Fapi2,
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

/// Where the gateway puts the authenticated user (never a place a client can write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSource {
    /// Dynamic metadata, e.g. jwt_authn's `payload_in_metadata`: the verified JWT payload.
    Metadata {
        namespace: String,
        key: String,
        subject_claim: String,
        auth_time_claim: String,
        /// The login token's session id claim (OIDC `sid` derives from it: [`crate::flow::User::sid`]).
        session_claim: String,
    },
    /// A request header set by a filter before this one (only safe if Envoy strips any
    /// client-sent copy first).
    Header { name: String },
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

pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_BODY: usize = 16 * 1024;

impl Config {
    /// `scheme://authority` of the issuer: the origin of every endpoint URL.
    pub fn issuer_origin(&self) -> &str {
        self.token_endpoint
            .strip_suffix(self.token_path.as_str())
            .unwrap_or(&self.issuer)
    }

    /// Where rate-limit and failure counters live (see [`crate::rate_limit`]).
    pub fn counters(&self) -> crate::rate_limit::Counters<'_> {
        crate::rate_limit::Counters {
            ring: self.rings.rate_limits,
            key: &self.counter_key,
        }
    }

    /// A configuration without secret references (any `{"env"}`/`{"file"}` is refused).
    pub fn from_json(bytes: &[u8]) -> Result<Config, String> {
        Self::from_json_with_secrets(bytes, &crate::secret::unavailable)
    }

    /// A configuration whose secret references (see [`crate::secret`]) `resolve` reads: the
    /// adapter's, from the host. Each is read once, here.
    pub fn from_json_with_secrets(
        bytes: &[u8],
        resolve: crate::secret::Resolve<'_>,
    ) -> Result<Config, String> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(
                "the plugin configuration is empty (issuer and signing_keys are required)".into(),
            );
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("configuration: {e}"))?;
        Self::validate(raw, resolve)
    }

    fn validate(mut raw: Raw, resolve: crate::secret::Resolve<'_>) -> Result<Config, String> {
        let mtls: Option<crate::mtls::Mtls> = raw.mtls.take().map(TryInto::try_into).transpose()?;
        let (origin, issuer_path) = split_issuer(&raw.issuer)?;
        let issuer = raw.issuer.clone();
        let token_path = endpoint_path("endpoints.token", &raw.endpoints.token)?;
        let jwks_path = endpoint_path("endpoints.jwks", &raw.endpoints.jwks)?;
        let par_path = endpoint_path(
            "endpoints.pushed_authorization",
            &raw.endpoints.pushed_authorization,
        )?;
        let authorize_path = endpoint_path("endpoints.authorize", &raw.endpoints.authorize)?;
        let refresh_path = endpoint_path("endpoints.refresh", &raw.endpoints.refresh)?;
        let revocation_path = endpoint_path("endpoints.revocation", &raw.endpoints.revocation)?;
        let introspection_path =
            endpoint_path("endpoints.introspection", &raw.endpoints.introspection)?;
        let device_authorization_path = endpoint_path(
            "endpoints.device_authorization",
            &raw.endpoints.device_authorization,
        )?;
        let device_verification_path = endpoint_path(
            "endpoints.device_verification",
            &raw.endpoints.device_verification,
        )?;
        let userinfo_path = endpoint_path("endpoints.userinfo", &raw.endpoints.userinfo)?;
        let end_session_path = endpoint_path("endpoints.end_session", &raw.endpoints.end_session)?;
        let as_metadata_path = format!("/.well-known/oauth-authorization-server{issuer_path}");
        let oidc_metadata_path = format!("{issuer_path}/.well-known/openid-configuration");
        let paths = [
            &token_path,
            &jwks_path,
            &par_path,
            &authorize_path,
            &refresh_path,
            &revocation_path,
            &introspection_path,
            &device_authorization_path,
            &device_verification_path,
            &userinfo_path,
            &end_session_path,
            &as_metadata_path,
            &oidc_metadata_path,
        ];
        for (i, p) in paths.iter().enumerate() {
            if paths.iter().skip(i + 1).any(|q| q == p) {
                return Err(format!("endpoint path {p:?} is used twice"));
            }
        }
        let signing_keys = crate::secret::expand_keys(&raw.signing_keys, resolve)?;
        let keys = KeySet::from_named(&signing_keys, raw.active_signing_key.as_deref())?;

        let access_token_ttl = match raw.lifetimes.access_token.as_deref() {
            None => DEFAULT_ACCESS_TOKEN_TTL,
            Some(s) => bounded(
                "lifetimes.access_token",
                s,
                Duration::from_secs(1),
                Duration::from_secs(86_400),
            )?,
        };
        let access_token_audience = match raw.access_token_audience {
            None => issuer.clone(),
            Some(a) if !a.is_empty() && !a.chars().any(char::is_control) => a,
            Some(_) => return Err("access_token_audience must be a non-empty string".into()),
        };

        let registry = match raw.registry {
            None => None,
            Some(r) => Some(registry(r)?),
        };

        let mut clients = HashMap::new();
        for (i, c) in raw.clients.iter().enumerate() {
            let client = Client::from_json(c, true).map_err(|e| format!("clients[{i}]: {e}"))?;
            if let Some(alg) = client.id_token_alg {
                if keys.signer_for(alg).is_none() {
                    return Err(format!(
                        "clients[{i}]: id_token_signed_response_alg {} needs a signing key of that algorithm",
                        alg.as_str()
                    ));
                }
            }
            // Envoy's connection attributes show no IP or email SAN: only a certificate read
            // whole (XFCC `Cert`) has them.
            if matches!(
                client.tls_client_name,
                Some(
                    crate::mtls::TlsClientName::SanIp(_) | crate::mtls::TlsClientName::SanEmail(_)
                )
            ) && mtls
                .as_ref()
                .is_none_or(|m| m.source != crate::mtls::CertSource::Xfcc)
            {
                return Err(format!(
                    "clients[{i}]: tls_client_auth_san_ip and _san_email need mtls.source xfcc with the certificate (Cert): Envoy shows wasm filters no IP or email SAN"
                ));
            }
            if clients.contains_key(&client.client_id) {
                return Err(format!(
                    "clients[{i}]: client_id {:?} is used twice",
                    client.client_id
                ));
            }
            clients.insert(client.client_id.clone(), Rc::new(client));
        }

        let profile = match raw.profile.as_deref() {
            None | Some("default") => Profile::Default,
            Some("fapi2") => Profile::Fapi2,
            Some(p) => return Err(format!("profile {p:?} is unknown (default, fapi2)")),
        };
        let fapi = profile == Profile::Fapi2;
        // FAPI 2.0 Security Profile §5.3.2.1: "shall reject requests using the resource owner
        // password credentials grant". The profile forbids no other grant this server offers
        // (the implicit and hybrid flows are not offered at all).
        if fapi && raw.password_grant.is_some() {
            return Err(
                "profile fapi2 forbids the password grant (FAPI 2.0 Security Profile \
                 §5.3.2.1): remove password_grant, or use the default profile"
                    .into(),
            );
        }
        // FAPI 2.0 §5.3.2.1: codes live at most 60 s; request_uris as briefly.
        let short_max = if fapi { 60 } else { 600 };
        let lt = &raw.lifetimes;
        let id_token_ttl = lifetime("lifetimes.id_token", lt.id_token.as_deref(), 300, 1, 86_400)?;
        let code_ttl = lifetime("lifetimes.code", lt.code.as_deref(), 60, 1, short_max)?;
        let request_uri_ttl = lifetime(
            "lifetimes.request_uri",
            lt.request_uri.as_deref(),
            if fapi { 60 } else { 90 },
            1,
            short_max,
        )?;
        let refresh_token_ttl = lifetime(
            "lifetimes.refresh_token",
            lt.refresh_token.as_deref(),
            86_400,
            60,
            90 * 86_400,
        )?;

        let user = match raw.user {
            None => None,
            Some(u) => Some(user_source(u)?),
        };
        let login_url = match raw.login_url {
            None => None,
            Some(u)
                if (u.starts_with("https://")
                    || u.starts_with("http://")
                    || u.starts_with('/'))
                    && !u.contains('#')
                    && !u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Some(u)
            }
            Some(_) => {
                return Err("login_url must be an absolute URL or path without fragment".into())
            }
        };
        let cookie = raw.refresh_cookie.name;
        if cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(
                "refresh_cookie.name must be a cookie name of letters, digits, _ - .".into(),
            );
        }
        let ring = |name: &'static str,
                    field: &str,
                    v: Option<u32>,
                    default: u32|
         -> Result<Ring, String> {
            let size = v.unwrap_or(default);
            if !(16..=4_194_304).contains(&size) {
                return Err(format!("store.{field} must be between 16 and 4194304"));
            }
            Ok(Ring {
                name,
                size,
                remote: false,
            })
        };
        let etcd = match (raw.store.backend.as_deref(), raw.store.etcd) {
            (None | Some("shared_data"), None) => None,
            (Some("etcd"), Some(e)) => Some(etcd(e, resolve)?),
            (Some("etcd"), None) => return Err("store.backend etcd needs store.etcd".into()),
            (None | Some("shared_data"), Some(_)) => {
                return Err("store.etcd is set but store.backend is not \"etcd\"".into())
            }
            (Some(b), _) => {
                return Err(format!(
                    "store.backend {b:?} is unknown (shared_data, etcd)"
                ))
            }
        };
        let mut rings = Rings {
            request_uris: ring(
                "par",
                "request_uri_slots",
                raw.store.request_uri_slots,
                16_384,
            )?,
            codes: ring("code", "code_slots", raw.store.code_slots, 16_384)?,
            families: ring(
                "rtf",
                "refresh_family_slots",
                raw.store.refresh_family_slots,
                65_536,
            )?,
            jtis: ring("jti", "jti_slots", raw.store.jti_slots, 65_536)?,
            rate_limits: ring("rl", "rate_limit_slots", raw.store.rate_limit_slots, 4_096)?,
            devices: ring("dev", "device_slots", raw.store.device_slots, 4_096)?,
            revoked: ring("rev", "revoked_slots", raw.store.revoked_slots, 65_536)?,
        };
        let share = |field: &str, v: Option<u32>, default: u32| -> Result<u32, String> {
            let p = v.unwrap_or(default);
            if !(1..=100).contains(&p) {
                return Err(format!("store.{field} must be between 1 and 100"));
            }
            Ok(p)
        };
        let shares = Shares {
            records: share(
                "share_percent",
                raw.store.share_percent,
                DEFAULT_SHARE_PERCENT,
            )?,
            replay: share(
                "replay_share_percent",
                raw.store.replay_share_percent,
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
        let verify_algs = if fapi {
            vec![Alg::EdDSA, Alg::ES256, Alg::PS256]
        } else {
            vec![Alg::EdDSA, Alg::ES256, Alg::PS256, Alg::RS256]
        };
        if fapi && keys.active().is_some_and(|k| !verify_algs.contains(&k.alg)) {
            return Err(
                "profile fapi2 signs with PS256, ES256 or EdDSA only: the active key is RS256"
                    .into(),
            );
        }
        let jwks_fetch = match raw.jwks_fetch {
            None => None,
            Some(j) => Some(jwks_fetch(j)?),
        };
        let opt = |name: &str, v: Option<&str>, default: Duration, min: Duration, max: Duration| {
            v.map_or(Ok(default), |s| bounded(name, s, min, max))
        };
        let secs = Duration::from_secs;
        let assertion = AssertionConfig {
            max_lifetime: opt(
                "client_assertion.max_lifetime",
                raw.client_assertion.max_lifetime.as_deref(),
                secs(300),
                secs(1),
                secs(3_600),
            )?,
            clock_skew: opt(
                "client_assertion.clock_skew",
                raw.client_assertion.clock_skew.as_deref(),
                secs(30),
                Duration::ZERO,
                secs(300),
            )?,
        };
        let nonce_key = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(b"oauth-edge/dpop-nonce/v1\0");
            if let Some(k) = keys.sealing_keys().next() {
                h.update(k);
            }
            h.finalize().into()
        };
        let dpop = DpopConfig {
            proof_lifetime: opt(
                "dpop.proof_lifetime",
                raw.dpop.proof_lifetime.as_deref(),
                secs(60),
                secs(1),
                secs(600),
            )?,
            clock_skew: opt(
                "dpop.clock_skew",
                raw.dpop.clock_skew.as_deref(),
                secs(10),
                Duration::ZERO,
                secs(300),
            )?,
            require_nonce: raw.dpop.require_nonce,
            nonce_lifetime: opt(
                "dpop.nonce_lifetime",
                raw.dpop.nonce_lifetime.as_deref(),
                secs(300),
                secs(1),
                secs(86_400),
            )?,
            nonce_key,
        };
        let limit = |name: &str, l: Option<RawLimit>| -> Result<Option<Limit>, String> {
            match l {
                None => Ok(None),
                Some(l) => {
                    if l.requests == 0 {
                        return Err(format!("rate_limits.{name}.requests must be at least 1"));
                    }
                    let window = bounded(
                        &format!("rate_limits.{name}.window"),
                        &l.window,
                        Duration::from_millis(100),
                        secs(86_400),
                    )?;
                    Ok(Some(Limit {
                        requests: l.requests,
                        window,
                    }))
                }
            }
        };
        let rate_limits = RateLimits {
            per_client: limit("per_client", raw.rate_limits.per_client)?,
            per_address: limit("per_address", raw.rate_limits.per_address)?,
        };
        let protection = crate::protect::config::validate(raw.resource_protection, |name, v| {
            v.map_or(Ok(Duration::from_secs(10)), |s| {
                bounded(name, s, Duration::ZERO, Duration::from_secs(300))
            })
        })?;

        let max_body_bytes = raw.limits.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if !(256..=1024 * 1024).contains(&max_body_bytes) {
            return Err("limits.max_body_bytes must be between 256 and 1048576".into());
        }

        let own_keys = crate::jwk::JwkSet::from_slice(keys.jwks_json())
            .map_err(|e| format!("signing_keys: {e}"))?;
        let device = match raw.device {
            None => None,
            Some(d) => Some(DeviceConfig {
                lifetime: opt(
                    "device.lifetime",
                    d.lifetime.as_deref(),
                    secs(600),
                    secs(30),
                    secs(3_600),
                )?,
                interval: opt(
                    "device.interval",
                    d.interval.as_deref(),
                    secs(5),
                    secs(1),
                    secs(60),
                )?,
                user_code_length: match d.user_code_length {
                    None => 8,
                    Some(n) if (8..=12).contains(&n) => n,
                    Some(_) => return Err("device.user_code_length must be 8 to 12".into()),
                },
                verification_uri: match d.verification_uri {
                    None => format!("{origin}{device_verification_path}"),
                    Some(u) if u.starts_with("https://") || u.starts_with("http://") => u,
                    Some(_) => return Err("device.verification_uri must be an absolute URL".into()),
                },
                attempts: limit("device.attempts", d.attempts)?.unwrap_or(Limit {
                    requests: 10,
                    window: secs(300),
                }),
            }),
        };
        let token_exchange = match raw.token_exchange {
            None => None,
            Some(t) => {
                let mut trusted = Vec::new();
                for (i, ti) in t.trusted_issuers.into_iter().enumerate() {
                    if ti.issuer.is_empty() || ti.issuer == issuer {
                        return Err(format!(
                            "token_exchange.trusted_issuers[{i}].issuer must be another issuer"
                        ));
                    }
                    if !(ti.jwks_uri.starts_with("https://") || ti.jwks_uri.starts_with("http://"))
                    {
                        return Err(format!(
                            "token_exchange.trusted_issuers[{i}].jwks_uri must be an absolute URL"
                        ));
                    }
                    trusted.push(TrustedIssuer {
                        issuer: ti.issuer,
                        jwks_uri: ti.jwks_uri,
                        audience: ti.audience.unwrap_or_else(|| issuer.clone()),
                    });
                }
                if !trusted.is_empty() && jwks_fetch.is_none() {
                    return Err(
                        "token_exchange.trusted_issuers needs jwks_fetch to reach their keys"
                            .into(),
                    );
                }
                Some(TokenExchangeConfig {
                    trusted_issuers: trusted,
                })
            }
        };
        let password_grant = match raw.password_grant {
            None => None,
            Some(p) => {
                if p.cluster.is_empty() || !p.path.starts_with('/') {
                    return Err("password_grant needs a cluster and a path starting with /".into());
                }
                Some(PasswordConfig {
                    authority: p.authority.unwrap_or_else(|| p.cluster.clone()),
                    timeout: opt(
                        "password_grant.timeout",
                        p.timeout.as_deref(),
                        secs(1),
                        Duration::from_millis(1),
                        secs(60),
                    )?,
                    failures: limit("password_grant.failures", p.failures)?.unwrap_or(Limit {
                        requests: 5,
                        window: secs(300),
                    }),
                    cluster: p.cluster,
                    path: p.path,
                })
            }
        };
        let token_htu = crate::htu::normalize(&format!("{origin}{token_path}"))
            .ok_or("the token endpoint URL cannot be normalised")?;
        let par_htu = crate::htu::normalize(&format!("{origin}{par_path}"))
            .ok_or("the PAR endpoint URL cannot be normalised")?;
        Ok(Config {
            counter_key: keys.counter_key(),
            token_htu,
            par_htu,
            own_keys,
            revocation_endpoint: format!("{origin}{revocation_path}"),
            introspection_endpoint: format!("{origin}{introspection_path}"),
            userinfo_endpoint: format!("{origin}{userinfo_path}"),
            end_session_endpoint: format!("{origin}{end_session_path}"),
            userinfo_path,
            end_session_path,
            device_authorization_endpoint: format!("{origin}{device_authorization_path}"),
            revocation_path,
            introspection_path,
            device_authorization_path,
            device_verification_path,
            device,
            token_exchange,
            password_grant,
            etcd,
            token_endpoint: format!("{origin}{token_path}"),
            jwks_uri: format!("{origin}{jwks_path}"),
            issuer,
            token_path,
            jwks_path,
            as_metadata_path,
            oidc_metadata_path,
            keys,
            access_token_ttl,
            access_token_audience,
            registry,
            clients,
            max_body_bytes,
            pause_on_request_headers: raw.pause_on_request_headers,
            par_endpoint: format!("{origin}{par_path}"),
            authorize_endpoint: format!("{origin}{authorize_path}"),
            par_path,
            authorize_path,
            refresh_path,
            id_token_ttl,
            code_ttl,
            request_uri_ttl,
            refresh_token_ttl,
            require_par: raw.require_pushed_authorization_requests || fapi,
            require_pkce: raw.require_pkce || fapi,
            user,
            login_url,
            userinfo: raw.userinfo.try_into()?,
            end_session: raw.end_session.try_into()?,
            mtls,
            refresh_cookie_name: cookie,
            rings,
            shares,
            profile,
            verify_algs,
            jwks_fetch,
            assertion,
            dpop,
            rate_limits,
            protection,
        })
    }
}

fn registry(r: RawRegistry) -> Result<RegistryConfig, String> {
    if r.cluster.is_empty() {
        return Err("registry.cluster must name an Envoy cluster".into());
    }
    if !r.path_prefix.starts_with('/') || r.path_prefix.contains(['?', '#', ' ']) {
        return Err("registry.path_prefix must be a path starting with /".into());
    }
    // A timeout of 0 means "no timeout" to the host: a hung registry would hang requests.
    let timeout = match r.timeout.as_deref() {
        None => Duration::from_millis(500),
        Some(s) => bounded(
            "registry.timeout",
            s,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?,
    };
    let cache_ttl = match r.cache_ttl.as_deref() {
        None => Duration::from_secs(60),
        Some(s) => bounded(
            "registry.cache_ttl",
            s,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?,
    };
    let negative_cache_ttl = match r.negative_cache_ttl.as_deref() {
        None => Duration::from_secs(5),
        Some(s) => bounded(
            "registry.negative_cache_ttl",
            s,
            Duration::ZERO,
            Duration::from_secs(3_600),
        )?,
    };
    let misses_per_address = match r.misses_per_address {
        None => Limit {
            requests: 30,
            window: Duration::from_secs(10),
        },
        Some(l) => {
            if l.requests == 0 {
                return Err("registry.misses_per_address.requests must be at least 1".into());
            }
            Limit {
                requests: l.requests,
                window: bounded(
                    "registry.misses_per_address.window",
                    &l.window,
                    Duration::from_millis(100),
                    Duration::from_secs(86_400),
                )?,
            }
        }
    };
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

fn etcd(e: RawEtcd, resolve: crate::secret::Resolve<'_>) -> Result<EtcdConfig, String> {
    if e.cluster.is_empty() {
        return Err("store.etcd.cluster must name an Envoy cluster".into());
    }
    if !e.prefix.starts_with('/') || e.prefix.len() < 2 || !e.prefix.ends_with('/') {
        return Err("store.etcd.prefix must look like /oauth-edge/".into());
    }
    let password = match e.password {
        None => None,
        Some(p) => Some(crate::secret::string("store.etcd.password", &p, resolve)?),
    };
    let credentials = match (e.username, password) {
        (None, None) => None,
        (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
        _ => return Err("store.etcd needs both username and password, or neither".into()),
    };
    Ok(EtcdConfig {
        authority: e.authority.unwrap_or_else(|| e.cluster.clone()),
        cluster: e.cluster,
        prefix: e.prefix,
        timeout: match e.timeout.as_deref() {
            None => Duration::from_millis(500),
            Some(s) => bounded(
                "store.etcd.timeout",
                s,
                Duration::from_millis(1),
                Duration::from_secs(10),
            )?,
        },
        credentials,
    })
}

fn jwks_fetch(j: RawJwksFetch) -> Result<JwksFetchConfig, String> {
    if j.cluster.as_deref().is_some_and(str::is_empty)
        || j.clusters.values().any(String::is_empty)
        || (j.cluster.is_none() && j.clusters.is_empty())
    {
        return Err(
            "jwks_fetch needs cluster (and/or clusters per authority) naming Envoy clusters".into(),
        );
    }
    let d = |name: &str, v: Option<&str>, default: Duration, min: Duration, max: Duration| {
        v.map_or(Ok(default), |s| bounded(name, s, min, max))
    };
    Ok(JwksFetchConfig {
        cluster: j.cluster,
        clusters: j
            .clusters
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        // Never 0: the host reads a zero timeout as "no timeout".
        timeout: d(
            "jwks_fetch.timeout",
            j.timeout.as_deref(),
            Duration::from_secs(1),
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?,
        cache_ttl: d(
            "jwks_fetch.cache_ttl",
            j.cache_ttl.as_deref(),
            Duration::from_secs(600),
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        )?,
        refetch_cooldown: d(
            "jwks_fetch.refetch_cooldown",
            j.refetch_cooldown.as_deref(),
            Duration::from_secs(10),
            Duration::ZERO,
            Duration::from_secs(3_600),
        )?,
        require_https: j.require_https,
    })
}

fn lifetime(
    name: &str,
    v: Option<&str>,
    default_s: u64,
    min_s: u64,
    max_s: u64,
) -> Result<Duration, String> {
    match v {
        None => Ok(Duration::from_secs(default_s)),
        Some(s) => bounded(
            name,
            s,
            Duration::from_secs(min_s),
            Duration::from_secs(max_s),
        ),
    }
}

fn user_source(u: RawUser) -> Result<UserSource, String> {
    match (u.metadata_namespace, u.metadata_key, u.header) {
        (Some(namespace), Some(key), None) if !namespace.is_empty() && !key.is_empty() => Ok(UserSource::Metadata {
            namespace,
            key,
            subject_claim: u.subject_claim,
            auth_time_claim: u.auth_time_claim,
            session_claim: u.session_claim,
        }),
        (None, None, Some(name)) if !name.is_empty() => Ok(UserSource::Header { name: name.to_ascii_lowercase() }),
        _ => Err("user: set either metadata_namespace and metadata_key (e.g. jwt_authn payload_in_metadata) or header".into()),
    }
}

fn bounded(name: &str, s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = duration::parse(s).map_err(|e| format!("{name}: {e}"))?;
    if d < min || d > max {
        return Err(format!("{name} must be between {min:?} and {max:?}"));
    }
    Ok(d)
}

fn endpoint_path(name: &str, p: &str) -> Result<String, String> {
    if !p.starts_with('/')
        || p.len() < 2
        || p.contains(['?', '#', ' ', '%'])
        || p.chars().any(char::is_control)
    {
        return Err(format!(
            "{name} must be a plain absolute path like /oauth/token"
        ));
    }
    Ok(p.to_string())
}

/// The issuer is an https URL without query or fragment (RFC 8414 §2); plain http only for
/// loopback, so the demo and tests can run. Returns (scheme://authority, path without a
/// trailing slash).
pub(crate) fn split_issuer(issuer: &str) -> Result<(String, String), String> {
    let rest = if let Some(r) = issuer.strip_prefix("https://") {
        r
    } else if let Some(r) = issuer.strip_prefix("http://") {
        let host = r.split(['/', ':']).next().unwrap_or("");
        if !(host == "localhost" || host == "127.0.0.1" || r.starts_with("[::1]")) {
            return Err("issuer must be an https URL (http only for localhost)".into());
        }
        r
    } else {
        return Err("issuer must be an https URL".into());
    };
    if issuer.contains(['?', '#']) || issuer.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("issuer must not have a query, fragment or spaces".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("")),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err("issuer has no host".into());
    }
    let scheme_len = issuer.len() - rest.len();
    let origin = format!("{}{}", issuer.get(..scheme_len).unwrap_or(""), authority);
    Ok((origin, path.trim_end_matches('/').to_string()))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::keys::{generate_jwk, Alg};
    use crate::random::SystemRandom;
    use serde_json::json;

    pub fn sample() -> Value {
        json!({
            "issuer": "https://auth.example.com",
            "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
            "clients": [{
                "client_id": "demo-client",
                "client_secret": crate::client::hash_secret("demo-secret"),
                "grant_types": ["client_credentials"],
                "scope": "read write"
            }, {
                "client_id": "demo-public",
                "token_endpoint_auth_method": "none",
                "scope": "read"
            }]
        })
    }

    fn parse(v: &Value) -> Result<Config, String> {
        Config::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn defaults() {
        let c = parse(&sample()).unwrap();
        assert_eq!(c.token_path, "/oauth/token");
        assert_eq!(c.token_endpoint, "https://auth.example.com/oauth/token");
        assert_eq!(c.jwks_uri, "https://auth.example.com/oauth/jwks");
        assert_eq!(
            c.as_metadata_path,
            "/.well-known/oauth-authorization-server"
        );
        assert_eq!(c.oidc_metadata_path, "/.well-known/openid-configuration");
        assert_eq!(c.access_token_ttl, Duration::from_secs(300));
        assert_eq!(c.access_token_audience, "https://auth.example.com");
        assert_eq!(c.max_body_bytes, 16384);
        assert!(c.pause_on_request_headers);
        assert!(c.registry.is_none());
        assert_eq!(c.clients.len(), 2);
    }

    #[test]
    fn issuer_with_path_moves_well_known() {
        let mut v = sample();
        v["issuer"] = json!("https://example.com/tenant1/");
        let c = parse(&v).unwrap();
        assert_eq!(
            c.as_metadata_path,
            "/.well-known/oauth-authorization-server/tenant1"
        );
        assert_eq!(
            c.oidc_metadata_path,
            "/tenant1/.well-known/openid-configuration"
        );
        assert_eq!(c.token_endpoint, "https://example.com/oauth/token");
    }

    #[test]
    fn registry_defaults_and_bounds() {
        let mut v = sample();
        v["registry"] = json!({"cluster": "registry"});
        let r = parse(&v).unwrap().registry.unwrap();
        assert_eq!(r.authority, "registry");
        assert_eq!(r.path_prefix, "/clients/");
        assert_eq!(r.timeout, Duration::from_millis(500));
        v["registry"]["timeout"] = json!("0ms");
        assert!(parse(&v).unwrap_err().contains("registry.timeout"));
    }

    #[test]
    fn every_mistake_is_named() {
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|v| {
                    v["isuer"] = json!("x");
                }),
                "isuer",
            ),
            (
                Box::new(|v| {
                    v["issuer"] = json!("http://example.com");
                }),
                "https",
            ),
            (
                Box::new(|v| {
                    v["issuer"] = json!("https://a.com/?x");
                }),
                "query",
            ),
            (
                Box::new(|v| {
                    v["issuer"] = json!("ftp://a");
                }),
                "https",
            ),
            (
                Box::new(|v| {
                    v["signing_keys"] = json!([]);
                }),
                "signing_keys",
            ),
            (
                Box::new(|v| {
                    v["endpoints"] = json!({"token": "oauth/token"});
                }),
                "endpoints.token",
            ),
            (
                Box::new(|v| {
                    v["endpoints"] = json!({"token": "/x", "jwks": "/x"});
                }),
                "twice",
            ),
            (
                Box::new(|v| {
                    v["endpoints"] = json!({"tokn": "/x"});
                }),
                "tokn",
            ),
            (
                Box::new(|v| {
                    v["lifetimes"] = json!({"access_token": "0s"});
                }),
                "lifetimes.access_token",
            ),
            (
                Box::new(|v| {
                    v["lifetimes"] = json!({"access_token": "5 minutes"});
                }),
                "lifetimes.access_token",
            ),
            (
                Box::new(|v| {
                    v["registry"] = json!({"cluster": ""});
                }),
                "registry.cluster",
            ),
            (
                Box::new(|v| {
                    v["registry"] = json!({"cluster": "r", "ttl": "1s"});
                }),
                "ttl",
            ),
            (
                Box::new(|v| {
                    v["limits"] = json!({"max_body_bytes": 10});
                }),
                "max_body_bytes",
            ),
            (
                Box::new(|v| {
                    v["clients"][0]["client_secret"] = json!("plain");
                }),
                "clients[0]",
            ),
            (
                Box::new(|v| {
                    v["clients"][1]["client_id"] = json!("demo-client");
                }),
                "twice",
            ),
            (
                Box::new(|v| {
                    v["clients"][0]["redirect_uri"] = json!("x");
                }),
                "redirect_uri",
            ),
            (
                Box::new(|v| {
                    v["active_signing_key"] = json!("nope");
                }),
                "nope",
            ),
            (
                Box::new(|v| {
                    v["access_token_audience"] = json!("");
                }),
                "access_token_audience",
            ),
        ];
        for (mutate, needle) in cases {
            let mut v = sample();
            mutate(&mut v);
            let e = parse(&v).unwrap_err();
            assert!(e.contains(needle), "expected {needle:?} in {e:?}");
        }
        assert!(Config::from_json(b"").unwrap_err().contains("empty"));
        assert!(Config::from_json(b"{").is_err());
        assert!(Config::from_json(b"[]").is_err());
        assert!(Config::from_json(&[0xff, 0xfe]).is_err());
    }

    /// A resolver over a fixed set of environment variables, as the adapter's reads the VM's.
    fn env(
        vars: Vec<(&'static str, String)>,
    ) -> impl Fn(&crate::secret::SecretRef) -> Result<String, String> {
        move |r| match r {
            crate::secret::SecretRef::Env(n) => vars
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("{r} is not set")),
            crate::secret::SecretRef::File(_) => Err(format!("{r} cannot be read")),
        }
    }

    fn with_secrets(
        v: &Value,
        r: &dyn Fn(&crate::secret::SecretRef) -> Result<String, String>,
    ) -> Result<Config, String> {
        Config::from_json_with_secrets(v.to_string().as_bytes(), r)
    }

    #[test]
    fn signing_keys_from_the_environment() {
        let key = generate_jwk(Alg::EdDSA, "from-env", &mut SystemRandom).unwrap();
        let mut v = sample();
        v["signing_keys"] = json!([{"env": "OAUTH_EDGE_KEY"}]);
        let c = with_secrets(&v, &env(vec![("OAUTH_EDGE_KEY", key.to_string())])).unwrap();
        assert_eq!(c.keys.active().unwrap().kid, "from-env");
        // The same key inline gives the same configuration (sealing, counters, nonces).
        let mut inline = sample();
        inline["signing_keys"] = json!([key]);
        assert_eq!(c.counter_key, parse(&inline).unwrap().counter_key);

        // Not set: refused, naming the entry and the variable; without a resolver too.
        assert_eq!(
            with_secrets(&v, &env(vec![])).err().unwrap(),
            "signing_keys[0]: environment variable OAUTH_EDGE_KEY is not set"
        );
        assert!(parse(&v)
            .unwrap_err()
            .contains("this host reads no secrets"));

        // The key in the variable is validated as strictly as an inline one.
        let mut bad = key.clone();
        bad["x"] = generate_jwk(Alg::EdDSA, "other", &mut SystemRandom).unwrap()["x"].clone();
        let e = with_secrets(&v, &env(vec![("OAUTH_EDGE_KEY", bad.to_string())]))
            .err()
            .unwrap();
        assert_eq!(
            e,
            "signing_keys[0] (environment variable OAUTH_EDGE_KEY): key \"from-env\": x does not match d"
        );
    }

    #[test]
    fn rotation_with_a_jwk_set_in_the_environment() {
        let old = generate_jwk(Alg::EdDSA, "2026-11", &mut SystemRandom).unwrap();
        let new = generate_jwk(Alg::ES256, "2026-12", &mut SystemRandom).unwrap();
        let mut v = sample();
        v["signing_keys"] = json!([{"env": "KEYS"}]);
        let set = |keys: Value| env(vec![("KEYS", json!({ "keys": keys }).to_string())]);
        let published = |c: &Config| -> Vec<String> {
            let doc: Value = serde_json::from_slice(c.keys.jwks_json()).unwrap();
            doc["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_string())
                .collect()
        };
        // 1. The new key is added after the old one: both published, the first private signs.
        let c = with_secrets(&v, &set(json!([old, new]))).unwrap();
        assert_eq!(
            (c.keys.active().unwrap().kid.as_str(), published(&c)),
            ("2026-11", vec!["2026-11".into(), "2026-12".into()])
        );
        // 2. Made active: by order, or by active_signing_key.
        let c = with_secrets(&v, &set(json!([new, old]))).unwrap();
        assert_eq!(c.keys.active().unwrap().kid, "2026-12");
        v["active_signing_key"] = json!("2026-12");
        let c = with_secrets(&v, &set(json!([old, new]))).unwrap();
        assert_eq!(c.keys.active().unwrap().kid, "2026-12");
        // 3. The old private part dropped: still published for tokens in flight.
        let mut old_public = old.clone();
        old_public.as_object_mut().unwrap().remove("d");
        let c = with_secrets(&v, &set(json!([new, old_public]))).unwrap();
        assert_eq!(c.keys.sealing_keys().count(), 1);
        assert_eq!(published(&c).len(), 2);
        // Two variables work as well as one set, and a kid in both is refused.
        v["signing_keys"] = json!([{"env": "A"}, {"env": "B"}]);
        let two = env(vec![("A", old.to_string()), ("B", new.to_string())]);
        assert_eq!(
            published(&with_secrets(&v, &two).unwrap()),
            ["2026-11", "2026-12"]
        );
        let dup = env(vec![
            ("A", old.to_string()),
            ("B", json!({"keys": [new, old]}).to_string()),
        ]);
        assert_eq!(
            with_secrets(&v, &dup).err().unwrap(),
            "signing_keys[1] (environment variable B, key 2): kid \"2026-11\" is used twice"
        );
    }

    #[test]
    fn etcd_password_from_the_environment() {
        let mut v = sample();
        v["store"] = json!({"backend": "etcd", "etcd": {"cluster": "etcd", "username": "oauth-edge",
                                                         "password": {"env": "ETCD_PASSWORD"}}});
        let c = with_secrets(&v, &env(vec![("ETCD_PASSWORD", "pw\n".into())])).unwrap();
        assert_eq!(
            c.etcd.unwrap().credentials,
            Some(("oauth-edge".to_string(), "pw".to_string()))
        );
        assert_eq!(
            with_secrets(&v, &env(vec![])).err().unwrap(),
            "store.etcd.password: environment variable ETCD_PASSWORD is not set"
        );
        v["store"]["etcd"]["password"] = json!({"env": "ETCD_PASSWORD", "file": "/x"});
        assert!(with_secrets(&v, &env(vec![]))
            .err()
            .unwrap()
            .starts_with("store.etcd.password: a secret reference"));
        v["store"]["etcd"]["password"] = json!(["pw"]);
        assert!(parse(&v)
            .unwrap_err()
            .contains("store.etcd.password must be a string"));
        v["store"]["etcd"]["password"] = json!("literal");
        assert!(parse(&v).is_ok());
    }
}
