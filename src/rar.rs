//! Rich authorization requests (RFC 9396) and resource indicators (RFC 8707): what the client
//! asks to be able to do, checked against what it is registered for.

use serde_json::Value;

use crate::client::Client;
use crate::error::{ErrorCode, OAuthError};

fn bad(d: &'static str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidAuthorizationDetails, d)
}

/// §2: a JSON array of objects, each with a string `type` the client may use (§5:
/// `invalid_authorization_details` otherwise). Common fields, when present, have their types.
pub fn check_details(v: &Value, client: &Client) -> Result<(), OAuthError> {
    let arr = v
        .as_array()
        .ok_or_else(|| bad("authorization_details must be a JSON array"))?;
    if arr.is_empty() || arr.len() > 32 {
        return Err(bad("authorization_details must have 1 to 32 entries"));
    }
    for d in arr {
        let o = d
            .as_object()
            .ok_or_else(|| bad("each authorization detail must be an object"))?;
        let t = o
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("each authorization detail needs a string type"))?;
        if !client.authorization_details_types.iter().any(|a| a == t) {
            return Err(bad(
                "authorization details type not allowed for this client",
            ));
        }
        for f in ["locations", "actions", "datatypes", "data_types"] {
            if let Some(x) = o.get(f) {
                if !x.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                    return Err(bad(
                        "authorization details fields must be arrays of strings",
                    ));
                }
            }
        }
        if let Some(x) = o.get("identifier") {
            if !x.is_string() {
                return Err(bad("authorization details identifier must be a string"));
            }
        }
    }
    Ok(())
}

/// The `authorization_details` parameter: JSON text in a form, a JSON value in a JSON body.
pub fn parse_param(text: &str) -> Result<Value, OAuthError> {
    serde_json::from_str(text).map_err(|_| bad("authorization_details is not valid JSON"))
}

/// RFC 8707 §2: each resource is an absolute URI without a fragment.
pub fn check_resources(resources: &[String]) -> Result<(), OAuthError> {
    if resources.len() > 8 {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "too many resources",
        ));
    }
    for r in resources {
        let scheme_ok = r.split_once(':').is_some_and(|(s, rest)| {
            !s.is_empty()
                && !rest.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        });
        if !scheme_ok
            || r.contains('#')
            || r.chars().any(|c| c.is_whitespace() || c.is_control())
            || r.len() > 2048
        {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "resource must be an absolute URI without a fragment",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client() -> Client {
        Client::from_json(
            &json!({"client_id":"c","token_endpoint_auth_method":"none","authorization_details_types":["account_information"]}),
            true,
        )
        .unwrap()
    }

    #[test]
    fn details() {
        let c = client();
        let ok = json!([{"type":"account_information","actions":["list_accounts","read_balances"],"locations":["https://example.com/accounts"],"identifier":"account-12345"}]);
        assert!(check_details(&ok, &c).is_ok());
        for bad in [
            json!({}),
            json!([]),
            json!([1]),
            json!([{"type":"payment"}]),
            json!([{"actions":["x"]}]),
            json!([{"type":"account_information","actions":"x"}]),
            json!([{"type":"account_information","identifier":1}]),
        ] {
            let e = check_details(&bad, &c).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAuthorizationDetails, "{bad}");
        }
        assert!(parse_param("[").is_err());
    }

    #[test]
    fn resources() {
        assert!(
            check_resources(&["https://api.example.com/".into(), "urn:example:x".into()]).is_ok()
        );
        for bad in ["api", "https://a/#f", "", ":x", "a b:c"] {
            assert_eq!(
                check_resources(&[bad.into()]).unwrap_err().code,
                ErrorCode::InvalidTarget,
                "{bad}"
            );
        }
    }
}
