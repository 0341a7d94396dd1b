//! Scope strings (RFC 6749 §3.3): space-delimited scope-tokens of visible ASCII without `"` or `\`.

use crate::error::OAuthError;

pub fn is_scope_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Parses a scope parameter into its tokens (order kept, duplicates dropped).
pub fn parse(s: &str) -> Result<Vec<&str>, OAuthError> {
    let mut out: Vec<&str> = Vec::new();
    for t in s.split(' ').filter(|t| !t.is_empty()) {
        if !is_scope_token(t) {
            return Err(OAuthError::invalid_scope("malformed scope"));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The scope to grant: the requested one if every token is allowed, all allowed scopes when the
/// request names none (RFC 6749 §3.3 lets the server pick a default; we document this one).
pub fn grant(requested: Option<&str>, allowed: &[String]) -> Result<String, OAuthError> {
    match requested {
        None => Ok(allowed.join(" ")),
        Some(req) => {
            let tokens = parse(req)?;
            if let Some(bad) = tokens.iter().find(|t| !allowed.iter().any(|a| a == *t)) {
                // The token is syntactically a scope-token, so it is safe to echo.
                return Err(OAuthError::invalid_scope(format!(
                    "scope {bad} is not allowed for this client"
                )));
            }
            Ok(tokens.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["read".into(), "write".into()]
    }

    #[test]
    fn subset_is_granted() {
        assert_eq!(grant(Some("read"), &allowed()).unwrap(), "read");
        assert_eq!(
            grant(Some("write  read read"), &allowed()).unwrap(),
            "write read"
        );
        assert_eq!(grant(None, &allowed()).unwrap(), "read write");
    }

    #[test]
    fn outside_is_invalid_scope() {
        let e = grant(Some("read admin"), &allowed()).unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::InvalidScope);
        assert!(e.description.contains("admin"));
        assert!(grant(Some("re\"ad"), &allowed()).is_err());
        assert!(grant(Some("read\\"), &allowed()).is_err());
    }

    #[test]
    fn token_syntax() {
        assert!(is_scope_token("a:b/c~"));
        assert!(!is_scope_token("é"));
        assert!(!is_scope_token(""));
        assert!(!is_scope_token("a\tb"));
    }
}
