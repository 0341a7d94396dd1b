//! Refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).
//!
//! A refresh token is sealed and self-contained (`crate::sealed`): any instance with the same
//! configuration can open it, also after a restart. Rotation state lives in a family record in
//! the store (`gen`: the generation of the newest token):
//! - token gen == record gen: rotate (CAS gen+1) and issue gen+1;
//! - token gen <  record gen: a rotated token came back. Within the client's
//!   `refresh_token_reuse_interval` after the rotation, the previous token is honoured once more
//!   (a lost answer retried; once per generation, see [`rotate`]); otherwise the whole family is
//!   revoked;
//! - token gen >  record gen, or no record (restart, another instance): accepted and recorded.
//!   So reuse detection is per Envoy process: a token rotated on one instance and replayed on
//!   another is not caught (the etcd store of the multi-replica issue closes that gap).
//!
//! Rotation never extends the family's absolute expiry. Under the FAPI 2.0 profile refresh
//! tokens are not rotated at all (see [`rotates`]).
//!
//! The family record also names the access tokens issued from the grant that are still live (the
//! code's, then each refresh's; the newest [`TRACKED`]): revoking the family (a replayed code,
//! reuse detected, RFC 7009 revocation) puts them on the deny-list, so introspection and token
//! exchange see them inactive at once (RFC 6749 §4.1.2: "revoke (when possible) all tokens
//! previously issued based on that authorization code").

use serde::{Deserialize, Serialize};

use crate::access_token::{self, Issued};
use crate::client::Client;
use crate::config::Profile;
use crate::dpop::Proof;
use crate::engine::Engine;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::form::Form;
use crate::http::Response;
use crate::scope;
use crate::sealed::{self, RefreshClaims};
use crate::store::{self, Found};

use super::issue::{issue_as, Issue, IssueOpts};
use super::REFRESH_TOKEN;
use crate::token;

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
    /// Live access tokens issued from this grant, newest last, at most [`TRACKED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ats: Vec<Issued>,
    /// The newest generation the reuse interval's grace handed out a second time (see
    /// [`rotate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<u32>,
}

/// How many live access tokens a family record names. A client refreshes about once per access
/// token lifetime, so two or three are live at a time; a family refreshed faster than that loses
/// its oldest from the list (they then live out their lifetime: minutes). Bounded because every
/// family record is a slot of a fixed ring (about 40 bytes each).
pub const TRACKED: usize = 4;

/// `ats` with `at` added: expired ones dropped, the newest [`TRACKED`] kept.
fn tracked(ats: &[Issued], at: Option<&Issued>, now_ms: u64) -> Vec<Issued> {
    let mut out: Vec<Issued> = ats
        .iter()
        .chain(at)
        .filter(|a| !a.expired(now_ms))
        .cloned()
        .collect();
    let extra = out.len().saturating_sub(TRACKED);
    out.drain(..extra);
    out
}

/// The `jti` and expiry of the access token a request is about to issue, drawn before the
/// records that name it are written.
pub fn next_access_token(engine: &Engine, ctx: &mut Ctx<'_>) -> FlowResult<Issued> {
    let jti = token::new_jti(ctx)?;
    let exp = ctx
        .now
        .secs()
        .saturating_add(engine.config.access_token_ttl.as_secs());
    Ok(Issued(jti, exp))
}

pub fn handle(
    engine: &Engine,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
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
    // RFC 8707 §2.2: likewise the resources, checked before the token is rotated.
    let requested: Vec<String> = form.get_all("resource").map(str::to_string).collect();
    let resources = crate::rar::narrow(&claims.res, &requested, client)?;
    // RFC 9449 §5: a bound refresh token needs a proof by the same key.
    crate::dpop::require_key(claims.jkt.as_deref(), proof, "refresh token")?;
    refresh(
        engine,
        client,
        claims,
        scope,
        resources,
        proof,
        IssueOpts::default(),
        ctx,
    )
}

/// A refresh: checks the token against its family, records the new access token there, and
/// issues the new tokens (`opts.jti` is set here). `res`: the new access token's resources
/// (among the grant's, RFC 8707 §2.2).
#[allow(clippy::too_many_arguments)]
pub fn refresh(
    engine: &Engine,
    client: &Client,
    claims: RefreshClaims,
    scope: String,
    res: Vec<String>,
    proof: Option<&Proof>,
    opts: IssueOpts,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let at = next_access_token(engine, ctx)?;
    let jti = at.0.clone();
    let rotating = rotates(engine, client);
    let next = rotate(engine, client, claims, at, rotating, ctx)?;
    let opts = IssueOpts {
        jti: Some(jti),
        ..opts
    };
    issue_rotated(engine, client, next, rotating, scope, res, proof, opts, ctx)
}

/// The tokens of a refresh: a new access token (with `scope` and `res`, which may be narrower
/// than the grant's) and, if the family rotates, the successor refresh token (for the whole
/// grant; without one the client keeps the token it holds: RFC 6749 §6).
#[allow(clippy::too_many_arguments)]
pub fn issue_rotated(
    engine: &Engine,
    client: &Client,
    next: RefreshClaims,
    rotated: bool,
    scope: String,
    res: Vec<String>,
    proof: Option<&Proof>,
    opts: IssueOpts,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let sub = next.sub.clone();
    let auth_time = next.auth_time;
    let ad = next.ad.clone();
    issue_as(
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
            refresh: rotated.then_some(next),
            proof,
        },
        REFRESH_TOKEN,
        opts,
        ctx,
    )
}

/// Whether a refresh hands out a new refresh token. Under the FAPI 2.0 profile a confidential
/// client's is not rotated (FAPI 2.0 Security Profile §5.3.2.1: no rotation unless a retry with
/// the previous token succeeds; RFC 9700 §4.14.2: a refresh token bound to the client's
/// authentication needs no rotation): a client that lost an answer retries with the token it
/// holds, at any time. Every client there is confidential (private_key_jwt only).
pub fn rotates(engine: &Engine, client: &Client) -> bool {
    !(engine.config.profile == Profile::Fapi2 && client.is_confidential())
}

/// Checks a refresh token against its family and returns the claims of its successor (of the
/// token itself if `rotate` is false: it stays valid); `at` is the access token the refresh will
/// issue (recorded in the family).
///
/// The grace of `refresh_token_reuse_interval` (a lost answer retried): within that time after
/// a rotation, the previous token gets the current generation once more. Once per generation
/// (the record keeps `grace`, the generation it handed out twice), and never for a generation
/// that was itself handed out twice: two holders of neighbouring generations (a thief and the
/// client) would otherwise take turns forever inside the window, each grace giving the other's
/// next token a twin. So the second holder to use such a twin trips reuse detection; the price is
/// that two lost answers in a row end the family.
pub fn rotate(
    engine: &Engine,
    client: &Client,
    claims: RefreshClaims,
    at: Issued,
    rotate: bool,
    ctx: &mut Ctx<'_>,
) -> FlowResult<RefreshClaims> {
    let ring = engine.config.rings.families;
    let now_ms = ctx.now.unix_ms;
    let family_exp_ms = claims.exp.saturating_mul(1000);
    if family_exp_ms <= now_ms {
        return Err(OAuthError::invalid_grant("refresh token is invalid or expired").into());
    }
    let reuse = || OAuthError::invalid_grant("refresh token reuse detected: the grant is revoked");
    let gen = if rotate {
        claims.gen.saturating_add(1)
    } else {
        claims.gen
    };
    // A few rounds: a lost CAS means a concurrent rotation or insert; the next read sees it.
    for _ in 0..3 {
        let Some(found) = store::find_keyed::<FamilyData>(ctx, ring, &claims.fam)? else {
            // No record here (a restart, or a token from another instance): record this
            // family now, so a second presentation of the same token is caught as reuse.
            let fd = FamilyData {
                fam: claims.fam.clone(),
                gen,
                revoked: false,
                rotated_at: now_ms,
                cid: claims.cid.clone(),
                ats: vec![at.clone()],
                grace: None,
            };
            match store::find_or_insert_keyed(ctx, ring, &claims.fam, family_exp_ms - now_ms, &fd)?
            {
                Ok(_) => return Ok(RefreshClaims { gen, ..claims }),
                Err(_) => continue,
            }
        };
        let d = &found.record.data;
        if d.revoked {
            return Err(OAuthError::invalid_grant("refresh token has been revoked").into());
        }
        if claims.gen < d.gen {
            let grace_ms = client.refresh_token_reuse_interval.saturating_mul(1000);
            if grace_ms > 0
                && claims.gen.saturating_add(1) == d.gen
                && now_ms <= d.rotated_at.saturating_add(grace_ms)
                && d.grace.is_none_or(|g| g < claims.gen)
            {
                // The answer to the rotation was lost: hand out the current generation again.
                let again = FamilyData {
                    ats: tracked(&d.ats, Some(&at), now_ms),
                    grace: Some(d.gen),
                    ..d.clone()
                };
                if store::update_keyed(ctx, ring, &found, &again)? {
                    return Ok(RefreshClaims {
                        gen: d.gen,
                        ..claims
                    });
                }
                continue;
            }
            revoke_found(engine, ctx, &claims.fam, found)?;
            return Err(reuse().into());
        }
        let next = FamilyData {
            gen,
            rotated_at: if rotate { now_ms } else { d.rotated_at },
            ats: tracked(&d.ats, Some(&at), now_ms),
            ..d.clone()
        };
        if store::update_keyed(ctx, ring, &found, &next)? {
            return Ok(RefreshClaims { gen, ..claims });
        }
    }
    Err(reuse().into())
}

/// Marks a found family revoked (re-reading once if it changed meanwhile), then puts the live
/// access tokens it names on the deny-list.
fn revoke_found(
    engine: &Engine,
    ctx: &mut Ctx<'_>,
    fam: &str,
    found: Found<FamilyData>,
) -> FlowResult<()> {
    let ring = engine.config.rings.families;
    let mut ats = found.record.data.ats.clone();
    let revoked = FamilyData {
        revoked: true,
        ..found.record.data.clone()
    };
    if !store::update_keyed(ctx, ring, &found, &revoked)? {
        if let Some(again) = store::find_keyed::<FamilyData>(ctx, ring, fam)? {
            ats = again.record.data.ats.clone();
            let revoked = FamilyData {
                revoked: true,
                ..again.record.data.clone()
            };
            store::update_keyed(ctx, ring, &again, &revoked)?;
        }
    }
    for at in &ats {
        access_token::deny(&engine.config, ctx, at)?;
    }
    Ok(())
}

/// What the first refresh token of a new grant is for.
pub struct Grant {
    pub sub: String,
    pub scope: String,
    pub auth_time: Option<u64>,
    pub ad: Option<serde_json::Value>,
    pub res: Vec<String>,
}

/// Starts the refresh-token family `fam` of a new grant: its record in the families ring
/// (naming `first_at`, the grant's first access token, if the caller drew its id), and the
/// claims of its first token. A public client's token is bound to the DPoP key of the request,
/// if it sent a proof (RFC 9449 §5).
pub fn start_family(
    engine: &Engine,
    ctx: &mut Ctx<'_>,
    client: &Client,
    fam: String,
    grant: Grant,
    proof: Option<&crate::dpop::Proof>,
    first_at: Option<Issued>,
) -> FlowResult<RefreshClaims> {
    let cfg = &engine.config;
    let now_ms = ctx.now.unix_ms;
    let ttl_ms = crate::duration::millis(cfg.refresh_token_ttl);
    let fd = FamilyData {
        fam: fam.clone(),
        gen: 0,
        revoked: false,
        rotated_at: now_ms,
        cid: client.client_id.clone(),
        ats: first_at.into_iter().collect(),
        grace: None,
    };
    store::insert_new_keyed(ctx, cfg.rings.families, &fam, ttl_ms, &fd)?;
    Ok(RefreshClaims {
        fam,
        gen: 0,
        cid: client.client_id.clone(),
        sub: grant.sub,
        scope: grant.scope,
        exp: now_ms.saturating_add(ttl_ms) / 1000,
        auth_time: grant.auth_time,
        ad: grant.ad,
        res: grant.res,
        jkt: if client.is_confidential() {
            None
        } else {
            proof.map(|p| p.jkt.clone())
        },
    })
}

/// [`start_family`] with a new family id, if the client may refresh at all.
pub fn first_token(
    engine: &Engine,
    ctx: &mut Ctx<'_>,
    client: &Client,
    grant: Grant,
    proof: Option<&crate::dpop::Proof>,
) -> FlowResult<Option<RefreshClaims>> {
    if !client.allows_grant(REFRESH_TOKEN) {
        return Ok(None);
    }
    let fam = ctx.random_id()?;
    start_family(engine, ctx, client, fam, grant, proof, None).map(Some)
}

/// Revokes a family by id (a replayed code: RFC 6749 §4.1.2; a revoked refresh token: RFC 7009)
/// and denies the access tokens it names. If it has no record yet (the winner of a race has not
/// written it), a revoked one is written first, so the winner finds it.
pub fn revoke_family(engine: &Engine, ctx: &mut Ctx<'_>, fam: Option<&str>) -> FlowResult<()> {
    let Some(fam) = fam else { return Ok(()) };
    let ring = engine.config.rings.families;
    let tombstone = FamilyData {
        fam: fam.to_string(),
        gen: 0,
        revoked: true,
        rotated_at: ctx.now.unix_ms,
        cid: String::new(),
        ats: Vec::new(),
        grace: None,
    };
    let ttl = crate::duration::millis(engine.config.refresh_token_ttl);
    match store::find_or_insert_keyed(ctx, ring, fam, ttl, &tombstone)? {
        Ok(_) => Ok(()),
        Err(found) => revoke_found(engine, ctx, fam, found),
    }
}
