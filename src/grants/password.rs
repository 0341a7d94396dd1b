//! Resource owner password credentials (RFC 6749 §4.3, seed 003). OAuth 2.1 drops this grant:
//! it is off unless `password_grant` is configured, and then only for clients that list
//! `password` in their `grant_types`.
//!
//! The filter never checks or keeps passwords itself: it asks a configured upstream,
//! `POST {password_grant.path}` on `password_grant.cluster` with
//! `{"username","password","client_id"}`, which answers `200 {"sub": …}` for good credentials
//! and 401/403/404 for bad ones; anything else (5xx, a reset, a timeout, garbage) is a clean
//! `server_error`. Failures are counted per username (`password_grant.failures`) and per
//! client (ten times that) in the rate-limit ring; past either the grant answers 429 without
//! asking the upstream.

use serde::Deserialize;

use crate::client::Client;
use crate::config::Config;
use crate::dpop::Proof;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::form::Form;
use crate::http::Call;
use crate::http::Response;
use crate::{rate_limit, scope};

use super::issue::{issue_as, Issue, IssueOpts};
use super::refresh_token;
use super::PASSWORD;

pub fn handle(
    cfg: &Config,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let Some(pw) = &cfg.password_grant else {
        return Err(OAuthError::unsupported_grant_type("grant_type is not supported").into());
    };
    if !client.allows_grant(PASSWORD) {
        return Err(
            OAuthError::unauthorized_client("client is not allowed the password grant").into(),
        );
    }
    let username = form
        .get("username")
        .filter(|u| !u.is_empty() && u.len() <= 256)
        .ok_or_else(|| OAuthError::invalid_request("username is missing"))?;
    let password = form
        .get("password")
        .filter(|p| p.len() <= 1024)
        .ok_or_else(|| OAuthError::invalid_request("password is missing"))?;
    let granted = scope::grant(form.get("scope"), &client.scope)?;
    let counters = cfg.counters();
    let by_user = format!("password-user\0{username}");
    let by_client = format!("password-client\0{}", client.client_id);
    // A client (one app, many users) may fail ten times as often as one username.
    let per_client = crate::config::Limit {
        requests: pw.failures.requests.saturating_mul(10),
        window: pw.failures.window,
    };
    let limits = [(&by_user, pw.failures), (&by_client, per_client)];
    for (what, limit) in limits {
        if let Some(retry) = rate_limit::exceeded(ctx, counters, what, limit)? {
            return Err(OAuthError::rate_limited(retry).into());
        }
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "username": username,
        "password": password,
        "client_id": client.client_id,
    }))
    .map_err(|e| OAuthError::internal(format!("the credential check request: {e}")))?;
    let answer = ctx.http(Call {
        cluster: pw.cluster.clone(),
        headers: vec![
            (":method", "POST".into()),
            (":path", pw.path.clone()),
            (":authority", pw.authority.clone()),
            ("content-type", "application/json".into()),
            ("user-agent", "oauth-edge".into()),
        ],
        timeout: pw.timeout,
        body: Some(body),
    })?;
    #[derive(Deserialize)]
    struct Verdict {
        sub: String,
        #[serde(default)]
        auth_time: Option<u64>,
    }
    let verdict = match answer.status {
        Some(200) => serde_json::from_slice::<Verdict>(&answer.body)
            .ok()
            .filter(|v| !v.sub.is_empty() && v.sub.len() <= 255)
            .ok_or_else(|| {
                OAuthError::server_error("the credential service answered something unreadable")
            })?,
        Some(401 | 403 | 404) => {
            for (what, limit) in limits {
                // Counting only: the 429 comes on the next attempt.
                if let Err(crate::flow::Interrupt::Need(n)) =
                    rate_limit::hit(ctx, counters, what, limit, rate_limit::Full::Refuse)
                {
                    return Err(crate::flow::Interrupt::Need(n));
                }
            }
            return Err(OAuthError::invalid_grant("the username or password is wrong").into());
        }
        _ => return Err(OAuthError::server_error("the credential service is unavailable").into()),
    };
    let refresh = refresh_token::first_token(
        cfg,
        ctx,
        client,
        refresh_token::Grant {
            sub: verdict.sub.clone(),
            scope: granted.clone(),
            auth_time: verdict.auth_time,
            sid: None,
            ad: None,
            res: Vec::new(),
        },
        proof,
    )?;
    // The first access token of a grant with a refresh family takes its jti from the family.
    let jti = refresh_token::first_jti(refresh.as_ref());
    issue_as(
        cfg,
        Issue {
            client,
            sub: &verdict.sub,
            scope: &granted,
            auth_time: verdict.auth_time,
            sid: None,
            nonce: None,
            id_token: false,
            authorization_details: None,
            resources: &[],
            refresh,
            proof,
        },
        PASSWORD,
        IssueOpts {
            jti,
            ..IssueOpts::default()
        },
        ctx,
    )
}
