//! Mutual TLS (RFC 8705): the client certificate of a request, client authentication by it
//! (`tls_client_auth`, `self_signed_tls_client_auth`, §2) and the `x5t#S256` thumbprint that
//! binds tokens to it (§3).
//!
//! Where the certificate comes from: Envoy terminates TLS, so the connection as Envoy saw it is
//! the truth, and the adapter reads it from Envoy's connection attributes (`connection.mtls`,
//! `sha256_peer_certificate_digest`, `subject_peer_certificate`, `dns_san_peer_certificate`,
//! `uri_san_peer_certificate`): never from a header a client could send. Envoy gives wasm
//! filters the subject, the first DNS SAN and the first URI SAN only (no IP or email SAN, no
//! certificate), and does not say whether it verified the chain. So:
//!
//! - `tls_client_auth` (PKI) is offered only where the operator declares that Envoy verifies
//!   client chains on this listener (`mtls.chain_verified`: a `validation_context` with the
//!   CA and the default `trust_chain_verification`, under which an unverified chain never
//!   completes the handshake); the client is matched by exactly one registered
//!   `tls_client_auth_subject_dn`, `_san_dns` or `_san_uri` (an IP or email SAN cannot be seen,
//!   and registering one is refused);
//! - `self_signed_tls_client_auth` compares the certificate's SHA-256 with the certificates in
//!   the client's JWK Set (`x5c`, §2.2): it needs no chain (such a listener uses
//!   `trust_chain_verification: ACCEPT_UNTRUSTED`, and must not declare `chain_verified`).
//!
//! Behind another proxy that terminated TLS, the operator may say so (`mtls.source: "xfcc"`):
//! the certificate is then read from the `x-forwarded-client-cert` element that hop added
//! (Envoy's XFCC; `Hash`, `Subject`, `URI`, `DNS`). Only safe when every request reaches this
//! Envoy through that hop and it replaces any client-sent XFCC (`forward_client_cert_details:
//! SANITIZE_SET`); anyone who can reach this Envoy directly can claim any certificate.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::Deserialize;

use crate::client::{AuthMethod, Client};
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, JwksLookup};

/// The client certificate of a request, as Envoy (or the trusted hop) saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the certificate's DER.
    pub sha256: [u8; 32],
    /// The subject distinguished name, RFC 4514 form as Envoy prints it (`CN=a,O=b`).
    pub subject: Option<String>,
    /// The first DNS SAN.
    pub dns: Option<String>,
    /// The first URI SAN.
    pub uri: Option<String>,
}

impl ClientCert {
    /// From Envoy's connection attributes; `None` without a certificate or with a digest that
    /// is not 64 hex digits.
    pub fn from_digest_hex(
        hex: &str,
        subject: Option<String>,
        dns: Option<String>,
        uri: Option<String>,
    ) -> Option<ClientCert> {
        Some(ClientCert {
            sha256: parse_hex32(hex)?,
            subject: subject.filter(|s| !s.is_empty()),
            dns: dns.filter(|s| !s.is_empty()),
            uri: uri.filter(|s| !s.is_empty()),
        })
    }

    /// RFC 8705 §3.1 `x5t#S256`: base64url of the SHA-256 of the DER.
    pub fn thumbprint(&self) -> String {
        B64.encode(self.sha256)
    }

    /// The certificate of the last element of an `x-forwarded-client-cert` value (the hop just
    /// before this one): `Hash` (required), `Subject`, `URI`, `DNS` (the first of each).
    pub fn from_xfcc(value: &str) -> Option<ClientCert> {
        let element = split_outside_quotes(value, ',').pop()?;
        let (mut hash, mut subject, mut uri, mut dns) = (None, None, None, None);
        for pair in split_outside_quotes(element, ';') {
            let (k, v) = pair.split_once('=')?;
            let v = unquote(v.trim())?;
            match k.trim().to_ascii_lowercase().as_str() {
                "hash" => hash = Some(v),
                "subject" => subject = subject.or(Some(v)),
                "uri" => uri = uri.or(Some(v)),
                "dns" => dns = dns.or(Some(v)),
                _ => {}
            }
        }
        Self::from_digest_hex(&hash?, subject, dns, uri)
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Splits at `sep` where it is not inside a double-quoted string (XFCC quotes values that hold
/// `,` `;` `=`, and escapes `"` inside them with `\`).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(s.get(start..i).unwrap_or_default());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(s.get(start..).unwrap_or_default());
    out
}

fn unquote(v: &str) -> Option<String> {
    match v.strip_prefix('"') {
        None => Some(v.to_string()),
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if escaped || c != '\\' {
                    out.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            Some(out)
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    #[serde(default)]
    chain_verified: bool,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    endpoint_aliases_origin: Option<String>,
}

/// Where the request's certificate is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    /// Envoy's own TLS connection.
    Connection,
    /// The `x-forwarded-client-cert` header of a trusted hop before this Envoy.
    Xfcc,
}

/// The `mtls` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mtls {
    /// Envoy verifies client chains where this filter runs: `tls_client_auth` is offered.
    pub chain_verified: bool,
    pub source: CertSource,
    /// `scheme://authority` where the mTLS endpoints are served (RFC 8705 §5
    /// `mtls_endpoint_aliases`), if not at the issuer's.
    pub endpoint_aliases_origin: Option<String>,
}

impl TryFrom<RawMtls> for Mtls {
    type Error = String;

    fn try_from(raw: RawMtls) -> Result<Self, String> {
        let source = match raw.source.as_deref() {
            None | Some("connection") => CertSource::Connection,
            Some("xfcc") => CertSource::Xfcc,
            Some(_) => return Err("mtls.source must be connection or xfcc".into()),
        };
        if let Some(o) = &raw.endpoint_aliases_origin {
            let rest = o.strip_prefix("https://").unwrap_or_default();
            if rest.is_empty()
                || rest.contains(['/', '?', '#', '@'])
                || rest.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(
                    "mtls.endpoint_aliases_origin must be an https origin (https://host[:port])"
                        .into(),
                );
            }
        }
        Ok(Mtls {
            chain_verified: raw.chain_verified,
            source,
            endpoint_aliases_origin: raw.endpoint_aliases_origin,
        })
    }
}

/// How a client registered for `tls_client_auth` is recognised (exactly one, RFC 8705 §2.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsClientName {
    SubjectDn(String),
    SanDns(String),
    SanUri(String),
}

impl TlsClientName {
    fn matches(&self, cert: &ClientCert) -> bool {
        match self {
            TlsClientName::SubjectDn(dn) => cert.subject.as_deref().is_some_and(|s| same_dn(s, dn)),
            // DNS names compare without case (RFC 4343).
            TlsClientName::SanDns(d) => cert
                .dns
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(d)),
            TlsClientName::SanUri(u) => cert.uri.as_deref() == Some(u.as_str()),
        }
    }
}

/// Two RFC 4514 strings name the same subject: attribute types without case, no spaces
/// around the separators; values exactly.
fn same_dn(a: &str, b: &str) -> bool {
    fn parts(s: &str) -> Vec<(String, String)> {
        split_outside_quotes(s, ',')
            .into_iter()
            .map(|rdn| match rdn.split_once('=') {
                Some((t, v)) => (t.trim().to_ascii_uppercase(), v.trim().to_string()),
                None => (String::new(), rdn.trim().to_string()),
            })
            .collect()
    }
    parts(a) == parts(b)
}

/// RFC 8705 §2: authenticates a client registered for one of the mTLS methods by the request's
/// certificate.
pub fn authenticate(
    cfg: &crate::config::Config,
    client: &Client,
    cert: Option<&ClientCert>,
    ctx: &mut Ctx<'_>,
) -> FlowResult<()> {
    let failed = || OAuthError::invalid_client("client authentication failed");
    let Some(cert) = cert else {
        return Err(OAuthError::invalid_client(
            "this client authenticates with a TLS client certificate, and none was presented",
        )
        .into());
    };
    match client.auth_method {
        AuthMethod::TlsClientAuth => {
            let verified = cfg.mtls.as_ref().is_some_and(|m| m.chain_verified);
            match &client.tls_client_name {
                Some(name) if verified && name.matches(cert) => Ok(()),
                _ => Err(failed().into()),
            }
        }
        AuthMethod::SelfSignedTlsClientAuth => {
            let set = match (&client.jwks, &client.jwks_uri) {
                (Some(set), _) => set.clone(),
                (None, Some(url)) => match ctx.jwks(url, false)? {
                    JwksLookup::Found(set) => set,
                    JwksLookup::Unavailable(_) => {
                        return Err(OAuthError::invalid_client(
                            "the client's jwks_uri could not be read",
                        )
                        .into())
                    }
                },
                (None, None) => return Err(failed().into()),
            };
            if set.keys.iter().any(|k| k.x5c_sha256 == Some(cert.sha256)) {
                Ok(())
            } else {
                Err(failed().into())
            }
        }
        _ => Err(failed().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9ba61d2ab0f2a7a3b3e6a1c4ee5f1bb8a3b2a8b0a8d2e0f1c2b3a4d5e6f70819";

    #[test]
    fn xfcc_last_element_with_quotes() {
        let v = format!(
            "By=spiffe://a;Hash=00;Subject=\"CN=old\",By=spiffe://b;Hash={HEX};Subject=\"CN=client a,O=Example\\, Inc\";URI=spiffe://c/1;URI=spiffe://c/2;DNS=c.example"
        );
        let c = ClientCert::from_xfcc(&v).unwrap();
        assert_eq!(c.subject.as_deref(), Some("CN=client a,O=Example, Inc"));
        assert_eq!(c.uri.as_deref(), Some("spiffe://c/1"));
        assert_eq!(c.dns.as_deref(), Some("c.example"));
        assert_eq!(c.sha256[0], 0x9b);
        assert_eq!(c.thumbprint().len(), 43);
        for bad in [
            "",
            "Hash=zz",
            "Subject=x",
            "Hash=\"unterminated",
            "By=x;Hash",
        ] {
            assert!(ClientCert::from_xfcc(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn subject_names_compare_by_rfc_4514_form() {
        assert!(same_dn("CN=a,O=Example", "cn=a, O=Example"));
        assert!(!same_dn("CN=a,O=Example", "CN=A,O=Example"));
        assert!(!same_dn("CN=a,O=Example", "O=Example,CN=a"));
        assert!(!same_dn("CN=a", "CN=a,O=x"));
    }

    #[test]
    fn config_is_checked() {
        let m = |v: serde_json::Value| {
            serde_json::from_value::<RawMtls>(v)
                .map_err(|e| e.to_string())
                .and_then(Mtls::try_from)
        };
        assert_eq!(
            m(serde_json::json!({})).unwrap().source,
            CertSource::Connection
        );
        assert!(m(serde_json::json!({"source": "header"})).is_err());
        assert!(m(serde_json::json!({"endpoint_aliases_origin": "http://x"})).is_err());
        assert!(m(serde_json::json!({"endpoint_aliases_origin": "https://x/y"})).is_err());
        assert!(
            m(serde_json::json!({"endpoint_aliases_origin": "https://mtls.example.com:8443"}))
                .is_ok()
        );
        assert!(m(serde_json::json!({"chain_verified": "yes"})).is_err());
    }
}
