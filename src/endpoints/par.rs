//! `POST /oauth/pushed-authorization` (RFC 9126, seed 002): the client pushes its authorization
//! request over the back channel, authenticated, and gets a one-time `request_uri`.
//! Takes the seed's JSON body and the RFC's form body. Answers 201 (seed 002).

use serde::Serialize;

use crate::authz::RawAuthz;
use crate::config::Config;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::http::{Outcome, Response};
use crate::ring_share::{self, Kind, Owner};
use crate::{dpop, store};

use super::{authenticate_client, mime, FORM, JSON};

pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

pub fn handle(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    let (raw, form) = match mime(&req.headers)?.as_str() {
        JSON => {
            let (raw, form) = RawAuthz::from_json(&req.body)?;
            // Seed 002's schema (dto.PushedAuthorizationRequest) requires `scope`; only the
            // form body (RFC 9126) keeps RFC 6749 §3.3's optional scope.
            if raw.scope.as_deref().is_none_or(|s| s.trim().is_empty()) {
                return Err(OAuthError::invalid_request(
                    "scope is required in a JSON pushed authorization request",
                )
                .into());
            }
            (raw, form)
        }
        FORM => {
            let form = Form::parse(&req.body)?;
            (RawAuthz::from_form(&form)?, form)
        }
        _ => {
            return Err(OAuthError::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded or application/json",
            )
            .into())
        }
    };
    // §2.1: request_uri must not be pushed.
    if raw.request_uri.is_some() {
        return Err(
            OAuthError::invalid_request("request_uri is not allowed in a pushed request").into(),
        );
    }
    // RFC 9449 §10.1: a DPoP proof at PAR binds the code to its key, like dpop_jkt.
    let proof = dpop::check(cfg, &req.headers, &req.method, &cfg.endpoints.par_htu, ctx)?;
    let client = authenticate_client(cfg, ctx, &req.headers, &form)?;
    if let Some(p) = &proof {
        dpop::record(cfg, Owner::Client(&client), p, ctx)?;
    }
    // Everything the authorization endpoint would check, checked now (§2.1); every refusal is
    // a direct answer here, nothing is redirected.
    let mut authz = raw.validate(cfg, &client).map_err(|r| r.error)?;
    if let Some(p) = &proof {
        match &authz.dpop_jkt {
            Some(j) if *j != p.jkt => {
                return Err(OAuthError::invalid_dpop_proof(
                    "dpop_jkt does not match the key of the DPoP proof",
                )
                .into())
            }
            _ => authz.dpop_jkt = Some(p.jkt.clone()),
        }
    }
    let ttl = cfg.lifetimes.request_uri;
    ring_share::charge(cfg, ctx, Kind::PushedRequest, Owner::Client(&client))?;
    let handle = store::allocate(
        ctx,
        cfg.rings.request_uris,
        crate::duration::millis(ttl),
        &authz,
    )?;

    #[derive(Serialize)]
    struct Body {
        request_uri: String,
        expires_in: u64,
    }
    let body = serde_json::to_vec(&Body {
        request_uri: format!("{REQUEST_URI_PREFIX}{}", handle.encode()),
        expires_in: ttl.as_secs(),
    })
    .map_err(|e| OAuthError::internal(format!("PAR response: {e}")))?;
    let mut r = Response::json(201, body, Outcome::Issued("pushed_authorization"));
    r.no_store();
    Ok(r)
}
