//! Client authentication at the endpoints that take it (RFC 6749 §2.3): HTTP Basic
//! (`client_secret_basic`), secret in the body (`client_secret_post`), a signed JWT
//! (`private_key_jwt`, RFC 7523; verified in [`crate::client_assertion`]), or a public client
//! naming itself (`none`). Exactly one method per request (RFC 6749 §2.3: "MUST NOT use more
//! than one").

use base64::Engine as _;

use crate::client::{AuthMethod, Client};
use crate::error::OAuthError;
use crate::form::{self, Form};
use crate::http::Headers;

/// What the request presented, before the client record is known.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    Basic {
        client_id: String,
        secret: String,
    },
    Post {
        client_id: String,
        secret: String,
    },
    Assertion {
        client_id: String,
        assertion: String,
    },
    Public {
        client_id: String,
    },
}

// Never print a secret.
impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Basic { client_id, .. } => write!(f, "Basic({client_id:?})"),
            Presented::Post { client_id, .. } => write!(f, "Post({client_id:?})"),
            Presented::Assertion { client_id, .. } => write!(f, "Assertion({client_id:?})"),
            Presented::Public { client_id } => write!(f, "Public({client_id:?})"),
        }
    }
}

impl Presented {
    pub fn client_id(&self) -> &str {
        match self {
            Presented::Basic { client_id, .. }
            | Presented::Post { client_id, .. }
            | Presented::Assertion { client_id, .. }
            | Presented::Public { client_id } => client_id,
        }
    }

    pub fn used_basic(&self) -> bool {
        matches!(self, Presented::Basic { .. })
    }

    /// The error for a failed authentication, with the Basic challenge when Basic was tried.
    pub fn failed(&self, why: &'static str) -> OAuthError {
        OAuthError::invalid_client(why).with_basic_challenge(self.used_basic())
    }
}

/// Finds the one authentication method the request used.
pub fn extract(headers: &Headers, form: &Form) -> Result<Presented, OAuthError> {
    let authz = headers
        .single("authorization")
        .map_err(|_| OAuthError::invalid_request("Authorization header repeated"))?;
    let basic = match authz {
        Some(v) => parse_basic(v)?,
        None => None,
    };
    let body_id = form.get("client_id");
    let body_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let assertion_type = form.get("client_assertion_type");
    if assertion.is_some() || assertion_type.is_some() {
        let challenge = basic.is_some();
        if basic.is_some() || body_secret.is_some() {
            return Err(OAuthError::invalid_client(
                "more than one client authentication method used",
            )
            .with_basic_challenge(challenge));
        }
        if assertion_type != Some(crate::client_assertion::JWT_BEARER) {
            return Err(OAuthError::invalid_client(
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let assertion =
            assertion.ok_or_else(|| OAuthError::invalid_client("client_assertion is missing"))?;
        let client_id = crate::client_assertion::claimed_client_id(assertion)
            .ok_or_else(|| OAuthError::invalid_client("the client assertion is malformed"))?;
        // RFC 7521 §4.2: a client_id beside the assertion must name the same client.
        if body_id.is_some_and(|b| b != client_id) {
            return Err(OAuthError::invalid_client(
                "client_id does not match the client assertion",
            ));
        }
        return Ok(Presented::Assertion {
            client_id,
            assertion: assertion.to_string(),
        });
    }
    match (basic, body_secret) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_client(
            "more than one client authentication method used",
        )
        .with_basic_challenge(true)),
        (Some((client_id, secret)), None) => {
            // A client_id in the body beside Basic is tolerated only if it names the same client.
            if body_id.is_some_and(|b| b != client_id) {
                return Err(
                    OAuthError::invalid_client("client_id does not match the credentials")
                        .with_basic_challenge(true),
                );
            }
            Ok(Presented::Basic { client_id, secret })
        }
        (None, Some(secret)) => match body_id {
            Some(id) => Ok(Presented::Post {
                client_id: id.to_string(),
                secret: secret.to_string(),
            }),
            None => Err(OAuthError::invalid_client("client_id is missing")),
        },
        (None, None) => match body_id {
            Some(id) => Ok(Presented::Public {
                client_id: id.to_string(),
            }),
            None => Err(OAuthError::invalid_client(
                "client authentication is required",
            )),
        },
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1). Other schemes are
/// not client authentication and are left alone.
fn parse_basic(value: &str) -> Result<Option<(String, String)>, OAuthError> {
    let value = value.trim();
    let (scheme, rest) = match value.split_once(' ') {
        Some((s, r)) => (s, r.trim()),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let bad =
        || OAuthError::invalid_client("malformed Basic credentials").with_basic_challenge(true);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .map_err(|_| bad())?;
    let i = raw.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let id = form::decode(raw.get(..i).unwrap_or_default()).map_err(|_| bad())?;
    let secret = form::decode(raw.get(i + 1..).unwrap_or_default()).map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok(Some((id, secret)))
}

/// Checks a presented secret (or a public client's lack of one) against the registered client.
/// An assertion is checked by [`crate::client_assertion::verify`] instead (it needs the store
/// and maybe the network); here it never passes.
/// The client must use the method it registered (RFC 7591 §2 `token_endpoint_auth_method`),
/// as Hydra enforces: a `client_secret_basic` client sending its secret in the body, or a
/// `client_secret_post` one sending it with Basic, is refused. A secret then only ever travels
/// the way its owner agreed to (a body may end up in logs a header would not). A public client
/// may not send a secret, and a confidential client may not skip it.
pub fn authenticate(client: &Client, presented: &Presented) -> Result<(), OAuthError> {
    match (client.auth_method, presented) {
        (AuthMethod::ClientSecretBasic, Presented::Basic { secret, .. })
        | (AuthMethod::ClientSecretPost, Presented::Post { secret, .. }) => {
            if client.secret_matches(secret) {
                Ok(())
            } else {
                Err(presented.failed("client authentication failed"))
            }
        }
        (AuthMethod::None, Presented::Public { .. }) => Ok(()),
        // Same words as a wrong secret: do not tell a caller which part was wrong.
        _ => Err(presented.failed("client authentication failed")),
    }
}

/// RFC 8705 §2: authenticates a client registered for one of the mTLS methods by the request's
/// certificate.
pub fn tls(
    cfg: &crate::config::Config,
    client: &Client,
    cert: Option<&crate::mtls::ClientCert>,
    ctx: &mut crate::flow::Ctx<'_>,
) -> crate::flow::FlowResult<()> {
    let failed = || OAuthError::invalid_client("client authentication failed");
    let Some(cert) = cert else {
        return Err(OAuthError::invalid_client(
            "this client authenticates with a TLS client certificate, and none was presented",
        )
        .into());
    };
    match client.auth_method {
        AuthMethod::TlsClientAuth => {
            let verified = cfg.mtls.as_ref().is_some_and(|m| m.chain_verified);
            match &client.tls_client_name {
                Some(name) if verified && name.matches(cert) => Ok(()),
                _ => Err(failed().into()),
            }
        }
        AuthMethod::SelfSignedTlsClientAuth => {
            let set = match (&client.jwks, &client.jwks_uri) {
                (Some(set), _) => set.clone(),
                (None, Some(url)) => match ctx.jwks(url, false)? {
                    crate::flow::JwksLookup::Found(set) => set,
                    crate::flow::JwksLookup::Unavailable(_) => {
                        return Err(OAuthError::invalid_client(
                            "the client's jwks_uri could not be read",
                        )
                        .into())
                    }
                },
                (None, None) => return Err(failed().into()),
            };
            if set.keys.iter().any(|k| k.x5c_sha256 == Some(cert.sha256)) {
                Ok(())
            } else {
                Err(failed().into())
            }
        }
        _ => Err(failed().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::hash_secret;
    use crate::error::ErrorCode;
    use base64::engine::general_purpose::STANDARD;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    fn confidential() -> Client {
        Client::from_json(
            &serde_json::json!({"client_id":"c1","client_secret":hash_secret("s3cret"),"grant_types":["client_credentials"]}),
            true,
        )
        .unwrap()
    }

    #[test]
    fn basic_decodes_form_encoding() {
        let hd = h(&[("authorization", &basic("c%3A1", "a+b%25"))]);
        let p = extract(&hd, &Form::default()).unwrap();
        assert_eq!(
            p,
            Presented::Basic {
                client_id: "c:1".into(),
                secret: "a b%".into()
            }
        );
    }

    #[test]
    fn post_and_public() {
        let f = Form::parse(b"client_id=c1&client_secret=s3cret").unwrap();
        assert!(matches!(
            extract(&Headers::default(), &f).unwrap(),
            Presented::Post { .. }
        ));
        let f = Form::parse(b"client_id=c1").unwrap();
        assert!(matches!(
            extract(&Headers::default(), &f).unwrap(),
            Presented::Public { .. }
        ));
    }

    #[test]
    fn two_methods_is_invalid_client_with_challenge() {
        let hd = h(&[("authorization", &basic("c1", "s3cret"))]);
        let f = Form::parse(b"client_id=c1&client_secret=s3cret").unwrap();
        let e = extract(&hd, &f).unwrap_err();
        assert_eq!(
            (e.code, e.status, e.basic_challenge),
            (ErrorCode::InvalidClient, 401, true)
        );
    }

    #[test]
    fn mismatched_body_client_id() {
        let hd = h(&[("authorization", &basic("c1", "s3cret"))]);
        let f = Form::parse(b"client_id=other").unwrap();
        assert_eq!(extract(&hd, &f).unwrap_err().code, ErrorCode::InvalidClient);
        let f = Form::parse(b"client_id=c1").unwrap();
        assert!(extract(&hd, &f).is_ok());
    }

    #[test]
    fn malformed_basic() {
        for v in ["Basic", "Basic !!!", "Basic Zm9v", "basic OnNlY3JldA=="] {
            let e = extract(&h(&[("authorization", v)]), &Form::default()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidClient, "{v}");
            assert!(e.basic_challenge);
        }
        let two = h(&[
            ("authorization", &basic("a", "b")),
            ("Authorization", &basic("a", "b")),
        ]);
        assert_eq!(
            extract(&two, &Form::default()).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn nothing_presented() {
        let e = extract(&Headers::default(), &Form::default()).unwrap_err();
        assert_eq!(
            (e.code, e.basic_challenge),
            (ErrorCode::InvalidClient, false)
        );
        let f = Form::parse(b"client_secret=x").unwrap();
        assert_eq!(
            extract(&Headers::default(), &f).unwrap_err().code,
            ErrorCode::InvalidClient
        );
    }

    #[test]
    fn authenticate_checks_secret_and_kind() {
        let c = confidential();
        let ok = Presented::Basic {
            client_id: "c1".into(),
            secret: "s3cret".into(),
        };
        assert!(authenticate(&c, &ok).is_ok());
        // The right secret by the other secret method: refused (RFC 7591 §2, as Hydra does).
        let other_way = Presented::Post {
            client_id: "c1".into(),
            secret: "s3cret".into(),
        };
        let e = authenticate(&c, &other_way).unwrap_err();
        assert_eq!((e.code, e.status), (ErrorCode::InvalidClient, 401));
        let post_client = Client::from_json(
            &serde_json::json!({"client_id":"c2","client_secret":hash_secret("s3cret"),
                "token_endpoint_auth_method":"client_secret_post"}),
            true,
        )
        .unwrap();
        let by_post = Presented::Post {
            client_id: "c2".into(),
            secret: "s3cret".into(),
        };
        assert!(authenticate(&post_client, &by_post).is_ok());
        let by_basic = Presented::Basic {
            client_id: "c2".into(),
            secret: "s3cret".into(),
        };
        let e = authenticate(&post_client, &by_basic).unwrap_err();
        assert!(e.status == 401 && e.basic_challenge);
        let bad = Presented::Basic {
            client_id: "c1".into(),
            secret: "nope".into(),
        };
        let e = authenticate(&c, &bad).unwrap_err();
        assert!(e.basic_challenge && e.status == 401);
        let public = Presented::Public {
            client_id: "c1".into(),
        };
        assert!(authenticate(&c, &public).is_err());
        let pc = Client::from_json(
            &serde_json::json!({"client_id":"p","token_endpoint_auth_method":"none"}),
            true,
        )
        .unwrap();
        assert!(authenticate(
            &pc,
            &Presented::Public {
                client_id: "p".into()
            }
        )
        .is_ok());
        assert!(authenticate(
            &pc,
            &Presented::Post {
                client_id: "p".into(),
                secret: "".into()
            }
        )
        .is_err());
    }

    #[test]
    fn debug_hides_secret() {
        let p = Presented::Basic {
            client_id: "c1".into(),
            secret: "s3cret".into(),
        };
        assert!(!format!("{p:?}").contains("s3cret"));
    }
}
