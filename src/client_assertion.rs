//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2, OIDC Core §9).
//!
//! RFC 7523 §3 checklist, as [`verify`] applies it:
//!  1. `iss` is the client_id (OIDC Core §9: `iss` and `sub` both are);
//!  2. `sub` is the client_id;
//!  3. `aud` identifies this server: its issuer, or (RFC 9126 §2, not under the FAPI 2.0
//!     profile) the token or PAR endpoint URL; under FAPI 2.0 exactly the issuer, as a string;
//!  4. `exp` is present and not passed (with the configured clock skew), and not further ahead
//!     than the configured maximum lifetime — an assertion is for one request, not a credential;
//!  5. `nbf`, if present, is not in the future;
//!  6. `iat`, if present, is not in the future;
//!  7. `jti` is present and used once: a replay cache in shared data keeps it until `exp`;
//!  9. the signature verifies with a key the client registered (`jwks`, or `jwks_uri` fetched
//!     and cached; a kid not in the cached set refetches once, at most once per cooldown), with
//!     an algorithm from the allow-list that fits that key — never `none`, never HMAC.
//!
//! Every failure is `invalid_client` (401).

use serde::Deserialize;

use crate::client::Client;
use crate::config::{Config, Endpoint, Profile};
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, JwksLookup};
use crate::jwk::JwkSet;
use crate::jws::{Audience, Untrusted};
use crate::ring_share::{self, Kind, Owner};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longest `jti` accepted.
const MAX_JTI: usize = 256;

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: serde_json::Number,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    iat: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
}

/// The client an assertion claims to be (`sub`, falling back to `iss`).
pub fn claimed_client_id(assertion: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Who {
        #[serde(default)]
        sub: Option<String>,
        #[serde(default)]
        iss: Option<String>,
    }
    let who: Who = Untrusted::claims_before_verifying(assertion)?;
    who.sub.or(who.iss)
}

/// A JWT's `iss`: which trusted issuer's keys to check it with.
pub fn claimed_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    Untrusted::claims_before_verifying::<Iss>(token).map(|i| i.iss)
}

fn failed(why: &'static str) -> OAuthError {
    OAuthError::invalid_client(why)
}

fn secs_to_ms(n: &serde_json::Number) -> Option<u64> {
    n.as_f64()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e15)
        .map(|v| (v * 1000.0) as u64)
}

/// Verifies `assertion` as `client`'s authentication.
pub fn verify(cfg: &Config, client: &Client, assertion: &str, ctx: &mut Ctx<'_>) -> FlowResult<()> {
    let allowed: Vec<_> = match client.token_endpoint_auth_signing_alg {
        Some(a) => cfg
            .verify_algs
            .iter()
            .copied()
            .filter(|x| *x == a)
            .collect(),
        None => cfg.verify_algs.clone(),
    };
    let jws = Untrusted::parse(assertion, &allowed)
        .map_err(|_| failed("the client assertion is malformed or uses an unaccepted algorithm"))?;
    let kid = jws.header.kid.clone();
    let alg = jws.alg;

    // Keys: registered inline, or fetched from jwks_uri (refetched once on a kid miss).
    let key = match (&client.jwks, &client.jwks_uri) {
        (Some(set), _) => set.select(kid.as_deref(), alg).cloned(),
        (None, Some(uri)) => {
            let set = fetched(ctx, uri, false)?;
            match set.select(kid.as_deref(), alg) {
                Some(k) => Some(k.clone()),
                None => fetched(ctx, uri, true)?
                    .select(kid.as_deref(), alg)
                    .cloned(),
            }
        }
        (None, None) => None,
    };
    let key = key.ok_or_else(|| failed("no registered key of the client fits the assertion"))?;
    let verified = jws
        .verify(&key)
        .map_err(|_| failed("the client assertion's signature does not verify"))?;
    let c: Claims = verified
        .claims()
        .map_err(|_| failed("the client assertion lacks iss, sub, aud or exp"))?;

    if c.iss != client.client_id || c.sub != client.client_id {
        return Err(failed("iss and sub of the client assertion must be the client_id").into());
    }
    let aud_ok = match cfg.profile {
        Profile::Fapi2 => c.aud == Audience::One(cfg.issuer.clone()),
        Profile::Default => {
            c.aud.contains(&cfg.issuer)
                || c.aud.contains(cfg.endpoints.url(Endpoint::Token))
                || c.aud
                    .contains(cfg.endpoints.url(Endpoint::PushedAuthorization))
        }
    };
    if !aud_ok {
        return Err(failed("the client assertion's aud is not this authorization server").into());
    }
    let now = ctx.now.unix_ms;
    let skew = crate::duration::millis(cfg.assertion.clock_skew);
    let exp = secs_to_ms(&c.exp).ok_or_else(|| failed("exp is not a time"))?;
    if exp.saturating_add(skew) <= now {
        return Err(failed("the client assertion has expired").into());
    }
    let max = crate::duration::millis(cfg.assertion.max_lifetime);
    if exp > now.saturating_add(max).saturating_add(skew) {
        return Err(failed("the client assertion's exp is too far in the future").into());
    }
    for t in [&c.iat, &c.nbf].into_iter().flatten() {
        let t = secs_to_ms(t).ok_or_else(|| failed("iat or nbf is not a time"))?;
        if t > now.saturating_add(skew) {
            return Err(failed("the client assertion is not valid yet").into());
        }
    }
    let jti = c
        .jti
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI)
        .ok_or_else(|| failed("the client assertion needs a jti"))?;
    let id = format!("assertion\0{}\0{}", client.client_id, jti);
    // The assertion's signature is verified: the client itself pays for the entry.
    ring_share::charge(cfg, ctx, Kind::Assertion, Owner::Client(client))?;
    if !crate::replay::remember_once(ctx, cfg.rings.jtis, &id, exp.saturating_add(skew))? {
        return Err(failed("the client assertion has been used before").into());
    }
    Ok(())
}

fn fetched(ctx: &mut Ctx<'_>, uri: &str, refresh: bool) -> FlowResult<std::rc::Rc<JwkSet>> {
    match ctx.jwks(uri, refresh)? {
        JwksLookup::Found(set) => Ok(set),
        JwksLookup::Unavailable(_) => {
            Err(failed("the client's keys (jwks_uri) could not be fetched").into())
        }
    }
}
