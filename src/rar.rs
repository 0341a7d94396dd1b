//! Rich authorization requests (RFC 9396) and resource indicators (RFC 8707): what the client
//! asks to be able to do, checked against what it is registered for.
//!
//! Resources are a policy, not only a syntax (RFC 8707 §2, RFC 9700 §2.3): a client gets
//! tokens only for the resources in its `allowed_resources` — the same list for every grant
//! and for token exchange's `audience`. Asking for none gives the configured default audience.

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

fn not_allowed(d: &'static str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidTarget, d)
}

/// The syntax of `resources`, then each must be one the client is registered for. The
/// description never echoes the refused value (it may be anything the caller typed).
pub fn check_allowed(resources: &[String], client: &Client) -> Result<(), OAuthError> {
    check_resources(resources)?;
    if resources.iter().any(|r| !client.may_target(r)) {
        return Err(not_allowed(
            "a resource is not one this client may ask for (allowed_resources)",
        ));
    }
    Ok(())
}

/// The resources of a refreshed access token (RFC 8707 §2.2): none asked for → all those
/// granted; otherwise a subset of them, never one more (`invalid_target`). Whatever results must
/// still be within the client's policy now: a grant whose resources the client may no longer
/// target (its registration changed) cannot be refreshed (`invalid_grant`).
pub fn narrow(
    granted: &[String],
    requested: &[String],
    client: &Client,
) -> Result<Vec<String>, OAuthError> {
    let out = if requested.is_empty() {
        granted.to_vec()
    } else {
        check_resources(requested)?;
        if requested.iter().any(|r| !granted.contains(r)) {
            return Err(not_allowed(
                "a refresh may only narrow the resources granted",
            ));
        }
        requested.to_vec()
    };
    if out.iter().any(|r| !client.may_target(r)) {
        return Err(OAuthError::invalid_grant(
            "the grant is for a resource this client may no longer ask for",
        ));
    }
    Ok(out)
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

    fn with_resources(v: serde_json::Value) -> Result<Client, String> {
        let mut m = json!({"client_id":"c","token_endpoint_auth_method":"none"});
        for (k, x) in v.as_object().unwrap() {
            m[k] = x.clone();
        }
        Client::from_json(&m, true)
    }

    #[test]
    fn allowed_resources_one_list_for_every_grant() {
        let a = "https://a.example/".to_string();
        let b = "https://b.example/".to_string();
        // token_exchange_audiences, the older name, is read into the same list.
        let c = with_resources(json!({"allowed_resources": [a], "token_exchange_audiences": [b]}))
            .unwrap();
        assert_eq!(c.allowed_resources, vec![a.clone(), b.clone()]);
        assert!(check_allowed(&[a.clone(), b.clone()], &c).is_ok());
        assert!(check_allowed(&[], &c).is_ok());
        for bad in [
            "https://a.example",
            "https://A.example/",
            "https://c.example/",
        ] {
            let e = check_allowed(&[a.clone(), bad.into()], &c).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidTarget, "{bad}");
            assert!(
                !e.description.contains(bad),
                "the refused value is not echoed"
            );
        }
        // No list: nothing may be named (the default audience comes from asking for none).
        let none = with_resources(json!({})).unwrap();
        assert_eq!(
            check_allowed(std::slice::from_ref(&a), &none)
                .unwrap_err()
                .code,
            ErrorCode::InvalidTarget
        );
        // Entries are checked at registration.
        for bad in [json!([""]), json!(["a b"]), json!(["x\n"]), json!([1])] {
            assert!(with_resources(json!({"allowed_resources": bad})).is_err());
            assert!(with_resources(json!({"token_exchange_subject_audiences": bad})).is_err());
        }
    }

    #[test]
    fn a_refresh_narrows_never_widens() {
        let a = "https://a.example/".to_string();
        let b = "https://b.example/".to_string();
        let c = with_resources(json!({"allowed_resources": [a, b]})).unwrap();
        let granted = vec![a.clone(), b.clone()];
        assert_eq!(narrow(&granted, &[], &c).unwrap(), granted);
        assert_eq!(
            narrow(&granted, std::slice::from_ref(&b), &c).unwrap(),
            vec![b.clone()]
        );
        assert_eq!(narrow(&[], &[], &c).unwrap(), Vec::<String>::new());
        for req in [
            vec![a.clone(), "https://c.example/".into()],
            vec!["x".into()],
        ] {
            assert_eq!(
                narrow(&granted, &req, &c).unwrap_err().code,
                ErrorCode::InvalidTarget
            );
        }
        assert_eq!(
            narrow(&[], std::slice::from_ref(&a), &c).unwrap_err().code,
            ErrorCode::InvalidTarget
        );
        // The policy shrank since the grant: refused as a grant, narrowing still works.
        let shrunk = with_resources(json!({"allowed_resources": [a]})).unwrap();
        assert_eq!(
            narrow(&granted, &[], &shrunk).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            narrow(&granted, std::slice::from_ref(&a), &shrunk).unwrap(),
            vec![a]
        );
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
