//! The authorization request (RFC 6749 §4.1.1, RFC 7636, RFC 9396, RFC 8707, OIDC Core §3.1.2.1):
//! parsed from a query, a PAR form body, or a PAR JSON body (seed 002), and validated once, the
//! same way for PAR and for a plain authorize request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::Client;
use crate::config::Config;
use crate::error::{ErrorCode, OAuthError};
use crate::form::Form;
use crate::{pkce, rar, scope};

/// Parameters as sent, before validation.
#[derive(Debug, Default, Clone)]
pub struct RawAuthz {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub authorization_details: Option<Value>,
    pub resources: Vec<String>,
    pub request_uri: Option<String>,
    pub has_request_object: bool,
    /// RFC 9449 §10: the thumbprint of the DPoP key the code is to be bound to.
    pub dpop_jkt: Option<String>,
}

/// A validated request: what a code will be bound to. Stored in a PAR record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthzRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
}

/// A validation failure, and whether it may be sent to the redirect_uri (only once the client
/// and its redirect_uri are trusted: RFC 6749 §4.1.2.1).
#[derive(Debug)]
pub struct Refusal {
    pub error: OAuthError,
    pub redirectable: bool,
}

fn shown(e: OAuthError) -> Refusal {
    Refusal {
        error: e,
        redirectable: false,
    }
}
fn redirected(e: OAuthError) -> Refusal {
    Refusal {
        error: e,
        redirectable: true,
    }
}

impl RawAuthz {
    pub fn from_form(f: &Form) -> Result<RawAuthz, OAuthError> {
        let s = |n: &str| f.get(n).map(str::to_string);
        Ok(RawAuthz {
            response_type: s("response_type"),
            client_id: s("client_id"),
            redirect_uri: s("redirect_uri"),
            scope: s("scope"),
            state: s("state"),
            nonce: s("nonce"),
            code_challenge: s("code_challenge"),
            code_challenge_method: s("code_challenge_method"),
            authorization_details: match f.get("authorization_details") {
                Some(t) => Some(rar::parse_param(t)?),
                None => None,
            },
            resources: f.get_all("resource").map(str::to_string).collect(),
            request_uri: s("request_uri"),
            has_request_object: f.get("request").is_some(),
            dpop_jkt: s("dpop_jkt"),
        })
    }

    /// The seed's JSON body (dto.PushedAuthorizationRequest): strings, `authorization_details`
    /// as a JSON array, `resources` as an array of strings. Also returns the string fields as a
    /// form, for client authentication.
    pub fn from_json(body: &[u8]) -> Result<(RawAuthz, Form), OAuthError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| OAuthError::invalid_request("body is not valid JSON"))?;
        let o = v
            .as_object()
            .ok_or_else(|| OAuthError::invalid_request("body must be a JSON object"))?;
        let mut pairs = Vec::new();
        let mut raw = RawAuthz::default();
        for (k, val) in o {
            match (k.as_str(), val) {
                ("authorization_details", v) => raw.authorization_details = Some(v.clone()),
                ("resources" | "resource", Value::Array(a)) => {
                    for r in a {
                        let r = r.as_str().ok_or_else(|| {
                            OAuthError::new(ErrorCode::InvalidTarget, "resources must be strings")
                        })?;
                        raw.resources.push(r.to_string());
                    }
                }
                ("resource", Value::String(r)) => raw.resources.push(r.clone()),
                (_, Value::String(s)) => pairs.push((k.clone(), s.clone())),
                (_, Value::Null) => {}
                _ => {
                    return Err(OAuthError::invalid_request(format!(
                        "parameter {} must be a string",
                        printable(k)
                    )))
                }
            }
        }
        let form = Form::from_pairs(pairs);
        let details = raw.authorization_details.take();
        let resources = std::mem::take(&mut raw.resources);
        let mut parsed = RawAuthz::from_form(&form)?;
        parsed.authorization_details = details;
        parsed.resources = resources;
        Ok((parsed, form))
    }

    /// Validates against the client (already known and authenticated if it had to be).
    pub fn validate(&self, cfg: &Config, client: &Client) -> Result<AuthzRequest, Refusal> {
        // Until the redirect_uri is known to be the client's, nothing may be redirected.
        let redirect_uri = self
            .redirect_uri
            .clone()
            .ok_or_else(|| shown(OAuthError::invalid_request("redirect_uri is required")))?;
        if !client.has_redirect_uri(&redirect_uri) {
            return Err(shown(OAuthError::invalid_request(
                "redirect_uri is not registered for this client",
            )));
        }
        if self.has_request_object {
            return Err(redirected(OAuthError::invalid_request(
                "request objects are not supported",
            )));
        }
        match self.response_type.as_deref() {
            Some("code") => {}
            None => {
                return Err(redirected(OAuthError::invalid_request(
                    "response_type is required",
                )))
            }
            Some(_) => {
                return Err(redirected(OAuthError::new(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                )))
            }
        }
        if !client.allows_grant("authorization_code") {
            return Err(redirected(OAuthError::unauthorized_client(
                "client is not allowed the authorization_code grant",
            )));
        }
        let scope = scope::grant(self.scope.as_deref(), &client.scope).map_err(redirected)?;
        let pkce_required = cfg.require_pkce || !client.is_confidential();
        let code_challenge = pkce::check_challenge(
            self.code_challenge.as_deref(),
            self.code_challenge_method.as_deref(),
            pkce_required,
        )
        .map_err(redirected)?;
        for (name, v) in [("state", &self.state), ("nonce", &self.nonce)] {
            if let Some(v) = v {
                if v.len() > 512 || !v.bytes().all(|b| (0x20..=0x7E).contains(&b)) {
                    return Err(redirected(OAuthError::invalid_request(format!(
                        "{name} must be at most 512 visible ASCII characters"
                    ))));
                }
            }
        }
        if let Some(d) = &self.authorization_details {
            rar::check_details(d, client).map_err(redirected)?;
        }
        rar::check_allowed(&self.resources, client).map_err(redirected)?;
        if let Some(j) = &self.dpop_jkt {
            // A SHA-256 thumbprint: 43 base64url characters.
            if j.len() != 43
                || !j
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(redirected(OAuthError::invalid_request(
                    "dpop_jkt must be a JWK SHA-256 thumbprint",
                )));
            }
        }
        Ok(AuthzRequest {
            client_id: client.client_id.clone(),
            redirect_uri,
            scope,
            state: self.state.clone(),
            nonce: self.nonce.clone(),
            code_challenge,
            authorization_details: self.authorization_details.clone(),
            resources: self.resources.clone(),
            dpop_jkt: self.dpop_jkt.clone(),
        })
    }
}

fn printable(name: &str) -> String {
    name.chars()
        .take(40)
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}
