//! Refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).
//!
//! A refresh token is sealed and self-contained (`crate::sealed`): any instance with the same
//! configuration can open it, also after a restart. Rotation state lives in a family record in
//! the store (`crate::families`; `gen`: the generation of the newest token):
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
//! The family record does not list the access tokens issued from the grant: their `jti`s are
//! derived from the family id and an issue counter the record keeps (`n`, see
//! [`access_token_jti`]). Revoking the family (a replayed code, reuse detected, RFC 7009
//! revocation) puts the newest [`DENIED_ON_REVOKE`] of them on the deny-list, so introspection and
//! token exchange see them inactive at once (RFC 6749 §4.1.2: "revoke (when possible) all tokens
//! previously issued based on that authorization code").

use hmac::{KeyInit, Mac};

use crate::access_token::{self, Issued};
use crate::client::Client;
use crate::config::Config;
use crate::config::Profile;
use crate::dpop::Proof;
use crate::error::OAuthError;
use crate::families::{self, Family, Found};
use crate::flow::{Ctx, FlowResult, Interrupt};
use crate::form::Form;
use crate::http::Response;
use crate::scope;
use crate::sealed::{self, RefreshClaims};

use super::issue::{issue_as, Issue, IssueOpts};
use super::REFRESH_TOKEN;
use crate::mint;

/// How many of a family's newest access tokens a revocation denies: the `n`-th and the three
/// before it. A client refreshes about once per access token lifetime, so one or two are live
/// at a time; a family refreshed faster than four times per lifetime leaves its older ones to
/// live out their lifetime (minutes).
pub const DENIED_ON_REVOKE: u64 = 4;

/// The `jti` of the `n`-th access token issued from family `fam` (0: the grant's first, then
/// +1 per refresh, grace and non-rotating ones included): HMAC-SHA256 keyed by the family id,
/// 128 bits, base64url — the length of a random `jti`. The family id is a 128-bit secret only
/// the server knows (it travels sealed), so nobody else can tell which tokens share a grant or
/// predict the next `jti`; and because no configuration key is involved, a signing key rotation
/// does not change the `jti`s a later revocation denies.
pub fn access_token_jti(fam: &str, n: u64) -> String {
    use base64::Engine as _;
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(fam.as_bytes()) else {
        // HMAC takes keys of any length; not reached.
        return String::new();
    };
    mac.update(b"oauth-edge/family-access-token/v1\0");
    mac.update(&n.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.get(..16).unwrap_or(&[]))
}

/// The `jti` and expiry of the first access token of a grant, drawn before the records that
/// name it are written: derived from its refresh family if it has one, else random.
pub fn first_access_token(
    cfg: &Config,
    ctx: &mut Ctx<'_>,
    fam: Option<&str>,
) -> FlowResult<Issued> {
    let jti = match fam {
        Some(fam) => access_token_jti(fam, 0),
        None => mint::new_jti(ctx)?,
    };
    let exp = ctx
        .now
        .secs()
        .saturating_add(cfg.lifetimes.access_token.as_secs());
    Ok(Issued(jti, exp))
}

/// The `jti` of the access token issued with a grant's first refresh token (none: random).
pub fn first_jti(refresh: Option<&RefreshClaims>) -> Option<String> {
    refresh.map(|c| access_token_jti(&c.fam, 0))
}

pub fn handle(
    cfg: &Config,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let token = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let claims = sealed::open(&cfg.keys, token)?;
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
    require_cert(claims.x5t.as_deref(), ctx)?;
    refresh(
        cfg,
        client,
        claims,
        scope,
        resources,
        proof,
        IssueOpts::default(),
        ctx,
    )
}

/// A refresh: checks the token against its family, counts the new access token there, and
/// issues the new tokens (`opts.jti` is set here, derived from the count). `res`: the new access
/// token's resources (among the grant's, RFC 8707 §2.2).
#[allow(clippy::too_many_arguments)]
pub fn refresh(
    cfg: &Config,
    client: &Client,
    claims: RefreshClaims,
    scope: String,
    res: Vec<String>,
    proof: Option<&Proof>,
    opts: IssueOpts,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let rotating = rotates(cfg, client);
    let (next, n) = rotate(cfg, client, claims, rotating, ctx)?;
    let opts = IssueOpts {
        jti: Some(access_token_jti(&next.fam, n)),
        ..opts
    };
    issue_rotated(cfg, client, next, rotating, scope, res, proof, opts, ctx)
}

/// The tokens of a refresh: a new access token (with `scope` and `res`, which may be narrower
/// than the grant's) and, if the family rotates, the successor refresh token (for the whole
/// grant; without one the client keeps the token it holds: RFC 6749 §6).
#[allow(clippy::too_many_arguments)]
pub fn issue_rotated(
    cfg: &Config,
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
    let sid = next.sid.clone();
    let ad = next.ad.clone();
    issue_as(
        cfg,
        Issue {
            client,
            sub: &sub,
            scope: &scope,
            auth_time,
            sid: sid.as_deref(),
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

/// RFC 8705 §3: a refresh token bound to a TLS client certificate is used only over a
/// connection with that certificate.
pub fn require_cert(x5t: Option<&str>, ctx: &Ctx<'_>) -> FlowResult<()> {
    let Some(x5t) = x5t else { return Ok(()) };
    match ctx.client_cert() {
        Some(c) if c.thumbprint() == x5t => Ok(()),
        _ => Err(OAuthError::invalid_grant(
            "the refresh token is bound to a TLS client certificate this request did not present",
        )
        .into()),
    }
}

/// Whether a refresh hands out a new refresh token. Under the FAPI 2.0 profile a confidential
/// client's is not rotated (FAPI 2.0 Security Profile §5.3.2.1: no rotation unless a retry with
/// the previous token succeeds; RFC 9700 §4.14.2: a refresh token bound to the client's
/// authentication needs no rotation): a client that lost an answer retries with the token it
/// holds, at any time. Every client there is confidential (private_key_jwt only).
pub fn rotates(cfg: &Config, client: &Client) -> bool {
    !(cfg.profile == Profile::Fapi2 && client.is_confidential())
}

/// Checks a refresh token against its family and returns the claims of its successor (of the
/// token itself if `rotate` is false: it stays valid) and the index `n` of the access token the
/// refresh issues, counted in the family (its `jti`: [`access_token_jti`]).
///
/// The grace of `refresh_token_reuse_interval` (a lost answer retried): within that time after
/// a rotation, the previous token gets the current generation once more. Once per generation
/// (the record marks a generation it handed out twice), and never for a generation that was
/// itself handed out twice: two holders of neighbouring generations (a thief and the client)
/// would otherwise take turns forever inside the window, each grace giving the other's next
/// token a twin. So the second holder to use such a twin trips reuse detection; the price is
/// that two lost answers in a row end the family.
pub fn rotate(
    cfg: &Config,
    client: &Client,
    claims: RefreshClaims,
    rotate: bool,
    ctx: &mut Ctx<'_>,
) -> FlowResult<(RefreshClaims, u64)> {
    let ring = cfg.rings.families;
    let now_ms = ctx.now.unix_ms;
    if claims.exp.saturating_mul(1000) <= now_ms {
        return Err(OAuthError::invalid_grant("refresh token is invalid or expired").into());
    }
    // RP-initiated logout of the login session the grant was made in ends the family.
    if let Some(sid) = &claims.sid {
        if crate::session::ended_since(cfg, ctx, sid, claims.iat)? {
            revoke_family(cfg, ctx, Some(&claims.fam))?;
            return Err(OAuthError::invalid_grant(
                "the login session of this refresh token has ended",
            )
            .into());
        }
    }
    let reuse = || OAuthError::invalid_grant("refresh token reuse detected: the grant is revoked");
    let gen = if rotate {
        claims.gen.saturating_add(1)
    } else {
        claims.gen
    };
    // A few rounds: a lost CAS means a concurrent rotation or insert; the next read sees it.
    for _ in 0..3 {
        let Some(found) = families::find(ctx, ring, &claims.fam)? else {
            // No record here (a restart, or a token from another instance): record this
            // family now, so a second presentation of the same token is caught as reuse. The
            // access tokens issued before are unknown here: counting from a random point keeps
            // this one's `jti` from repeating one of theirs.
            let mut r = [0u8; 8];
            ctx.random(&mut r)?;
            let fresh = Family {
                gen,
                n: u64::from_be_bytes(r),
                exp: claims.exp,
                rotated_at: now_ms,
                revoked: false,
                twice_current: false,
                twice_previous: false,
            };
            match families::find_or_insert(ctx, ring, &claims.fam, &fresh)? {
                None => return Ok((RefreshClaims { gen, ..claims }, fresh.n)),
                Some(_) => continue,
            }
        };
        let d = found.family;
        if d.revoked {
            return Err(OAuthError::invalid_grant("refresh token has been revoked").into());
        }
        let n = d.n.wrapping_add(1);
        if claims.gen < d.gen {
            let grace_ms = client.refresh_token_reuse_interval.saturating_mul(1000);
            if grace_ms > 0
                && claims.gen.saturating_add(1) == d.gen
                && now_ms <= d.rotated_at.saturating_add(grace_ms)
                && !d.twice_current
                && !d.twice_previous
            {
                // The answer to the rotation was lost: hand out the current generation again.
                let again = Family {
                    n,
                    twice_current: true,
                    ..d
                };
                if families::update(ctx, ring, &found, &again)? {
                    return Ok((
                        RefreshClaims {
                            gen: d.gen,
                            ..claims
                        },
                        n,
                    ));
                }
                continue;
            }
            revoke_found(cfg, ctx, &claims.fam, found)?;
            return Err(reuse().into());
        }
        let next = Family {
            n,
            rotated_at: if rotate { now_ms } else { d.rotated_at },
            ..d.at_gen(gen)
        };
        if families::update(ctx, ring, &found, &next)? {
            return Ok((RefreshClaims { gen, ..claims }, n));
        }
    }
    Err(reuse().into())
}

/// Marks a found family revoked (reading it again if it changed meanwhile), then puts its
/// newest access tokens on the deny-list.
fn revoke_found(cfg: &Config, ctx: &mut Ctx<'_>, fam: &str, found: Found) -> FlowResult<()> {
    let ring = cfg.rings.families;
    let mut found = found;
    for _ in 0..3 {
        let d = found.family;
        let revoked = Family { revoked: true, ..d };
        if d.revoked || families::update(ctx, ring, &found, &revoked)? {
            return deny_issued(cfg, ctx, fam, d.n);
        }
        match families::find(ctx, ring, fam)? {
            Some(again) => found = again,
            None => return Ok(()),
        }
    }
    Err(Interrupt::Error(OAuthError::server_error(
        "the authorization server is busy, try again",
    )))
}

/// Denies the access tokens `n - 3 ..= n` of family `fam` until they expire at the latest (now
/// plus the access token lifetime: when each was issued is not kept).
fn deny_issued(cfg: &Config, ctx: &mut Ctx<'_>, fam: &str, n: u64) -> FlowResult<()> {
    let exp = ctx
        .now
        .secs()
        .saturating_add(cfg.lifetimes.access_token.as_secs());
    for i in n.saturating_sub(DENIED_ON_REVOKE - 1)..=n {
        access_token::deny(cfg, ctx, &Issued(access_token_jti(fam, i), exp))?;
    }
    Ok(())
}

/// What the first refresh token of a new grant is for.
pub struct Grant {
    pub sub: String,
    pub scope: String,
    pub auth_time: Option<u64>,
    /// The login session the grant was made in, if a user logged in for it.
    pub sid: Option<String>,
    pub ad: Option<serde_json::Value>,
    pub res: Vec<String>,
}

/// Starts the refresh-token family `fam` of a new grant: its record in the families ring
/// (counting the grant's first access token, whose `jti` is `access_token_jti(fam, 0)`), and the
/// claims of its first token. A public client's token is bound to the DPoP key of the request,
/// if it sent a proof (RFC 9449 §5).
pub fn start_family(
    cfg: &Config,
    ctx: &mut Ctx<'_>,
    client: &Client,
    fam: String,
    grant: Grant,
    proof: Option<&crate::dpop::Proof>,
) -> FlowResult<RefreshClaims> {
    let (family, claims) = new_family(cfg, ctx, client, fam, grant, proof)?;
    families::insert_new(ctx, cfg.rings.families, &claims.fam, &family)?;
    Ok(claims)
}

/// What [`start_family`] records and the claims of the family's first token, without writing
/// the record (a caller that writes it in a transaction of its own).
pub fn new_family(
    cfg: &Config,
    ctx: &mut Ctx<'_>,
    client: &Client,
    fam: String,
    grant: Grant,
    proof: Option<&crate::dpop::Proof>,
) -> FlowResult<(Family, RefreshClaims)> {
    let now_ms = ctx.now.unix_ms;
    let ttl_ms = crate::duration::millis(cfg.lifetimes.refresh_token);
    let exp = now_ms.saturating_add(ttl_ms) / 1000;
    let family = Family {
        gen: 0,
        n: 0,
        exp,
        rotated_at: now_ms,
        revoked: false,
        twice_current: false,
        twice_previous: false,
    };
    let claims = RefreshClaims {
        fam,
        gen: 0,
        cid: client.client_id.clone(),
        sub: grant.sub,
        scope: grant.scope,
        exp,
        auth_time: grant.auth_time,
        sid: grant.sid,
        iat: now_ms / 1000,
        ad: grant.ad,
        res: grant.res,
        jkt: if client.is_confidential() {
            None
        } else {
            proof.map(|p| p.jkt.clone())
        },
        x5t: if client.is_confidential() {
            None
        } else {
            crate::mint::cert_binding(client, ctx)?
        },
    };
    Ok((family, claims))
}

/// [`start_family`] with a new family id, if the client may refresh at all. The grant's first
/// access token then takes its `jti` from the family: [`first_jti`].
pub fn first_token(
    cfg: &Config,
    ctx: &mut Ctx<'_>,
    client: &Client,
    grant: Grant,
    proof: Option<&crate::dpop::Proof>,
) -> FlowResult<Option<RefreshClaims>> {
    if !client.allows_grant(REFRESH_TOKEN) {
        return Ok(None);
    }
    let fam = ctx.random_id()?;
    start_family(cfg, ctx, client, fam, grant, proof).map(Some)
}

/// Revokes a family by id (a replayed code: RFC 6749 §4.1.2; a revoked refresh token: RFC 7009)
/// and denies its newest access tokens. If it has no record yet (the winner of a race has not
/// written it; or this process never saw it), a revoked one is written first, so the winner
/// finds it.
pub fn revoke_family(cfg: &Config, ctx: &mut Ctx<'_>, fam: Option<&str>) -> FlowResult<()> {
    let Some(fam) = fam else { return Ok(()) };
    let now_ms = ctx.now.unix_ms;
    let ttl = crate::duration::millis(cfg.lifetimes.refresh_token);
    let tombstone = Family {
        gen: 0,
        n: 0,
        exp: now_ms.saturating_add(ttl) / 1000,
        rotated_at: now_ms,
        revoked: true,
        twice_current: false,
        twice_previous: false,
    };
    match families::find_or_insert(ctx, cfg.rings.families, fam, &tombstone)? {
        None => Ok(()),
        Some(found) => revoke_found(cfg, ctx, fam, found),
    }
}
