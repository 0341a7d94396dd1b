//! Refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).
//!
//! A refresh token is sealed and self-contained (`crate::sealed`): any instance with the same
//! configuration can open it, also after a restart. Rotation state lives in a family record in
//! the store (`gen`: the generation of the newest token):
//! - token gen == record gen: rotate (CAS gen+1) and issue gen+1;
//! - token gen <  record gen: a rotated token came back. Within the client's
//!   `refresh_token_reuse_interval` after the rotation, the previous token is honoured once more
//!   (a lost answer retried); otherwise the whole family is revoked;
//! - token gen >  record gen, or no record (restart, another instance): accepted and recorded.
//!   So reuse detection is per Envoy process: a token rotated on one instance and replayed on
//!   another is not caught (the etcd store of the multi-replica issue closes that gap).
//!
//! Rotation never extends the family's absolute expiry.

use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::engine::Engine;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::form::Form;
use crate::http::Response;
use crate::scope;
use crate::sealed::{self, RefreshClaims};
use crate::store::{self, Handle};

use super::issue::{issue, Issue};
use super::REFRESH_TOKEN;

/// A family's rotation state (the data of a record in the families ring).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct FamilyData {
    pub fam: String,
    pub gen: u32,
    #[serde(default)]
    pub revoked: bool,
    /// When the last rotation happened (ms), for the reuse interval.
    pub rotated_at: u64,
    pub cid: String,
}

pub fn handle(
    engine: &Engine,
    client: &Client,
    form: &Form,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let token = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let claims = sealed::open(&engine.config.keys, token)?;
    if claims.cid != client.client_id {
        return Err(OAuthError::invalid_grant("refresh token was issued to another client").into());
    }
    if !client.allows_grant(REFRESH_TOKEN) {
        return Err(OAuthError::unauthorized_client(
            "client is not allowed the refresh_token grant",
        )
        .into());
    }
    // §6: a narrower scope may be asked for, never a wider one.
    let scope = match form.get("scope") {
        None => claims.scope.clone(),
        Some(req) => {
            let allowed: Vec<String> = claims
                .scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            scope::grant(Some(req), &allowed)?
        }
    };
    let next = rotate(engine, client, claims, ctx)?;
    let sub = next.sub.clone();
    let auth_time = next.auth_time;
    let ad = next.ad.clone();
    let res = next.res.clone();
    issue(
        engine,
        Issue {
            client,
            sub: &sub,
            scope: &scope,
            auth_time,
            nonce: None,
            id_token: false,
            authorization_details: ad.as_ref(),
            resources: &res,
            refresh: Some(next),
        },
        REFRESH_TOKEN,
        ctx,
    )
}

/// Checks a refresh token against its family and returns the claims of its successor.
pub fn rotate(
    engine: &Engine,
    client: &Client,
    claims: RefreshClaims,
    ctx: &mut Ctx<'_>,
) -> FlowResult<RefreshClaims> {
    let ring = engine.config.rings.families;
    let now_ms = ctx.now.unix_ms;
    if claims.exp.saturating_mul(1000) <= now_ms {
        return Err(OAuthError::invalid_grant("refresh token is invalid or expired").into());
    }
    let fh = Handle::decode(&claims.fh)
        .ok_or_else(|| OAuthError::invalid_grant("refresh token is invalid or expired"))?;
    // Two rounds: a lost CAS means a concurrent rotation; the second read sees it as reuse.
    for _ in 0..2 {
        match store::peek::<FamilyData>(ctx, ring, &fh)? {
            Some((rec, cas)) if rec.data.fam == claims.fam => {
                let exp = rec.expires_at_ms();
                let d = rec.data;
                if d.revoked {
                    return Err(OAuthError::invalid_grant("refresh token has been revoked").into());
                }
                if claims.gen < d.gen {
                    let grace_ms = client.refresh_token_reuse_interval.saturating_mul(1000);
                    if claims.gen + 1 == d.gen
                        && now_ms <= d.rotated_at.saturating_add(grace_ms)
                        && grace_ms > 0
                    {
                        // The answer to the rotation was lost: hand out the current generation again.
                        return Ok(RefreshClaims {
                            gen: d.gen,
                            ..claims
                        });
                    }
                    revoke(ctx, ring, &fh, exp, cas, d)?;
                    return Err(OAuthError::invalid_grant(
                        "refresh token reuse detected: the grant is revoked",
                    )
                    .into());
                }
                let gen = claims.gen.saturating_add(1);
                let next = FamilyData {
                    gen,
                    rotated_at: now_ms,
                    ..d
                };
                if store::update(ctx, ring, &fh, exp, cas, &next)? {
                    return Ok(RefreshClaims { gen, ..claims });
                }
            }
            _ => {
                // No record here (a restart, another instance, or the slot was reused after the
                // old record expired): start recording this family under a new record.
                let gen = claims.gen.saturating_add(1);
                let fd = FamilyData {
                    fam: claims.fam.clone(),
                    gen,
                    revoked: false,
                    rotated_at: now_ms,
                    cid: claims.cid.clone(),
                };
                let ttl = claims.exp.saturating_mul(1000).saturating_sub(now_ms);
                let nfh = store::allocate(ctx, ring, ttl, &fd)?;
                return Ok(RefreshClaims {
                    gen,
                    fh: nfh.encode(),
                    ..claims
                });
            }
        }
    }
    Err(OAuthError::invalid_grant("refresh token reuse detected: the grant is revoked").into())
}

fn revoke(
    ctx: &mut Ctx<'_>,
    ring: store::Ring,
    fh: &Handle,
    exp: u64,
    cas: u32,
    d: FamilyData,
) -> FlowResult<()> {
    let revoked = FamilyData { revoked: true, ..d };
    if !store::update(ctx, ring, fh, exp, cas, &revoked)? {
        // Changed meanwhile: read again and revoke that.
        if let Some((rec, cas)) = store::peek::<FamilyData>(ctx, ring, fh)? {
            let revoked = FamilyData {
                revoked: true,
                ..rec.data
            };
            store::update(ctx, ring, fh, exp, cas, &revoked)?;
        }
    }
    Ok(())
}

/// Revokes the family a code issued (a replayed code: RFC 6749 §4.1.2).
pub fn revoke_family(engine: &Engine, ctx: &mut Ctx<'_>, fh: Option<&str>) -> FlowResult<()> {
    let Some(fh) = fh.and_then(Handle::decode) else {
        return Ok(());
    };
    let ring = engine.config.rings.families;
    if let Some((rec, cas)) = store::peek::<FamilyData>(ctx, ring, &fh)? {
        let exp = rec.expires_at_ms();
        revoke(ctx, ring, &fh, exp, cas, rec.data)?;
    }
    Ok(())
}
