//! Minting an access token (RFC 9068): the one place every grant gets its token from. The grant
//! says who and what (subject, client, scope, resources, details, actor, the proof of
//! possession); the rest is the same for all: our issuer, the active key, the configured
//! lifetime, a fresh `jti`, the audience from the resources (RFC 8707) or the default, and the
//! binding to a DPoP key or a TLS client certificate.

use serde_json::Value;

use crate::client::Client;
use crate::config::Config;
use crate::dpop::Proof;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::token::{self, AccessTokenClaims, Aud, Cnf};

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
    let mut exp = now.saturating_add(cfg.access_token_ttl.as_secs());
    if let Some(limit) = g.not_after {
        exp = exp.min(limit);
    }
    let jti = match g.jti {
        Some(j) => j,
        None => token::new_jti(ctx)?,
    };
    let cert = token::cert_binding(g.client, ctx)?;
    let token = token::sign_access_token(
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
