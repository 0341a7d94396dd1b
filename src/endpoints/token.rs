//! `POST /oauth/token` (RFC 6749 §3.2, seed 000): form body, one grant per request.

use crate::engine::Engine;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::grants;
use crate::http::Response;

use super::{authenticate_client, mime, FORM};

pub fn handle(engine: &Engine, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
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
    if !grants::SUPPORTED.contains(&grant_type) {
        return Err(OAuthError::unsupported_grant_type("grant_type is not supported").into());
    }
    let client = authenticate_client(ctx, &req.headers, &form)?;
    match grant_type {
        grants::CLIENT_CREDENTIALS => {
            grants::client_credentials::handle(&engine.config, &client, &form, ctx)
        }
        grants::AUTHORIZATION_CODE => {
            grants::authorization_code::handle(engine, &client, &form, ctx)
        }
        grants::REFRESH_TOKEN => grants::refresh_token::handle(engine, &client, &form, ctx),
        _ => Err(OAuthError::unsupported_grant_type("grant_type is not supported").into()),
    }
}
