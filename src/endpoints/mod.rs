//! One module per endpoint that runs a flow: parse the request, authenticate the client, hand
//! over to the grant or the front-channel logic.

pub mod authorize;
pub mod device_authorization;
pub mod device_verification;
pub mod end_session;
pub mod introspection;
pub mod par;
pub mod refresh;
pub mod revocation;
pub mod token;
pub mod userinfo;

use std::rc::Rc;

use crate::client::{valid_client_id, AuthMethod, Client};
use crate::client_auth::{self, Presented};
use crate::config::{Config, Profile};
use crate::dpop::Proof;
use crate::engine;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult, Interrupt, Lookup, Need};
use crate::form::Form;
use crate::http::Headers;
use crate::{client_assertion, rate_limit};

/// Authenticates the client of a back-channel request (token, PAR) by the one method it used,
/// then counts it against the per-client rate limit.
pub fn authenticate_client(
    cfg: &Config,
    ctx: &mut Ctx<'_>,
    headers: &Headers,
    form: &Form,
) -> FlowResult<Rc<Client>> {
    let presented = client_auth::extract(headers, form)?;
    let failed = || presented.failed("client authentication failed");
    if !valid_client_id(presented.client_id()) {
        return Err(failed().into());
    }
    // FAPI 2.0 §5.3.2.1: private_key_jwt, or mTLS (a client naming itself, whose registered
    // method is checked below), never a secret.
    let fapi_refusal = || {
        presented
            .failed("the FAPI 2.0 profile requires private_key_jwt or mTLS client authentication")
    };
    if cfg.profile == Profile::Fapi2
        && !matches!(
            presented,
            Presented::Assertion { .. } | Presented::Public { .. }
        )
    {
        return Err(fapi_refusal().into());
    }
    let lookup = lookup_client(cfg, ctx, presented.client_id())?;
    let client = engine::found(lookup, failed())?;
    ctx.cors_client = Some(client.clone());
    match &presented {
        Presented::Assertion { assertion, .. } => {
            if client.auth_method != AuthMethod::PrivateKeyJwt {
                return Err(failed().into());
            }
            client_assertion::verify(cfg, &client, assertion, ctx)?;
        }
        // RFC 8705 §2: the client names itself (client_id) and its certificate authenticates it.
        Presented::Public { .. } if client.auth_method.uses_certificate() => {
            if cfg.mtls.is_none() {
                return Err(failed().into());
            }
            crate::mtls::authenticate(cfg.mtls.as_ref(), &client, ctx.client_cert(), ctx)?;
        }
        Presented::Public { .. } if cfg.profile == Profile::Fapi2 => {
            return Err(fapi_refusal().into())
        }
        _ => client_auth::authenticate(&client, &presented)?,
    }
    if let Some(limit) = cfg.rate_limits.per_client {
        // A public client "authenticates" by naming its id: anyone can. Its budget is kept per
        // source address too, so a stranger exhausts only their own share, never the client's
        // users'.
        let what = match (client.auth_method, ctx.source()) {
            (AuthMethod::None, Some(addr)) => format!("client\0{}\0{addr}", client.client_id),
            _ => format!("client\0{}", client.client_id),
        };
        rate_limit::hit(ctx, cfg.counters(), &what, limit, rate_limit::Full::Allow)?;
    }
    Ok(client)
}

/// Looks up a client whose id the caller chose. Each id the registry itself answered "unknown"
/// for counts against the caller's address (`registry.misses_per_address`); past that, an id that would
/// need a registry call gets `429` instead, while static and cached clients still answer. Made-up
/// ids then cost the registry nothing.
pub fn lookup_client(cfg: &Config, ctx: &mut Ctx<'_>, id: &str) -> FlowResult<Lookup> {
    let (Some(r), Some(addr)) = (&cfg.registry, ctx.source()) else {
        return ctx.client(id);
    };
    let limit = r.misses_per_address;
    let what = format!("registry-miss\0{addr}");
    let over = rate_limit::exceeded(ctx, cfg.counters(), &what, limit)?;
    let (lookup, from_registry) = match (ctx.client_with_origin(id), over) {
        (Err(Interrupt::Need(Need::Client(_))), Some(retry)) => {
            return Err(OAuthError::rate_limited(retry).into())
        }
        (other, _) => other?,
    };
    if from_registry && matches!(lookup, Lookup::NotFound) {
        // Counting only: the 429 comes with the next uncached id.
        if let Err(Interrupt::Need(n)) =
            rate_limit::hit(ctx, cfg.counters(), &what, limit, rate_limit::Full::Allow)
        {
            return Err(Interrupt::Need(n));
        }
    }
    Ok(lookup)
}

/// RFC 9449 §5.2: clients registered with `dpop_bound_access_tokens`, and every client under
/// the FAPI 2.0 profile (sender-constrained tokens only), must send a proof.
/// Under FAPI 2.0 a client whose tokens are bound to its TLS certificate (RFC 8705 §3) is
/// sender-constrained without one.
pub fn require_proof(
    cfg: &Config,
    client: &Client,
    proof: Option<&Proof>,
    cert: Option<&crate::mtls::ClientCert>,
) -> FlowResult<()> {
    let cert_bound = client.tls_bound_tokens && cert.is_some() && cfg.mtls.is_some();
    if proof.is_none()
        && (client.dpop_bound_access_tokens || (cfg.profile == Profile::Fapi2 && !cert_bound))
    {
        return Err(
            OAuthError::invalid_dpop_proof("a DPoP proof is required for this client").into(),
        );
    }
    Ok(())
}

/// The MIME type of a request, lower case, without parameters; `Err` if the header repeats.
pub fn mime(headers: &Headers) -> Result<String, OAuthError> {
    let ct = headers
        .single("content-type")
        .map_err(|_| OAuthError::invalid_request("Content-Type repeated"))?
        .unwrap_or("");
    Ok(ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase())
}

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";
