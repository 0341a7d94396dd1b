//! A registered client, from RFC 7591 client metadata: the static clients in the configuration
//! and the registry's answers use the same names. A client's secret is only ever held as a
//! SHA-256 hash (`"client_secret": "sha256:<hex>"`): the filter never sees a stored plaintext.

use std::rc::Rc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::jwk::JwkSet;
use crate::keys::Alg;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 §2.2: a JWT signed with one of the client's registered keys.
    PrivateKeyJwt,
    /// A public client (RFC 7591 `none`).
    None,
    /// RFC 8705 §2.1: a certificate of a CA Envoy trusts, naming the client.
    TlsClientAuth,
    /// RFC 8705 §2.2: a certificate registered in the client's JWK Set.
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "client_secret_basic" => Ok(AuthMethod::ClientSecretBasic),
            "client_secret_post" => Ok(AuthMethod::ClientSecretPost),
            "private_key_jwt" => Ok(AuthMethod::PrivateKeyJwt),
            "none" => Ok(AuthMethod::None),
            "tls_client_auth" => Ok(AuthMethod::TlsClientAuth),
            "self_signed_tls_client_auth" => Ok(AuthMethod::SelfSignedTlsClientAuth),
            other => Err(format!(
                "token_endpoint_auth_method {other:?} is not supported (client_secret_basic, client_secret_post, private_key_jwt, tls_client_auth, self_signed_tls_client_auth, none)"
            )),
        }
    }

    /// RFC 8705 §2: the client authenticates with its TLS certificate.
    pub fn uses_certificate(self) -> bool {
        matches!(
            self,
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
        )
    }

    pub fn uses_secret(self) -> bool {
        matches!(
            self,
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
        )
    }
}

/// The metadata names this server reads (RFC 7591 §2, RFC 9449 §5.2, RFC 9396 §10).
pub const KNOWN_METADATA: &[&str] = &[
    "client_id",
    "client_secret",
    "client_name",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "redirect_uris",
    "scope",
    "jwks",
    "jwks_uri",
    "token_endpoint_auth_signing_alg",
    "id_token_signed_response_alg",
    "dpop_bound_access_tokens",
    "authorization_details_types",
    "require_pushed_authorization_requests",
    "refresh_token_cookie",
    "refresh_endpoint_returns_refresh_token",
    "resource_server_audiences",
    "allowed_origins",
    "refresh_token_reuse_interval",
    "token_exchange_audiences",
    "allowed_resources",
    "token_exchange_subject_audiences",
    "post_logout_redirect_uris",
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
    "tls_client_certificate_bound_access_tokens",
];

#[derive(Deserialize)]
struct Metadata {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    jwks: Option<serde_json::Value>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    token_endpoint_auth_signing_alg: Option<String>,
    #[serde(default)]
    id_token_signed_response_alg: Option<String>,
    #[serde(default)]
    dpop_bound_access_tokens: bool,
    #[serde(default)]
    authorization_details_types: Vec<String>,
    #[serde(default)]
    require_pushed_authorization_requests: bool,
    #[serde(default)]
    refresh_token_cookie: bool,
    #[serde(default)]
    refresh_endpoint_returns_refresh_token: bool,
    #[serde(default)]
    resource_server_audiences: Vec<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    refresh_token_reuse_interval: u64,
    #[serde(default)]
    token_exchange_audiences: Vec<String>,
    #[serde(default)]
    allowed_resources: Vec<String>,
    #[serde(default)]
    token_exchange_subject_audiences: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    tls_client_auth_subject_dn: Option<String>,
    #[serde(default)]
    tls_client_auth_san_dns: Option<String>,
    #[serde(default)]
    tls_client_auth_san_uri: Option<String>,
    #[serde(default)]
    tls_client_auth_san_ip: Option<String>,
    #[serde(default)]
    tls_client_auth_san_email: Option<String>,
    #[serde(default)]
    tls_client_certificate_bound_access_tokens: bool,
}

#[derive(Clone, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub name: Option<String>,
    secret_sha256: Option<[u8; 32]>,
    pub auth_method: AuthMethod,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    /// Allowed scope tokens.
    pub scope: Vec<String>,
    /// Registered keys (`jwks`), parsed once.
    pub jwks: Option<Rc<JwkSet>>,
    pub jwks_uri: Option<String>,
    /// The one algorithm this client signs its assertions with, if it registered one.
    pub token_endpoint_auth_signing_alg: Option<Alg>,
    /// OIDC Registration §2: the algorithm of this client's ID tokens (`None`: RS256, the
    /// default OpenID Connect gives, when there is an RS256 key; see `crate::oidc::key_for`).
    pub id_token_alg: Option<Alg>,
    /// RFC 9449 §5.2: every token request of this client must carry a DPoP proof.
    pub dpop_bound_access_tokens: bool,
    pub authorization_details_types: Vec<String>,
    /// RFC 9126 §6: this client must use PAR.
    pub require_par: bool,
    /// Browser client: its refresh token goes into an HttpOnly cookie for `/oauth/refresh`
    /// instead of the JSON answer (not an RFC 7591 name).
    pub refresh_token_cookie: bool,
    /// With `refresh_token_cookie`: `/oauth/refresh` also puts the new refresh token in its JSON
    /// (seeds 001/004 say the answer "includes new access_token and refresh_token"), where the
    /// page's scripts can read it (not an RFC 7591 name).
    pub refresh_endpoint_returns_refresh_token: bool,
    /// The audiences (RFC 8707 resource identifiers, or `access_token_audience`) this client is
    /// the resource server of: it may introspect access tokens issued for one of them, besides
    /// its own tokens (RFC 7662 §2.1, §4; not an RFC 7591 name).
    pub resource_server_audiences: Vec<String>,
    /// Origins a browser may call `/oauth/refresh` and, through CORS, the token, PAR and
    /// revocation endpoints from (also every redirect_uri's origin).
    pub allowed_origins: Vec<String>,
    /// Seconds during which the previous refresh token may be used again (a lost answer
    /// retried, FAPI 2.0 §5.3.2.1) without revoking the family. 0: never.
    pub refresh_token_reuse_interval: u64,
    /// The resources and audiences this client may ask tokens for, in every grant (RFC 8707
    /// §2, RFC 9700 §2.3): `allowed_resources`, plus the deprecated `token_exchange_audiences`.
    /// Empty: only the default audience, by asking for none.
    pub allowed_resources: Vec<String>,
    /// Audiences of subject tokens this client may exchange besides its own client_id.
    pub token_exchange_subject_audiences: Vec<String>,
    /// OIDC RP-Initiated Logout §3.1: where the end-session endpoint may send the browser
    /// after a logout (exact match).
    pub post_logout_redirect_uris: Vec<String>,
    /// RFC 8705 §2.1.2: what names a `tls_client_auth` client in its certificate.
    pub tls_client_name: Option<crate::mtls::TlsClientName>,
    /// RFC 8705 §3.4: access tokens (and a public client's refresh tokens) are bound to the
    /// client certificate of the token request.
    pub tls_bound_tokens: bool,
}

// The hash is not a secret in the strict sense, but it never goes to a log either.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("auth_method", &self.auth_method)
            .field("grant_types", &self.grant_types)
            .field("scope", &self.scope)
            .field("client_secret", &self.secret_sha256.map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// RFC 6749 Appendix A.1: client_id is VSCHAR*; we also bound its length.
pub fn valid_client_id(id: &str) -> bool {
    (1..=255).contains(&id.len()) && id.bytes().all(|b| (0x20..=0x7E).contains(&b))
}

impl Client {
    /// Reads client metadata. `strict` refuses names this server does not know (the operator's
    /// own configuration, where an unknown name is a typo); a registry may send more.
    pub fn from_json(v: &serde_json::Value, strict: bool) -> Result<Client, String> {
        let obj = v
            .as_object()
            .ok_or("client metadata must be a JSON object")?;
        if strict {
            if let Some(k) = obj.keys().find(|k| !KNOWN_METADATA.contains(&k.as_str())) {
                return Err(format!("unknown client metadata {k:?}"));
            }
        }
        let m: Metadata =
            serde_json::from_value(v.clone()).map_err(|e| format!("client metadata: {e}"))?;
        Self::from_metadata(m)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Client, String> {
        let m: Metadata =
            serde_json::from_slice(bytes).map_err(|e| format!("client metadata: {e}"))?;
        Self::from_metadata(m)
    }

    fn from_metadata(m: Metadata) -> Result<Client, String> {
        if !valid_client_id(&m.client_id) {
            return Err("client_id must be 1 to 255 visible ASCII characters".into());
        }
        let id = &m.client_id;
        let auth_method = match m.token_endpoint_auth_method.as_deref() {
            None => AuthMethod::ClientSecretBasic, // RFC 7591 §2 default
            Some(s) => AuthMethod::parse(s).map_err(|e| format!("client {id:?}: {e}"))?,
        };
        let secret_sha256 = match m.client_secret.as_deref() {
            None => None,
            Some(s) => Some(parse_secret_hash(s).map_err(|e| format!("client {id:?}: {e}"))?),
        };
        if auth_method.uses_secret() && secret_sha256.is_none() {
            return Err(format!("client {id:?}: a client_secret hash is required for its token_endpoint_auth_method"));
        }
        if auth_method == AuthMethod::None && secret_sha256.is_some() {
            return Err(format!(
                "client {id:?}: a public client (none) must not have a client_secret"
            ));
        }
        let jwks = match &m.jwks {
            None => None,
            Some(v) => Some(Rc::new(
                JwkSet::parse(v).map_err(|e| format!("client {id:?}: jwks: {e}"))?,
            )),
        };
        if let Some(u) = &m.jwks_uri {
            if !(u.starts_with("https://") || u.starts_with("http://"))
                || u.contains('#')
                || u.len() > 2048
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!("client {id:?}: jwks_uri must be an absolute URL"));
            }
        }
        // RFC 8705 §2.1.2: exactly one way of naming the client in its certificate.
        let ip = match m.tls_client_auth_san_ip.as_deref() {
            None => None,
            Some(t) => Some(t.parse::<std::net::IpAddr>().map_err(|_| {
                format!("client {id:?}: tls_client_auth_san_ip must be an IPv4 or IPv6 address")
            })?),
        };
        if m.tls_client_auth_san_email
            .as_deref()
            .is_some_and(|e| !e.contains('@'))
        {
            return Err(format!(
                "client {id:?}: tls_client_auth_san_email must be an email address"
            ));
        }
        let names: Vec<crate::mtls::TlsClientName> = [
            m.tls_client_auth_subject_dn
                .clone()
                .map(crate::mtls::TlsClientName::SubjectDn),
            m.tls_client_auth_san_dns
                .clone()
                .map(crate::mtls::TlsClientName::SanDns),
            m.tls_client_auth_san_uri
                .clone()
                .map(crate::mtls::TlsClientName::SanUri),
            ip.map(crate::mtls::TlsClientName::SanIp),
            m.tls_client_auth_san_email
                .clone()
                .map(crate::mtls::TlsClientName::SanEmail),
        ]
        .into_iter()
        .flatten()
        .collect();
        let tls_client_name = match (auth_method, names.as_slice()) {
            (AuthMethod::TlsClientAuth, [one]) => Some(one.clone()),
            (AuthMethod::TlsClientAuth, _) => {
                return Err(format!("client {id:?}: tls_client_auth needs exactly one of tls_client_auth_subject_dn, tls_client_auth_san_dns, tls_client_auth_san_uri, tls_client_auth_san_ip, tls_client_auth_san_email"))
            }
            (_, []) => None,
            _ => {
                return Err(format!(
                    "client {id:?}: tls_client_auth_* metadata needs token_endpoint_auth_method tls_client_auth"
                ))
            }
        };
        if auth_method.uses_certificate() && secret_sha256.is_some() {
            return Err(format!(
                "client {id:?}: a client authenticating with its certificate must not have a client_secret"
            ));
        }
        if auth_method == AuthMethod::SelfSignedTlsClientAuth
            && jwks.is_none() == m.jwks_uri.is_none()
        {
            return Err(format!(
                "client {id:?}: self_signed_tls_client_auth needs exactly one of jwks and jwks_uri (with the certificate in x5c)"
            ));
        }
        if auth_method == AuthMethod::PrivateKeyJwt {
            if jwks.is_some() == m.jwks_uri.is_some() {
                return Err(format!(
                    "client {id:?}: private_key_jwt needs exactly one of jwks and jwks_uri"
                ));
            }
            if secret_sha256.is_some() {
                return Err(format!(
                    "client {id:?}: a private_key_jwt client must not have a client_secret"
                ));
            }
        }
        let token_endpoint_auth_signing_alg =
            match m.token_endpoint_auth_signing_alg.as_deref() {
                None => None,
                Some(a) => Some(crate::jws::verify_alg(a).map(|(alg, _)| alg).ok_or_else(
                    || {
                        format!(
                            "client {id:?}: token_endpoint_auth_signing_alg {a:?} is not supported"
                        )
                    },
                )?),
            };
        // Asymmetric algorithms we sign with; never `none` nor an HMAC (no client secret is
        // kept in clear to key one).
        let id_token_alg = match m.id_token_signed_response_alg.as_deref() {
            None => None,
            Some(a) => Some(Alg::parse(a).ok_or_else(|| {
                format!("client {id:?}: id_token_signed_response_alg {a:?} is not supported (EdDSA, ES256, PS256, RS256)")
            })?),
        };
        if m.refresh_endpoint_returns_refresh_token && !m.refresh_token_cookie {
            return Err(format!(
                "client {id:?}: refresh_endpoint_returns_refresh_token needs refresh_token_cookie"
            ));
        }
        if m.resource_server_audiences
            .iter()
            .any(|a| a.is_empty() || a.chars().any(char::is_control))
        {
            return Err(format!(
                "client {id:?}: resource_server_audiences must be non-empty strings"
            ));
        }
        let mut scope = Vec::new();
        if let Some(s) = m.scope.as_deref() {
            for t in s.split(' ').filter(|t| !t.is_empty()) {
                if !crate::scope::is_scope_token(t) {
                    return Err(format!("client {id:?}: malformed scope"));
                }
                if !scope.iter().any(|x| x == t) {
                    scope.push(t.to_string());
                }
            }
        }
        // One list for every grant: the older token-exchange-only name is read into it.
        let mut allowed_resources = m.allowed_resources;
        allowed_resources.extend(m.token_exchange_audiences);
        check_registered(&allowed_resources)
            .map_err(|e| format!("client {id:?}: allowed_resources: {e}"))?;
        check_registered(&m.token_exchange_subject_audiences)
            .map_err(|e| format!("client {id:?}: token_exchange_subject_audiences: {e}"))?;
        // RP-Initiated Logout §3.1 (like RFC 6749 §3.1.2): absolute URIs without a fragment.
        if m.post_logout_redirect_uris.iter().any(|u| {
            !u.contains(':')
                || u.contains('#')
                || u.len() > 2048
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(format!(
                "client {id:?}: post_logout_redirect_uris must be absolute URIs without a fragment"
            ));
        }
        Ok(Client {
            name: m.client_name,
            secret_sha256,
            auth_method,
            grant_types: m
                .grant_types
                .unwrap_or_else(|| vec!["authorization_code".to_string()]),
            response_types: m.response_types.unwrap_or_else(|| vec!["code".to_string()]),
            redirect_uris: m.redirect_uris,
            scope,
            jwks,
            jwks_uri: m.jwks_uri,
            token_endpoint_auth_signing_alg,
            id_token_alg,
            dpop_bound_access_tokens: m.dpop_bound_access_tokens,
            authorization_details_types: m.authorization_details_types,
            require_par: m.require_pushed_authorization_requests,
            refresh_token_cookie: m.refresh_token_cookie,
            refresh_endpoint_returns_refresh_token: m.refresh_endpoint_returns_refresh_token,
            resource_server_audiences: m.resource_server_audiences,
            allowed_origins: m.allowed_origins,
            refresh_token_reuse_interval: m.refresh_token_reuse_interval.min(300),
            allowed_resources,
            token_exchange_subject_audiences: m.token_exchange_subject_audiences,
            post_logout_redirect_uris: m.post_logout_redirect_uris,
            tls_client_name,
            tls_bound_tokens: m.tls_client_certificate_bound_access_tokens,
            client_id: m.client_id,
        })
    }

    /// Whether this client may ask for a token for `target` (a `resource` or token exchange
    /// `audience`): exact string comparison, like redirect URIs.
    pub fn may_target(&self, target: &str) -> bool {
        self.allowed_resources.iter().any(|r| r == target)
    }

    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }

    /// A client that authenticates (with a secret or a key), as opposed to a public one.
    pub fn is_confidential(&self) -> bool {
        self.auth_method != AuthMethod::None
    }

    /// Exact string comparison (RFC 9700 §4.1.3: no pattern, no normalisation).
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }

    /// Whether a browser at `origin` may call the cookie refresh endpoint for this client.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == origin)
            || self
                .redirect_uris
                .iter()
                .any(|r| origin_of(r) == Some(origin))
    }

    /// Constant-time check of a presented secret against the stored SHA-256. The registry stores
    /// a fast hash on purpose: secrets are high-entropy, and a slow KDF per request would cost
    /// more than the token signature.
    pub fn secret_matches(&self, presented: &str) -> bool {
        match &self.secret_sha256 {
            Some(stored) => {
                let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                bool::from(h.ct_eq(stored))
            }
            None => false,
        }
    }
}

/// `scheme://authority` of an absolute URL.
pub fn origin_of(url: &str) -> Option<&str> {
    let scheme_end = url.find("://")?;
    let rest = url.get(scheme_end + 3..)?;
    let auth_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    url.get(..scheme_end + 3 + auth_len)
}

/// `sha256:` followed by 64 hex digits.
pub fn parse_secret_hash(s: &str) -> Result<[u8; 32], String> {
    let hex = s.strip_prefix("sha256:").ok_or(
        "client_secret must be a hash \"sha256:<64 hex digits>\", never the plaintext secret",
    )?;
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err("client_secret hash must have 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = hex_val(pair.first().copied());
        let lo = hex_val(pair.get(1).copied());
        match (hi, lo) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return Err("client_secret hash must be hex".into()),
        }
    }
    Ok(out)
}

fn hex_val(b: Option<u8>) -> Option<u8> {
    match b? {
        b @ b'0'..=b'9' => Some(b - b'0'),
        b @ b'a'..=b'f' => Some(b - b'a' + 10),
        b @ b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The hash string for a secret, as the registry and the configuration store it.
pub fn hash_secret(secret: &str) -> String {
    let h = Sha256::digest(secret.as_bytes());
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in h.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A registered list of resources or audiences: the operator's (or registry's) entries, each
/// non-empty, at most 2048 bytes, without whitespace or control characters. (Token exchange
/// audiences may be logical names, so URIs are not required here; a `resource` parameter is
/// still checked to be a URI when it is asked for.)
pub fn check_registered(list: &[String]) -> Result<(), &'static str> {
    if list.iter().any(|r| {
        r.is_empty() || r.len() > 2048 || r.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        return Err("entries must be 1 to 2048 characters without spaces or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn demo() -> serde_json::Value {
        json!({
            "client_id": "demo-client",
            "client_secret": hash_secret("demo-secret"),
            "grant_types": ["client_credentials"],
            "scope": "read write",
        })
    }

    #[test]
    fn parses_and_checks_secret() {
        let c = Client::from_json(&demo(), true).unwrap();
        assert_eq!(c.auth_method, AuthMethod::ClientSecretBasic);
        assert!(c.secret_matches("demo-secret"));
        assert!(!c.secret_matches("demo-secreT"));
        assert!(!c.secret_matches(""));
        assert!(c.allows_grant("client_credentials"));
        assert!(!c.allows_grant("authorization_code"));
        assert_eq!(c.scope, vec!["read", "write"]);
        assert!(!format!("{c:?}").contains(&hash_secret("demo-secret")[7..]));
    }

    #[test]
    fn known_hash_vector() {
        // printf demo-secret | sha256sum
        assert_eq!(
            hash_secret("demo-secret"),
            "sha256:cd577fe2561ebff23505db0bb006300c7cdecbd46bc0e03c449afafaca2c25bf"
        );
        assert_eq!(
            parse_secret_hash(&hash_secret("abc")).unwrap()[..4],
            [0xba, 0x78, 0x16, 0xbf]
        );
    }

    #[test]
    fn plaintext_secret_refused() {
        let mut v = demo();
        v["client_secret"] = json!("demo-secret");
        assert!(Client::from_json(&v, true)
            .unwrap_err()
            .contains("never the plaintext"));
        v["client_secret"] = json!("sha256:zz");
        assert!(Client::from_json(&v, true).is_err());
    }

    #[test]
    fn strict_refuses_unknown_names_registry_does_not() {
        let mut v = demo();
        v["grant_type"] = json!(["client_credentials"]);
        assert!(Client::from_json(&v, true)
            .unwrap_err()
            .contains("grant_type"));
        assert!(Client::from_json(&v, false).is_ok());
    }

    #[test]
    fn method_and_secret_must_agree() {
        let v = json!({"client_id":"p","token_endpoint_auth_method":"none"});
        assert!(!Client::from_json(&v, true).unwrap().is_confidential());
        let v = json!({"client_id":"p","token_endpoint_auth_method":"none","client_secret":hash_secret("x")});
        assert!(Client::from_json(&v, true).is_err());
        let v = json!({"client_id":"c"});
        assert!(Client::from_json(&v, true).is_err());
        let v = json!({"client_id":"c","token_endpoint_auth_method":"tls_client_auth","client_secret":hash_secret("x")});
        assert!(Client::from_json(&v, true).is_err());
        let v = json!({"client_id":"","token_endpoint_auth_method":"none"});
        assert!(Client::from_json(&v, true).is_err());
        let v = json!({"client_id":"c","token_endpoint_auth_method":"none","scope":"a \"b"});
        assert!(Client::from_json(&v, true).is_err());
    }
}
