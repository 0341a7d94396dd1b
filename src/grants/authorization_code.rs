//! Authorization code grant, token half (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 9700 §2.1.1).
//!
//! - the code is single use: consumed with a CAS, so of two concurrent redemptions exactly one
//!   wins; a second redemption fails, revokes the refresh family issued from the first and puts
//!   the access tokens issued from the code on the deny-list (RFC 6749 §4.1.2, RFC 9700 §4.5,
//!   §4.14);
//! - it must be redeemed by the client it was issued to, with the same redirect_uri;
//! - the PKCE verifier must match the challenge (S256 only); a public client has always sent one;
//! - `openid` in the granted scope brings an ID token with the request's nonce.

use crate::access_token;
use crate::client::Client;
use crate::config::Config;
use crate::dpop::Proof;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::form::Form;
use crate::http::Response;
use crate::pkce;
use crate::store::{self, Consumed, Handle};

use crate::records::CodeData;

use super::issue::{issue_as, Issue, IssueOpts};
use super::refresh_token;
use super::{AUTHORIZATION_CODE, REFRESH_TOKEN};

/// A replayed code: what the first redemption issued is taken down (RFC 6749 §4.1.2: the
/// server "SHOULD revoke (when possible) all tokens previously issued based on that
/// authorization code"): its access token goes on the deny-list, its refresh family is revoked
/// with the access tokens the family names.
fn revoke_issued(cfg: &Config, ctx: &mut Ctx<'_>, d: &CodeData) -> FlowResult<()> {
    if let Some(at) = &d.at {
        access_token::deny(cfg, ctx, at)?;
    }
    refresh_token::revoke_family(cfg, ctx, d.family.as_deref())
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
    let invalid = || OAuthError::invalid_grant("authorization code is invalid, expired or used");
    let h = Handle::decode(code).ok_or_else(invalid)?;
    let Some((rec, cas)) = store::peek::<CodeData>(ctx, cfg.rings.codes, &h)? else {
        return Err(invalid().into());
    };
    let read = (rec.clone(), cas);
    let used = rec.is_used();
    let data = rec.data;
    if data.req.client_id != client.client_id {
        return Err(
            OAuthError::invalid_grant("authorization code was issued to another client").into(),
        );
    }
    if used {
        revoke_issued(cfg, ctx, &data)?;
        return Err(invalid().into());
    }
    if form.get("redirect_uri") != Some(data.req.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        )
        .into());
    }
    if !client.is_confidential() && data.req.code_challenge.is_none() {
        return Err(OAuthError::invalid_grant("public clients must use PKCE").into());
    }
    pkce::verify(
        form.get("code_verifier"),
        data.req.code_challenge.as_deref(),
    )?;
    // RFC 9449 §10: a code bound to a key (dpop_jkt, or a proof at PAR) needs a proof by it.
    crate::dpop::require_key(data.req.dpop_jkt.as_deref(), proof, "authorization code")?;

    // The refresh family id and the access token's jti (derived from the family if there is
    // one) are drawn before the code is consumed so the used code can name them: a later
    // replay of the code then takes both down (even if it wins the race to write the family).
    let fam = if client.allows_grant(REFRESH_TOKEN) {
        Some(ctx.random_id()?)
    } else {
        None
    };
    let at = refresh_token::first_access_token(cfg, ctx, fam.as_deref())?;
    let data =
        match store::consume_read::<CodeData>(ctx, cfg.rings.codes, &h, Some(read), |d| CodeData {
            family: fam.clone(),
            at: Some(at.clone()),
            ..d.clone()
        })? {
            Consumed::Fresh(d) => d,
            Consumed::Replayed(d) => {
                // Lost the race to a concurrent redemption (or a replay): revoke what it issued.
                revoke_issued(cfg, ctx, &d)?;
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
            refresh_token::Grant {
                sub: data.sub.clone(),
                scope: data.req.scope.clone(),
                auth_time: data.auth_time,
                sid: data.sid.clone(),
                ad: data.req.authorization_details.clone(),
                res: data.req.resources.clone(),
            },
            proof,
        )?),
        None => None,
    };
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
