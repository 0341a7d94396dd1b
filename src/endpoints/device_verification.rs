//! The device flow's verification endpoint (RFC 8628 §3.3): the user, authenticated by the
//! gateway as at the authorization endpoint, looks up a user_code and approves or denies it.
//! The filter has no pages: a UI (at `device.verification_uri`, or any client of this JSON API)
//! calls it.
//!
//! - `GET ?user_code=…` → what is asked: `{"user_code","client_id","client_name","scope","status"}`;
//! - `POST` form `user_code=…&action=approve|deny` → `{"status":"approved"|"denied"}`;
//!   the request must carry an `Origin` of the issuer or of the verification_uri (browsers
//!   send it on every POST; a cross-site form cannot fake it), so another site cannot approve
//!   on the user's behalf;
//! - no user: a redirect to `login_url` (GET) or `401 access_denied`;
//! - every lookup counts against `device.attempts` per user (`429` past it), so user_codes
//!   cannot be guessed.

use serde_json::json;

use crate::client::origin_of;
use crate::config::Config;
use crate::error::{ErrorCode, OAuthError};
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::http::{Outcome, Response};
use crate::records::{normalize_user_code, record_id, DeviceData, Status};
use crate::{rate_limit, store};

use super::{mime, FORM};

pub fn handle(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    let Some(dev) = &cfg.device else {
        return Err(OAuthError::invalid_request("the device flow is not enabled").into());
    };
    let post = req.method == "POST";
    let Some(user) = &req.user else {
        if let (false, Some(login)) = (post, &cfg.login_url) {
            let sep = if login.contains('?') { '&' } else { '?' };
            let back: String = percent_encoding::utf8_percent_encode(
                &req.path,
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string();
            let mut r = Response {
                status: 303,
                headers: vec![("location", format!("{login}{sep}return_to={back}"))],
                body: Vec::new(),
                outcome: Outcome::Served,
                forward: None,
                cause: None,
            };
            r.no_store();
            return Ok(r);
        }
        return Err(
            OAuthError::new(ErrorCode::AccessDenied, "the user is not authenticated")
                .with_status(401)
                .with_challenge(crate::error::challenge::BEARER)
                .into(),
        );
    };
    let form = if post {
        if mime(&req.headers)? != FORM {
            return Err(OAuthError::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded",
            )
            .into());
        }
        let origin = req
            .headers
            .single("origin")
            .map_err(|_| OAuthError::invalid_request("Origin repeated"))?
            .unwrap_or("");
        let allowed = [origin_of(&cfg.issuer), origin_of(&dev.verification_uri)];
        if !allowed.contains(&Some(origin)) {
            return Err(OAuthError::invalid_request("Origin is not allowed")
                .with_status(403)
                .into());
        }
        Form::parse(&req.body)?
    } else {
        Form::parse(req.query().as_bytes())?
    };
    let code = form
        .get("user_code")
        .map(normalize_user_code)
        .filter(|c| !c.is_empty() && c.len() <= 32)
        .ok_or_else(|| OAuthError::invalid_request("user_code is missing"))?;
    // Guessing user codes: counted or refused, never let through uncounted.
    rate_limit::hit(
        ctx,
        cfg.counters(),
        &format!("device-user\0{}", user.sub),
        dev.attempts,
        rate_limit::Full::Refuse,
    )?;
    let unknown = || OAuthError::invalid_request("the user_code is unknown or expired");
    let action = if post {
        match form.get("action") {
            Some("approve") => Some(Status::Approved),
            Some("deny") => Some(Status::Denied),
            _ => return Err(OAuthError::invalid_request("action must be approve or deny").into()),
        }
    } else {
        None
    };
    for _ in 0..3 {
        let Some(found) =
            store::find_keyed::<DeviceData>(ctx, cfg.rings.devices, &record_id(&code))?
        else {
            return Err(unknown().into());
        };
        let d = &found.record.data;
        let Some(decision) = &action else {
            let lookup = ctx.client(&d.client_id)?;
            let client = lookup.found(unknown())?;
            let body = json!({
                "user_code": code,
                "client_id": d.client_id,
                "client_name": client.name,
                "scope": d.scope,
                "status": d.status,
            });
            return Ok(json_answer(&body));
        };
        if d.status != Status::Pending {
            return Err(OAuthError::invalid_request("this request was already decided").into());
        }
        let next = DeviceData {
            status: decision.clone(),
            sub: (*decision == Status::Approved).then(|| user.sub.clone()),
            auth_time: user.auth_time,
            sid: (*decision == Status::Approved).then(|| user.sid()),
            ..d.clone()
        };
        if store::update_keyed(ctx, cfg.rings.devices, &found, &next)? {
            let status = if *decision == Status::Approved {
                "approved"
            } else {
                "denied"
            };
            return Ok(json_answer(&json!({ "status": status })));
        }
    }
    Err(OAuthError::server_error("the authorization server is busy, try again").into())
}

fn json_answer(v: &serde_json::Value) -> Response {
    let mut r = Response::json(200, v.to_string().into_bytes(), Outcome::Served);
    r.no_store();
    r
}
