//! Device authorization grant (RFC 8628): the record a device request keeps, and polling at
//! the token endpoint (§3.4, §3.5).
//!
//! A request lives in the devices ring, addressed by its user_code (the user types that, so the
//! verification endpoint must find the record from it) — the record's key is derived from the
//! normalised user_code, the way refresh families are found. The device_code is a handle:
//! `base64url(slot ‖ 128-bit secret)`; the record keeps the secret's SHA-256.
//!
//! Polling, per §3.5:
//! - `authorization_pending` while the user has not decided;
//! - `slow_down` when polled faster than the interval, which then grows by 5 s for good;
//! - `access_denied` once denied, `expired_token` once expired;
//! - tokens exactly once (a CAS from approved to issued); any later poll: `invalid_grant`.

use crate::client::Client;
use crate::config::Config;
use crate::dpop::Proof;
use crate::error::{ErrorCode, OAuthError};
use crate::flow::{internal, Ctx, FlowResult, StoreResult};
use crate::form::Form;
use crate::http::Response;
use crate::store::{Handle, Record};

use crate::records::{DeviceData, Status};

use super::issue::{issue_as, Issue, IssueOpts};
use super::refresh_token;
use super::DEVICE_CODE;

pub fn handle(
    cfg: &Config,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let ring = cfg.rings.devices;
    if !client.allows_grant(DEVICE_CODE) {
        return Err(
            OAuthError::unauthorized_client("client is not allowed the device_code grant").into(),
        );
    }
    let code = form
        .get("device_code")
        .ok_or_else(|| OAuthError::invalid_request("device_code is missing"))?;
    let invalid = || OAuthError::invalid_grant("device_code is invalid");
    let h = Handle::decode(code).ok_or_else(invalid)?;
    if h.slot >= ring.size {
        return Err(invalid().into());
    }
    let key = ring.key(h.slot);
    let now = ctx.now.unix_ms;
    for _ in 0..3 {
        let (rec, cas) = match ctx.get(&key)? {
            StoreResult::Value {
                value: Some(v),
                cas,
            } => match serde_json::from_slice::<Record<DeviceData>>(&v) {
                Ok(r) if h.has_fingerprint(&r.data.dc) => (r, cas),
                _ => return Err(invalid().into()),
            },
            StoreResult::Value { .. } => return Err(invalid().into()),
            _ => {
                return Err(
                    OAuthError::server_error("the authorization server cannot store state").into(),
                )
            }
        };
        let d = &rec.data;
        if d.client_id != client.client_id {
            return Err(invalid().into());
        }
        if rec.expires_at_ms() <= now {
            return Err(
                OAuthError::new(ErrorCode::ExpiredToken, "the device_code has expired").into(),
            );
        }
        let next = match d.status {
            Status::Denied => {
                return Err(
                    OAuthError::new(ErrorCode::AccessDenied, "the user denied the request").into(),
                )
            }
            Status::Issued => {
                return Err(OAuthError::invalid_grant("the device_code was already used").into())
            }
            Status::Pending => {
                let too_fast = now < d.last_poll.saturating_add(d.interval.saturating_mul(1000));
                DeviceData {
                    interval: if too_fast { d.interval + 5 } else { d.interval },
                    last_poll: now,
                    ..d.clone()
                }
            }
            Status::Approved => DeviceData {
                status: Status::Issued,
                last_poll: now,
                ..d.clone()
            },
        };
        let bytes =
            serde_json::to_vec(&rec.with_data(next.clone())).map_err(|_| internal("encode"))?;
        match ctx.cas(&key, bytes, cas, rec.expires_at_ms())? {
            StoreResult::Written => {}
            StoreResult::Conflict => continue,
            _ => {
                return Err(
                    OAuthError::server_error("the authorization server cannot store state").into(),
                )
            }
        }
        match d.status {
            Status::Pending if next.interval > d.interval => {
                return Err(OAuthError::new(
                    ErrorCode::SlowDown,
                    "polling too fast: wait the interval (now 5 s longer)",
                )
                .into())
            }
            Status::Pending => {
                return Err(OAuthError::new(
                    ErrorCode::AuthorizationPending,
                    "the user has not decided yet",
                )
                .into())
            }
            _ => return tokens(cfg, client, d, proof, ctx),
        }
    }
    Err(OAuthError::server_error("the authorization server is busy, try again").into())
}

fn tokens(
    cfg: &Config,
    client: &Client,
    d: &DeviceData,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let sub = d
        .sub
        .clone()
        .ok_or_else(|| internal("approved without a user"))?;
    let refresh = refresh_token::first_token(
        cfg,
        ctx,
        client,
        refresh_token::Grant {
            sub: sub.clone(),
            scope: d.scope.clone(),
            auth_time: d.auth_time,
            sid: d.sid.clone(),
            ad: None,
            res: d.resources.clone(),
        },
        proof,
    )?;
    // The first access token of a grant with a refresh family takes its jti from the family.
    let jti = refresh_token::first_jti(refresh.as_ref());
    issue_as(
        cfg,
        Issue {
            client,
            sub: &sub,
            scope: &d.scope,
            auth_time: d.auth_time,
            sid: d.sid.as_deref(),
            nonce: None,
            id_token: d.scope.split(' ').any(|s| s == "openid"),
            authorization_details: None,
            resources: &d.resources,
            refresh,
            proof,
        },
        DEVICE_CODE,
        IssueOpts {
            jti,
            ..IssueOpts::default()
        },
        ctx,
    )
}
