//! Route protection: the APIs behind the gateway get only requests that carry one of our
//! access tokens, checked here (RFC 6750, RFC 9449 §7, RFC 9068), with revocation seen at once
//! and DPoP proofs checked for every call — what Envoy's `jwt_authn` and Istio's
//! `RequestAuthentication` cannot do.
//!
//! For a request to a protected route ([`config::Route`]): one `Authorization` header with the
//! `Bearer` or `DPoP` scheme; our signature (any published key, so rotation works), `typ`
//! `at+jwt`, our `iss` (cached per worker, [`cache`]); then on every call `exp`/`nbf` with the
//! configured skew, the route's audience, the revocation deny-list, the binding (a DPoP-bound
//! token only with the DPoP scheme and a proof by its key for this method and URL, with `ath`
//! and a single-use `jti`), and the route's scopes. A request that passes goes on to the
//! upstream with the claims the route names as headers (client-sent copies removed first) and
//! as filter state; one that does not gets the answer of [`answer`]. Each resource publishes its
//! RFC 9728 metadata ([`metadata`]).

pub mod answer;
pub mod cache;
pub mod config;
pub mod guard;
pub mod metadata;

use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::access_token::Claims;
use crate::config::Config;
use crate::flow::{Ctx, FlowResult, Interrupt, Request};
use crate::http::{Forward, Response};
use crate::jws::{Alg, Untrusted};
use crate::ring_share::Owner;
use cache::Entry;
pub use guard::Guard;

use answer::Denial;
use config::{Claim, DpopMode, Route, Scopes};

/// The protected route a request falls under, if any: the first whose prefix (whole segments,
/// in comparison form, so `/API/./orders` is `/api/orders`), host and method match.
pub fn find<'a>(cfg: &'a Config, path: &str, authority: &str, method: &str) -> Option<&'a Route> {
    let i = find_index(cfg, path, authority, method)?;
    cfg.protection.routes.get(i)
}

/// As [`find`], the route's index in the configuration.
pub fn find_index(cfg: &Config, path: &str, authority: &str, method: &str) -> Option<usize> {
    let routes = &cfg.protection.routes;
    if routes.is_empty() {
        return None;
    }
    let canonical = comparison_form(path);
    let host = authority.to_ascii_lowercase();
    routes.iter().position(|r| {
        let under = r.prefix == "/"
            || canonical == r.prefix
            || canonical
                .strip_prefix(r.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        under
            && r.host.as_deref().is_none_or(|h| {
                host == h || (!h.contains(':') && host.split(':').next() == Some(h))
            })
            && r.methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x == method))
    })
}

/// The path in its comparison form ([`crate::path_variant::canonical`]), without the work
/// when the path is already in it (the common case: lower case, no escapes, dot segments,
/// parameters or empty segments).
fn comparison_form(path: &str) -> std::borrow::Cow<'_, str> {
    let p = path.split_once('?').map_or(path, |(p, _)| p);
    let plain = p.starts_with('/')
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/-_~".contains(&b))
        && !p.contains("//")
        && (p.len() == 1 || !p.ends_with('/'));
    if plain {
        std::borrow::Cow::Borrowed(p)
    } else {
        std::borrow::Cow::Owned(crate::path_variant::canonical(path))
    }
}

/// How the token came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// The bytes of RFC 6750 §2.1 `b64token` before its trailing `=`s: one table read per byte.
// Indexing here runs at compile time only, over 0..256.
#[allow(clippy::indexing_slicing)]
const B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    t
};

/// RFC 6750 §2.1 `b64token`.
fn b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| B64TOKEN.get(usize::from(b)).copied().unwrap_or(false))
}

/// The one `Authorization` header's scheme and token (its characters not yet checked).
fn credentials(req: &Request) -> Result<(Scheme, &str), Denial> {
    let mut all = req.headers.all("authorization");
    let Some(value) = all.next() else {
        return Err(Denial::NoToken);
    };
    if all.next().is_some() {
        return Err(Denial::Malformed("more than one Authorization header"));
    }
    // RFC 6750 §2.3 / §3.1: one method of presenting a token at a time.
    let query = req.path.split_once('?').map_or("", |(_, q)| q);
    if query
        .split('&')
        .any(|kv| kv == "access_token" || kv.starts_with("access_token="))
    {
        return Err(Denial::Malformed(
            "the access token is presented more than one way",
        ));
    }
    let (scheme, token) = value.trim().split_once(' ').ok_or(Denial::NoToken)?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        // Another scheme (Basic, ...): no credentials this resource takes.
        return Err(Denial::NoToken);
    };
    // Its characters (RFC 6750 §2.1 `b64token`) are checked by `authorize`, and only when the
    // token is not one this worker has verified: a token in the cache is byte for byte one that
    // passed the check, and the scan is a large part of a cached call's cost.
    Ok((scheme, token.trim_start_matches(' ')))
}

/// What does not change for a given token: our signature, `typ`, `iss`, the claims.
fn verify(cfg: &Config, token: &str) -> Result<Claims, &'static str> {
    let invalid = "the access token is invalid";
    let jws = Untrusted::parse(token, &Alg::ALL).map_err(|_| invalid)?;
    if !jws.is_access_token() {
        return Err("the token is not an access token");
    }
    let claims: Claims = jws
        .verify_with(&cfg.own_keys)
        .map_err(|_| invalid)?
        .claims()
        .map_err(|_| invalid)?;
    if claims.iss != cfg.issuer {
        return Err(invalid);
    }
    Ok(claims)
}

fn has_scopes(route: &Route, granted: &str) -> bool {
    let has = |s: &String| granted.split(' ').any(|g| g == s);
    match &route.scopes {
        Scopes::None => true,
        Scopes::All(need) => need.iter().all(has),
        Scopes::Any(need) => need.iter().any(has),
    }
}

/// The thumbprint of the key a token is bound to (`cnf.jkt`).
fn bound_key(claims: &Claims) -> Option<&str> {
    claims.cnf.as_ref()?.get("jkt")?.as_str()
}

/// A claim as a header value; `None` when absent or when it could not be a header value
/// (control characters: a `sub` is whatever the login service put there).
fn claim_value(claims: &Claims, claim: Claim) -> Option<String> {
    let v = match claim {
        Claim::Sub => claims.sub.clone(),
        Claim::ClientId => claims.client_id.clone(),
        Claim::Scope => claims.scope.clone(),
        Claim::Jti => claims.jti.clone(),
        Claim::Aud => claims.aud.joined(),
        Claim::Exp => claims.exp.to_string(),
        Claim::Iat => claims.iat.to_string(),
        Claim::AuthTime => claims.auth_time?.to_string(),
        Claim::Jkt => bound_key(claims)?.to_string(),
        Claim::ActSub => claims.act.as_ref()?.get("sub")?.as_str()?.to_string(),
        Claim::AuthorizationDetails => claims.authorization_details.as_ref()?.to_string(),
    };
    let clean = !v.is_empty()
        && v.len() <= 8192
        && !v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f);
    clean.then_some(v)
}

/// The deny-list, read only when something was revoked since this worker last found the token
/// not revoked (the epoch moved; see [`crate::access_token::revocation_epoch`]). In etcd there is
/// no epoch: the deny-list is read on every call. Whether the token was clean at this epoch is
/// the worker's state, not an answer: journaled ([`Ctx::decide`]), so a flow rerun after a
/// dispatched call (userinfo) reads exactly what its first run read.
fn revoked(cfg: &Config, ctx: &mut Ctx<'_>, entry: &Entry) -> FlowResult<bool> {
    let epoch = crate::access_token::revocation_epoch(cfg, ctx)?;
    if ctx.decide(|| epoch.is_some_and(|e| e == entry.clean_at.get())) {
        return Ok(false);
    }
    let revoked = crate::access_token::is_revoked(cfg, ctx, &entry.claims)?;
    if let (false, Some(e)) = (revoked, epoch) {
        entry.clean_at.set(e);
    }
    Ok(revoked)
}

/// Checks a request to `route`; what goes upstream, or why not.
fn check(
    cfg: &Config,
    guard: &Guard,
    route: &Route,
    req: &Request,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Result<Forward, Denial>> {
    let claims = match authorize(cfg, guard, route, req, ctx)? {
        Ok(c) => c,
        Err(d) => return Ok(Err(d)),
    };
    let mut f = Forward::default();
    for (claim, header) in &route.claim_headers {
        match claim_value(&claims, *claim) {
            // Setting replaces every value the client sent.
            Some(v) => {
                if route.filter_state {
                    f.state
                        .push((format!("oauth_edge.{}", claim.name()), v.clone()));
                }
                f.set.push((header.clone(), v));
            }
            // A claim the token lacks: the client's copy must not pass for it.
            None if req.headers.all(header).next().is_some() => f.remove.push(header.clone()),
            None => {}
        }
    }
    if !route.forward_credentials {
        f.remove.push("authorization".into());
        f.remove.push("dpop".into());
    }
    Ok(Ok(f))
}

/// The access token of a request to `route`, once every check of the route has passed (the
/// token, its binding and proof, the scopes; the proof's `jti` then recorded), or why not.
pub fn authorize(
    cfg: &Config,
    guard: &Guard,
    route: &Route,
    req: &Request,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Result<Rc<Entry>, Denial>> {
    let (scheme, token) = match credentials(req) {
        Ok(c) => c,
        Err(d) => return Ok(Err(d)),
    };
    let dpop = scheme == Scheme::Dpop;
    let skew = cfg.protection.clock_skew.as_secs();
    let now = ctx.now.secs();
    let claims = match guard.verified(token, now.saturating_sub(skew)) {
        Some(c) => c,
        None if !b64token(token) => {
            return Ok(Err(Denial::InvalidToken {
                why: "the access token is malformed",
                dpop,
            }))
        }
        None => match verify(cfg, token) {
            Ok(c) => {
                let c = Rc::new(Entry::new(c));
                guard.remember(token, c.clone());
                c
            }
            Err(why) => return Ok(Err(Denial::InvalidToken { why, dpop })),
        },
    };
    let refuse = |why| Ok(Err(Denial::InvalidToken { why, dpop }));
    if claims.exp.saturating_add(skew) <= now {
        return refuse("the access token has expired");
    }
    if claims.nbf.is_some_and(|n| n > now.saturating_add(skew)) {
        return refuse("the access token is not valid yet");
    }
    if route
        .audience
        .as_ref()
        .is_some_and(|a| !claims.aud.contains(a))
    {
        return refuse("the access token is not meant for this resource");
    }
    if revoked(cfg, ctx, &claims)? {
        return refuse("the access token has been revoked");
    }
    // RFC 8705 §3: a certificate-bound token only over a connection with that certificate.
    if let Some(x5t) = claims
        .cnf
        .as_ref()
        .and_then(|c| c.get("x5t#S256"))
        .and_then(|v| v.as_str())
    {
        if ctx.client_cert().map(|c| c.thumbprint()).as_deref() != Some(x5t) {
            return refuse(
                "the access token is bound to a TLS client certificate this request did not present",
            );
        }
    }
    // RFC 9449 §7.2: a bound token only with its proof; an unbound one never as DPoP.
    let proof = match (scheme, bound_key(&claims)) {
        (Scheme::Bearer, Some(_)) => {
            return refuse("a DPoP-bound access token must be presented with the DPoP scheme")
        }
        (Scheme::Dpop, None) => return refuse("the access token is not DPoP-bound"),
        (Scheme::Bearer, None) if route.dpop == DpopMode::Required => {
            return refuse("this resource takes DPoP-bound access tokens only")
        }
        (Scheme::Bearer, None) => None,
        (Scheme::Dpop, Some(jkt)) => {
            let path = req
                .path
                .split_once('?')
                .map_or(req.path.as_str(), |(p, _)| p);
            let Some(htu) = crate::url::normalize_htu(&format!("{}{path}", route.origin)) else {
                return Ok(Err(Denial::Malformed("the request path is not a URL path")));
            };
            let proof = match crate::dpop::check(cfg, &req.headers, &req.method, &htu, ctx) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    return Ok(Err(Denial::InvalidProof(
                        "a DPoP proof is required with a DPoP-bound access token".into(),
                    )))
                }
                Err(Interrupt::Error(e)) => {
                    return Ok(Err(match (e.code, e.dpop_nonce) {
                        (crate::error::ErrorCode::UseDpopNonce, Some(n)) => Denial::UseNonce(n),
                        _ => Denial::InvalidProof(e.description.into_owned()),
                    }))
                }
                Err(other) => return Err(other),
            };
            if proof.jkt != jkt {
                return Ok(Err(Denial::InvalidProof(
                    "the DPoP proof's key is not the one the access token is bound to".into(),
                )));
            }
            // RFC 9449 §4.3 check 12 / §7: ath is the hash of this very token.
            let ath = B64.encode(Sha256::digest(token.as_bytes()));
            if proof.ath.as_deref() != Some(ath.as_str()) {
                return Ok(Err(Denial::InvalidProof(
                    "the DPoP proof's ath does not match the access token".into(),
                )));
            }
            Some(proof)
        }
    };
    if !has_scopes(route, &claims.scope) {
        return Ok(Err(Denial::InsufficientScope));
    }
    if let Some(p) = &proof {
        // The token holder pays for the replay entry: the key it is bound to owns it.
        match crate::dpop::record(cfg, Owner::Key(&p.jkt), p, ctx) {
            Ok(()) => {}
            Err(Interrupt::Error(e)) if e.code == crate::error::ErrorCode::InvalidDpopProof => {
                return Ok(Err(Denial::InvalidProof(e.description.into_owned())))
            }
            Err(other) => return Err(other),
        }
    }
    Ok(Ok(claims))
}

/// A request to a protected route: on to the upstream (with the route's claim headers), or a
/// refusal. `route`: the route's index when the caller found it already (else it is looked for).
pub fn handle(
    cfg: &Config,
    guard: &Guard,
    route: Option<usize>,
    req: &Request,
    ctx: &mut Ctx<'_>,
) -> FlowResult<Response> {
    let found = match route {
        Some(i) => cfg.protection.routes.get(i),
        None => {
            let authority = req.headers.all(":authority").next().unwrap_or("");
            find(cfg, &req.path, authority, &req.method)
        }
    };
    let Some(route) = found else {
        return Ok(Response::forward(Forward::default()));
    };
    Ok(match check(cfg, guard, route, req, ctx)? {
        Ok(f) => Response::forward(f),
        Err(d) => answer::refuse(route, guard.dpop_algs(), d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_b64token_table_is_rfc_6750s_set() {
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(B64TOKEN.get(usize::from(b)), Some(&want), "{b:#04x}");
        }
        assert!(b64token("abc.DEF-_~+/=="));
        assert!(!b64token("==") && !b64token("") && !b64token("a b") && !b64token("a=b"));
    }

    #[test]
    fn the_fast_comparison_form_is_the_comparison_form() {
        for p in [
            "/",
            "/orders",
            "/orders/",
            "/orders/1",
            "/ORDERS/1",
            "/orders//1",
            "/orders/./1",
            "/a/../orders",
            "/%6frders",
            "/orders;x/1",
            "/orders/1?x=Y",
            "/orders/1.",
            "/o-r_d~s/9",
        ] {
            assert_eq!(
                comparison_form(p).as_ref(),
                crate::path_variant::canonical(p).as_str(),
                "{p}"
            );
        }
        assert!(matches!(
            comparison_form("/orders/1?x=1"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
