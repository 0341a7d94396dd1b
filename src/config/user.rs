//! The signed-in user: `user` (where the gateway puts who logged in), `login_url` (where to
//! send someone who has not) and `refresh_cookie` (the browser's refresh token cookie).

use serde::Deserialize;

use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    #[serde(default)]
    metadata_namespace: Option<String>,
    #[serde(default)]
    metadata_key: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default = "default_sub_claim")]
    subject_claim: String,
    #[serde(default = "default_auth_time_claim")]
    auth_time_claim: String,
    #[serde(default = "default_session_claim")]
    session_claim: String,
}

fn default_session_claim() -> String {
    "sid".into()
}
fn default_sub_claim() -> String {
    "sub".into()
}
fn default_auth_time_claim() -> String {
    "iat".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCookie {
    #[serde(default = "default_cookie_name")]
    name: String,
}

impl Default for RawCookie {
    fn default() -> Self {
        RawCookie {
            name: default_cookie_name(),
        }
    }
}

fn default_cookie_name() -> String {
    "oauth_edge_rt".into()
}

/// Where the gateway puts the authenticated user (never a place a client can write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSource {
    /// Dynamic metadata, e.g. jwt_authn's `payload_in_metadata`: the verified JWT payload.
    Metadata {
        namespace: String,
        key: String,
        subject_claim: String,
        auth_time_claim: String,
        /// The login token's session id claim (OIDC `sid` derives from it: [`crate::flow::User::sid`]).
        session_claim: String,
    },
    /// A request header set by a filter before this one (only safe if Envoy strips any
    /// client-sent copy first).
    Header { name: String },
}

impl TryFrom<RawUser> for UserSource {
    type Error = ConfigError;

    fn try_from(u: RawUser) -> Result<UserSource, ConfigError> {
        match (u.metadata_namespace, u.metadata_key, u.header) {
            (Some(namespace), Some(key), None) if !namespace.is_empty() && !key.is_empty() => {
                Ok(UserSource::Metadata {
                    namespace,
                    key,
                    subject_claim: u.subject_claim,
                    auth_time_claim: u.auth_time_claim,
                    session_claim: u.session_claim,
                })
            }
            (None, None, Some(name)) if !name.is_empty() => Ok(UserSource::Header {
                name: name.to_ascii_lowercase(),
            }),
            _ => Err(ConfigError::at(
                "user",
                "set either metadata_namespace and metadata_key (e.g. jwt_authn payload_in_metadata) or header",
            )),
        }
    }
}

/// `login_url`: an absolute URL or path, without fragment.
pub(super) fn login_url(u: Option<String>) -> Result<Option<String>, ConfigError> {
    match u {
        None => Ok(None),
        Some(u)
            if (u.starts_with("https://") || u.starts_with("http://") || u.starts_with('/'))
                && !u.contains('#')
                && !u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(Some(u))
        }
        Some(_) => Err(ConfigError::new(
            "login_url",
            "must be an absolute URL or path without fragment",
        )),
    }
}

/// `refresh_cookie.name`: a cookie name of letters, digits, `_ - .`.
pub(super) fn cookie_name(c: RawCookie) -> Result<String, ConfigError> {
    let name = c.name;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(ConfigError::new(
            "refresh_cookie.name",
            "must be a cookie name of letters, digits, _ - .",
        ));
    }
    Ok(name)
}
