//! Signing keys: private JWKs from the configuration, parsed once at VM start (key set-up costs
//! about a millisecond in wasm; signing must not pay it), the JWKS document built once, and the
//! compact JWS assembled by hand so each key's protected header is encoded once.
//!
//! Algorithms: EdDSA (Ed25519, ed25519-dalek with precomputed tables) and ES256 (keys validated
//! by p256 0.14, signatures by `crate::es256::sign`: the same bytes as p256's, constant time,
//! faster in V8) — the two fastest signers in Envoy's V8 (see docs/wasm-crypto.md).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// An `alg` name of a signature to verify: ours, plus RFC 9864's fully-specified `Ed25519`
/// (the same signature as `EdDSA` over Ed25519, which RFC 9864 deprecates). Returns the
/// algorithm and its canonical name as sent.
pub fn verify_alg(name: &str) -> Option<(Alg, &'static str)> {
    match name {
        "Ed25519" => Some((Alg::EdDSA, "Ed25519")),
        other => Alg::parse(other).map(|a| (a, a.as_str())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    EdDSA,
    ES256,
    /// For relying parties that only know RSA. A 2048-bit RSA signature costs milliseconds in
    /// V8: an order of magnitude slower than EdDSA, so never the default.
    RS256,
    PS256,
}

impl Alg {
    /// Every algorithm this server signs with, and so accepts on its own tokens.
    pub const ALL: [Alg; 4] = [Alg::EdDSA, Alg::ES256, Alg::PS256, Alg::RS256];

    /// The JWS `alg` names this server signs or verifies with; anything else (`none`, HMAC, …)
    /// is `None`.
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "EdDSA" => Some(Alg::EdDSA),
            "ES256" => Some(Alg::ES256),
            "RS256" => Some(Alg::RS256),
            "PS256" => Some(Alg::PS256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
        }
    }
}

enum Signer {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    /// p256 validates the key; `crate::es256::sign` signs (the same bytes, faster in V8).
    P256(Box<crate::es256::sign::SigningKey>),
    Rs256(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
    Ps256(Box<rsa::pss::SigningKey<sha2::Sha256>>),
}

pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    signer: Signer,
    /// base64url of `{"alg":..,"kid":..,"typ":"at+jwt"}`, the RFC 9068 header.
    at_jwt_header: String,
    /// base64url of `{"alg":..,"kid":..,"typ":"JWT"}`, for ID tokens.
    id_token_header: String,
    /// Key for sealing refresh tokens, derived from the private key (so every instance with
    /// the same configuration opens every other's tokens, also after a restart).
    sealing_key: [u8; 32],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {})", self.kid, self.alg.as_str())
    }
}

impl SigningKey {
    /// `None` only if PSS could not get randomness for its salt (or, never in practice, the
    /// ES256 signer's table could not be built).
    pub fn sign(&self, input: &[u8]) -> Option<Vec<u8>> {
        use ed25519_dalek::Signer as _;
        use rsa::signature::SignatureEncoding;
        match &self.signer {
            Signer::Ed25519(k) => Some(k.sign(input).to_bytes().to_vec()),
            Signer::P256(k) => k.sign(input).map(|s| s.to_vec()),
            Signer::Rs256(k) => k.try_sign(input).ok().map(|s| s.to_vec()),
            Signer::Ps256(k) => k.try_sign(input).ok().map(|s| s.to_vec()),
        }
    }

    /// A compact JWS of `claims` with this key and the given pre-encoded header.
    fn jws(&self, header_b64: &str, claims: &[u8]) -> Option<String> {
        let mut out = String::with_capacity(header_b64.len() + claims.len() * 4 / 3 + 400);
        out.push_str(header_b64);
        out.push('.');
        B64.encode_string(claims, &mut out);
        let sig = self.sign(out.as_bytes())?;
        out.push('.');
        B64.encode_string(sig, &mut out);
        Some(out)
    }

    /// An RFC 9068 access token (`typ: at+jwt`).
    pub fn sign_access_token(&self, claims: &[u8]) -> Option<String> {
        self.jws(&self.at_jwt_header, claims)
    }

    /// An OpenID Connect ID token (`typ: JWT`).
    pub fn sign_id_token(&self, claims: &[u8]) -> Option<String> {
        self.jws(&self.id_token_header, claims)
    }
}

/// All configured keys: one active signer, every key's public half published.
#[derive(Debug)]
pub struct KeySet {
    signers: Vec<SigningKey>,
    active: usize,
    jwks: Vec<u8>,
    algs: Vec<&'static str>,
}

impl KeySet {
    /// `keys` are JWKs: private ones can sign, public-only ones (retired keys) are only published.
    pub fn from_jwks(keys: &[Value], active_kid: Option<&str>) -> Result<KeySet, String> {
        let named: Vec<(String, Value)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("signing_keys[{i}]"), k.clone()))
            .collect();
        Self::from_named(&named, active_kid)
    }

    /// Like [`KeySet::from_jwks`], each JWK with the name its errors start with (where it came
    /// from: see [`crate::secret::expand_keys`]).
    pub fn from_named(
        keys: &[(String, Value)],
        active_kid: Option<&str>,
    ) -> Result<KeySet, String> {
        if keys.is_empty() {
            return Err("signing_keys is empty: at least one private key is needed".into());
        }
        let mut signers = Vec::new();
        let mut published = Vec::new();
        let mut kids: Vec<String> = Vec::new();
        for (name, k) in keys {
            let parsed = parse_jwk(k).map_err(|e| format!("{name}: {e}"))?;
            if kids.contains(&parsed.kid) {
                return Err(format!("{name}: kid {:?} is used twice", parsed.kid));
            }
            kids.push(parsed.kid.clone());
            published.push(parsed.public);
            if let Some(s) = parsed.signer {
                signers.push(s);
            }
        }
        let active = match active_kid {
            Some(kid) => signers.iter().position(|s| s.kid == kid).ok_or_else(|| {
                format!("active_signing_key {kid:?} is not a configured private key")
            })?,
            None => {
                if signers.is_empty() {
                    return Err("signing_keys has no private key to sign with".into());
                }
                0
            }
        };
        let mut algs: Vec<&'static str> = Vec::new();
        for s in &signers {
            if !algs.contains(&s.alg.as_str()) {
                algs.push(s.alg.as_str());
            }
        }
        let jwks =
            serde_json::to_vec(&json!({ "keys": published })).map_err(|e| format!("jwks: {e}"))?;
        Ok(KeySet {
            signers,
            active,
            jwks,
            algs,
        })
    }

    pub fn active(&self) -> Option<&SigningKey> {
        self.signers.get(self.active)
    }

    /// A key that signs with `alg`: the active one if it does, else the first configured.
    pub fn signer_for(&self, alg: Alg) -> Option<&SigningKey> {
        self.active()
            .filter(|k| k.alg == alg)
            .or_else(|| self.signers.iter().find(|k| k.alg == alg))
    }

    /// The JWKS document (RFC 7517 §5), built once.
    pub fn jwks_json(&self) -> &[u8] {
        &self.jwks
    }

    pub fn signing_algs(&self) -> &[&'static str] {
        &self.algs
    }

    /// The key that places rate-limit and failure counters in their ring: derived one-way from
    /// the active key's sealing key, so nobody without the private key can compute which names
    /// share a slot (and every instance with this configuration agrees).
    pub fn counter_key(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"oauth-edge/counter-placement/v1\0");
        if let Some(k) = self.sealing_keys().next() {
            h.update(k);
        }
        h.finalize().into()
    }

    /// Refresh token sealing keys, the active key's first.
    pub fn sealing_keys(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.active()
            .into_iter()
            .chain(
                self.signers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != self.active)
                    .map(|(_, s)| s),
            )
            .map(|s| &s.sealing_key)
    }
}

struct ParsedJwk {
    kid: String,
    public: Value,
    signer: Option<SigningKey>,
}

fn b64_field(o: &Map<String, Value>, name: &str) -> Result<Option<Vec<u8>>, String> {
    match o.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => B64
            .decode(s)
            .map(Some)
            .map_err(|_| format!("{name} is not base64url")),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn str_field<'a>(o: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match o.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn parse_jwk(v: &Value) -> Result<ParsedJwk, String> {
    let o = v.as_object().ok_or("a JWK must be a JSON object")?;
    let kid = str_field(o, "kid")?
        .filter(|k| !k.is_empty())
        .ok_or("kid is required")?
        .to_string();
    if let Some(u) = str_field(o, "use")? {
        if u != "sig" {
            return Err(format!("key {kid:?}: use must be \"sig\""));
        }
    }
    let kty = str_field(o, "kty")?.ok_or("kty is required")?;
    let crv = str_field(o, "crv")?.unwrap_or("");
    let alg = str_field(o, "alg")?.ok_or_else(|| format!("key {kid:?}: alg is required"))?;
    let d = b64_field(o, "d")?;
    match (kty, crv, alg) {
        ("OKP", "Ed25519", "EdDSA") => {
            let x = b64_field(o, "x")?.ok_or("x is required")?;
            let x: [u8; 32] = x.try_into().map_err(|_| "x must be 32 bytes")?;
            let signer = match d {
                None => {
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| format!("key {kid:?}: x is not an Ed25519 point"))?;
                    None
                }
                Some(d) => {
                    let d: [u8; 32] = d.try_into().map_err(|_| "d must be 32 bytes")?;
                    let sk = ed25519_dalek::SigningKey::from_bytes(&d);
                    if sk.verifying_key().to_bytes() != x {
                        return Err(format!("key {kid:?}: x does not match d"));
                    }
                    Some((Signer::Ed25519(Box::new(sk)), sealing_key(&d)))
                }
            };
            let public = json!({"kty":"OKP","crv":"Ed25519","x":B64.encode(x),"kid":kid,"alg":"EdDSA","use":"sig"});
            Ok(ParsedJwk {
                signer: signer.map(|(s, k)| make_signer(&kid, Alg::EdDSA, s, k)),
                kid,
                public,
            })
        }
        ("EC", "P-256", "ES256") => {
            let x = b64_field(o, "x")?.ok_or("x is required")?;
            let y = b64_field(o, "y")?.ok_or("y is required")?;
            if x.len() != 32 || y.len() != 32 {
                return Err(format!("key {kid:?}: x and y must be 32 bytes"));
            }
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(4u8);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| format!("key {kid:?}: x, y is not a P-256 point"))?;
            let signer = match d {
                None => None,
                Some(d) => {
                    if d.len() != 32 {
                        return Err(format!("key {kid:?}: d must be 32 bytes"));
                    }
                    let sk = p256::ecdsa::SigningKey::from_slice(&d)
                        .map_err(|_| format!("key {kid:?}: d is not a P-256 scalar"))?;
                    if *sk.verifying_key() != vk {
                        return Err(format!("key {kid:?}: x, y do not match d"));
                    }
                    Some((
                        Signer::P256(Box::new(crate::es256::sign::SigningKey::new(&sk))),
                        sealing_key(&d),
                    ))
                }
            };
            let public = json!({"kty":"EC","crv":"P-256","x":B64.encode(&x),"y":B64.encode(&y),"kid":kid,"alg":"ES256","use":"sig"});
            Ok(ParsedJwk {
                signer: signer.map(|(s, k)| make_signer(&kid, Alg::ES256, s, k)),
                kid,
                public,
            })
        }
        ("RSA", _, "RS256" | "PS256") => parse_rsa(o, kid, alg, d),
        _ => Err(format!(
            "key {kid:?}: unsupported key {kty}/{crv} with alg {alg} (use OKP/Ed25519 with EdDSA, EC/P-256 with ES256, or RSA with RS256/PS256)"
        )),
    }
}

/// RFC 7518 §6.3: n, e; a private key also needs d, p and q (the CRT form signs fast).
fn parse_rsa(
    o: &Map<String, Value>,
    kid: String,
    alg: &str,
    d: Option<Vec<u8>>,
) -> Result<ParsedJwk, String> {
    use rsa::BoxedUint;
    let n = b64_field(o, "n")?.ok_or_else(|| format!("key {kid:?}: n is required"))?;
    let e = b64_field(o, "e")?.ok_or_else(|| format!("key {kid:?}: e is required"))?;
    let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
    if !(2048..=8192).contains(&bits) {
        return Err(format!("key {kid:?}: RSA keys must have 2048 to 8192 bits"));
    }
    let alg_e = if alg == "RS256" {
        Alg::RS256
    } else {
        Alg::PS256
    };
    let signer = match d {
        None => None,
        Some(d) => {
            let p = b64_field(o, "p")?
                .ok_or_else(|| format!("key {kid:?}: p and q are required with d"))?;
            let q = b64_field(o, "q")?
                .ok_or_else(|| format!("key {kid:?}: p and q are required with d"))?;
            let key = rsa::PrivateKey::from_components(
                BoxedUint::from_be_slice_vartime(&n),
                BoxedUint::from_be_slice_vartime(&e),
                BoxedUint::from_be_slice_vartime(&d),
                vec![
                    BoxedUint::from_be_slice_vartime(&p),
                    BoxedUint::from_be_slice_vartime(&q),
                ],
            )
            .map_err(|_| format!("key {kid:?}: n, e, d, p, q do not form an RSA key"))?;
            let s = match alg_e {
                Alg::RS256 => Signer::Rs256(Box::new(
                    rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key),
                )),
                _ => Signer::Ps256(Box::new(rsa::pss::SigningKey::<sha2::Sha256>::new(key))),
            };
            Some((s, sealing_key(&d)))
        }
    };
    let public =
        json!({"kty":"RSA","n":B64.encode(&n),"e":B64.encode(&e),"kid":kid,"alg":alg,"use":"sig"});
    Ok(ParsedJwk {
        signer: signer.map(|(s, k)| make_signer(&kid, alg_e, s, k)),
        kid,
        public,
    })
}

fn make_signer(kid: &str, alg: Alg, signer: Signer, sealing_key: [u8; 32]) -> SigningKey {
    let header =
        |typ: &str| B64.encode(json!({"alg": alg.as_str(), "kid": kid, "typ": typ}).to_string());
    SigningKey {
        kid: kid.to_string(),
        alg,
        signer,
        at_jwt_header: header("at+jwt"),
        id_token_header: header("JWT"),
        sealing_key,
    }
}

/// A separate key for sealing, derived one-way from the private signing key (the private key
/// is uniformly random, so a domain-separated hash is a sound KDF here).
fn sealing_key(d: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"oauth-edge/refresh-token-sealing/v1\0");
    h.update(d);
    h.finalize().into()
}

/// A new private JWK (for the demo key and `oauth-edge-keygen`).
pub fn generate_jwk(
    alg: Alg,
    kid: &str,
    rng: &mut dyn crate::random::Random,
) -> Result<Value, String> {
    let mut seed = [0u8; 32];
    match alg {
        Alg::EdDSA => {
            rng.fill(&mut seed).map_err(|_| "no randomness")?;
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            Ok(
                json!({"kty":"OKP","crv":"Ed25519","kid":kid,"alg":"EdDSA","use":"sig",
                "x": B64.encode(sk.verifying_key().to_bytes()), "d": B64.encode(seed)}),
            )
        }
        Alg::RS256 | Alg::PS256 => Err("generate RSA keys with openssl or a JOSE library".into()),
        Alg::ES256 => loop {
            rng.fill(&mut seed).map_err(|_| "no randomness")?;
            if let Ok(sk) = p256::ecdsa::SigningKey::from_slice(&seed) {
                let pt = sk.verifying_key().to_sec1_point(false);
                let (x, y) = (pt.x().ok_or("no x")?, pt.y().ok_or("no y")?);
                return Ok(
                    json!({"kty":"EC","crv":"P-256","kid":kid,"alg":"ES256","use":"sig",
                    "x": B64.encode(x), "y": B64.encode(y), "d": B64.encode(seed)}),
                );
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SystemRandom;

    fn split(jws: &str) -> (Value, Value, Vec<u8>) {
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        (
            serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap(),
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap(),
            B64.decode(parts[2]).unwrap(),
        )
    }

    #[test]
    fn ed25519_signs_verifiably() {
        let jwk = generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap();
        let ks = KeySet::from_jwks(std::slice::from_ref(&jwk), None).unwrap();
        let k = ks.active().unwrap();
        let jws = k.sign_access_token(br#"{"sub":"a"}"#).unwrap();
        let (h, c, sig) = split(&jws);
        assert_eq!(h, json!({"alg":"EdDSA","kid":"k1","typ":"at+jwt"}));
        assert_eq!(c["sub"], "a");
        let x: [u8; 32] = B64
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
        let signing_input = jws.rsplit_once('.').unwrap().0;
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        use ed25519_dalek::Verifier;
        assert!(vk.verify(signing_input.as_bytes(), &sig).is_ok());
        // the JWKS holds the public half only
        let jwks: Value = serde_json::from_slice(ks.jwks_json()).unwrap();
        assert_eq!(jwks["keys"][0]["x"], jwk["x"]);
        assert!(jwks["keys"][0].get("d").is_none());
    }

    #[test]
    fn p256_signs_verifiably() {
        let jwk = generate_jwk(Alg::ES256, "e1", &mut SystemRandom).unwrap();
        let ks = KeySet::from_jwks(std::slice::from_ref(&jwk), Some("e1")).unwrap();
        let jws = ks.active().unwrap().sign_access_token(b"{}").unwrap();
        let (h, _, sig) = split(&jws);
        assert_eq!(h["alg"], "ES256");
        assert_eq!(sig.len(), 64);
        let mut sec1 = vec![4u8];
        sec1.extend(B64.decode(jwk["x"].as_str().unwrap()).unwrap());
        sec1.extend(B64.decode(jwk["y"].as_str().unwrap()).unwrap());
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        use p256::ecdsa::signature::Verifier;
        assert!(vk
            .verify(jws.rsplit_once('.').unwrap().0.as_bytes(), &sig)
            .is_ok());
    }

    /// A 2048-bit key made with Python's `cryptography` (a test fixture, never used elsewhere).
    const RSA_JWK: &str = r#"{"kty": "RSA", "kid": "r1", "alg": "RS256", "n": "qmzhDy4tdbZW2dyAKJpTqk3155ENPSquloXmqheNIsv4fV0UDK98UNJa8mFu-_nd0I-uR6FN8PIYUpsSBAxk381ahFrAlJ8nvP5IDuY7TY6zq-H-CrAwJPARoRMO20pMee1sxCN3kFUBVRDtQphjjF80t399hd2BzooNTZnF_nP2rrNuDp3yYmxAqTyWnljPzOqnPkwc4RmpMA8YDJwUmZzXgNadap2uq6J5RdZKT87hhNAS1w0E_tX3AQcRQpZAKNaYENLHCO0-SI8XtU-i2vaZojF9eWEQuxEsU_0b0stPANO45NGGEBMiULwkv9tMURjcDEK1vvXcwV0IO6E9iQ", "e": "AQAB", "d": "DIxEsjxWDrphdA8ta0MY0UuF-GOwXYyn2x-G9FOuMBD9iqY3EWU9GkRKrvLoKLd-eScpdhuul4Sm45oh5ItqRL7woOZMeWtFRT-7Qkf56mpAP1g92KXQfaYkkVjL-YhjnH_HLm_M4CMdT7KV2kpKQuEVpBCuemDTRS5AvLILdAJEaRGHExU4q5ZM91NCCNL6pk7Llak8QEeoZcX37wXGmMxrxH1A-woZYIOwxPOZXBT__IojJPoZDRrKHQyLJER_XAxRmeGlQaXxdtaNWnC4V3DQpDmO6SORi1G6jq_cQNs-N7c_y619FgryUaCVurhKkV4MbdEc2-jr8_z2FyjnOw", "p": "0hUbpX9K5VjavN9n043iUDsswIyF6GorRZEHd6KunIvIhcL6WiholDNgbny7o1OZPtnyowWhJhKHNTzCbpDOuBV3N6_ZRyM4tUQgz5t4H6Qa4Wf4rZIJ3i5gRS2UZJ-FhS1z6pquNRxvsMSSW5XjbzJCrj89GOHfnRmkbJsu-mc", "q": "z6zOkzQE69X_GCmMnyc44hXdRa8gNF-ihge6Tkgl18DusbBPMc3neW9mVOuqOxyzpRm645oH9AnPA2Rdfzo7QDZHGg-5x7SvAaFtKaSp3xWK-Q03a5RL-OF_sQosRPgv2MSNhCq3D-PquoDHF6FOXPdU_PC0IPzC0CV5Oc4i8o8", "dp": "d3_4RPCeis07R5qQ9b7MkDTI5RJKDYVu7dhsdfn89yFwQ95ACE7aBgsffFnJZkNkdWMGaQMHwp9hd8ADHV-TpxTWxr9pidSYKkwBmfZmoyD3BWbeBuV-ZXrd2hvuQDqZecL8H-Qy2hU910BJvH0LbTIaygFA4MmDKFrws7KmS1s", "dq": "iM65IwXgvA-0RZGRfoLTGTT4GGC-oWHi6dKLa-hhbZk-ZTXVZeTTuQ6m5gh9kwVcXsXtdORSmvQfOIfUg-yzfaCEBGoZo7Kmmzdhd05vTXOeomSPfsIpriG3AcTG1wR8WJta8pdFEyW8yvHstedgfSO-DAbxUs3P9FjLXEYshYc", "qi": "jRh3zfLQyIMzxZSWEqw4W0XegBDWWnLM8AeYUKdeudKPj5wQ2vmD57xk4_b49krjoo_17DpH6PSVJUHnnqfSv40Pxx8V_8t2Ls_U-brlsoPUGZAtmYGjO5FURJ8QA2hJFDBWK8VL5cZ6znVDL_YEOk83tgPOF7ze2674jAXBACQ"}"#;

    #[test]
    fn rsa_signs_rs256_and_ps256_verifiably() {
        use rsa::signature::Verifier;
        for alg in ["RS256", "PS256"] {
            let mut jwk: Value = serde_json::from_str(RSA_JWK).unwrap();
            jwk["alg"] = json!(alg);
            let ks = KeySet::from_jwks(std::slice::from_ref(&jwk), None).unwrap();
            let k = ks.active().unwrap();
            let jws = k.sign_access_token(br#"{"sub":"a"}"#).unwrap();
            let (h, _, sig) = split(&jws);
            assert_eq!(h["alg"], alg);
            let n = rsa::BoxedUint::from_be_slice_vartime(
                &B64.decode(jwk["n"].as_str().unwrap()).unwrap(),
            );
            let e = rsa::BoxedUint::from_be_slice_vartime(
                &B64.decode(jwk["e"].as_str().unwrap()).unwrap(),
            );
            let public = rsa::PublicKey::new(n, e).unwrap();
            let input = jws.rsplit_once('.').unwrap().0.as_bytes();
            if alg == "RS256" {
                let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
                let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
                assert!(vk.verify(input, &sig).is_ok());
            } else {
                let vk = rsa::pss::VerifyingKey::<sha2::Sha256>::new(public);
                let sig = rsa::pss::Signature::try_from(sig.as_slice()).unwrap();
                assert!(vk.verify(input, &sig).is_ok());
            }
            let published: Value = serde_json::from_slice(ks.jwks_json()).unwrap();
            assert!(
                published["keys"][0].get("d").is_none() && published["keys"][0].get("p").is_none()
            );
            assert_eq!(published["keys"][0]["n"], jwk["n"]);
        }
        // d without p and q is refused (the CRT form is what signs fast).
        let mut jwk: Value = serde_json::from_str(RSA_JWK).unwrap();
        jwk.as_object_mut().unwrap().remove("p");
        assert!(KeySet::from_jwks(&[jwk], None)
            .unwrap_err()
            .contains("p and q"));
    }

    #[test]
    fn rotation_publishes_old_keys() {
        let new = generate_jwk(Alg::EdDSA, "new", &mut SystemRandom).unwrap();
        let old = generate_jwk(Alg::ES256, "old", &mut SystemRandom).unwrap();
        let mut retired = generate_jwk(Alg::EdDSA, "retired", &mut SystemRandom).unwrap();
        retired.as_object_mut().unwrap().remove("d");
        let ks = KeySet::from_jwks(&[old, new, retired], Some("new")).unwrap();
        assert_eq!(ks.active().unwrap().kid, "new");
        let jwks: Value = serde_json::from_slice(ks.jwks_json()).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["old", "new", "retired"]);
        assert_eq!(ks.signing_algs(), ["ES256", "EdDSA"]);
    }

    #[test]
    fn bad_keys_refused_with_reason() {
        let good = generate_jwk(Alg::EdDSA, "k", &mut SystemRandom).unwrap();
        let other = generate_jwk(Alg::EdDSA, "k2", &mut SystemRandom).unwrap();
        let mut mismatched = good.clone();
        mismatched["x"] = other["x"].clone();
        let mut public_only = good.clone();
        public_only.as_object_mut().unwrap().remove("d");
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "not an object"),
            (json!({"kty":"OKP","crv":"Ed25519","alg":"EdDSA"}), "kid"),
            (mismatched, "does not match"),
            (
                json!({"kty":"RSA","kid":"r","alg":"RS256","n":"AQAB","e":"AQAB"}),
                "RSA",
            ),
            (
                json!({"kty":"EC","crv":"P-384","kid":"p","alg":"ES384"}),
                "unsupported",
            ),
            (
                {
                    let mut g = good.clone();
                    g["alg"] = json!("ES256");
                    g
                },
                "unsupported",
            ),
            (
                {
                    let mut g = good.clone();
                    g["d"] = json!("!!");
                    g
                },
                "base64url",
            ),
            (
                {
                    let mut g = good.clone();
                    g["use"] = json!("enc");
                    g
                },
                "use",
            ),
        ];
        for (k, why) in cases {
            let e = KeySet::from_jwks(std::slice::from_ref(&k), None).unwrap_err();
            assert!(e.contains(why) || why == "not an object", "{k}: {e}");
        }
        assert!(KeySet::from_jwks(&[public_only.clone()], None)
            .unwrap_err()
            .contains("no private key"));
        assert!(KeySet::from_jwks(&[good.clone(), good.clone()], None)
            .unwrap_err()
            .contains("twice"));
        assert!(KeySet::from_jwks(&[good.clone(), public_only], Some("nope")).is_err());
        assert!(KeySet::from_jwks(&[], None).is_err());
    }
}
