//! `POST /oauth/token` (RFC 6749 §3.2, seed 000): form body, one grant per request.

use crate::config::Config;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::grants;
use crate::http::Response;

use crate::dpop;

use super::{authenticate_client, mime, require_proof, FORM};

pub fn handle(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    if mime(&req.headers)? != FORM {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let form = Form::parse(&req.body)?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    // Decide the grant before authenticating, so an unknown grant is unsupported_grant_type
    // whatever the credentials (RFC 6749 §5.2 order of checks is not fixed; this one leaks nothing).
    if !grants::enabled(cfg, grant_type) {
        return Err(OAuthError::unsupported_grant_type("grant_type is not supported").into());
    }
    // The DPoP proof before client authentication: a nonce challenge (the usual first answer
    // when nonces are on) then costs no assertion verification and burns no assertion jti. Its
    // jti is recorded only once the client is authenticated: strangers cannot fill the cache.
    let proof = dpop::check(
        cfg,
        &req.headers,
        &req.method,
        &cfg.endpoints.token_htu,
        ctx,
    )?;
    let client = authenticate_client(cfg, ctx, &req.headers, &form)?;
    require_proof(cfg, &client, proof.as_ref(), ctx.client_cert())?;
    if let Some(p) = &proof {
        dpop::record(cfg, crate::ring_share::Owner::Client(&client), p, ctx)?;
    }
    let proof = proof.as_ref();
    let mut resp = match grant_type {
        grants::CLIENT_CREDENTIALS => {
            grants::client_credentials::handle(cfg, &client, &form, proof, ctx)
        }
        grants::AUTHORIZATION_CODE => {
            grants::authorization_code::handle(cfg, &client, &form, proof, ctx)
        }
        grants::REFRESH_TOKEN => grants::refresh_token::handle(cfg, &client, &form, proof, ctx),
        grants::DEVICE_CODE => grants::device_code::handle(cfg, &client, &form, proof, ctx),
        grants::TOKEN_EXCHANGE => grants::token_exchange::handle(cfg, &client, &form, proof, ctx),
        grants::PASSWORD => grants::password::handle(cfg, &client, &form, proof, ctx),
        _ => Err(OAuthError::unsupported_grant_type("grant_type is not supported").into()),
    }?;
    // RFC 9449 §8.2: a fresh nonce with the answer, so clients follow its rotation.
    if cfg.dpop.require_nonce && proof.is_some() {
        resp.headers
            .push(("dpop-nonce", dpop::current_nonce(cfg, ctx.now.unix_ms)));
    }
    Ok(resp)
}
