//! `POST /oauth/revoke` (RFC 7009): a client revokes one of its own tokens.
//!
//! - the client authenticates as at the token endpoint (a public client names itself, §2.1);
//! - a refresh token revokes its whole family (§2.1: "SHOULD also invalidate all access
//!   tokens based on the same authorization grant" — those are stateless JWTs that expire
//!   soon; the family is what can be revoked);
//! - an access token goes on the deny-list until it expires: introspection, token exchange and
//!   this server's other endpoints then treat it as inactive;
//! - another client's token, an unknown, invalid or expired token: still `200` (§2.2: the
//!   answer does not tell a caller anything about the token).

use crate::access_token;
use crate::config::Config;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::grants::refresh_token;
use crate::http::{Outcome, Response};
use crate::sealed;

use super::{authenticate_client, mime, FORM};

pub fn handle(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    if mime(&req.headers)? != FORM {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let form = Form::parse(&req.body)?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let client = authenticate_client(cfg, ctx, &req.headers, &form)?;
    // The hint only orders the lookups (§2.1); both kinds are tried.
    if token.starts_with(sealed::PREFIX) {
        if let Ok(claims) = sealed::open(&cfg.keys, token) {
            if claims.cid == client.client_id {
                refresh_token::revoke_family(cfg, ctx, Some(&claims.fam))?;
            }
        }
    } else if let Some(claims) = access_token::verify(cfg, token, ctx.now.unix_ms) {
        if claims.client_id == client.client_id {
            access_token::revoke(cfg, ctx, &claims)?;
        }
    }
    let mut r = Response::json(200, b"{}".to_vec(), Outcome::Served);
    r.no_store();
    Ok(r)
}
