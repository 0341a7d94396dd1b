//! OpenID Connect ID tokens (OIDC Core §2, §3.1.3.6).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};

use crate::client::Client;
use crate::error::OAuthError;
use crate::keys::{Alg, KeySet, SigningKey};

#[derive(Serialize)]
pub struct IdTokenClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub exp: u64,
    pub iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a str>,
    /// The login session (OIDC Front-Channel Logout §3; RP-Initiated Logout's `id_token_hint`
    /// brings it back to end that session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<&'a str>,
    pub at_hash: &'a str,
    pub azp: &'a str,
}

/// §3.1.3.6: the left half of the hash of the access token's ASCII octets, with the hash of
/// the ID token's algorithm: SHA-256 for ES256, RS256, PS256; SHA-512 for EdDSA with Ed25519
/// (errata set 2).
pub fn at_hash(alg: Alg, access_token: &str) -> String {
    match alg {
        Alg::ES256 | Alg::RS256 | Alg::PS256 => {
            let h = Sha256::digest(access_token.as_bytes());
            B64.encode(h.get(..16).unwrap_or_default())
        }
        Alg::EdDSA => {
            let h = Sha512::digest(access_token.as_bytes());
            B64.encode(h.get(..32).unwrap_or_default())
        }
    }
}

/// The key of a client's ID tokens. OIDC Registration §2: a client that registered no
/// `id_token_signed_response_alg` gets RS256 — so RS256 when an RS256 key is configured, else
/// the active key (a configuration without an RS256 key is not what OpenID Connect clients
/// expect by default: docs/features.md says so, and the filter logs it at start). A registered
/// algorithm without a configured key of it is the operator's error: `server_error`.
pub fn key_for<'a>(keys: &'a KeySet, client: &Client) -> Result<&'a SigningKey, OAuthError> {
    let key = match client.id_token_alg {
        Some(alg) => keys.signer_for(alg),
        None => keys.signer_for(Alg::RS256).or_else(|| keys.active()),
    };
    key.ok_or_else(|| {
        OAuthError::server_error("no signing key for the client's id_token_signed_response_alg")
    })
}

pub fn sign(key: &SigningKey, claims: &IdTokenClaims<'_>) -> Result<String, OAuthError> {
    let json = serde_json::to_vec(claims)
        .map_err(|e| OAuthError::internal(format!("ID token claims: {e}")))?;
    key.sign_id_token(&json)
        .ok_or_else(|| OAuthError::internal("the ID token could not be signed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_an_independent_computation() {
        // python3: base64url(hashlib.sha256(t).digest()[:16]) and sha512(b"x").digest()[:32]
        assert_eq!(
            at_hash(Alg::ES256, "jHkWEdUXMU1BwAsC4vtUsZwnNRoLyU8Z3kO4pZzRr0"),
            "_wfE9MGR8dJLCdvRiFa32A"
        );
        assert_eq!(
            at_hash(Alg::EdDSA, "x"),
            "pKvURIxJVi2CgRXROh_M6pJ_UrTVRZKX-LQ-QtqJI4s"
        );
    }
}
