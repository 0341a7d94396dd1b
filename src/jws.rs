//! Verifying others' compact JWS (RFC 7515): client assertions and DPoP proofs.
//!
//! Typestate, as jwt-compact does it: an [`Untrusted`] token only yields its claims through
//! [`Untrusted::verify`], with a key the caller chose. The header's `alg` must be one of the
//! asymmetric algorithms this server knows (never `none`, never HMAC: a public key used as an
//! HMAC secret is the classic confusion attack) and must fit the chosen key's type.
//!
//! Signatures are checked with the same RustCrypto crates that sign our tokens (ed25519-dalek,
//! rsa), except ES256: `crate::es256`, a variable-time verifier with per-key tables on p256's
//! field arithmetic, about 3× faster in V8 than p256's own (see docs/wasm-crypto.md).
//! jwt-compact is not used: its published release only speaks p256 0.13, which would put a
//! second, 3× slower P-256 into the module.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::jwk::{PublicJwk, VerifyingKey};
pub use crate::keys::Alg;

/// Longer than any assertion or proof a client has a reason to send.
pub const MAX_JWS_LEN: usize = 8192;

/// The protected header members this server reads. Duplicate members are refused (serde), as
/// RFC 7515 §5.2 allows.
#[derive(Deserialize, Debug)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub jwk: Option<Value>,
    #[serde(default)]
    crit: Option<Value>,
}

pub use crate::keys::verify_alg;

/// A parsed, not yet verified compact JWS.
pub struct Untrusted<'a> {
    pub header: Header,
    pub alg: Alg,
    /// The header's `alg` as sent (`Ed25519` or one of [`Alg`]'s names).
    pub alg_name: &'static str,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl std::fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Untrusted(alg {})", self.alg.as_str())
    }
}

/// Why a JWS was refused (for the log; clients hear a generic description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsError {
    Malformed,
    /// `none`, HMAC, or an algorithm outside the allow-list.
    Alg,
    /// A `crit` header: no extension is understood here.
    Critical,
    Signature,
}

impl<'a> Untrusted<'a> {
    /// Splits and decodes `header.payload.signature`; refuses algorithms not in `allowed`.
    pub fn parse(token: &'a str, allowed: &[Alg]) -> Result<Untrusted<'a>, JwsError> {
        if token.len() > MAX_JWS_LEN {
            return Err(JwsError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed);
        };
        let header_bytes = B64.decode(h).map_err(|_| JwsError::Malformed)?;
        let header: Header =
            serde_json::from_slice(&header_bytes).map_err(|_| JwsError::Malformed)?;
        if header.crit.is_some() {
            return Err(JwsError::Critical);
        }
        let (alg, alg_name) = verify_alg(&header.alg)
            .filter(|(a, _)| allowed.contains(a))
            .ok_or(JwsError::Alg)?;
        let payload = B64.decode(p).map_err(|_| JwsError::Malformed)?;
        let signature = B64.decode(s).map_err(|_| JwsError::Malformed)?;
        let signing_input = token
            .get(..h.len() + 1 + p.len())
            .ok_or(JwsError::Malformed)?;
        Ok(Untrusted {
            header,
            alg,
            alg_name,
            signing_input,
            payload,
            signature,
        })
    }

    /// A compact JWS's payload, read before its signature is checked (its algorithm not looked
    /// at either): only to learn whose keys to check it with, never trusted for anything else.
    pub fn claims_before_verifying<T: DeserializeOwned>(token: &str) -> Option<T> {
        if token.len() > MAX_JWS_LEN {
            return None;
        }
        let payload = token.split('.').nth(1)?;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }

    /// RFC 9068 §2.1: the header's `typ` says this is a JWT access token.
    pub fn is_access_token(&self) -> bool {
        self.header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
    }

    /// Checks the signature with the key of `keys` the header names (`kid`, else the one key
    /// of the algorithm): how this server reads back a token it signed, with any key it
    /// publishes (so rotation works).
    pub fn verify_with(self, keys: &crate::jwk::JwkSet) -> Result<Verified, JwsError> {
        let key = keys
            .select(self.header.kid.as_deref(), self.alg)
            .ok_or(JwsError::Signature)?
            .clone();
        self.verify(&key)
    }

    /// Checks the signature with `key`, which must fit the header's algorithm.
    pub fn verify(self, key: &PublicJwk) -> Result<Verified, JwsError> {
        if !key.fits(self.alg) {
            return Err(JwsError::Alg);
        }
        let msg = self.signing_input.as_bytes();
        let sig = self.signature.as_slice();
        let ok = match (&key.key, self.alg) {
            (VerifyingKey::Ed25519(vk), Alg::EdDSA) => {
                match <[u8; 64]>::try_from(sig) {
                    // verify_strict: refuses small-order keys and non-canonical signatures.
                    Ok(b) => vk
                        .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&b))
                        .is_ok(),
                    Err(_) => false,
                }
            }
            // JWS carries the raw r ‖ s (RFC 7518 §3.4), not DER. Accepts exactly what p256's
            // verifier does (high s included); see src/es256.rs.
            (VerifyingKey::P256(key), Alg::ES256) => crate::es256::verify(key, msg, sig),
            (VerifyingKey::Rsa(pk), Alg::RS256) => {
                use rsa::signature::Verifier;
                let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new((**pk).clone());
                rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
            }
            (VerifyingKey::Rsa(pk), Alg::PS256) => {
                use rsa::signature::Verifier;
                let vk = rsa::pss::VerifyingKey::<sha2::Sha256>::new((**pk).clone());
                rsa::pss::Signature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
            }
            _ => false,
        };
        if ok {
            Ok(Verified {
                payload: self.payload,
            })
        } else {
            Err(JwsError::Signature)
        }
    }
}

/// A JWS whose signature checked out with the chosen key.
#[derive(Debug)]
pub struct Verified {
    payload: Vec<u8>,
}

impl Verified {
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T, JwsError> {
        serde_json::from_slice(&self.payload).map_err(|_| JwsError::Malformed)
    }
}

/// `aud` as RFC 7519 §4.1.3 allows it: one string or an array of strings.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, v: &str) -> bool {
        match self {
            Audience::One(a) => a == v,
            Audience::Many(all) => all.iter().any(|a| a == v),
        }
    }

    /// Every audience, space-separated.
    pub fn joined(&self) -> String {
        match self {
            Audience::One(a) => a.clone(),
            Audience::Many(all) => all.join(" "),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::keys::{generate_jwk, KeySet};
    use crate::random::SystemRandom;
    use serde_json::json;

    /// Signs `claims` with a fresh key of `alg` and the given extra header members; returns the
    /// token and the public JWK. (Test support: signs with our own signer, which the keys tests
    /// check against the RustCrypto verifiers independently.)
    pub fn signed(alg: Alg, header: Value, claims: &Value) -> (String, Value) {
        let jwk = generate_jwk(alg, "t1", &mut SystemRandom).unwrap();
        let ks = KeySet::from_jwks(std::slice::from_ref(&jwk), None).unwrap();
        let mut h = header;
        h["alg"] = json!(alg.as_str());
        let input = format!(
            "{}.{}",
            B64.encode(h.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = ks.active().unwrap().sign(input.as_bytes()).unwrap();
        let mut public = jwk.clone();
        public.as_object_mut().unwrap().remove("d");
        (format!("{input}.{}", B64.encode(sig)), public)
    }

    const ALL: [Alg; 4] = [Alg::EdDSA, Alg::ES256, Alg::RS256, Alg::PS256];

    #[test]
    fn verifies_eddsa_and_es256() {
        for alg in [Alg::EdDSA, Alg::ES256] {
            let (t, public) = signed(alg, json!({"kid":"t1"}), &json!({"a":1}));
            let key = PublicJwk::parse(&public).unwrap();
            let u = Untrusted::parse(&t, &ALL).unwrap();
            assert_eq!(u.header.kid.as_deref(), Some("t1"));
            let v = u.verify(&key).unwrap();
            assert_eq!(v.claims::<Value>().unwrap(), json!({"a":1}));
            // Tampered payload.
            let mut parts: Vec<&str> = t.split('.').collect();
            let other = B64.encode(br#"{"a":2}"#);
            parts[1] = &other;
            let bad = parts.join(".");
            assert_eq!(
                Untrusted::parse(&bad, &ALL)
                    .unwrap()
                    .verify(&key)
                    .unwrap_err(),
                JwsError::Signature
            );
        }
    }

    #[test]
    fn rfc9864_ed25519_is_eddsa() {
        let jwk = generate_jwk(Alg::EdDSA, "t1", &mut SystemRandom).unwrap();
        let ks = KeySet::from_jwks(std::slice::from_ref(&jwk), None).unwrap();
        let input = format!(
            "{}.{}",
            B64.encode(json!({"alg": "Ed25519"}).to_string()),
            B64.encode("{}")
        );
        let sig = ks.active().unwrap().sign(input.as_bytes()).unwrap();
        let t = format!("{input}.{}", B64.encode(sig));
        let mut public = jwk.clone();
        public.as_object_mut().unwrap().remove("d");
        let key = PublicJwk::parse(&public).unwrap();
        let u = Untrusted::parse(&t, &ALL).unwrap();
        assert_eq!((u.alg, u.alg_name), (Alg::EdDSA, "Ed25519"));
        assert!(u.verify(&key).is_ok());
        assert!(Untrusted::parse(&t, &[Alg::ES256]).is_err());
        assert_eq!(verify_alg("Ed448"), None);
    }

    #[test]
    fn refuses_none_hmac_unlisted_and_crit() {
        let body = B64.encode(b"{}");
        for alg in ["none", "HS256", "ES384", "", "eddsa"] {
            let h = B64.encode(json!({"alg": alg}).to_string());
            let t = format!("{h}.{body}.");
            assert_eq!(Untrusted::parse(&t, &ALL).unwrap_err(), JwsError::Alg);
        }
        let h = B64.encode(json!({"alg":"EdDSA"}).to_string());
        assert_eq!(
            Untrusted::parse(&format!("{h}.{body}.AA"), &[Alg::ES256]).unwrap_err(),
            JwsError::Alg
        );
        let h = B64.encode(json!({"alg":"EdDSA","crit":["exp"]}).to_string());
        assert_eq!(
            Untrusted::parse(&format!("{h}.{body}.AA"), &ALL).unwrap_err(),
            JwsError::Critical
        );
    }

    #[test]
    fn key_must_fit_alg() {
        let (t, _) = signed(Alg::EdDSA, json!({}), &json!({}));
        let (_, es_public) = signed(Alg::ES256, json!({}), &json!({}));
        let es = PublicJwk::parse(&es_public).unwrap();
        assert_eq!(
            Untrusted::parse(&t, &ALL).unwrap().verify(&es).unwrap_err(),
            JwsError::Alg
        );
    }

    #[test]
    fn malformed_inputs() {
        let long = "a".repeat(MAX_JWS_LEN + 1);
        for t in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.e30.AA",
            "e30.e30.AA",
            "W10.e30.AA",
            "eyJhbGciOiJFZERTQSIsImFsZyI6IkVkRFNBIn0.e30.AA",
            long.as_str(),
        ] {
            assert!(Untrusted::parse(t, &ALL).is_err(), "{t}");
        }
    }

    #[test]
    fn audience_forms() {
        let one: Audience = serde_json::from_value(json!("x")).unwrap();
        let many: Audience = serde_json::from_value(json!(["y", "x"])).unwrap();
        assert!(one.contains("x") && many.contains("x") && !many.contains("z"));
        assert!(serde_json::from_value::<Audience>(json!(5)).is_err());
    }
}
