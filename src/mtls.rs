//! Mutual TLS (RFC 8705): the client certificate of a request, client authentication by it
//! (`tls_client_auth`, `self_signed_tls_client_auth`, §2) and the `x5t#S256` thumbprint that
//! binds tokens to it (§3).
//!
//! Where the certificate comes from: Envoy terminates TLS, so the connection as Envoy saw it is
//! the truth, and the gateway reads it from Envoy's connection attributes (`connection.mtls`,
//! `sha256_peer_certificate_digest`, `subject_peer_certificate`, `dns_san_peer_certificate`,
//! `uri_san_peer_certificate`): never from a header a client could send. Envoy gives wasm
//! filters the subject, the first DNS SAN and the first URI SAN only (no IP or email SAN, no
//! certificate), and does not say whether it verified the chain. So:
//!
//! - `tls_client_auth` (PKI) is offered only where the operator declares that Envoy verifies
//!   client chains on this listener (`mtls.chain_verified`: a `validation_context` with the
//!   CA and the default `trust_chain_verification`, under which an unverified chain never
//!   completes the handshake); the client is matched by exactly one registered
//!   `tls_client_auth_subject_dn`, `_san_dns`, `_san_uri`, `_san_ip` or `_san_email` (the last
//!   two only where the certificate itself comes, through XFCC's `Cert`);
//! - `self_signed_tls_client_auth` compares the certificate's SHA-256 with the certificates in
//!   the client's JWK Set (`x5c`, §2.2): it needs no chain (such a listener uses
//!   `trust_chain_verification: ACCEPT_UNTRUSTED`, and must not declare `chain_verified`).
//!
//! With `mtls.source: "xfcc"` the certificate is read from the last `x-forwarded-client-cert`
//! element (Envoy's XFCC; `Hash`, `Subject`, `URI`, `DNS`, and `Cert`, the PEM, whose SANs are
//! read in full): the one this Envoy set from the connection (`forward_client_cert_details:
//! SANITIZE_SET`, which replaces any client-sent copy), or the one a TLS-terminating hop before
//! it added. The second is only safe when every request reaches this Envoy through that hop and
//! it replaces any client-sent XFCC; anyone who can reach this Envoy directly can claim any
//! certificate.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::Deserialize;

/// The client certificate of a request, as Envoy (or the trusted hop) saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientCert {
    /// SHA-256 of the certificate's DER.
    pub sha256: [u8; 32],
    /// The subject distinguished name, RFC 4514 form as Envoy prints it (`CN=a,O=b`).
    pub subject: Option<String>,
    /// The first DNS SAN (every one when the certificate itself was read).
    pub dns: Option<String>,
    /// The first URI SAN.
    pub uri: Option<String>,
    /// Every SAN, when the certificate itself came (XFCC `Cert`): also the IP and email SANs
    /// Envoy's connection attributes do not show.
    pub sans: Option<Sans>,
}

/// The subject alternative names of a certificate that was read whole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sans {
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    pub ip: Vec<std::net::IpAddr>,
    pub email: Vec<String>,
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
            sans: None,
        })
    }

    /// From the certificate itself (DER): its digest and every SAN (the subject comes from
    /// XFCC's `Subject`, as Envoy prints it). `None` if the SANs cannot be read.
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        use sha2::{Digest, Sha256};
        let sans = sans_of(der)?;
        Some(ClientCert {
            sha256: Sha256::digest(der).into(),
            subject: None,
            dns: sans.dns.first().cloned(),
            uri: sans.uri.first().cloned(),
            sans: Some(sans),
        })
    }

    /// From a PEM certificate (XFCC's `Cert`, URL-decoded).
    pub fn from_pem(pem: &str) -> Option<ClientCert> {
        let body: String = pem
            .trim()
            .strip_prefix("-----BEGIN CERTIFICATE-----")?
            .trim_end()
            .strip_suffix("-----END CERTIFICATE-----")?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?;
        Self::from_der(&der)
    }

    /// RFC 8705 §3.1 `x5t#S256`: base64url of the SHA-256 of the DER.
    pub fn thumbprint(&self) -> String {
        B64.encode(self.sha256)
    }

    /// The certificate of the last element of an `x-forwarded-client-cert` value (the hop just
    /// before this one): `Hash` (required), `Subject`, `URI`, `DNS` (the first of each).
    pub fn from_xfcc(value: &str) -> Option<ClientCert> {
        let element = split_outside_quotes(value, ',').pop()?;
        let (mut hash, mut subject, mut uri, mut dns, mut pem) = (None, None, None, None, None);
        for pair in split_outside_quotes(element, ';') {
            let (k, v) = pair.split_once('=')?;
            let v = unquote(v.trim())?;
            match k.trim().to_ascii_lowercase().as_str() {
                "hash" => hash = Some(v),
                "subject" => subject = subject.or(Some(v)),
                "uri" => uri = uri.or(Some(v)),
                "dns" => dns = dns.or(Some(v)),
                "cert" => pem = Some(v),
                _ => {}
            }
        }
        // The certificate itself, when the hop sent it: everything comes from it (and its
        // digest must be the one the hop named, if it named one).
        if let Some(pem) = pem {
            let pem = percent_encoding::percent_decode_str(&pem)
                .decode_utf8()
                .ok()?;
            let cert = Self::from_pem(&pem)?;
            if hash.is_some_and(|h| parse_hex32(&h) != Some(cert.sha256)) {
                return None;
            }
            return Some(ClientCert { subject, ..cert });
        }
        Self::from_digest_hex(&hash?, subject, dns, uri)
    }
}

/// RFC 5280 §4.2.1.6 `id-ce-subjectAltName` (2.5.29.17), as DER content octets.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// The subject alternative names of a DER certificate (RFC 5280 §4.1): the `extensions` ([3]) of
/// the `tbsCertificate`, the one `subjectAltName`, its `GeneralNames`. Read with `der`'s
/// bounds-checked TLV reader, without decoding the rest of the certificate (the chain was
/// verified by whoever put it here). `None` if the structure is not DER or the extension repeats.
fn sans_of(der: &[u8]) -> Option<Sans> {
    use der::asn1::AnyRef;
    use der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};

    let context = |n: u32, constructed: bool| Tag::ContextSpecific {
        constructed,
        number: TagNumber(n),
    };
    let cert = AnyRef::from_der(der).ok()?;
    if cert.tag() != Tag::Sequence {
        return None;
    }
    let tbs: AnyRef<'_> = SliceReader::new(cert.value()).ok()?.decode().ok()?;
    if tbs.tag() != Tag::Sequence {
        return None;
    }
    let mut fields = SliceReader::new(tbs.value()).ok()?;
    let mut sans = Sans::default();
    let mut seen = false;
    while !fields.is_finished() {
        let field: AnyRef<'_> = fields.decode().ok()?;
        if field.tag() != context(3, true) {
            continue;
        }
        let exts = AnyRef::from_der(field.value()).ok()?;
        let mut exts = SliceReader::new(exts.value()).ok()?;
        while !exts.is_finished() {
            let ext: AnyRef<'_> = exts.decode().ok()?;
            let mut parts = SliceReader::new(ext.value()).ok()?;
            let oid: AnyRef<'_> = parts.decode().ok()?;
            let mut value: AnyRef<'_> = parts.decode().ok()?;
            if value.tag() == Tag::Boolean {
                value = parts.decode().ok()?;
            }
            if oid.tag() != Tag::ObjectIdentifier || oid.value() != SAN_OID {
                continue;
            }
            if seen || value.tag() != Tag::OctetString {
                return None;
            }
            seen = true;
            let names = AnyRef::from_der(value.value()).ok()?;
            let mut names = SliceReader::new(names.value()).ok()?;
            while !names.is_finished() {
                let n: AnyRef<'_> = names.decode().ok()?;
                let text = || std::str::from_utf8(n.value()).ok().map(str::to_string);
                match n.tag() {
                    t if t == context(1, false) => sans.email.push(text()?),
                    t if t == context(2, false) => sans.dns.push(text()?),
                    t if t == context(6, false) => sans.uri.push(text()?),
                    t if t == context(7, false) => match n.value().len() {
                        4 => sans
                            .ip
                            .push(std::net::IpAddr::from(<[u8; 4]>::try_from(n.value()).ok()?)),
                        16 => sans.ip.push(std::net::IpAddr::from(
                            <[u8; 16]>::try_from(n.value()).ok()?,
                        )),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    Some(sans)
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
    /// Only with the certificate itself (XFCC `Cert`): Envoy's connection attributes show no
    /// IP SAN.
    SanIp(std::net::IpAddr),
    /// Likewise for email SANs.
    SanEmail(String),
}

impl TlsClientName {
    /// RFC 8705 §2.1.2: the registered value equals the subject, or one SAN of the type.
    pub fn matches(&self, cert: &ClientCert) -> bool {
        let sans = cert.sans.as_ref();
        match self {
            TlsClientName::SubjectDn(dn) => cert.subject.as_deref().is_some_and(|s| same_dn(s, dn)),
            // DNS names compare without case (RFC 4343).
            TlsClientName::SanDns(d) => match sans {
                Some(s) => s.dns.iter().any(|x| x.eq_ignore_ascii_case(d)),
                None => cert
                    .dns
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(d)),
            },
            TlsClientName::SanUri(u) => match sans {
                Some(s) => s.uri.iter().any(|x| x == u),
                None => cert.uri.as_deref() == Some(u.as_str()),
            },
            TlsClientName::SanIp(ip) => sans.is_some_and(|s| s.ip.contains(ip)),
            TlsClientName::SanEmail(e) => {
                sans.is_some_and(|s| s.email.iter().any(|x| same_email(x, e)))
            }
        }
    }
}

/// The local part compares exactly (RFC 5321 §2.4), the domain without case.
fn same_email(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => false,
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
