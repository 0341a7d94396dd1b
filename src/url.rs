//! URL forms the configuration and the request checks share: the issuer split into origin and
//! path, and the DPoP `htu` comparison form of an endpoint URL (RFC 9449 §4.3). A leaf (it
//! imports nothing of ours), so the configuration depends neither on [`crate::dpop`] nor on
//! [`crate::protect`], which read it.

/// An endpoint URL as `htu` is compared (RFC 9449 §4.3 check 9 and RFC 3986 §6.2.2–6.2.3):
/// scheme and host lower case, the scheme's default port dropped, percent-encodings of
/// unreserved characters decoded and the others upper case, an empty path as `/`, query and
/// fragment removed. `None` for anything that is not an absolute http(s) URL.
pub fn normalize_htu(url: &str) -> Option<String> {
    let url = url.split(['#', '?']).next().unwrap_or("");
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = match authority.rsplit_once(':') {
        // Not the colon of an IPv6 literal without port.
        Some((host, port)) if !port.contains(']') => {
            if port == default_port || port.is_empty() {
                host.to_string()
            } else {
                authority.clone()
            }
        }
        _ => authority.clone(),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&scheme);
    out.push_str("://");
    out.push_str(&authority);
    if path.is_empty() {
        out.push('/');
        return Some(out);
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            let v = u8::from_str_radix(s, 16).ok()?;
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push_str(&s.to_ascii_uppercase());
            }
            i += 3;
        } else {
            if b.is_ascii_control() || b == b' ' || !b.is_ascii() {
                return None;
            }
            out.push(char::from(b));
            i += 1;
        }
    }
    Some(out)
}

/// The issuer is an https URL without query or fragment (RFC 8414 §2); plain http only for
/// loopback, so the demo and tests can run. Returns (scheme://authority, path without a
/// trailing slash).
pub fn split_issuer(issuer: &str) -> Result<(String, String), String> {
    let rest = if let Some(r) = issuer.strip_prefix("https://") {
        r
    } else if let Some(r) = issuer.strip_prefix("http://") {
        let host = r.split(['/', ':']).next().unwrap_or("");
        if !(host == "localhost" || host == "127.0.0.1" || r.starts_with("[::1]")) {
            return Err("issuer must be an https URL (http only for localhost)".into());
        }
        r
    } else {
        return Err("issuer must be an https URL".into());
    };
    if issuer.contains(['?', '#']) || issuer.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("issuer must not have a query, fragment or spaces".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("")),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err("issuer has no host".into());
    }
    let scheme_len = issuer.len() - rest.len();
    let origin = format!("{}{}", issuer.get(..scheme_len).unwrap_or(""), authority);
    Ok((origin, path.trim_end_matches('/').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_normalisation() {
        let n = |s: &str| normalize_htu(s);
        assert_eq!(
            n("https://AS.example.com:443/oauth/token?x=1#f").as_deref(),
            Some("https://as.example.com/oauth/token")
        );
        assert_eq!(
            n("HTTP://127.0.0.1:80/o%61uth/%2ftoken").as_deref(),
            Some("http://127.0.0.1/oauth/%2Ftoken")
        );
        assert_eq!(
            n("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080/")
        );
        assert_eq!(
            n("http://[::1]:443/x").as_deref(),
            Some("http://[::1]:443/x")
        );
        assert_eq!(n("https://[::1]:443/x").as_deref(), Some("https://[::1]/x"));
        assert_eq!(n("http://[::1]/x").as_deref(), Some("http://[::1]/x"));
        for bad in [
            "",
            "/oauth/token",
            "ftp://x/y",
            "https://",
            "https://u@h/x",
            "https://h/%zz",
            "https://h/%4",
            "https://h/a b",
            "https://h/é",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }
}
