//! Minting tokens and the token answer (RFC 6749 §5.1, RFC 9068, seed 000's dto.OAuthTokenResponse).

use serde::Serialize;
use serde_json::Value;

use crate::client::Client;
use crate::dpop::Proof;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::http::{Outcome, Response};
use crate::keys::SigningKey;

/// `aud`: one audience as a string, several as an array (RFC 7519 §4.1.3).
#[derive(Serialize, Clone, Copy)]
#[serde(untagged)]
pub enum Aud<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl<'a> Aud<'a> {
    /// The requested resources (RFC 8707) or the configured default audience.
    pub fn of(resources: &'a [String], default: &'a str) -> Aud<'a> {
        match resources {
            [] => Aud::One(default),
            [one] => Aud::One(one),
            many => Aud::Many(many),
        }
    }
}

/// RFC 9068 §2.2 claims of a JWT access token.
#[derive(Serialize)]
pub struct AccessTokenClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: Aud<'a>,
    pub client_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub scope: &'a str,
    pub iat: u64,
    pub exp: u64,
    pub jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// RFC 9396 §9.1: granted authorization details travel in the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<&'a Value>,
    /// RFC 9449 §6.1: the DPoP key the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Cnf<'a>>,
    /// RFC 8693 §4.1: who acts on the subject's behalf (token exchange).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<&'a Value>,
}

/// RFC 7800 confirmation claim with the RFC 9449 §6.1 member (`jkt`, a DPoP key) and the RFC
/// 8705 §3.1 one (`x5t#S256`, a TLS client certificate).
#[derive(Serialize, Clone)]
pub struct Cnf<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jkt: Option<&'a str>,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
}

impl<'a> Cnf<'a> {
    pub fn of(proof: Option<&'a Proof>, cert: Option<String>) -> Option<Cnf<'a>> {
        (proof.is_some() || cert.is_some()).then(|| Cnf {
            jkt: proof.map(|p| p.jkt.as_str()),
            x5t: cert,
        })
    }
}

/// RFC 8705 §3: the certificate thumbprint a client's tokens are bound to, for a client
/// registered with `tls_client_certificate_bound_access_tokens`; such a client must present its
/// certificate.
pub fn cert_binding(client: &Client, ctx: &Ctx<'_>) -> FlowResult<Option<String>> {
    if !client.tls_bound_tokens {
        return Ok(None);
    }
    match ctx.client_cert() {
        Some(c) => Ok(Some(c.thumbprint())),
        None => Err(OAuthError::invalid_request(
            "this client's tokens are bound to its TLS client certificate, and none was presented",
        )
        .into()),
    }
}

/// A fresh jti: 128 random bits.
pub fn new_jti(ctx: &mut Ctx<'_>) -> FlowResult<String> {
    ctx.random_id()
}

/// Signs an access token with the active key.
pub fn sign_access_token(
    key: &SigningKey,
    claims: &AccessTokenClaims<'_>,
) -> Result<String, OAuthError> {
    let json = serde_json::to_vec(claims)
        .map_err(|e| OAuthError::internal(format!("access token claims: {e}")))?;
    key.sign_access_token(&json)
        .ok_or_else(|| OAuthError::internal("the access token could not be signed"))
}

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
