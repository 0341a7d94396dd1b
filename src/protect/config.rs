//! `resource_protection`: the APIs behind the gateway whose requests need one of our access
//! tokens, validated strictly at start like the rest of the configuration.
//!
//! ```json
//! "resource_protection": {
//!   "clock_skew": "10s",
//!   "routes": [{
//!     "prefix": "/orders", "host": "api.example.com", "methods": ["GET", "POST"],
//!     "resource": "https://api.example.com/orders",
//!     "audience": "https://api.example.com/orders",
//!     "scopes": {"all": ["orders:read"]},
//!     "dpop": "allowed",
//!     "claim_headers": {"sub": "x-oauth-sub", "client_id": "x-oauth-client-id"},
//!     "forward_credentials": true,
//!     "filter_state": false
//!   }]
//! }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProtection {
    #[serde(default)]
    clock_skew: Option<String>,
    #[serde(default)]
    verified_cache_entries: Option<usize>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    resource: String,
    #[serde(default)]
    resource_name: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    scopes: Option<RawScopes>,
    #[serde(default)]
    dpop: Option<String>,
    #[serde(default)]
    claim_headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    forward_credentials: Option<bool>,
    #[serde(default)]
    filter_state: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScopes {
    #[serde(default)]
    all: Option<Vec<String>>,
    #[serde(default)]
    any: Option<Vec<String>>,
}

/// Route protection, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Protection {
    pub clock_skew: Duration,
    /// Verified tokens kept per worker (see [`super::cache`]).
    pub verified_cache_entries: usize,
    pub routes: Vec<Route>,
}

/// Which scopes a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scopes {
    None,
    /// Every one of these.
    All(Vec<String>),
    /// At least one of these.
    Any(Vec<String>),
}

/// Which presentations a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopMode {
    /// `Bearer` for unbound tokens, `DPoP` for bound ones (RFC 9449 §7.2).
    Allowed,
    /// DPoP-bound tokens only.
    Required,
}

/// A verified claim a route can hand to its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Sub,
    ClientId,
    Scope,
    Jti,
    Aud,
    Exp,
    Iat,
    AuthTime,
    /// `cnf.jkt`: the DPoP key's thumbprint.
    Jkt,
    /// `act.sub`: who acts for the subject (token exchange).
    ActSub,
    AuthorizationDetails,
}

impl Claim {
    fn parse(s: &str) -> Option<Claim> {
        Some(match s {
            "sub" => Claim::Sub,
            "client_id" => Claim::ClientId,
            "scope" => Claim::Scope,
            "jti" => Claim::Jti,
            "aud" => Claim::Aud,
            "exp" => Claim::Exp,
            "iat" => Claim::Iat,
            "auth_time" => Claim::AuthTime,
            "cnf.jkt" => Claim::Jkt,
            "act.sub" => Claim::ActSub,
            "authorization_details" => Claim::AuthorizationDetails,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Claim::Sub => "sub",
            Claim::ClientId => "client_id",
            Claim::Scope => "scope",
            Claim::Jti => "jti",
            Claim::Aud => "aud",
            Claim::Exp => "exp",
            Claim::Iat => "iat",
            Claim::AuthTime => "auth_time",
            Claim::Jkt => "cnf.jkt",
            Claim::ActSub => "act.sub",
            Claim::AuthorizationDetails => "authorization_details",
        }
    }
}

/// One protected route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path prefix in comparison form ([`crate::path_variant::canonical`]), matched by
    /// whole segments.
    pub prefix: String,
    /// `:authority` to match (lower case; without a port, any port), if any.
    pub host: Option<String>,
    pub methods: Option<Vec<String>>,
    /// The resource identifier (RFC 9728 §1.2; RFC 8707).
    pub resource: String,
    pub resource_name: Option<String>,
    /// `scheme://authority` of the resource: the external origin a DPoP proof's `htu` names.
    pub origin: String,
    /// The audience the token must carry; `None`: any (the userinfo endpoint, which belongs to
    /// this server itself and takes every access token it issued with `openid`).
    pub audience: Option<String>,
    pub scopes: Scopes,
    pub dpop: DpopMode,
    /// Claims handed upstream, and the request header each goes in: none unless the route names
    /// them.
    pub claim_headers: Vec<(Claim, String)>,
    /// Whether `Authorization` and `DPoP` go on to the upstream.
    pub forward_credentials: bool,
    /// Whether the claims are also set as Envoy filter state (for an RBAC filter after this
    /// one): a few µs of Envoy's time per request, so only where asked for.
    pub filter_state: bool,
    /// Where this resource's RFC 9728 metadata is served (path), and its URL.
    pub metadata_path: String,
    pub metadata_url: String,
}

impl Route {
    /// The userinfo endpoint seen as a protected resource of this server (OIDC Core §5.3.1:
    /// an access token with `openid`, Bearer or DPoP): its own URL is the `htu` of a proof;
    /// it publishes no RFC 9728 metadata (it is found in the server's own).
    pub fn userinfo(issuer_origin: &str, path: &str) -> Route {
        Route {
            prefix: path.to_string(),
            host: None,
            methods: None,
            resource: format!("{issuer_origin}{path}"),
            resource_name: None,
            origin: issuer_origin.to_string(),
            audience: None,
            scopes: Scopes::All(vec!["openid".to_string()]),
            dpop: DpopMode::Allowed,
            claim_headers: Vec::new(),
            forward_credentials: false,
            filter_state: false,
            metadata_path: String::new(),
            metadata_url: String::new(),
        }
    }
}

/// Headers a route may not set: credentials, framing, pseudo-headers, hop-by-hop.
const RESERVED: &[&str] = &[
    "authorization",
    "dpop",
    "host",
    "cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-authorization",
];

/// The RFC 9728 §3 well-known prefix.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

fn header_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !RESERVED.contains(&name);
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "resource_protection: claim header {name:?} must be a lower-case header name (not a credential, framing or hop-by-hop header)"
        ))
    }
}

fn scope_list(v: Vec<String>) -> Result<Vec<String>, String> {
    if v.is_empty()
        || v.iter().any(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
        })
    {
        return Err("resource_protection: scopes must be non-empty lists of scope tokens".into());
    }
    Ok(v)
}

/// Validates the raw section. `skew` parses a duration setting within bounds.
pub fn validate(
    raw: RawProtection,
    skew: impl Fn(&str, Option<&str>) -> Result<Duration, String>,
) -> Result<Protection, String> {
    let clock_skew = skew("resource_protection.clock_skew", raw.clock_skew.as_deref())?;
    let verified_cache_entries = raw.verified_cache_entries.unwrap_or(4_096);
    if !(16..=1_000_000).contains(&verified_cache_entries) {
        return Err(
            "resource_protection.verified_cache_entries must be between 16 and 1000000".into(),
        );
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    for r in raw.routes {
        if !r.prefix.starts_with('/') {
            return Err(format!(
                "resource_protection: prefix {:?} must start with /",
                r.prefix
            ));
        }
        let prefix = crate::path_variant::canonical(&r.prefix);
        let host = match r.host {
            Some(h) if h.is_empty() || h.contains(['/', ' ', '@']) => {
                return Err(format!("resource_protection: host {h:?} is not a host"))
            }
            h => h.map(|h| h.to_ascii_lowercase()),
        };
        let methods = match r.methods {
            Some(m)
                if m.is_empty()
                    || m.iter()
                        .any(|x| x.is_empty() || !x.bytes().all(|b| b.is_ascii_uppercase())) =>
            {
                return Err("resource_protection: methods must be upper-case method names".into())
            }
            m => m,
        };
        let (origin, path) = crate::url::split_issuer(&r.resource).map_err(|e| {
            format!(
                "resource_protection: resource {:?}: {}",
                r.resource,
                e.replace("issuer", "resource")
            )
        })?;
        let metadata_path = format!("{WELL_KNOWN}{path}");
        let scopes = match r.scopes {
            None => Scopes::None,
            Some(RawScopes {
                all: Some(a),
                any: None,
            }) => Scopes::All(scope_list(a)?),
            Some(RawScopes {
                all: None,
                any: Some(a),
            }) => Scopes::Any(scope_list(a)?),
            Some(_) => {
                return Err("resource_protection: scopes takes one of \"all\" or \"any\"".into())
            }
        };
        let dpop = match r.dpop.as_deref() {
            None | Some("allowed") => DpopMode::Allowed,
            Some("required") => DpopMode::Required,
            Some(other) => {
                return Err(format!(
                    "resource_protection: dpop {other:?} is unknown (allowed, required)"
                ))
            }
        };
        // Claims go upstream only where the route asks for them, as with jwt_authn's
        // `claim_to_headers` and Istio's `outputClaimToHeaders`: each is a change to the request
        // headers, which makes Envoy match the route again (docs/benchmarks.md, session 10).
        let claim_headers = match r.claim_headers {
            None => Vec::new(),
            Some(map) => {
                let mut out = Vec::with_capacity(map.len());
                for (claim, header) in map {
                    let c = Claim::parse(&claim).ok_or_else(|| {
                        format!("resource_protection: claim {claim:?} cannot be handed upstream (sub, client_id, scope, jti, aud, exp, iat, auth_time, cnf.jkt, act.sub, authorization_details)")
                    })?;
                    let h = header_name(&header)?;
                    if out.iter().any(|(_, x)| *x == h) {
                        return Err(format!("resource_protection: header {h:?} is used twice"));
                    }
                    out.push((c, h));
                }
                out
            }
        };
        let filter_state = r.filter_state.unwrap_or(false);
        if filter_state && claim_headers.is_empty() {
            return Err(format!(
                "resource_protection: route {prefix:?} sets filter_state but names no claim_headers: \
                 it would set nothing (filter state carries the claims claim_headers names)"
            ));
        }
        if let Some(name) = &r.resource_name {
            if name.is_empty() || name.len() > 200 {
                return Err("resource_protection: resource_name must be 1-200 characters".into());
            }
        }
        let route = Route {
            prefix,
            host,
            methods,
            audience: Some(r.audience.unwrap_or_else(|| r.resource.clone())),
            metadata_url: format!("{origin}{metadata_path}"),
            resource: r.resource,
            resource_name: r.resource_name,
            origin,
            scopes,
            dpop,
            claim_headers,
            forward_credentials: r.forward_credentials.unwrap_or(true),
            filter_state,
            metadata_path,
        };
        if routes.iter().any(|x: &Route| {
            x.metadata_path == route.metadata_path
                && x.host == route.host
                && x.resource != route.resource
        }) {
            return Err(format!(
                "resource_protection: two resources would publish their metadata at {}",
                route.metadata_path
            ));
        }
        routes.push(route);
    }
    Ok(Protection {
        clock_skew,
        verified_cache_entries,
        routes,
    })
}
