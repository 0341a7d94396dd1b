//! Issuing the tokens of a user grant (authorization code, refresh): the access token, an ID
//! token when `openid` was granted, a sealed refresh token, and the answer — with the refresh
//! token in an HttpOnly cookie instead of the body for browser clients that are registered so.

use serde_json::Value;

use crate::client::Client;
use crate::config::Config;
use crate::dpop::Proof;
use crate::flow::{Ctx, FlowResult};
use crate::http::Response;
use crate::oidc::{self, IdTokenClaims};
use crate::sealed::{self, RefreshClaims};
use crate::token_answer::TokenAnswer;

pub struct Issue<'a> {
    pub client: &'a Client,
    pub sub: &'a str,
    pub scope: &'a str,
    pub auth_time: Option<u64>,
    /// The login session (the ID token's `sid`), for grants of a logged-in user.
    pub sid: Option<&'a str>,
    /// The ID token's nonce; `Some` only on the code grant (OIDC Core §3.1.3.6).
    pub nonce: Option<&'a str>,
    pub id_token: bool,
    pub authorization_details: Option<&'a Value>,
    pub resources: &'a [String],
    /// The refresh token to seal, if one is issued.
    pub refresh: Option<RefreshClaims>,
    /// The DPoP proof of the request: the access token is bound to its key.
    pub proof: Option<&'a Proof>,
}

pub fn issue(
    cfg: &Config,
    g: Issue<'_>,
    grant_type: &'static str,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    issue_as(cfg, g, grant_type, IssueOpts::default(), ctx)
}

/// What only some callers need of [`issue_as`].
#[derive(Default)]
pub struct IssueOpts {
    /// The access token's `jti`, drawn by the caller before it wrote a record naming it (a
    /// code's, a refresh family's); else a fresh one.
    pub jti: Option<String>,
    /// A cookie client's refresh token also in the JSON (`/oauth/refresh` for clients with
    /// `refresh_endpoint_returns_refresh_token`).
    pub refresh_in_body: bool,
}

pub fn issue_as(
    cfg: &Config,
    g: Issue<'_>,
    grant_type: &'static str,
    opts: IssueOpts,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let now = ctx.now.secs();
    let minted = crate::mint::access_token(
        cfg,
        crate::mint::AccessGrant {
            client: g.client,
            sub: g.sub,
            scope: g.scope,
            resources: g.resources,
            auth_time: g.auth_time,
            authorization_details: g.authorization_details,
            act: None,
            proof: g.proof,
            not_after: None,
            jti: opts.jti,
        },
        ctx,
    )?;
    let access_token = minted.token;
    let id_token = if g.id_token {
        let key = oidc::key_for(&cfg.keys, g.client)?;
        Some(oidc::sign(
            key,
            &IdTokenClaims {
                iss: &cfg.issuer,
                sub: g.sub,
                aud: &g.client.client_id,
                exp: now.saturating_add(cfg.lifetimes.id_token.as_secs()),
                iat: now,
                auth_time: g.auth_time,
                nonce: g.nonce,
                sid: g.sid,
                at_hash: &oidc::at_hash(key.alg, &access_token),
                azp: &g.client.client_id,
            },
        )?)
    } else {
        None
    };
    let refresh = match &g.refresh {
        Some(claims) => Some((sealed::seal(&cfg.keys, claims, ctx)?, claims.exp)),
        None => None,
    };
    let in_cookie = g.client.refresh_token_cookie;
    let mut resp = TokenAnswer {
        access_token: &access_token,
        token_type: "",
        expires_in: minted.expires_in,
        scope: g.scope,
        refresh_token: if in_cookie && !opts.refresh_in_body {
            None
        } else {
            refresh.as_ref().map(|(t, _)| t.as_str())
        },
        id_token: id_token.as_deref(),
        authorization_details: g.authorization_details,
        ..Default::default()
    }
    .bound(g.proof)
    .into_response(grant_type);
    if let (true, Some((rt, exp))) = (in_cookie, &refresh) {
        resp.headers.push((
            "set-cookie",
            refresh_cookie(cfg, rt, exp.saturating_sub(now)),
        ));
    }
    Ok(resp)
}

/// `Secure; HttpOnly; SameSite=Strict`, scoped to the refresh endpoint's path.
pub fn refresh_cookie(cfg: &Config, value: &str, max_age: u64) -> String {
    let c = cfg;
    format!(
        "{}={}; Path={}; Max-Age={}; Secure; HttpOnly; SameSite=Strict",
        c.refresh_cookie_name,
        value,
        c.endpoints.path(crate::config::Endpoint::Refresh),
        max_age
    )
}
