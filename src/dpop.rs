//! DPoP proofs at the token and PAR endpoints (RFC 9449).
//!
//! [`check`] follows the RFC 9449 §4.3 checklist; each step is marked with its number:
//!  1. there is not more than one `DPoP` HTTP request header field;
//!  2. the DPoP header value is a single well-formed JWT;
//!  3. all required claims per §4.2 are contained in the JWT;
//!  4. the `typ` JOSE header parameter has the value `dpop+jwt`;
//!  5. the `alg` JOSE header parameter indicates a registered asymmetric digital signature
//!     algorithm, is not `none`, is supported by the application, and is acceptable per local
//!     policy;
//!  6. the JWT signature verifies with the public key contained in the `jwk` JOSE header;
//!  7. the `jwk` JOSE header parameter does not contain a private key;
//!  8. the `htm` claim matches the HTTP method of the current request;
//!  9. the `htu` claim matches the HTTP URI value for the HTTP request in which the JWT was
//!     received, ignoring any query and fragment parts;
//! 10. if the server provided a nonce value to the client, the `nonce` claim matches it;
//! 11. the creation time of the JWT, as determined by `iat`, is within an acceptable window;
//! 12. (resource servers only: `ath`) — not at the token endpoint;
//! 13. (resource servers only: the key of the access token) — not here.
//!
//! Plus §11.1: a `jti` is accepted once within the window (a replay cache in shared data).
//!
//! The `htu` compared is our own configured endpoint URL (from the issuer), never one rebuilt
//! from a Host header a client chose.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::Config;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::http::Headers;
use crate::jwk::PublicJwk;
use crate::jws::Untrusted;
use crate::ring_share::{self, Kind, Owner};

/// A proof that passed every check: the key the tokens get bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's key (`cnf.jkt`).
    pub jkt: String,
    /// The proof's `alg` as sent (the seed's `dpop_signing_alg`).
    pub alg: &'static str,
    /// `ath`, if the proof has one (checked by a protected route).
    pub ath: Option<String>,
    /// Its replay-cache id and how long it must be kept: written by [`record`] once the client
    /// is authenticated, so requests without credentials never fill the cache.
    replay_id: String,
    replay_until: u64,
}

/// A grant bound to a key (`bound`: its thumbprint, if any) needs a proof by that key: none is
/// `invalid_dpop_proof`, another key `invalid_grant` (the grant is not usable with it). The
/// descriptions name `what` is bound ("code", "refresh token").
pub fn require_key(
    bound: Option<&str>,
    proof: Option<&Proof>,
    what: &'static str,
) -> Result<(), OAuthError> {
    match (bound, proof) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(OAuthError::invalid_dpop_proof(format!(
            "this {what} needs a DPoP proof"
        ))),
        (Some(jkt), Some(p)) if p.jkt != jkt => Err(OAuthError::invalid_grant(format!(
            "the DPoP key does not match the one the {what} is bound to"
        ))),
        (Some(_), Some(_)) => Ok(()),
    }
}

/// Longest `jti` accepted (the RFC asks for 96 random bits; UUIDs and base64 fit easily).
const MAX_JTI: usize = 256;

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: serde_json::Number,
    #[serde(default)]
    nonce: Option<String>,
    /// RFC 9449 §4.2: the access token's hash, in proofs sent to a resource.
    #[serde(default)]
    ath: Option<String>,
}

fn bad(why: &'static str) -> OAuthError {
    OAuthError::invalid_dpop_proof(why)
}

/// Checks the request's DPoP proof, if it has one, for `method` at the endpoint whose
/// normalised URL is `htu`. `Ok(None)`: no proof was sent (whether one was required is the
/// caller's decision).
pub fn check(
    cfg: &Config,
    headers: &Headers,
    method: &str,
    htu: &str,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Option<Proof>> {
    // 1. exactly one header: read all values, a single-value getter would hide a second one.
    let mut all = headers.all("dpop");
    let Some(value) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(bad("more than one DPoP header").into());
    }
    // 2, 5. one JWS with an allowed asymmetric algorithm.
    let jws = Untrusted::parse(value.trim(), &cfg.verify_algs)
        .map_err(|_| bad("the DPoP proof is malformed or uses an unaccepted algorithm"))?;
    // 4. typ (media types compare case-insensitively, RFC 7515 §4.1.9).
    if !jws
        .header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(bad("the DPoP proof's typ must be dpop+jwt").into());
    }
    // 7. the key is public (PublicJwk refuses any private member) and fits alg.
    let jwk = jws
        .header
        .jwk
        .as_ref()
        .ok_or_else(|| bad("the DPoP proof has no jwk header"))?;
    let key = PublicJwk::parse(jwk)
        .map_err(|_| bad("the DPoP proof's jwk is not an acceptable public key"))?;
    let alg = jws.alg_name;
    // 6. signature with that key.
    let verified = jws
        .verify(&key)
        .map_err(|_| bad("the DPoP proof's signature does not verify"))?;
    // 3. required claims.
    let claims: Claims = verified
        .claims()
        .map_err(|_| bad("the DPoP proof lacks jti, htm, htu or iat"))?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI {
        return Err(bad("the DPoP proof's jti is empty or too long").into());
    }
    // 8. htm, exact (methods are case-sensitive, RFC 9110 §9.1).
    if claims.htm != method {
        return Err(bad("htm does not match the request method").into());
    }
    // 9. htu, normalised, without query and fragment.
    if crate::url::normalize_htu(&claims.htu).as_deref() != Some(htu) {
        return Err(bad("htu does not match the endpoint URL").into());
    }
    // 11. iat within [now - lifetime - skew, now + skew].
    let now_ms = ctx.now.unix_ms;
    let iat_ms = claims
        .iat
        .as_f64()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| (v * 1000.0) as u64)
        .ok_or_else(|| bad("iat is not a time"))?;
    let skew = crate::duration::millis(cfg.dpop.clock_skew);
    let lifetime = crate::duration::millis(cfg.dpop.proof_lifetime);
    if iat_ms > now_ms.saturating_add(skew) {
        return Err(bad("the DPoP proof is issued in the future").into());
    }
    if iat_ms.saturating_add(lifetime).saturating_add(skew) < now_ms {
        return Err(bad("the DPoP proof is too old").into());
    }
    // 10. the server nonce, when nonces are on.
    if cfg.dpop.require_nonce {
        let ok = claims
            .nonce
            .as_deref()
            .is_some_and(|n| nonce_valid(cfg, n, now_ms));
        if !ok {
            return Err(OAuthError::use_dpop_nonce(current_nonce(cfg, now_ms)).into());
        }
    }
    // §11.1: jti once per key within the window (until the proof could no longer be accepted):
    // checked and recorded in one step by `record`, after client authentication, so a request
    // without credentials never writes to the replay cache.
    let replay_id = format!("dpop\0{}\0{}", key.thumbprint, claims.jti);
    let replay_until = iat_ms
        .saturating_add(lifetime)
        .saturating_add(skew.saturating_mul(2));
    Ok(Some(Proof {
        jkt: key.thumbprint,
        alg,
        ath: claims.ath,
        replay_id,
        replay_until,
    }))
}

/// §11.1, second half: records the proof's `jti`, for a client that has authenticated. Losing
/// the race to a concurrent request with the same proof is a replay.
pub fn record(cfg: &Config, owner: Owner<'_>, proof: &Proof, ctx: &mut Ctx<'_>) -> FlowResult<()> {
    // The entry is charged to its owner: the authenticated client (a public one at the
    // caller's address), or at a protected route the key the access token is bound to.
    ring_share::charge(cfg, ctx, Kind::DpopProof, owner)?;
    if !crate::replay::remember_once(ctx, cfg.rings.jtis, &proof.replay_id, proof.replay_until)? {
        return Err(bad("the DPoP proof's jti has been used before").into());
    }
    Ok(())
}

/// Nonces are stateless: `base64url(period ‖ HMAC(key, period)[..16])`, where the period is the
/// current time divided by the nonce lifetime. The current and the previous period are valid,
/// so a nonce lives between one and two lifetimes, then rotates — on every worker and every
/// instance at once, without shared state.
fn nonce_for(cfg: &Config, period: u64) -> String {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&period.to_be_bytes());
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&cfg.dpop.nonce_key) {
        mac.update(b"dpop-nonce");
        mac.update(&period.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        for (d, s) in b[8..].iter_mut().zip(tag.iter()) {
            *d = *s;
        }
    }
    B64.encode(b)
}

fn period(cfg: &Config, now_ms: u64) -> u64 {
    now_ms / crate::duration::millis(cfg.dpop.nonce_lifetime).max(1)
}

/// The nonce to hand out now.
pub fn current_nonce(cfg: &Config, now_ms: u64) -> String {
    nonce_for(cfg, period(cfg, now_ms))
}

fn nonce_valid(cfg: &Config, nonce: &str, now_ms: u64) -> bool {
    use subtle::ConstantTimeEq;
    let p = period(cfg, now_ms);
    [p, p.saturating_sub(1)]
        .iter()
        .any(|q| bool::from(nonce_for(cfg, *q).as_bytes().ct_eq(nonce.as_bytes())))
}
