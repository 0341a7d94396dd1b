//! The endpoint table: every endpoint this filter answers, and per endpoint ([`Endpoint::row`])
//! its key and default path in the configuration, its metric tag, its field in the discovery
//! documents. The configuration's paths, the engine's routing, the metrics and the metadata
//! documents all derive from it, so a new endpoint is one variant, one row and its place in
//! [`Endpoint::ALL`].

/// The endpoints this filter answers; every other path passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Refresh,
    PushedAuthorization,
    Authorize,
    Jwks,
    AuthorizationServerMetadata,
    OpenIdConfiguration,
    Revocation,
    Introspection,
    DeviceAuthorization,
    DeviceVerification,
    /// OpenID Connect userinfo (OIDC Core §5.3).
    Userinfo,
    /// OpenID Connect RP-initiated logout.
    EndSession,
    /// A protected route of an API behind the gateway (see [`crate::protect`]).
    Resource,
    /// The RFC 9728 metadata of the n-th protected resource.
    ResourceMetadata(u16),
}

/// Where an endpoint's path comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathFrom {
    /// `endpoints.<key>` in the configuration, `default` when absent.
    Key {
        key: &'static str,
        default: &'static str,
    },
    /// RFC 8414 §3: `/.well-known/oauth-authorization-server` + the issuer's path.
    AsMetadata,
    /// OIDC Discovery §4: the issuer's path + `/.well-known/openid-configuration`.
    OidcMetadata,
    /// Not one path of ours (protected routes, their metadata: see [`crate::protect`]).
    Elsewhere,
}

/// One endpoint's row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub path: PathFrom,
    /// Its stats' last segment (`oauth_edge.requests.<metric>`); rows may share one.
    pub metric: &'static str,
    /// The discovery documents' field for its URL (RFC 8414 §2, OIDC Discovery §3).
    pub metadata: Option<&'static str>,
    /// Listed in RFC 8705 §5 `mtls_endpoint_aliases` (where clients authenticate or present
    /// tokens).
    pub mtls_alias: bool,
    /// Served (and advertised) only when the device flow is configured.
    pub device_only: bool,
}

const fn key(key: &'static str, default: &'static str) -> PathFrom {
    PathFrom::Key { key, default }
}

const fn row(path: PathFrom, metric: &'static str, metadata: Option<&'static str>) -> Row {
    Row {
        path,
        metric,
        metadata,
        mtls_alias: false,
        device_only: false,
    }
}

const fn aliased(r: Row) -> Row {
    Row {
        mtls_alias: true,
        ..r
    }
}

const fn device(r: Row) -> Row {
    Row {
        device_only: true,
        ..r
    }
}

impl Endpoint {
    /// Every endpoint, the configured ones in the order of their keys in `endpoints` (serde's
    /// messages list them so, and a positional `endpoints` array is read so).
    pub const ALL: &'static [Endpoint] = &[
        Endpoint::Token,
        Endpoint::Jwks,
        Endpoint::PushedAuthorization,
        Endpoint::Authorize,
        Endpoint::Refresh,
        Endpoint::Revocation,
        Endpoint::Introspection,
        Endpoint::DeviceAuthorization,
        Endpoint::DeviceVerification,
        Endpoint::Userinfo,
        Endpoint::EndSession,
        Endpoint::AuthorizationServerMetadata,
        Endpoint::OpenIdConfiguration,
        Endpoint::Resource,
        Endpoint::ResourceMetadata(0),
    ];

    /// The table.
    pub const fn row(self) -> Row {
        use Endpoint as E;
        match self {
            E::Token => aliased(row(
                key("token", "/oauth/token"),
                "token",
                Some("token_endpoint"),
            )),
            E::Jwks => row(key("jwks", "/oauth/jwks"), "jwks", Some("jwks_uri")),
            E::PushedAuthorization => aliased(row(
                key("pushed_authorization", "/oauth/pushed-authorization"),
                "par",
                Some("pushed_authorization_request_endpoint"),
            )),
            E::Authorize => row(
                key("authorize", "/oauth/authorize"),
                "authorize",
                Some("authorization_endpoint"),
            ),
            E::Refresh => row(key("refresh", "/oauth/refresh"), "refresh", None),
            E::Revocation => aliased(row(
                key("revocation", "/oauth/revoke"),
                "revocation",
                Some("revocation_endpoint"),
            )),
            E::Introspection => aliased(row(
                key("introspection", "/oauth/introspect"),
                "introspection",
                Some("introspection_endpoint"),
            )),
            E::DeviceAuthorization => device(aliased(row(
                key("device_authorization", "/oauth/device_authorization"),
                "device_authorization",
                Some("device_authorization_endpoint"),
            ))),
            E::DeviceVerification => device(row(
                key("device_verification", "/oauth/device"),
                "device_verification",
                None,
            )),
            E::Userinfo => aliased(row(
                key("userinfo", "/oauth/userinfo"),
                "userinfo",
                Some("userinfo_endpoint"),
            )),
            E::EndSession => row(
                key("end_session", "/oauth/logout"),
                "end_session",
                Some("end_session_endpoint"),
            ),
            E::AuthorizationServerMetadata => row(PathFrom::AsMetadata, "metadata", None),
            E::OpenIdConfiguration => row(PathFrom::OidcMetadata, "metadata", None),
            E::Resource => row(PathFrom::Elsewhere, "resource", None),
            E::ResourceMetadata(_) => row(PathFrom::Elsewhere, "resource_metadata", None),
        }
    }

    /// Its metric tag.
    pub fn name(self) -> &'static str {
        self.row().metric
    }

    /// Its configuration key under `endpoints`, if it has one.
    pub fn key(self) -> Option<&'static str> {
        match self.row().path {
            PathFrom::Key { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The distinct metric tags, in table order.
pub fn metric_tags() -> impl Iterator<Item = &'static str> {
    Endpoint::ALL.iter().enumerate().filter_map(|(i, e)| {
        let tag = e.name();
        let earlier = Endpoint::ALL.iter().take(i).any(|p| p.name() == tag);
        (!earlier).then_some(tag)
    })
}

/// The configured rows: (endpoint, key, default path).
pub(super) fn configured() -> impl Iterator<Item = (Endpoint, &'static str, &'static str)> {
    Endpoint::ALL.iter().filter_map(|e| match e.row().path {
        PathFrom::Key { key, default } => Some((*e, key, default)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant has its place in `ALL` (the match makes a new variant a compile error here
    /// until it is listed).
    #[test]
    fn all_lists_every_endpoint() {
        for e in Endpoint::ALL {
            match e {
                Endpoint::Token
                | Endpoint::Refresh
                | Endpoint::PushedAuthorization
                | Endpoint::Authorize
                | Endpoint::Jwks
                | Endpoint::AuthorizationServerMetadata
                | Endpoint::OpenIdConfiguration
                | Endpoint::Revocation
                | Endpoint::Introspection
                | Endpoint::DeviceAuthorization
                | Endpoint::DeviceVerification
                | Endpoint::Userinfo
                | Endpoint::EndSession
                | Endpoint::Resource
                | Endpoint::ResourceMetadata(_) => {}
            }
        }
        assert_eq!(Endpoint::ALL.len(), 15);
        assert_eq!(
            metric_tags().collect::<Vec<_>>(),
            [
                "token",
                "jwks",
                "par",
                "authorize",
                "refresh",
                "revocation",
                "introspection",
                "device_authorization",
                "device_verification",
                "userinfo",
                "end_session",
                "metadata",
                "resource",
                "resource_metadata"
            ]
        );
    }
}
