//! Paths that are not one of our endpoint paths byte for byte but that an upstream, a client
//! library or a person would take for one: `/oauth/token/`, `/OAUTH/TOKEN`, `/oauth/token;x`,
//! `/oauth%2Ftoken`, `/oauth/token%20`. Passed through, such a request would carry a client's
//! credentials (a Basic header, a form with client_secret) to the application behind the
//! gateway; the filter answers them itself with a clean 404 instead.
//!
//! The comparison form: the query cut off, percent-escapes decoded, `;parameters` dropped from
//! every segment, empty and `.` segments dropped and `..` applied, trailing whitespace, control
//! characters and dots dropped from the last segment, ASCII lower case. Paths the application
//! owns under the same prefix (`/oauth/callback`) differ in that form too and still pass.

/// The comparison form of a request path (see the module doc).
pub fn canonical(path: &str) -> String {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let decoded = percent_encoding::percent_decode_str(path).collect::<Vec<u8>>();
    let decoded = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        let seg = seg.split_once(';').map_or(seg, |(s, _)| s);
        let seg = seg.trim_matches(|c: char| c.is_whitespace() || c.is_control());
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    if let Some(last) = segments.last_mut() {
        *last = last.trim_end_matches('.');
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in segments.iter().filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn variants_of_an_endpoint_path_meet() {
        let want = "/oauth/token";
        for p in [
            "/oauth/token",
            "/oauth/token/",
            "/OAUTH/TOKEN",
            "/oauth/token;x",
            "/oauth;a=b/token;jsessionid=1",
            "/oauth%2Ftoken",
            "/oauth%2ftoken",
            "/oauth/token%20",
            "/oauth/token%09",
            "/oauth/token.",
            "/oauth//token",
            "/oauth/./token",
            "/oauth/x/../token",
            "/oauth/%2e/token",
            "/oauth/token?x=1",
            "/%6Fauth/token",
            "/oauth/token%00",
        ] {
            assert_eq!(canonical(p), want, "{p}");
        }
        assert_eq!(
            canonical("/.well-known/oauth-authorization-server/"),
            "/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn other_paths_stay_apart() {
        for p in [
            "/oauth/callback",
            "/oauth/tokens",
            "/oauth/token/x",
            "/api/oauth/token",
            "/",
            "",
        ] {
            assert_ne!(canonical(p), "/oauth/token", "{p}");
        }
        assert_eq!(canonical(""), "/");
        // Invalid UTF-8 after decoding is not a panic.
        assert_eq!(canonical("/%ff%fe"), "/\u{fffd}\u{fffd}");
    }
}
