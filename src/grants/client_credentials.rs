//! Client credentials grant (RFC 6749 §4.4).
//!
//! - the client is confidential and authenticated (§4.4.2: "MUST authenticate");
//! - the client is registered for the grant, else `unauthorized_client` (§5.2);
//! - the requested scope is within the client's, else `invalid_scope`; none requested means
//!   all the client's scopes (§3.3 lets the server choose a documented default);
//! - a refresh token SHOULD NOT be included (§4.4.3): none is;
//! - the access token is an RFC 9068 JWT whose `sub` is the client itself (§2.2: for grants
//!   without a resource owner, sub is the client).

use crate::client::Client;
use crate::config::Config;
use crate::dpop::Proof;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::form::Form;
use crate::http::Response;
use crate::scope;
use crate::token::{self, AccessTokenClaims, Aud, Cnf};

use super::CLIENT_CREDENTIALS;

pub fn handle(
    cfg: &Config,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    if !client.is_confidential() {
        return Err(OAuthError::unauthorized_client(
            "public clients cannot use client_credentials",
        )
        .into());
    }
    if !client.allows_grant(CLIENT_CREDENTIALS) {
        return Err(OAuthError::unauthorized_client(
            "client is not allowed the client_credentials grant",
        )
        .into());
    }
    let granted = scope::grant(form.get("scope"), &client.scope)?;
    // RFC 8707: the resources the token is for become its audience; only those the client is
    // registered for (RFC 9700 §2.3).
    let resources: Vec<String> = form.get_all("resource").map(str::to_string).collect();
    crate::rar::check_allowed(&resources, client)?;
    let key = cfg
        .keys
        .active()
        .ok_or_else(|| OAuthError::server_error("internal error"))?;
    let ttl = cfg.lifetimes.access_token.as_secs();
    let jti = token::new_jti(ctx)?;
    let now_secs = ctx.now.secs();
    let at = token::sign_access_token(
        key,
        &AccessTokenClaims {
            iss: &cfg.issuer,
            sub: &client.client_id,
            aud: Aud::of(&resources, &cfg.access_token_audience),
            client_id: &client.client_id,
            scope: &granted,
            iat: now_secs,
            exp: now_secs.saturating_add(ttl),
            jti: &jti,
            auth_time: None,
            authorization_details: None,
            cnf: Cnf::of(proof, token::cert_binding(client, ctx)?),
            act: None,
        },
    )?;
    Ok(token::token_response(
        CLIENT_CREDENTIALS,
        &at,
        proof,
        ttl,
        &granted,
    ))
}
