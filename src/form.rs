//! `application/x-www-form-urlencoded` request bodies (RFC 6749 appendix B), strictly:
//! the body must be UTF-8 after percent-decoding, no parameter may appear twice (RFC 6749 §3.1,
//! §3.2), and a parameter sent without a value counts as omitted.

use percent_encoding::percent_decode;

use crate::error::OAuthError;

/// Parameters that may appear more than once: one `resource` per target (RFC 8707 §2), one
/// `audience` per target (RFC 8693 §2.1).
pub const REPEATABLE: &[&str] = &["resource", "audience"];

/// At most this many parameters; a token request has fewer than twenty.
pub const MAX_PARAMS: usize = 64;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in body.split(|b| *b == b'&') {
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.iter().position(|b| *b == b'=') {
                Some(i) => (
                    part.get(..i).unwrap_or_default(),
                    part.get(i + 1..).unwrap_or_default(),
                ),
                None => (part, &[][..]),
            };
            let name = decode(name)?;
            let value = decode(value)?;
            if name.is_empty() {
                return Err(OAuthError::invalid_request("malformed form body"));
            }
            if !REPEATABLE.contains(&name.as_str()) && pairs.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is repeated",
                    printable(&name)
                )));
            }
            if pairs.len() >= MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            pairs.push((name, value));
        }
        Ok(Form { pairs })
    }

    /// The value of a parameter; an empty value is the same as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every non-empty value of a repeatable parameter.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Builds a form from already-decoded pairs (a JSON body's string fields).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Form {
        Form { pairs }
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Form decoding of one name or value: `+` is a space, `%XX` a byte, and the result must be UTF-8.
pub fn decode(raw: &[u8]) -> Result<String, OAuthError> {
    let plus_replaced: std::borrow::Cow<[u8]> = if raw.contains(&b'+') {
        raw.iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect::<Vec<u8>>()
            .into()
    } else {
        raw.into()
    };
    let decoded: Vec<u8> = percent_decode(&plus_replaced).collect();
    String::from_utf8(decoded)
        .map_err(|_| OAuthError::invalid_request("request is not valid UTF-8"))
}

/// A parameter name safe to echo in an error description.
fn printable(name: &str) -> String {
    let short: String = name
        .chars()
        .take(40)
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if short.is_empty() {
        "(unnamed)".to_string()
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn decodes_plus_and_percent() {
        let f = Form::parse(b"grant_type=client_credentials&scope=read+write&x=a%20b%2Bc").unwrap();
        assert_eq!(f.get("grant_type"), Some("client_credentials"));
        assert_eq!(f.get("scope"), Some("read write"));
        assert_eq!(f.get("x"), Some("a b+c"));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn empty_value_is_absent() {
        let f = Form::parse(b"scope=&grant_type").unwrap();
        assert_eq!(f.get("scope"), None);
        assert_eq!(f.get("grant_type"), None);
    }

    #[test]
    fn repeated_parameter_is_invalid_request() {
        let e = Form::parse(b"grant_type=a&grant_type=b").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.description.contains("grant_type"));
        // even when one of them is empty
        assert!(Form::parse(b"scope=&scope=x").is_err());
    }

    #[test]
    fn non_utf8_refused_raw_and_encoded() {
        assert!(Form::parse(b"a=\xff").is_err());
        assert!(Form::parse(b"a=%ff").is_err());
        assert!(Form::parse(b"%C3%28=x").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        for body in [
            &b"="[..],
            b"&&&",
            b"%",
            b"%%%",
            b"a=%",
            b"a=%g1",
            b"=x",
            b"\0\0=\0",
        ] {
            let _ = Form::parse(body);
        }
        assert!(Form::parse(b"=x").is_err());
        assert_eq!(Form::parse(b"a=%").unwrap().get("a"), Some("%"));
    }

    #[test]
    fn too_many_parameters() {
        let body: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=1&")).collect();
        assert!(Form::parse(body.as_bytes()).is_err());
    }
}
