//! The `endpoints` section: its raw form (read from the endpoint table, with serde's own
//! messages for unknown and repeated keys) and its validated form, [`Endpoints`]: every
//! endpoint's path and URL. The table itself is in `table.rs` ([`Endpoint::row`]).

mod table;

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ConfigError;
use table::configured;
pub use table::{metric_tags, Endpoint, PathFrom, Row};

/// The `endpoints` section as written: a path per key of the table (absent keys: their
/// default).
pub(super) struct RawEndpoints(Vec<(Endpoint, String)>);

impl Default for RawEndpoints {
    fn default() -> Self {
        RawEndpoints(
            configured()
                .map(|(e, _, default)| (e, default.to_string()))
                .collect(),
        )
    }
}

impl RawEndpoints {
    fn set(&mut self, ep: Endpoint, path: String) {
        if let Some(slot) = self.0.iter_mut().find(|(e, _)| *e == ep) {
            slot.1 = path;
        }
    }
}

// What `#[derive(Deserialize)]` with `deny_unknown_fields` and a default per field did, with the
// keys from the table: the same documents accepted and refused, with the same messages.
impl<'de> Deserialize<'de> for RawEndpoints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("RawEndpoints", &[], RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawEndpoints;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct RawEndpoints")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEndpoints, A::Error> {
        let mut out = RawEndpoints::default();
        let mut seen: Vec<Endpoint> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let Some((ep, key, _)) = configured().find(|(_, key, _)| *key == k) else {
                let keys: Vec<String> = configured().map(|(_, k, _)| format!("`{k}`")).collect();
                return Err(de::Error::custom(format_args!(
                    "unknown field `{k}`, expected one of {}",
                    keys.join(", ")
                )));
            };
            if seen.contains(&ep) {
                return Err(de::Error::duplicate_field(key));
            }
            seen.push(ep);
            out.set(ep, map.next_value::<String>()?);
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawEndpoints, A::Error> {
        let mut out = RawEndpoints::default();
        for (ep, _, _) in configured() {
            match seq.next_element::<String>()? {
                Some(p) => out.set(ep, p),
                None => break,
            }
        }
        Ok(out)
    }
}

/// Our endpoints' paths and URLs, validated.
#[derive(Debug)]
pub struct Endpoints {
    /// `scheme://authority` of the issuer: the origin of every endpoint URL.
    pub origin: String,
    /// (endpoint, path exactly as configured, absolute URL), for every endpoint with a path.
    served: Vec<(Endpoint, String, String)>,
    /// The token and PAR endpoint URLs as DPoP `htu` is compared (normalised).
    pub token_htu: String,
    pub par_htu: String,
}

impl Endpoints {
    /// The endpoint's path (empty for the ones without a path of their own: [`PathFrom::Elsewhere`]).
    pub fn path(&self, ep: Endpoint) -> &str {
        self.served
            .iter()
            .find(|(e, _, _)| *e == ep)
            .map_or("", |(_, p, _)| p)
    }

    /// The endpoint's absolute URL (empty as [`Endpoints::path`]).
    pub fn url(&self, ep: Endpoint) -> &str {
        self.served
            .iter()
            .find(|(e, _, _)| *e == ep)
            .map_or("", |(_, _, u)| u)
    }

    /// Every endpoint with a path: (endpoint, path).
    pub fn paths(&self) -> impl Iterator<Item = (Endpoint, &str)> {
        self.served.iter().map(|(e, p, _)| (*e, p.as_str()))
    }

    /// Paths checked and unique, URLs from the issuer.
    pub(super) fn build(raw: RawEndpoints, issuer: &str) -> Result<Endpoints, ConfigError> {
        let (origin, issuer_path) =
            crate::url::split_issuer(issuer).map_err(|e| ConfigError::message("issuer", e))?;
        let mut served: Vec<(Endpoint, String, String)> = Vec::new();
        for ep in Endpoint::ALL {
            let path = match ep.row().path {
                PathFrom::Key { key, .. } => {
                    let p = raw
                        .0
                        .iter()
                        .find(|(e, _)| e == ep)
                        .map_or("", |(_, p)| p.as_str());
                    endpoint_path(key, p)?
                }
                PathFrom::AsMetadata => {
                    format!("/.well-known/oauth-authorization-server{issuer_path}")
                }
                PathFrom::OidcMetadata => format!("{issuer_path}/.well-known/openid-configuration"),
                PathFrom::Elsewhere => continue,
            };
            if served.iter().any(|(_, p, _)| *p == path) {
                let field = ep
                    .key()
                    .map_or_else(|| "issuer".to_string(), |k| format!("endpoints.{k}"));
                return Err(ConfigError::message(
                    field,
                    format!("endpoint path {path:?} is used twice"),
                ));
            }
            let url = format!("{origin}{path}");
            served.push((*ep, path, url));
        }
        let htu = |ep: Endpoint, what: &str| {
            let url = served
                .iter()
                .find(|(e, _, _)| *e == ep)
                .map_or("", |(_, _, u)| u);
            crate::url::normalize_htu(url).ok_or_else(|| {
                ConfigError::message(
                    "issuer",
                    format!("the {what} endpoint URL cannot be normalised"),
                )
            })
        };
        let token_htu = htu(Endpoint::Token, "token")?;
        let par_htu = htu(Endpoint::PushedAuthorization, "PAR")?;
        Ok(Endpoints {
            origin,
            served,
            token_htu,
            par_htu,
        })
    }
}

fn endpoint_path(key: &str, p: &str) -> Result<String, ConfigError> {
    if !p.starts_with('/')
        || p.len() < 2
        || p.contains(['?', '#', ' ', '%'])
        || p.chars().any(char::is_control)
    {
        return Err(ConfigError::new(
            format!("endpoints.{key}"),
            "must be a plain absolute path like /oauth/token",
        ));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_endpoints_read_as_the_derived_struct_did() {
        let read = |s: &str| serde_json::from_str::<RawEndpoints>(s).map(|r| r.0);
        let token = |r: &Vec<(Endpoint, String)>| r.first().map(|(_, p)| p.clone());
        assert_eq!(token(&read("{}").unwrap()).as_deref(), Some("/oauth/token"));
        assert_eq!(
            token(&read(r#"{"token": "/t"}"#).unwrap()).as_deref(),
            Some("/t")
        );
        assert_eq!(token(&read(r#"["/t"]"#).unwrap()).as_deref(), Some("/t"));
        let e = read(r#"{"tokn": "/t"}"#).err().unwrap().to_string();
        assert!(
            e.starts_with(
                "unknown field `tokn`, expected one of `token`, `jwks`, `pushed_authorization`"
            ),
            "{e}"
        );
        let e = read(r#"{"token": "/t", "token": "/u"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("duplicate field `token`"), "{e}");
        assert!(read(r#"{"token": 1}"#).is_err());
        assert!(read("null").is_err());
        assert!(read(r#"["/a","/b","/c","/d","/e","/f","/g","/h","/i","/j","/k","/l"]"#).is_err());
    }
}
