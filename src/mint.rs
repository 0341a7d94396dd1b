//! Minting an access token (RFC 9068): the one place every grant gets its token from. The grant
//! says who and what (subject, client, scope, resources, details, actor, the proof of
//! possession); the rest is the same for all: our issuer, the active key, the configured
//! lifetime, a fresh `jti`, the audience from the resources (RFC 8707) or the default, and the
//! binding to a DPoP key or a TLS client certificate.

use serde::Serialize;
use serde_json::Value;

use crate::client::Client;
use crate::config::Config;
use crate::dpop::Proof;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::keys::SigningKey;

/// What a grant puts into its access token.
pub struct AccessGrant<'a> {
    pub client: &'a Client,
    pub sub: &'a str,
    pub scope: &'a str,
    /// RFC 8707 resources: the token's audience (the configured one when empty).
    pub resources: &'a [String],
    pub auth_time: Option<u64>,
    pub authorization_details: Option<&'a Value>,
    /// RFC 8693 §4.1: who acts for the subject.
    pub act: Option<&'a Value>,
    /// The request's DPoP proof: the token is bound to its key.
    pub proof: Option<&'a Proof>,
    /// The latest the token may live to (a token exchange never outlives its subject token).
    pub not_after: Option<u64>,
    /// A `jti` the caller drew before writing a record that names it; else a fresh one.
    pub jti: Option<String>,
}

/// A signed access token and the facts of it the answer and the records need.
pub struct Minted {
    pub token: String,
    pub jti: String,
    pub exp: u64,
    /// Seconds from now to `exp` (the answer's `expires_in`).
    pub expires_in: u64,
}

pub fn access_token(cfg: &Config, g: AccessGrant<'_>, ctx: &mut Ctx<'_>) -> FlowResult<Minted> {
    let key = cfg
        .keys
        .active()
        .ok_or_else(|| OAuthError::internal("no active signing key"))?;
    let now = ctx.now.secs();
    let mut exp = now.saturating_add(cfg.lifetimes.access_token.as_secs());
    if let Some(limit) = g.not_after {
        exp = exp.min(limit);
    }
    let jti = match g.jti {
        Some(j) => j,
        None => new_jti(ctx)?,
    };
    let cert = cert_binding(g.client, ctx)?;
    let token = sign_access_token(
        key,
        &AccessTokenClaims {
            iss: &cfg.issuer,
            sub: g.sub,
            aud: Aud::of(g.resources, &cfg.access_token_audience),
            client_id: &g.client.client_id,
            scope: g.scope,
            iat: now,
            exp,
            jti: &jti,
            auth_time: g.auth_time,
            authorization_details: g.authorization_details,
            cnf: Cnf::of(g.proof, cert),
            act: g.act,
        },
    )?;
    Ok(Minted {
        token,
        jti,
        exp,
        expires_in: exp.saturating_sub(now),
    })
}

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
