//! `POST /oauth/introspect` (RFC 7662): a resource server asks whether a token is active.
//!
//! - only authenticated confidential clients may ask (§2.1: "the endpoint MUST also require
//!   some form of authorization"; a public client cannot prove who it is): else 401;
//! - and only about tokens that concern them (§4: a token's contents are for those it was meant
//!   for, and a scanner must learn nothing): a refresh token by the client it was issued to, an
//!   access token by that client or by a client registered as the resource server of one of its
//!   audiences (`resource_server_audiences`). Anyone else gets `{"active": false}`, exactly as
//!   for a token that does not exist;
//! - `{"active": false}` and nothing else for anything expired, revoked, rotated, unknown,
//!   malformed or not ours (§2.2);
//! - an active access token: its claims, `token_type` `Bearer` or `DPoP`, and `cnf` for a bound
//!   token (RFC 9449 §6.2); an active refresh token: who and what it is for.

use serde_json::{json, Map, Value};

use crate::access_token::{self, Claims};
use crate::client::Client;
use crate::config::Config;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Request};
use crate::form::Form;
use crate::http::{Outcome, Response};
use crate::{families, sealed};

use super::{authenticate_client, mime, FORM};

pub fn handle(cfg: &Config, req: &Request, ctx: &mut Ctx<'_>) -> FlowResult<Response> {
    if mime(&req.headers)? != FORM {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let form = Form::parse(&req.body)?;
    let client = authenticate_client(cfg, ctx, &req.headers, &form)?;
    if !client.is_confidential() {
        return Err(OAuthError::invalid_client(
            "introspection needs an authenticated (confidential) client",
        )
        .into());
    }
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let answer = if token.starts_with(sealed::PREFIX) {
        refresh(cfg, ctx, &client, token)?
    } else {
        let seen = match access_token::verify(cfg, token, ctx.now.unix_ms) {
            // Whether the caller may see it first: the deny-list is read only for those.
            Some(c) if may_introspect(&client, &c) => {
                (!access_token::is_revoked(cfg, ctx, &c)?).then_some(c)
            }
            _ => None,
        };
        match seen {
            Some(c) => {
                let mut o = Map::new();
                o.insert("active".into(), json!(true));
                o.insert("iss".into(), json!(c.iss));
                o.insert("sub".into(), json!(c.sub));
                o.insert(
                    "aud".into(),
                    serde_json::to_value(&c.aud).unwrap_or(Value::Null),
                );
                o.insert("client_id".into(), json!(c.client_id));
                if !c.scope.is_empty() {
                    o.insert("scope".into(), json!(c.scope));
                }
                o.insert("iat".into(), json!(c.iat));
                o.insert("exp".into(), json!(c.exp));
                o.insert("jti".into(), json!(c.jti));
                // A DPoP-bound token is a DPoP token; a certificate-bound one stays Bearer (RFC
                // 8705 §3).
                let dpop = c.cnf.as_ref().is_some_and(|v| v.get("jkt").is_some());
                let token_type = if dpop { "DPoP" } else { "Bearer" };
                o.insert("token_type".into(), json!(token_type));
                for (k, v) in [
                    ("cnf", c.cnf),
                    ("act", c.act),
                    ("authorization_details", c.authorization_details),
                    ("auth_time", c.auth_time.map(|t| json!(t))),
                ] {
                    if let Some(v) = v {
                        o.insert(k.into(), v);
                    }
                }
                Value::Object(o)
            }
            None => inactive(),
        }
    };
    let body = serde_json::to_vec(&answer)
        .map_err(|e| OAuthError::internal(format!("introspection response: {e}")))?;
    let mut r = Response::json(200, body, Outcome::Served);
    r.no_store();
    Ok(r)
}

fn inactive() -> Value {
    json!({"active": false})
}

/// An access token is the business of its own client and of the resource servers of its
/// audiences.
fn may_introspect(client: &Client, c: &Claims) -> bool {
    c.client_id == client.client_id
        || client
            .resource_server_audiences
            .iter()
            .any(|a| c.aud.contains(a))
}

/// A refresh token is active while its family is live, not revoked, and it is the newest
/// generation (an older one would revoke the family if used). Only its own client may ask:
/// resource servers never receive refresh tokens.
fn refresh(cfg: &Config, ctx: &mut Ctx<'_>, client: &Client, token: &str) -> FlowResult<Value> {
    let Ok(claims) = sealed::open(&cfg.keys, token) else {
        return Ok(inactive());
    };
    if claims.cid != client.client_id {
        return Ok(inactive());
    }
    if claims.exp.saturating_mul(1000) <= ctx.now.unix_ms {
        return Ok(inactive());
    }
    if let Some(sid) = &claims.sid {
        if crate::session::ended_since(cfg, ctx, sid, claims.iat)? {
            return Ok(inactive());
        }
    }
    if let Some(found) = families::find(ctx, cfg.rings.families, &claims.fam)? {
        let d = found.family;
        if d.revoked || claims.gen < d.gen {
            return Ok(inactive());
        }
    }
    Ok(json!({
        "active": true,
        "token_type": "refresh_token",
        "iss": cfg.issuer,
        "sub": claims.sub,
        "client_id": claims.cid,
        "scope": claims.scope,
        "exp": claims.exp,
    }))
}
