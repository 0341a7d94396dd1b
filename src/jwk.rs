//! Public JWKs of others (RFC 7517): a client's registered keys (`jwks`, `jwks_uri`) and the key
//! in a DPoP proof's header. Parsed once into verifying keys, so a request never re-parses a key
//! it has seen; each key carries its RFC 7638 thumbprint.
//!
//! Only public keys are accepted: a JWK with a private member is refused outright (RFC 9449 §4.3
//! check 7 for DPoP; a registry that publishes a client's private key has a problem the client
//! should hear about).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::keys::Alg;

/// Members only a private (or symmetric) JWK has (RFC 7518 §6.2.2, §6.3.2, §6.4, RFC 8037 §2).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The largest RSA modulus accepted: verification cost grows with it, and nobody needs more.
const MAX_RSA_BITS: usize = 4096;

#[derive(Clone)]
pub enum VerifyingKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    /// Validated by p256 when read; verified with `crate::es256`.
    P256(crate::es256::PublicKey),
    Rsa(Box<rsa::PublicKey>),
}

#[derive(Clone)]
pub struct PublicJwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, if it names one: then only that algorithm may use it.
    pub alg: Option<Alg>,
    pub key: VerifyingKey,
    /// RFC 7638 thumbprint, base64url of the SHA-256.
    pub thumbprint: String,
    /// SHA-256 of the DER of the JWK's certificate (`x5c`'s first member, RFC 7517 §4.7), if it
    /// carries one: what `self_signed_tls_client_auth` compares the TLS client certificate
    /// with (RFC 8705 §2.2).
    pub x5c_sha256: Option<[u8; 32]>,
}

impl std::fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicJwk(kid {:?}, jkt {})", self.kid, self.thumbprint)
    }
}

impl PartialEq for PublicJwk {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.thumbprint == other.thumbprint
    }
}

impl PublicJwk {
    /// Whether this key can verify signatures of `alg` (key type and the JWK's own `alg`).
    pub fn fits(&self, alg: Alg) -> bool {
        let kind = matches!(
            (&self.key, alg),
            (VerifyingKey::Ed25519(_), Alg::EdDSA)
                | (VerifyingKey::P256(_), Alg::ES256)
                | (VerifyingKey::Rsa(_), Alg::RS256 | Alg::PS256)
        );
        kind && self.alg.is_none_or(|a| a == alg)
    }

    /// Reads one public JWK. `use`, if present, must be `sig`.
    pub fn parse(v: &Value) -> Result<PublicJwk, &'static str> {
        Self::read(v).map_err(|e| match e {
            Refusal::Unsupported(why) | Refusal::Broken(why) => why,
        })
    }

    fn read(v: &Value) -> Result<PublicJwk, Refusal> {
        let o = v.as_object().ok_or("a JWK must be a JSON object")?;
        if PRIVATE_MEMBERS.iter().any(|m| o.contains_key(*m)) {
            return Err("the JWK holds private key material".into());
        }
        let kid = match o.get("kid") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("kid must be a string".into()),
        };
        if let Some(u) = o.get("use") {
            if u.as_str() != Some("sig") {
                return Err("use must be sig".into());
            }
        }
        let alg = match o.get("alg") {
            None => None,
            Some(Value::String(s)) => Some(
                crate::keys::verify_alg(s)
                    .ok_or(Refusal::Unsupported("unsupported alg"))?
                    .0,
            ),
            Some(_) => return Err("alg must be a string".into()),
        };
        let kty = str_member(o, "kty")?.ok_or("kty is required")?;
        let (key, thumbprint_json) = match kty {
            "OKP" => {
                if str_member(o, "crv")? != Some("Ed25519") {
                    return Err(Refusal::Unsupported("unsupported OKP curve"));
                }
                let x = bytes_member(o, "x")?;
                let x: [u8; 32] = x.try_into().map_err(|_| "x must be 32 bytes")?;
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| "x is not an Ed25519 point")?;
                (
                    VerifyingKey::Ed25519(vk),
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(x)),
                )
            }
            "EC" => {
                if str_member(o, "crv")? != Some("P-256") {
                    return Err(Refusal::Unsupported("unsupported EC curve"));
                }
                let x = bytes_member(o, "x")?;
                let y = bytes_member(o, "y")?;
                if x.len() != 32 || y.len() != 32 {
                    return Err("x and y must be 32 bytes".into());
                }
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(4u8);
                sec1.extend_from_slice(&x);
                sec1.extend_from_slice(&y);
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "x, y is not a P-256 point")?;
                let key = crate::es256::PublicKey::new(&vk).ok_or("x, y is not a P-256 point")?;
                (
                    VerifyingKey::P256(key),
                    format!(
                        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                        B64.encode(&x),
                        B64.encode(&y)
                    ),
                )
            }
            "RSA" => {
                let n = bytes_member(o, "n")?;
                let e = bytes_member(o, "e")?;
                // RFC 7518 §6.3.1: minimal big-endian octets, no leading zero.
                if n.first() == Some(&0) || e.first() == Some(&0) || e.is_empty() || e.len() > 4 {
                    return Err("n or e is not a minimal unsigned integer".into());
                }
                let bits = n.len() * 8;
                if !(2048..=MAX_RSA_BITS).contains(&bits) {
                    return Err("RSA keys must have 2048 to 4096 bits".into());
                }
                let pk = rsa::PublicKey::new(
                    rsa::BoxedUint::from_be_slice_vartime(&n),
                    rsa::BoxedUint::from_be_slice_vartime(&e),
                )
                .map_err(|_| "n, e is not an RSA public key")?;
                (
                    VerifyingKey::Rsa(Box::new(pk)),
                    format!(
                        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                        B64.encode(&e),
                        B64.encode(&n)
                    ),
                )
            }
            _ => return Err(Refusal::Unsupported("unsupported kty")),
        };
        let thumbprint = B64.encode(Sha256::digest(thumbprint_json.as_bytes()));
        // RFC 7517 §4.7: standard base64 (not base64url) DER certificates, the key's first.
        let x5c_sha256 = match o.get("x5c") {
            None => None,
            Some(Value::Array(chain)) => {
                let first = chain
                    .first()
                    .and_then(Value::as_str)
                    .ok_or("x5c must be a non-empty array of strings")?;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(first)
                    .map_err(|_| "x5c holds a certificate that is not base64")?;
                Some(Sha256::digest(&der).into())
            }
            Some(_) => return Err("x5c must be an array".into()),
        };
        let jwk = PublicJwk {
            kid,
            alg,
            key,
            thumbprint,
            x5c_sha256,
        };
        if let Some(a) = alg {
            if !jwk.fits(a) {
                return Err("alg does not fit the key type".into());
            }
        }
        Ok(jwk)
    }
}

/// Why a JWK was not read: a kind of key this server does not verify (a JWK Set may hold such
/// keys, and they are skipped), or a broken or private key (which refuses the whole set).
enum Refusal {
    Unsupported(&'static str),
    Broken(&'static str),
}

impl From<&'static str> for Refusal {
    fn from(why: &'static str) -> Self {
        Refusal::Broken(why)
    }
}

fn str_member<'a>(o: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, &'static str> {
    match o.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err("a JWK member has the wrong type"),
    }
}

fn bytes_member(o: &Map<String, Value>, name: &str) -> Result<Vec<u8>, &'static str> {
    let s = str_member(o, name)?.ok_or("a required JWK member is missing")?;
    B64.decode(s).map_err(|_| "a JWK member is not base64url")
}

/// A client's keys (RFC 7517 §5 JWK Set), parsed once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JwkSet {
    pub keys: Vec<PublicJwk>,
}

/// More keys than any client needs; bounds the work a registry answer can cause.
const MAX_KEYS: usize = 32;

impl JwkSet {
    /// Reads a JWK Set. Keys of types or curves this server does not verify are skipped (a set
    /// may hold encryption keys, RFC 7517 §5); a key that claims a supported type but is broken,
    /// or any private key, refuses the whole set.
    pub fn parse(v: &Value) -> Result<JwkSet, &'static str> {
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("a JWK Set needs a keys array")?;
        if keys.len() > MAX_KEYS {
            return Err("too many keys in the JWK Set");
        }
        let mut out = Vec::new();
        for k in keys {
            if k.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            match PublicJwk::read(k) {
                Ok(j) => out.push(j),
                Err(Refusal::Unsupported(_)) => continue,
                Err(Refusal::Broken(why)) => return Err(why),
            }
        }
        Ok(JwkSet { keys: out })
    }

    pub fn from_slice(body: &[u8]) -> Result<JwkSet, &'static str> {
        let v: Value = serde_json::from_slice(body).map_err(|_| "the JWK Set is not JSON")?;
        Self::parse(&v)
    }

    /// The key for a signature: the one with `kid` if the header names one, else the only key
    /// that fits the algorithm. `None` when there is no such key, or no kid and several fit.
    pub fn select(&self, kid: Option<&str>, alg: Alg) -> Option<&PublicJwk> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg)),
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                let first = fitting.next();
                if fitting.next().is_some() {
                    None
                } else {
                    first
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7638_s3_1_example_thumbprint() {
        // The RSA key of RFC 7638 §3.1 and its thumbprint.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let k = PublicJwk::parse(&jwk).unwrap();
        assert_eq!(k.thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert!(k.fits(Alg::RS256) && !k.fits(Alg::PS256) && !k.fits(Alg::ES256));
    }

    #[test]
    fn rfc8037_appendix_a_3_ed25519_thumbprint() {
        let jwk =
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let k = PublicJwk::parse(&jwk).unwrap();
        assert_eq!(k.thumbprint, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert!(k.fits(Alg::EdDSA) && !k.fits(Alg::ES256));
    }

    #[test]
    fn private_members_and_broken_keys_refused() {
        let base =
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        for m in PRIVATE_MEMBERS {
            let mut k = base.clone();
            k[*m] = json!("AAAA");
            assert_eq!(
                PublicJwk::parse(&k).unwrap_err(),
                "the JWK holds private key material"
            );
        }
        for bad in [
            json!([]),
            json!({"kty":"OKP","crv":"Ed25519"}),
            json!({"kty":"OKP","crv":"Ed25519","x":"AAAA"}),
            json!({"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}),
            json!({"kty":"RSA","n":"AQAB","e":"AQAB"}),
            json!({"kty":"oct","k":"AAAA"}),
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"ES256"}),
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"enc"}),
            json!({"kty":"OKP","crv":"Ed25519","x":1}),
        ] {
            assert!(PublicJwk::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_selects_by_kid_or_single_fit() {
        let ed = json!({"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let enc = json!({"kty":"EC","crv":"P-384","kid":"e","use":"enc","x":"AA","y":"AA"});
        let set = JwkSet::parse(&json!({"keys":[ed, enc]})).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert!(set.select(Some("a"), Alg::EdDSA).is_some());
        assert!(set.select(Some("b"), Alg::EdDSA).is_none());
        assert!(set.select(None, Alg::EdDSA).is_some());
        assert!(set.select(None, Alg::ES256).is_none());
        let private = json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"AA"}]});
        assert!(JwkSet::parse(&private).is_err());
        assert!(JwkSet::from_slice(b"nope").is_err());
        assert!(JwkSet::parse(&json!({"keys":{}})).is_err());
    }
}
