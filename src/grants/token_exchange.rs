//! Token exchange (RFC 8693, seed 003): a client trades a subject token (and, for delegation,
//! an actor token) for a narrower access token.
//!
//! - the client is confidential and registered for the grant (`grant_types`);
//! - `subject_token` is an access token this server issued (active: signed, unexpired, not
//!   revoked), or a JWT from a configured trusted issuer (its JWKS fetched through `jwks_fetch`
//!   and cached; `aud` must name this server, `exp` in the future); anything else is
//!   `invalid_request` (§2.2.2);
//! - `subject_token_type` / `actor_token_type`: `…:access_token` or `…:jwt`;
//! - who may exchange it: a client that is one of the subject token's audiences (its `aud`
//!   names the client_id), or whose `token_exchange_subject_audiences` lists one of them — not
//!   any client with the grant (a token is for its audience, RFC 8693 §2.1's "acceptable based
//!   on policy"); otherwise `invalid_request` (§2.2.2);
//! - `actor_token` (optional, with its type) is read the same way, and must be one of our
//!   tokens issued to this very client, or a trusted issuer's JWT: `act.sub` names a party the
//!   client can vouch for, never an arbitrary other one. The new token's `act` is
//!   `{"sub": actor}` with the subject token's own `act` nested inside (§4.1: the chain of
//!   delegation, newest first). Without an actor token the subject's `act` is kept as it is:
//!   re-exchanging a delegated token never drops the chain;
//! - sender constraints (RFC 9449 §6, RFC 8693 §5): a subject or actor token bound to a DPoP key
//!   (`cnf.jkt`) is exchanged only with a proof by that key, and the new token is bound to it
//!   again. Without a proof: `invalid_dpop_proof`; another key, subject and actor bound to
//!   different keys, or any other confirmation method (which could not be kept):
//!   `invalid_request`;
//! - targets: every `audience` and `resource` must be in the client's `allowed_resources` (the
//!   list every grant uses), else `invalid_target` (§2.2.2); none requested → the configured
//!   default audience;
//! - `scope`: within the subject token's scope and the client's; none → their intersection;
//! - `requested_token_type`: only access tokens are issued (`…:access_token`, or `…:jwt`,
//!   which ours are); the answer says `issued_token_type` (§2.2.1). No refresh token.
//! - the new token never outlives the subject token.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::access_token;
use crate::client::Client;
use crate::config::{Config, TrustedIssuer};
use crate::dpop::Proof;
use crate::error::{ErrorCode, OAuthError};
use crate::flow::{Ctx, FlowResult, JwksLookup};
use crate::form::Form;
use crate::http::Response;
use crate::jws::{Alg, Audience, Untrusted};
use crate::scope;
use crate::token_answer::TokenAnswer;

use super::TOKEN_EXCHANGE;

pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// What a subject or actor token says, once checked.
struct Party {
    iss: String,
    sub: String,
    aud: Audience,
    scope: Vec<String>,
    exp: u64,
    act: Option<Value>,
    cnf: Option<Value>,
    /// The client one of our tokens was issued to (`None`: a trusted issuer's JWT).
    issued_to: Option<String>,
}

pub fn handle(
    cfg: &Config,
    client: &Client,
    form: &Form,
    proof: Option<&Proof>,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let Some(tx) = &cfg.token_exchange else {
        return Err(OAuthError::unsupported_grant_type("grant_type is not supported").into());
    };
    if !client.is_confidential() || !client.allows_grant(TOKEN_EXCHANGE) {
        return Err(OAuthError::unauthorized_client(
            "client is not allowed the token-exchange grant",
        )
        .into());
    }
    let subject_token = form
        .get("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("subject_token is missing"))?;
    let subject_type = form
        .get("subject_token_type")
        .ok_or_else(|| OAuthError::invalid_request("subject_token_type is missing"))?;
    match form.get("requested_token_type") {
        None | Some(TYPE_ACCESS_TOKEN) | Some(TYPE_JWT) => {}
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "only access tokens can be requested (requested_token_type)",
            )
            .into())
        }
    }
    let subject = party(
        cfg,
        &tx.trusted_issuers,
        subject_token,
        subject_type,
        ctx,
        "subject_token",
    )?;
    if !may_exchange(client, &subject.aud) {
        return Err(OAuthError::invalid_request(
            "this client is not an audience of the subject_token (token_exchange_subject_audiences)",
        )
        .into());
    }
    let actor = match (form.get("actor_token"), form.get("actor_token_type")) {
        (None, None) => None,
        (Some(t), Some(ty)) => Some(party(cfg, &tx.trusted_issuers, t, ty, ctx, "actor_token")?),
        _ => {
            return Err(
                OAuthError::invalid_request("actor_token and actor_token_type go together").into(),
            )
        }
    };
    if let Some(issued_to) = actor.as_ref().and_then(|a| a.issued_to.as_deref()) {
        if issued_to != client.client_id {
            return Err(OAuthError::invalid_request(
                "actor_token must be issued to this client or come from a trusted issuer",
            )
            .into());
        }
    }
    keep_binding(&subject, actor.as_ref(), proof)?;

    // Targets, under the client's policy (the one list of every grant).
    let mut targets: Vec<String> = form.get_all("audience").map(str::to_string).collect();
    let resources: Vec<String> = form.get_all("resource").map(str::to_string).collect();
    crate::rar::check_resources(&resources)?;
    targets.extend(resources);
    if targets.iter().any(|t| !client.may_target(t)) {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "an audience or resource is not one this client may ask for (allowed_resources)",
        )
        .into());
    }
    // Scope: never more than the subject had and the client may have.
    let allowed: Vec<String> = subject
        .scope
        .iter()
        .filter(|s| client.scope.iter().any(|c| c == *s))
        .cloned()
        .collect();
    let granted = scope::grant(form.get("scope"), &allowed)?;

    let act = match &actor {
        Some(a) => {
            let mut o = serde_json::Map::new();
            o.insert("sub".into(), json!(a.sub));
            if a.iss != cfg.issuer {
                o.insert("iss".into(), json!(a.iss));
            }
            if let Some(prior) = &subject.act {
                o.insert("act".into(), prior.clone());
            }
            Some(Value::Object(o))
        }
        // §4.1: no new actor — whoever acted for the subject still does.
        None => subject.act.clone(),
    };
    let minted = crate::mint::access_token(
        cfg,
        crate::mint::AccessGrant {
            client,
            sub: &subject.sub,
            scope: &granted,
            resources: &targets,
            auth_time: None,
            authorization_details: None,
            act: act.as_ref(),
            proof,
            not_after: Some(subject.exp),
            jti: None,
        },
        ctx,
    )?;
    Ok(TokenAnswer {
        access_token: &minted.token,
        expires_in: minted.expires_in,
        scope: &granted,
        issued_token_type: Some(TYPE_ACCESS_TOKEN),
        ..Default::default()
    }
    .bound(proof)
    .into_response(TOKEN_EXCHANGE))
}

/// The client is one of the subject token's audiences, or its policy names one of them.
fn may_exchange(client: &Client, aud: &Audience) -> bool {
    aud.contains(&client.client_id)
        || client
            .token_exchange_subject_audiences
            .iter()
            .any(|a| aud.contains(a))
}

/// The DPoP key a token is bound to (`cnf.jkt`, RFC 9449 §6.1). A confirmation of any other
/// kind (mTLS `x5t#S256`, a `jwk`, …) cannot be proven here, so it would be dropped: refused.
fn bound_key<'a>(p: &'a Party, which: &'static str) -> Result<Option<&'a str>, OAuthError> {
    let Some(cnf) = &p.cnf else { return Ok(None) };
    match cnf.as_object() {
        Some(o) if o.len() == 1 => match o.get("jkt").and_then(Value::as_str) {
            Some(jkt) => Ok(Some(jkt)),
            None => Err(unkeepable(which)),
        },
        _ => Err(unkeepable(which)),
    }
}

fn unkeepable(which: &'static str) -> OAuthError {
    OAuthError::invalid_request(match which {
        "actor_token" => "actor_token is bound by a confirmation method other than DPoP",
        _ => "subject_token is bound by a confirmation method other than DPoP",
    })
}

/// RFC 9449 §6 / RFC 8693 §5: a bound subject or actor token is exchanged only by the holder of
/// its key, proven by this request's DPoP proof; the new token is then bound to the same key
/// (`Cnf::of(proof)`), so the binding is never dropped.
fn keep_binding(
    subject: &Party,
    actor: Option<&Party>,
    proof: Option<&Proof>,
) -> Result<(), OAuthError> {
    let s = bound_key(subject, "subject_token")?;
    let a = match actor {
        Some(a) => bound_key(a, "actor_token")?,
        None => None,
    };
    let jkt = match (s, a) {
        (Some(s), Some(a)) if s != a => {
            return Err(OAuthError::invalid_request(
                "subject_token and actor_token are bound to different DPoP keys",
            ))
        }
        (s, a) => s.or(a),
    };
    match (jkt, proof) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(OAuthError::invalid_dpop_proof(
            "a DPoP-bound token is exchanged only with a DPoP proof by its key",
        )),
        (Some(jkt), Some(p)) if p.jkt != jkt => Err(OAuthError::invalid_request(
            "the DPoP proof's key is not the one the token is bound to",
        )),
        (Some(_), Some(_)) => Ok(()),
    }
}

/// A delegation chain as RFC 8693 §4.1 shapes it: an object naming the actor's `sub`.
fn valid_act(act: &Option<Value>) -> bool {
    act.as_ref()
        .is_none_or(|a| a.get("sub").is_some_and(Value::is_string))
}

fn bad(which: &'static str) -> OAuthError {
    OAuthError::invalid_request(match which {
        "actor_token" => "actor_token is invalid, expired, revoked or from an untrusted issuer",
        _ => "subject_token is invalid, expired, revoked or from an untrusted issuer",
    })
}

fn party(
    cfg: &Config,
    trusted: &[TrustedIssuer],
    token: &str,
    token_type: &str,
    ctx: &mut Ctx<'_>,
    which: &'static str,
) -> FlowResult<Party> {
    if token_type != TYPE_ACCESS_TOKEN && token_type != TYPE_JWT {
        return Err(OAuthError::invalid_request(
            "token types must be urn:ietf:params:oauth:token-type:access_token or :jwt",
        )
        .into());
    }
    // One of ours?
    if let Some(c) = access_token::verify(cfg, token, ctx.now.unix_ms) {
        if access_token::is_revoked(cfg, ctx, &c)? {
            return Err(bad(which).into());
        }
        return Ok(Party {
            iss: c.iss,
            sub: c.sub,
            aud: c.aud,
            scope: c
                .scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            exp: c.exp,
            act: c.act,
            cnf: c.cnf,
            issued_to: Some(c.client_id),
        });
    }
    // A trusted issuer's?
    #[derive(Deserialize)]
    struct Foreign {
        iss: String,
        sub: String,
        aud: Audience,
        exp: u64,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        nbf: Option<u64>,
        #[serde(default)]
        act: Option<Value>,
        #[serde(default)]
        cnf: Option<Value>,
    }
    let jws = Untrusted::parse(token, &Alg::ALL).map_err(|_| bad(which))?;
    let iss = crate::client_assertion::claimed_issuer(token).ok_or_else(|| bad(which))?;
    let ti = trusted
        .iter()
        .find(|t| t.issuer == iss)
        .ok_or_else(|| bad(which))?;
    let kid = jws.header.kid.clone();
    let alg = jws.alg;
    let set = match ctx.jwks(&ti.jwks_uri, false)? {
        JwksLookup::Found(s) => s,
        JwksLookup::Unavailable(_) => return Err(bad(which).into()),
    };
    let key = match set.select(kid.as_deref(), alg) {
        Some(k) => k.clone(),
        None => match ctx.jwks(&ti.jwks_uri, true)? {
            JwksLookup::Found(s) => s
                .select(kid.as_deref(), alg)
                .cloned()
                .ok_or_else(|| bad(which))?,
            JwksLookup::Unavailable(_) => return Err(bad(which).into()),
        },
    };
    let f: Foreign = jws
        .verify(&key)
        .map_err(|_| bad(which))?
        .claims()
        .map_err(|_| bad(which))?;
    let now = ctx.now.secs();
    if f.iss != ti.issuer
        || !f.aud.contains(&ti.audience)
        || f.exp <= now
        || f.nbf.is_some_and(|n| n > now.saturating_add(30))
        || f.sub.is_empty()
        || !valid_act(&f.act)
    {
        return Err(bad(which).into());
    }
    Ok(Party {
        iss: f.iss,
        sub: f.sub,
        aud: f.aud,
        scope: f
            .scope
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        exp: f.exp,
        act: f.act,
        cnf: f.cnf,
        issued_to: None,
    })
}
