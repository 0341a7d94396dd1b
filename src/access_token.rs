//! Reading back the access tokens this server issued (for introspection, revocation and token
//! exchange): the signature against our own published keys (retired ones included), our
//! `iss`, `typ` `at+jwt`, not expired, and not on the revocation deny-list.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::flow::{Ctx, FlowResult, StoreResult};
use crate::jws::{Alg, Audience, Untrusted};

/// The claims of one of our access tokens (RFC 9068 §2.2 and what we add).
#[derive(Deserialize, Debug, Clone)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub client_id: String,
    #[serde(default)]
    pub scope: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    pub jti: String,
    #[serde(default)]
    pub auth_time: Option<u64>,
    #[serde(default)]
    pub authorization_details: Option<Value>,
    #[serde(default)]
    pub cnf: Option<Value>,
    #[serde(default)]
    pub act: Option<Value>,
}

/// The claims if `token` is one of ours, correctly signed and unexpired (not checking the
/// deny-list: see [`is_revoked`]).
pub fn verify(cfg: &Config, token: &str, now_ms: u64) -> Option<Claims> {
    let jws = Untrusted::parse(token, &Alg::ALL).ok()?;
    if !jws.is_access_token() {
        return None;
    }
    let claims: Claims = jws.verify_with(&cfg.own_keys).ok()?.claims().ok()?;
    (claims.iss == cfg.issuer && claims.exp.saturating_mul(1000) > now_ms).then_some(claims)
}

fn deny_id(jti: &str) -> String {
    format!("revoked-at\0{jti}")
}

/// The shared-data key whose version is the deny-list's epoch. Its value is empty: only the
/// version means anything, and an empty value is read back without the host allocating a copy
/// inside the VM (one crossing fewer on every call to a protected route).
pub const EPOCH_KEY: &str = "oauth_edge.revoked_epoch";

/// The deny-list's epoch: the version of one shared-data key that every denial writes after its
/// entry (versions come from one process-wide counter, so any write moves it). A reader that
/// reads the epoch, then finds a token not on the list, may skip the list for that token while
/// the epoch stays: a denial whose entry it could have missed writes the epoch after it. `None`
/// for a remote deny-list (etcd), whose denials other replicas make. The key is created on first
/// use (a create changes the version too); it exists exactly when its version is not 0 (the
/// host may hand an empty value back as none).
pub fn revocation_epoch(cfg: &Config, ctx: &mut Ctx<'_>) -> FlowResult<Option<u64>> {
    if cfg.rings.revoked.remote {
        return Ok(None);
    }
    for _ in 0..2 {
        match ctx.local_get(EPOCH_KEY)? {
            StoreResult::Value { cas, .. } if cas != 0 => return Ok(Some(cas)),
            StoreResult::Value { .. } => {
                ctx.local_cas(EPOCH_KEY, Vec::new(), 0)?;
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Moves the epoch, after a denial's entry is written: an unconditional write (`cas` 0), the
/// one the store takes without a version.
fn bump_epoch(cfg: &Config, ctx: &mut Ctx<'_>) -> FlowResult<()> {
    if !cfg.rings.revoked.remote {
        ctx.local_cas(EPOCH_KEY, Vec::new(), 0)?;
    }
    Ok(())
}

pub fn is_revoked(cfg: &Config, ctx: &mut Ctx<'_>, claims: &Claims) -> FlowResult<bool> {
    crate::replay::seen(ctx, cfg.rings.revoked, &deny_id(&claims.jti))
}

/// Puts the token on the deny-list until it expires anyway.
pub fn revoke(cfg: &Config, ctx: &mut Ctx<'_>, claims: &Claims) -> FlowResult<()> {
    deny(cfg, ctx, &Issued(claims.jti.clone(), claims.exp))
}

/// An access token this server issued, to be taken down with the grant it came from: its `jti`
/// and `exp` (seconds). A used code's record names the one it issued (a pair serialises as a
/// two-element array); a refresh family's are derived from the family instead
/// (`grants::refresh_token::access_token_jti`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Issued(pub String, pub u64);

impl Issued {
    pub fn expired(&self, now_ms: u64) -> bool {
        self.1.saturating_mul(1000) <= now_ms
    }
}

/// Puts an issued token on the deny-list until it expires (nothing to do once it has).
pub fn deny(cfg: &Config, ctx: &mut Ctx<'_>, at: &Issued) -> FlowResult<()> {
    if at.expired(ctx.now.unix_ms) {
        return Ok(());
    }
    crate::replay::remember_once(
        ctx,
        cfg.rings.revoked,
        &deny_id(&at.0),
        at.1.saturating_mul(1000),
    )?;
    bump_epoch(cfg, ctx)
}

/// Verified, unexpired and not revoked.
pub fn active(cfg: &Config, ctx: &mut Ctx<'_>, token: &str) -> FlowResult<Option<Claims>> {
    match verify(cfg, token, ctx.now.unix_ms) {
        Some(c) => Ok((!is_revoked(cfg, ctx, &c)?).then_some(c)),
        None => Ok(None),
    }
}
