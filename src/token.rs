//! Minting tokens and the token answer (RFC 6749 §5.1, RFC 9068).

use serde::Serialize;

use crate::error::OAuthError;
use crate::http::{Outcome, Response};
use crate::keys::SigningKey;
use crate::random::{self, Random};

/// RFC 9068 §2.2 claims of a JWT access token.
#[derive(Serialize)]
pub struct AccessTokenClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub client_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub scope: &'a str,
    pub iat: u64,
    pub exp: u64,
    pub jti: &'a str,
}

/// A fresh jti: 128 random bits. No randomness means no token.
pub fn new_jti(rng: &mut dyn Random) -> Result<String, OAuthError> {
    random::token_id(rng).map_err(|_| OAuthError::server_error("internal error"))
}

/// Signs an access token with the active key.
pub fn sign_access_token(
    key: &SigningKey,
    claims: &AccessTokenClaims<'_>,
) -> Result<String, OAuthError> {
    let json =
        serde_json::to_vec(claims).map_err(|_| OAuthError::server_error("internal error"))?;
    Ok(key.sign_access_token(&json))
}

/// The successful token answer: flat JSON, `no-store` (RFC 6749 §5.1).
pub fn token_response(
    grant_type: &'static str,
    access_token: &str,
    token_type: &str,
    expires_in: u64,
    scope: &str,
) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        access_token: &'a str,
        token_type: &'a str,
        expires_in: u64,
        #[serde(skip_serializing_if = "str::is_empty")]
        scope: &'a str,
    }
    match serde_json::to_vec(&Body {
        access_token,
        token_type,
        expires_in,
        scope,
    }) {
        Ok(body) => {
            let mut r = Response::json(200, body, Outcome::Issued(grant_type));
            r.no_store();
            r
        }
        Err(_) => OAuthError::server_error("internal error").into_response(),
    }
}
