//! `POST /oauth/device_authorization` (RFC 8628 §3.1, §3.2): a device asks for a user_code and a
//! device_code. The client authenticates as at the token endpoint (public clients name
//! themselves) and must be registered for the device_code grant.
//!
//! user_codes (§6.1): `user_code_length` characters (8 by default) from a 20-consonant alphabet,
//! shown as `XXXX-XXXX`: 20^8 ≈ 2^34.6 codes, of which at most the devices ring's size are live,
//! and verification attempts are limited per user — guessing a live code is out of reach.

use serde::Serialize;

use crate::config::Config;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::grants::DEVICE_CODE;
use crate::http::{Outcome, Response};
use crate::records::{record_id, DeviceData, Status, ALPHABET};
use crate::ring_share::{self, Kind, Owner};
use crate::store::{self, Handle};
use crate::{rar, scope};

use super::{authenticate_client, mime, FORM};

#[derive(Serialize)]
struct Body<'a> {
    device_code: String,
    user_code: &'a str,
    verification_uri: &'a str,
    verification_uri_complete: String,
    expires_in: u64,
    interval: u64,
}

pub fn handle(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    let Some(dev) = &cfg.device else {
        return Err(OAuthError::invalid_request("the device flow is not enabled").into());
    };
    if mime(&req.headers)? != FORM {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let form = Form::parse(&req.body)?;
    let client = authenticate_client(cfg, ctx, &req.headers, &form)?;
    if !client.allows_grant(DEVICE_CODE) {
        return Err(
            OAuthError::unauthorized_client("client is not allowed the device_code grant").into(),
        );
    }
    let granted = scope::grant(form.get("scope"), &client.scope)?;
    let resources: Vec<String> = form.get_all("resource").map(str::to_string).collect();
    rar::check_allowed(&resources, &client)?;
    let ttl = crate::duration::millis(dev.lifetime);
    ring_share::charge(cfg, ctx, Kind::DeviceRequest, Owner::Client(&client))?;
    let secret = Handle::fresh(ctx, 0)?;
    // A new user_code colliding with a live one is possible but rare: draw again.
    for _ in 0..4 {
        let user_code = user_code(ctx, dev.user_code_length)?;
        let data = DeviceData {
            dc: secret.fingerprint(),
            client_id: client.client_id.clone(),
            scope: granted.clone(),
            resources: resources.clone(),
            status: Status::Pending,
            interval: dev.interval.as_secs(),
            last_poll: 0,
            sub: None,
            auth_time: None,
            sid: None,
        };
        let slot = match store::find_or_insert_keyed(
            ctx,
            cfg.rings.devices,
            &record_id(&user_code),
            ttl,
            &data,
        )? {
            Ok(slot) => slot,
            Err(_) => continue,
        };
        let shown = display(&user_code);
        let sep = if dev.verification_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        let body = serde_json::to_vec(&Body {
            device_code: secret.at_slot(slot).encode(),
            user_code: &shown,
            verification_uri: &dev.verification_uri,
            verification_uri_complete: format!("{}{sep}user_code={shown}", dev.verification_uri),
            expires_in: dev.lifetime.as_secs(),
            interval: dev.interval.as_secs(),
        })
        .map_err(|e| OAuthError::internal(format!("device authorization response: {e}")))?;
        let mut r = Response::json(200, body, Outcome::Issued("device_authorization"));
        r.no_store();
        return Ok(r);
    }
    Err(OAuthError::server_error("the authorization server is busy, try again").into())
}

/// Uniform characters from the alphabet (rejection sampling: no modulo bias).
fn user_code(ctx: &mut Ctx<'_>, len: usize) -> FlowResult<String> {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut b = [0u8; 16];
        ctx.random(&mut b)?;
        for x in b {
            // 240 = 12 × 20: values below it map uniformly.
            if x < 240 && out.len() < len {
                if let Some(c) = ALPHABET.get(usize::from(x % 20)) {
                    out.push(char::from(*c));
                }
            }
        }
    }
    Ok(out)
}

/// `BCDF-GHJK`: halves joined by a dash, easier to read and type.
fn display(code: &str) -> String {
    let mid = code.len() / 2;
    match (code.get(..mid), code.get(mid..)) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => code.to_string(),
    }
}
