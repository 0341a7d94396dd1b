//! The token endpoint's successful answer (RFC 6749 §5.1, RFC 9449 §5, RFC 8693 §2.2.1, seed 000's
//! dto.OAuthTokenResponse). The tokens in it are minted by [`crate::mint`].

use serde::Serialize;
use serde_json::Value;

use crate::dpop::Proof;
use crate::error::OAuthError;
use crate::http::{Outcome, Response};

/// A successful token answer (flat JSON, `no-store`).
#[derive(Serialize, Default)]
pub struct TokenAnswer<'a> {
    pub access_token: &'a str,
    pub token_type: &'a str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<&'a Value>,
    /// Seed 000: the access token is DPoP-bound, and with which proof algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpop_access_token_bound: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpop_signing_alg: Option<&'a str>,
    /// RFC 8693 §2.2.1 (token exchange only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'a str>,
}

impl<'a> TokenAnswer<'a> {
    /// `token_type` and the seed's DPoP fields for tokens issued with or without a proof
    /// (RFC 9449 §5: `token_type` is `DPoP` for a bound token).
    pub fn bound(mut self, proof: Option<&'a Proof>) -> Self {
        match proof {
            Some(p) => {
                self.token_type = "DPoP";
                self.dpop_access_token_bound = Some(true);
                self.dpop_signing_alg = Some(p.alg);
            }
            None => self.token_type = "Bearer",
        }
        self
    }
}

impl TokenAnswer<'_> {
    pub fn into_response(self, grant_type: &'static str) -> Response {
        match serde_json::to_vec(&self) {
            Ok(body) => {
                let mut r = Response::json(200, body, Outcome::Issued(grant_type));
                r.no_store();
                r
            }
            Err(e) => OAuthError::internal(format!("token response: {e}")).into_response(),
        }
    }
}

/// The successful token answer for grants without refresh or ID tokens.
pub fn token_response(
    grant_type: &'static str,
    access_token: &str,
    proof: Option<&Proof>,
    expires_in: u64,
    scope: &str,
) -> Response {
    TokenAnswer {
        access_token,
        expires_in,
        scope,
        ..Default::default()
    }
    .bound(proof)
    .into_response(grant_type)
}
