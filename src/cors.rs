//! CORS (the Fetch standard's cross-origin protocol) for the endpoints a browser calls: the
//! token, PAR and revocation endpoints, the cookie refresh endpoint, and the public documents
//! (authorization server metadata, OpenID configuration, JWKS). Every other endpoint (authorize
//! and device verification are navigations; introspection and device authorization are for
//! servers and devices) answers no preflight and sends no CORS headers.
//!
//! - **Documents**: `Access-Control-Allow-Origin: *` on every answer, never credentials (the
//!   answer does not depend on `Origin`, so no `Vary`). A preflight is answered for any origin.
//! - **Client endpoints** (token, PAR, revocation): the exact `Origin` is echoed when it is one of
//!   the request's client's origins (its redirect_uris' origins and `allowed_origins`), never `*`.
//!   A preflight names no client, so it is answered for the origins of the static clients only:
//!   registry clients cannot be listed. Their browser requests that need no preflight (a public
//!   client's form POST without `Authorization` or `DPoP` headers: a CORS "simple request") still
//!   get their origin echoed.
//! - **Credentials** (`Access-Control-Allow-Credentials: true`) only where cookies are used: at
//!   `/oauth/refresh`, which reads the HttpOnly refresh token cookie, and at the token endpoint
//!   for clients registered with `refresh_token_cookie`, whose code redemption sets it (a browser
//!   stores a cookie from a cross-origin answer only for a request made with credentials).
//!   Preflights there allow credentials for the origins of the static cookie clients; the refresh
//!   preflight is answered for those origins only. PAR and revocation never allow credentials.
//!
//! An answer that depends on `Origin` always carries `Vary: Origin`. An answer given before any
//! client was found (an unknown client, a malformed request) echoes the origin only if a preflight
//! would have been answered for it, so a configured browser app can read its errors.

use std::collections::BTreeSet;
use std::rc::Rc;

use crate::client::{origin_of, Client};
use crate::config::Endpoint;
use crate::error::OAuthError;
use crate::http::{Headers, Outcome, Response};

/// How long a browser may cache a preflight answer (seconds).
pub const MAX_AGE: &str = "600";
/// Response headers a browser app may read besides the CORS-safelisted ones.
pub const EXPOSE_HEADERS: &str = "DPoP-Nonce, WWW-Authenticate, Retry-After";

/// What CORS an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Public documents: any origin, no credentials.
    Document,
    /// PAR and revocation: the client's origins, no credentials.
    Client,
    /// The token endpoint: the client's origins, credentials for cookie clients.
    Token,
    /// The cookie refresh endpoint: the client's origins, with credentials.
    Cookie,
    /// Userinfo: a resource of this server that takes an access token in a header, never a
    /// cookie, so any origin may call it (no credentials), as a public API would.
    Api,
}

impl Kind {
    /// The CORS kind of an endpoint; `None`: no CORS there.
    pub fn of(ep: Endpoint) -> Option<Kind> {
        match ep {
            Endpoint::Jwks
            | Endpoint::AuthorizationServerMetadata
            | Endpoint::OpenIdConfiguration => Some(Kind::Document),
            Endpoint::Token => Some(Kind::Token),
            Endpoint::PushedAuthorization | Endpoint::Revocation => Some(Kind::Client),
            Endpoint::Refresh => Some(Kind::Cookie),
            Endpoint::Userinfo => Some(Kind::Api),
            // RP-initiated logout is a navigation.
            Endpoint::EndSession
            | Endpoint::Authorize
            | Endpoint::Introspection
            | Endpoint::DeviceAuthorization
            | Endpoint::DeviceVerification
            | Endpoint::Resource
            | Endpoint::ResourceMetadata(_) => None,
        }
    }

    /// Any origin may call (the answer is `*`, never with credentials).
    fn any_origin(self) -> bool {
        matches!(self, Kind::Document | Kind::Api)
    }

    fn methods(self) -> &'static str {
        match self {
            Kind::Document => "GET, HEAD",
            Kind::Api => "GET, POST",
            Kind::Client | Kind::Token | Kind::Cookie => "POST",
        }
    }

    /// The request headers a browser may send (beyond the CORS-safelisted ones).
    fn allow_headers(self, ep: Endpoint) -> Option<&'static str> {
        match (self, ep) {
            (Kind::Document, _) => None,
            (Kind::Api, _) => Some("Authorization, Content-Type, DPoP"),
            (Kind::Cookie, _) => Some("Content-Type"),
            (Kind::Client, Endpoint::Revocation) => Some("Authorization, Content-Type"),
            (Kind::Client | Kind::Token, _) => Some("Authorization, Content-Type, DPoP"),
        }
    }
}

/// The origins preflights are answered for, from the static clients (computed once).
#[derive(Debug, Default, Clone)]
pub struct Origins {
    /// Every static client's origins: the client endpoints.
    clients: BTreeSet<String>,
    /// Those of static clients registered with `refresh_token_cookie`: the refresh endpoint.
    cookie: BTreeSet<String>,
}

impl Origins {
    pub fn new<'a>(clients: impl IntoIterator<Item = &'a Rc<Client>>) -> Origins {
        let mut o = Origins::default();
        for c in clients {
            let origins = client_origins(c);
            if c.refresh_token_cookie {
                o.cookie.extend(origins.iter().cloned());
            }
            o.clients.extend(origins);
        }
        o
    }

    fn preflight_allows(&self, kind: Kind, origin: &str) -> bool {
        match kind {
            Kind::Document | Kind::Api => true,
            Kind::Client | Kind::Token => self.clients.contains(origin),
            Kind::Cookie => self.cookie.contains(origin),
        }
    }

    /// Whether an answer to `origin` at an endpoint of `kind` may allow credentials when no
    /// client decides (a preflight, or an answer before a client was found).
    fn credentials(&self, kind: Kind, origin: &str) -> bool {
        match kind {
            Kind::Document | Kind::Api | Kind::Client => false,
            Kind::Token | Kind::Cookie => self.cookie.contains(origin),
        }
    }
}

/// A client's browser origins: its redirect_uris' origins and its `allowed_origins`.
pub fn client_origins(c: &Client) -> BTreeSet<String> {
    c.redirect_uris
        .iter()
        .filter_map(|r| origin_of(r))
        .filter(|o| o.starts_with("https://") || o.starts_with("http://"))
        .map(str::to_string)
        .chain(c.allowed_origins.iter().cloned())
        .collect()
}

/// One `Origin` header that can be allowed: exactly one, not `null` (sandboxed frames, `file:`,
/// redirects across origins: never a configured origin), no control characters.
fn origin(headers: &Headers) -> Option<&str> {
    let o = headers.single("origin").ok()??;
    (o != "null" && !o.is_empty() && o.bytes().all(|b| (0x21..0x7f).contains(&b))).then_some(o)
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. Any other `OPTIONS` is answered as before (405).
pub fn is_preflight(method: &str, headers: &Headers) -> bool {
    method == "OPTIONS"
        && headers.all("origin").next().is_some()
        && headers
            .all("access-control-request-method")
            .next()
            .is_some()
}

/// The answer to a preflight at an endpoint of `kind`: `204` with the CORS headers when the
/// origin may call, else `403 invalid_request` (flat JSON, no CORS headers: the browser refuses
/// the actual request).
pub fn preflight(kind: Kind, ep: Endpoint, origins: &Origins, headers: &Headers) -> Response {
    // Documents: any origin, `null` included (the answer is `*`, never with credentials).
    let allowed = match kind {
        Kind::Document | Kind::Api => Some("*"),
        _ => origin(headers).filter(|o| origins.preflight_allows(kind, o)),
    };
    let Some(o) = allowed else {
        let mut r: Response =
            OAuthError::invalid_request("this origin may not call this endpoint from a browser")
                .with_status(403)
                .into();
        if !kind.any_origin() {
            r.headers.push(("vary", "Origin".into()));
        }
        return r;
    };
    let mut r = Response {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
        outcome: Outcome::Served,
        forward: None,
        cause: None,
    };
    if kind.any_origin() {
        r.headers.push(("access-control-allow-origin", "*".into()));
    } else {
        r.headers
            .push(("access-control-allow-origin", o.to_string()));
        r.headers.push(("vary", "Origin".into()));
    }
    if origins.credentials(kind, o) {
        r.headers
            .push(("access-control-allow-credentials", "true".into()));
    }
    r.headers
        .push(("access-control-allow-methods", kind.methods().into()));
    if let Some(h) = kind.allow_headers(ep) {
        r.headers.push(("access-control-allow-headers", h.into()));
    }
    r.headers.push(("access-control-max-age", MAX_AGE.into()));
    r
}

/// Adds the CORS headers to an actual answer at an endpoint of `kind`. `client`: the client the
/// request named and that was found (its origins decide); `None`: no client was found, and the
/// origins a preflight is answered for decide.
pub fn decorate(
    kind: Kind,
    origins: &Origins,
    headers: &Headers,
    client: Option<&Client>,
    r: &mut Response,
) {
    if kind == Kind::Document {
        r.headers.push(("access-control-allow-origin", "*".into()));
        return;
    }
    if kind == Kind::Api {
        r.headers.push(("access-control-allow-origin", "*".into()));
        r.headers
            .push(("access-control-expose-headers", EXPOSE_HEADERS.into()));
        return;
    }
    r.headers.push(("vary", "Origin".into()));
    let Some(o) = origin(headers) else {
        return;
    };
    let (allowed, credentials) = match client {
        Some(c) => (
            c.allows_origin(o),
            match kind {
                Kind::Document | Kind::Api | Kind::Client => false,
                Kind::Token => c.refresh_token_cookie,
                Kind::Cookie => true,
            },
        ),
        None => (
            origins.preflight_allows(kind, o),
            origins.credentials(kind, o),
        ),
    };
    if !allowed {
        return;
    }
    r.headers
        .push(("access-control-allow-origin", o.to_string()));
    if credentials {
        r.headers
            .push(("access-control-allow-credentials", "true".into()));
    }
    r.headers
        .push(("access-control-expose-headers", EXPOSE_HEADERS.into()));
}
