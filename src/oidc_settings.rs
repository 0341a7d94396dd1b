//! Configuration of the OpenID Connect endpoints that reach beyond the filter: where userinfo
//! claims come from (`userinfo`) and what logging out of the gateway's login means
//! (`end_session`). Each is checked strictly at start, like the rest of the configuration.

use std::time::Duration;

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUserinfo {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

/// The user-info service: `GET {path_prefix}{sub}` on an Envoy cluster, answering the user's
/// claims as a JSON object (`404`: no such user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserinfoSource {
    pub cluster: String,
    pub authority: String,
    pub path_prefix: String,
    pub timeout: Duration,
}

impl TryFrom<RawUserinfo> for Option<UserinfoSource> {
    type Error = String;

    fn try_from(raw: RawUserinfo) -> Result<Self, String> {
        let Some(cluster) = raw.cluster.filter(|c| !c.is_empty()) else {
            if raw.authority.is_some() || raw.path_prefix.is_some() || raw.timeout.is_some() {
                return Err("userinfo: the claims service needs a cluster".into());
            }
            return Ok(None);
        };
        let path_prefix = raw.path_prefix.unwrap_or_else(|| "/users/".into());
        if !path_prefix.starts_with('/')
            || path_prefix.contains(['?', '#'])
            || path_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("userinfo.path_prefix must be a path starting with /".into());
        }
        let timeout = match raw.timeout.as_deref() {
            None => Duration::from_secs(1),
            Some(s) => crate::duration::parse(s).map_err(|e| format!("userinfo.timeout: {e}"))?,
        };
        // A dispatched call with timeout 0 never times out: refused.
        if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(60) {
            return Err("userinfo.timeout must be between 1ms and 60s".into());
        }
        Ok(Some(UserinfoSource {
            authority: raw.authority.unwrap_or_else(|| cluster.clone()),
            cluster,
            path_prefix,
            timeout,
        }))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEndSession {
    #[serde(default)]
    logout_url: Option<String>,
    #[serde(default)]
    clear_cookies: Vec<String>,
}

/// What RP-initiated logout does beyond ending the session's refresh tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndSession {
    /// The login service's own logout page: where the browser goes when the relying party
    /// names no (valid) post-logout URI.
    pub logout_url: Option<String>,
    /// Cookies of the gateway's login (e.g. the one jwt_authn reads the login token from),
    /// cleared with `Path=/` in the logout answer, so the gateway's login ends with it.
    pub clear_cookies: Vec<String>,
}

impl TryFrom<RawEndSession> for EndSession {
    type Error = String;

    fn try_from(raw: RawEndSession) -> Result<Self, String> {
        if let Some(u) = &raw.logout_url {
            let absolute = u.starts_with("https://") || u.starts_with("http://");
            if !(absolute || u.starts_with('/'))
                || u.starts_with("//")
                || u.contains('#')
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(
                    "end_session.logout_url must be an absolute URL or path without fragment"
                        .into(),
                );
            }
        }
        for c in &raw.clear_cookies {
            if c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            {
                return Err(
                    "end_session.clear_cookies must be cookie names of letters, digits, _ - ."
                        .into(),
                );
            }
        }
        Ok(EndSession {
            logout_url: raw.logout_url,
            clear_cookies: raw.clear_cookies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn userinfo(v: serde_json::Value) -> Result<Option<UserinfoSource>, String> {
        serde_json::from_value::<RawUserinfo>(v)
            .map_err(|e| e.to_string())
            .and_then(TryFrom::try_from)
    }

    fn end_session(v: serde_json::Value) -> Result<EndSession, String> {
        serde_json::from_value::<RawEndSession>(v)
            .map_err(|e| e.to_string())
            .and_then(TryFrom::try_from)
    }

    #[test]
    fn userinfo_source_is_checked() {
        assert_eq!(userinfo(serde_json::json!({})).unwrap(), None);
        let s = userinfo(serde_json::json!({"cluster": "users"}))
            .unwrap()
            .unwrap();
        assert_eq!(s.authority, "users");
        assert_eq!(s.path_prefix, "/users/");
        assert_eq!(s.timeout, Duration::from_secs(1));
        for bad in [
            serde_json::json!({"authority": "x"}),
            serde_json::json!({"cluster": "u", "path_prefix": "users/"}),
            serde_json::json!({"cluster": "u", "timeout": "0s"}),
            serde_json::json!({"cluster": "u", "timeout": "2m"}),
            serde_json::json!({"cluster": "u", "extra": 1}),
        ] {
            assert!(userinfo(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn end_session_is_checked() {
        assert_eq!(
            end_session(serde_json::json!({})).unwrap(),
            EndSession::default()
        );
        let e = end_session(
            serde_json::json!({"logout_url": "/login/logout", "clear_cookies": ["login"]}),
        )
        .unwrap();
        assert_eq!(e.clear_cookies, ["login"]);
        for bad in [
            serde_json::json!({"logout_url": "//evil.example"}),
            serde_json::json!({"logout_url": "javascript:alert(1)"}),
            serde_json::json!({"logout_url": "/x#y"}),
            serde_json::json!({"clear_cookies": ["a b"]}),
            serde_json::json!({"clear_cookies": [""]}),
        ] {
            assert!(end_session(bad.clone()).is_err(), "{bad}");
        }
    }
}
