//! PKCE (RFC 7636). Only `S256`: `plain` gives no protection when the challenge can be seen,
//! and OAuth 2.1 / RFC 9700 §2.1.1 recommend S256 alone.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::OAuthError;

/// §4.1: 43 to 128 characters of ALPHA / DIGIT / "-" / "." / "_" / "~".
fn well_formed(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Checks the challenge of an authorization request; returns it when present.
/// `method` absent means `plain` (§4.3), which is refused.
pub fn check_challenge(
    challenge: Option<&str>,
    method: Option<&str>,
    required: bool,
) -> Result<Option<String>, OAuthError> {
    match (challenge, method) {
        (None, None) if !required => Ok(None),
        (None, None) => Err(OAuthError::invalid_request(
            "code_challenge is required (PKCE, S256)",
        )),
        (None, Some(_)) => Err(OAuthError::invalid_request(
            "code_challenge_method without code_challenge",
        )),
        (Some(_), None) | (Some(_), Some("plain")) => Err(OAuthError::invalid_request(
            "code_challenge_method must be S256 (plain is not supported)",
        )),
        (Some(c), Some("S256")) => {
            // A SHA-256 in base64url: exactly 43 characters.
            if c.len() == 43 && well_formed(c) {
                Ok(Some(c.to_string()))
            } else {
                Err(OAuthError::invalid_request("malformed code_challenge"))
            }
        }
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "unsupported code_challenge_method",
        )),
    }
}

/// §4.6: BASE64URL(SHA256(verifier)) == challenge, compared in constant time.
pub fn verify(verifier: Option<&str>, challenge: Option<&str>) -> Result<(), OAuthError> {
    match (verifier, challenge) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(OAuthError::invalid_grant("code_verifier is required")),
        (Some(_), None) => Err(OAuthError::invalid_grant(
            "code_verifier sent but no code_challenge was",
        )),
        (Some(v), Some(c)) => {
            if !well_formed(v) {
                return Err(OAuthError::invalid_grant("malformed code_verifier"));
            }
            let computed = B64.encode(Sha256::digest(v.as_bytes()));
            if bool::from(computed.as_bytes().ct_eq(c.as_bytes())) {
                Ok(())
            } else {
                Err(OAuthError::invalid_grant(
                    "code_verifier does not match the code_challenge",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const V: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const C: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b() {
        assert_eq!(
            check_challenge(Some(C), Some("S256"), true)
                .unwrap()
                .as_deref(),
            Some(C)
        );
        assert!(verify(Some(V), Some(C)).is_ok());
    }

    #[test]
    fn refusals() {
        assert!(check_challenge(Some(C), Some("plain"), true).is_err());
        assert!(check_challenge(Some(C), None, true).is_err());
        assert!(check_challenge(None, None, true).is_err());
        assert!(check_challenge(None, None, false).unwrap().is_none());
        assert!(check_challenge(Some("short"), Some("S256"), true).is_err());
        assert!(check_challenge(None, Some("S256"), false).is_err());
        let e = verify(Some(&V.replace('d', "e")), Some(C)).unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::InvalidGrant);
        assert!(verify(None, Some(C)).is_err());
        assert!(verify(Some(V), None).is_err());
        assert!(verify(Some("a b"), Some(C)).is_err());
        assert!(verify(None, None).is_ok());
    }
}
