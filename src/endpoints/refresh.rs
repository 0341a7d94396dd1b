//! `POST /oauth/refresh` (seeds 001 and 004): a browser client's refresh, with the refresh
//! token in the HttpOnly cookie the token endpoint set, and a JSON body `{}`.
//!
//! Cross-site use is refused three ways: the cookie is `SameSite=Strict`; the request must be
//! `application/json` (a cross-site form post cannot send that without a CORS preflight); and
//! its `Origin` must be one of the client's (its redirect_uris' origins or allowed_origins).
//! Statuses as the seeds say: 400 invalid_request, 401 invalid_grant.

use crate::config::Config;
use crate::error::{ErrorCode, OAuthError};
use crate::flow::{Ctx, FlowResult, Interrupt, Request};
use crate::grants::issue::{refresh_cookie, IssueOpts};
use crate::grants::refresh_token;
use crate::grants::REFRESH_TOKEN;
use crate::http::Response;
use crate::sealed;

use super::{mime, JSON};

pub fn handle(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    match run(cfg, req, ctx) {
        // Seed 001: a refresh token that does not work is 401 invalid_grant; and the cookie that
        // holds it is cleared.
        Err(Interrupt::Error(e)) if e.code == ErrorCode::InvalidGrant => {
            let mut r = e
                .with_status(401)
                .with_challenge(crate::error::challenge::COOKIE)
                .into_response();
            r.headers.push(("set-cookie", refresh_cookie(cfg, "", 0)));
            Ok(r)
        }
        other => other,
    }
}

fn run(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    if mime(&req.headers)? != JSON {
        return Err(OAuthError::invalid_request("Content-Type must be application/json").into());
    }
    let body: serde_json::Value = serde_json::from_slice(&req.body)
        .map_err(|_| OAuthError::invalid_request("body must be a JSON object ({})"))?;
    if !body.is_object() {
        return Err(OAuthError::invalid_request("body must be a JSON object ({})").into());
    }
    let origin = req
        .headers
        .single("origin")
        .map_err(|_| OAuthError::invalid_request("Origin repeated"))?
        .ok_or_else(|| OAuthError::invalid_request("Origin is required"))?;
    let token = cookie(&req.headers, &cfg.refresh_cookie_name)
        .ok_or_else(|| OAuthError::invalid_request("refresh token cookie is missing"))?;
    let claims = sealed::open(&cfg.keys, &token)?;
    let lookup = ctx.client(&claims.cid)?;
    let client = lookup.found(OAuthError::invalid_grant(
        "refresh token is invalid or expired",
    ))?;
    ctx.cors_client = Some(client.clone());
    if !client.refresh_token_cookie || !client.allows_grant(REFRESH_TOKEN) {
        return Err(OAuthError::invalid_grant("refresh token is invalid or expired").into());
    }
    if !client.allows_origin(origin) {
        return Err(OAuthError::invalid_request("Origin is not allowed for this client").into());
    }
    // Sender-constrained grants are refreshed at the token endpoint with a DPoP proof, never
    // with a cookie alone.
    if claims.jkt.is_some()
        || client.dpop_bound_access_tokens
        || cfg.profile == crate::config::Profile::Fapi2
    {
        return Err(OAuthError::invalid_grant(
            "this refresh token needs a DPoP proof at the token endpoint",
        )
        .into());
    }
    // A certificate-bound grant only over a connection with that certificate (RFC 8705 §3).
    crate::grants::refresh_token::require_cert(claims.x5t.as_deref(), ctx)?;
    // The grant's resources, if the client may still ask for them (before rotating).
    let resources = crate::rar::narrow(&claims.res, &[], &client)?;
    let scope = claims.scope.clone();
    // Seeds 001/004's literal contract, for clients registered for it: the new refresh token in
    // the JSON too (the cookie still carries it).
    let opts = IssueOpts {
        refresh_in_body: client.refresh_endpoint_returns_refresh_token,
        ..IssueOpts::default()
    };
    refresh_token::refresh(cfg, &client, claims, scope, resources, None, opts, ctx)
}

/// The value of one cookie from the Cookie header(s) (RFC 6265 §5.4).
fn cookie(headers: &crate::http::Headers, name: &str) -> Option<String> {
    headers
        .all("cookie")
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}
