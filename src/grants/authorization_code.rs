//! Authorization code grant, token half (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 9700 §2.1.1).
//!
//! - the code is single use: consumed with a CAS (a ring's record), or, for a sealed code in a
//!   remote store ([`crate::sealed_code`]), by creating the refresh family it names only if
//!   that does not exist yet; of two concurrent redemptions exactly one wins. A second
//!   redemption fails, revokes the refresh family issued from the first and puts the access
//!   tokens issued from the code on the deny-list (RFC 6749 §4.1.2, RFC 9700 §4.5, §4.14);
//! - it must be redeemed by the client it was issued to, with the same redirect_uri;
//! - the PKCE verifier must match the challenge (S256 only); a public client has always sent one;
//! - `openid` in the granted scope brings an ID token with the request's nonce.

use crate::access_token::{self, Issued};
use crate::client::Client;
use crate::config::Config;
use crate::dpop::Proof;
use crate::error::OAuthError;
use crate::families::{self, Family};
use crate::flow::{Ctx, FlowResult};
use crate::form::Form;
use crate::http::Response;
use crate::pkce;
use crate::sealed_code;
use crate::store::{self, Consumed, Handle};

use crate::records::CodeData;

use super::issue::{issue_as, Issue, IssueOpts};
use super::refresh_token;
use super::{AUTHORIZATION_CODE, REFRESH_TOKEN};

/// A replayed code: what the first redemption issued is taken down (RFC 6749 §4.1.2: the
/// server "SHOULD revoke (when possible) all tokens previously issued based on that
/// authorization code"): its access token goes on the deny-list, its refresh family is revoked
/// with the access tokens the family names.
fn revoke_issued(
    cfg: &Config,
    ctx: &mut Ctx<'_>,
    at: Option<&Issued>,
    family: Option<&str>,
) -> FlowResult<()> {
    if let Some(at) = at {
        access_token::deny(cfg, ctx, at)?;
    }
    refresh_token::revoke_family(cfg, ctx, family)
}

fn invalid() -> OAuthError {
    OAuthError::invalid_grant("authorization code is invalid, expired or used")
}

pub fn handle(
    cfg: &Config,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    if let Some(h) = Handle::decode(code) {
        return redeem_slot(cfg, client, form, proof, ctx, &h);
    }
    // A remote store's codes are sealed (a ring handle above is one from before an upgrade).
    if cfg.rings.codes.remote {
        return redeem_sealed(cfg, client, form, proof, ctx, code);
    }
    Err(invalid().into())
}

fn same_client(data: &CodeData, client: &Client) -> Result<(), OAuthError> {
    if data.req.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "authorization code was issued to another client",
        ));
    }
    Ok(())
}

/// What the redemption must present besides the code: the same redirect_uri, the PKCE
/// verifier (a public client has always sent a challenge), the DPoP key the code is bound to.
fn check(
    data: &CodeData,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
) -> Result<(), OAuthError> {
    if form.get("redirect_uri") != Some(data.req.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    if !client.is_confidential() && data.req.code_challenge.is_none() {
        return Err(OAuthError::invalid_grant("public clients must use PKCE"));
    }
    pkce::verify(
        form.get("code_verifier"),
        data.req.code_challenge.as_deref(),
    )?;
    // RFC 9449 §10: a code bound to a key (dpop_jkt, or a proof at PAR) needs a proof by it.
    crate::dpop::require_key(data.req.dpop_jkt.as_deref(), proof, "authorization code")
}

/// The refresh family id and the access token's jti (derived from the family if there is
/// one), drawn before the code is consumed so the used code can name them: a later replay of
/// the code then takes both down (even if it wins the race to write the family).
fn draw_ids(
    cfg: &Config,
    client: &Client,
    ctx: &mut Ctx<'_>,
) -> FlowResult<(Option<String>, Issued)> {
    let fam = if client.allows_grant(REFRESH_TOKEN) {
        Some(ctx.random_id()?)
    } else {
        None
    };
    let at = refresh_token::first_access_token(cfg, ctx, fam.as_deref())?;
    Ok((fam, at))
}

fn grant_of(data: &CodeData) -> refresh_token::Grant {
    refresh_token::Grant {
        sub: data.sub.clone(),
        scope: data.req.scope.clone(),
        auth_time: data.auth_time,
        sid: data.sid.clone(),
        ad: data.req.authorization_details.clone(),
        res: data.req.resources.clone(),
    }
}

/// A code in a shared-data ring: read, check, consume with a CAS, start the family.
fn redeem_slot(
    cfg: &Config,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
    h: &Handle,
) -> FlowResult<Response> {
    let Some((rec, cas)) = store::peek::<CodeData>(ctx, cfg.rings.codes, h)? else {
        return Err(invalid().into());
    };
    let read = (rec.clone(), cas);
    let used = rec.is_used();
    let data = rec.data;
    same_client(&data, client)?;
    if used {
        revoke_issued(cfg, ctx, data.at.as_ref(), data.family.as_deref())?;
        return Err(invalid().into());
    }
    check(&data, client, form, proof)?;
    let (fam, at) = draw_ids(cfg, client, ctx)?;
    let data =
        match store::consume_read::<CodeData>(ctx, cfg.rings.codes, h, Some(read), |d| CodeData {
            family: fam.clone(),
            at: Some(at.clone()),
            ..d.clone()
        })? {
            Consumed::Fresh(d) => d,
            Consumed::Replayed(d) => {
                // Lost the race to a concurrent redemption (or a replay): revoke what it issued.
                revoke_issued(cfg, ctx, d.at.as_ref(), d.family.as_deref())?;
                return Err(invalid().into());
            }
            Consumed::Invalid => return Err(invalid().into()),
        };
    let refresh = match fam {
        Some(fam) => Some(refresh_token::start_family(
            cfg,
            ctx,
            client,
            fam,
            grant_of(&data),
            proof,
        )?),
        None => None,
    };
    issue(cfg, client, proof, ctx, &data, refresh, at)
}

/// A sealed code (a remote store, [`crate::sealed_code`]): opened and checked here, then its
/// refresh family, whose id the code carries, is created in one round trip. That record is
/// the code's used mark: a second redemption finds it and revokes what the first issued.
fn redeem_sealed(
    cfg: &Config,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
    code: &str,
) -> FlowResult<Response> {
    let Some(opened) = sealed_code::open(&cfg.keys, code, ctx.now.unix_ms) else {
        return Err(invalid().into());
    };
    let data = opened.data;
    same_client(&data, client)?;
    let Some(fam) = data.family.clone() else {
        return Err(invalid().into());
    };
    let ring = cfg.rings.families;
    if let Err(e) = check(&data, client, form, proof) {
        // A used code is refused as one, and its replay revokes, whatever else is wrong (as
        // a ring's used record is seen before the checks).
        return match families::find(ctx, ring, &fam)? {
            Some(_) => replayed(cfg, ctx, &fam),
            None => Err(e.into()),
        };
    }
    let at = refresh_token::first_access_token(cfg, ctx, Some(&fam))?;
    let (family, refresh) = if client.allows_grant(REFRESH_TOKEN) {
        let (family, claims) =
            refresh_token::new_family(cfg, ctx, client, fam.clone(), grant_of(&data), proof)?;
        (family, Some(claims))
    } else {
        // No refresh tokens: the mark is a family that is revoked from the start.
        (used_mark(opened.exp_ms), None)
    };
    if families::create_or_find(ctx, ring, &fam, &family, opened.exp_ms)?.is_some() {
        return replayed(cfg, ctx, &fam);
    }
    issue(cfg, client, proof, ctx, &data, refresh, at)
}

/// The used mark of a code redeemed without a refresh token, until the code expires.
fn used_mark(code_exp_ms: u64) -> Family {
    Family {
        gen: 0,
        n: 0,
        exp: code_exp_ms.div_ceil(1000),
        rotated_at: code_exp_ms,
        revoked: true,
        twice_current: false,
        twice_previous: false,
    }
}

/// A sealed code redeemed before: its family is revoked with the access tokens it names (the
/// first one's jti comes from the family id).
fn replayed(cfg: &Config, ctx: &mut Ctx<'_>, fam: &str) -> FlowResult<Response> {
    refresh_token::revoke_family(cfg, ctx, Some(fam))?;
    Err(invalid().into())
}

/// The token response for a redeemed code.
fn issue(
    cfg: &Config,
    client: &Client,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
    data: &CodeData,
    refresh: Option<crate::sealed::RefreshClaims>,
    at: Issued,
) -> FlowResult<Response> {
    let openid = data.req.scope.split(' ').any(|s| s == "openid");
    issue_as(
        cfg,
        Issue {
            client,
            sub: &data.sub,
            scope: &data.req.scope,
            auth_time: data.auth_time,
            sid: data.sid.as_deref(),
            nonce: data.req.nonce.as_deref(),
            id_token: openid,
            authorization_details: data.req.authorization_details.as_ref(),
            resources: &data.req.resources,
            refresh,
            proof,
        },
        AUTHORIZATION_CODE,
        IssueOpts {
            jti: Some(at.0),
            ..IssueOpts::default()
        },
        ctx,
    )
}
