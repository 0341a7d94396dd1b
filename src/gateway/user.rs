//! Reads the user the gateway authenticated, from where the configuration says: dynamic
//! metadata (e.g. jwt_authn's `payload_in_metadata`, which a client cannot set) or a header set
//! by an earlier filter.

use super::host::Host;

use crate::config::{Config, UserSource};
use crate::flow::User;

pub fn read(host: &dyn Host, cfg: &Config) -> Option<User> {
    match cfg.user.as_ref()? {
        UserSource::Metadata {
            namespace,
            key,
            subject_claim,
            auth_time_claim,
            session_claim,
        } => {
            let base = [
                "metadata",
                "filter_metadata",
                namespace.as_str(),
                key.as_str(),
            ];
            let sub =
                property(host, &base, subject_claim).and_then(|b| String::from_utf8(b).ok())?;
            if sub.is_empty() {
                return None;
            }
            let auth_time = property(host, &base, auth_time_claim).and_then(|b| number(&b));
            // A session id is an opaque string; anything else (or an absurd size) is ignored.
            let session = property(host, &base, session_claim)
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty() && s.len() <= 1024);
            Some(User {
                sub,
                auth_time,
                session,
            })
        }
        UserSource::Header { name } => {
            let sub = host.request_header(name)?;
            (!sub.is_empty()).then_some(User {
                sub,
                auth_time: None,
                session: None,
            })
        }
    }
}

fn property(host: &dyn Host, base: &[&str; 4], leaf: &str) -> Option<Vec<u8>> {
    let mut path: Vec<&str> = base.to_vec();
    path.push(leaf);
    host.property(&path)
}

/// A JSON number in metadata arrives as 8 bytes (a double from a protobuf Struct, or an
/// int64), or as text: take whichever is a plausible Unix time.
fn number(b: &[u8]) -> Option<u64> {
    let plausible = |v: f64| v.is_finite() && (1.0e8..1.0e11).contains(&v);
    if let Ok(arr) = <[u8; 8]>::try_from(b) {
        let f = f64::from_le_bytes(arr);
        if plausible(f) {
            return Some(f as u64);
        }
        let i = i64::from_le_bytes(arr);
        if plausible(i as f64) {
            return u64::try_from(i).ok();
        }
    }
    std::str::from_utf8(b)
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| plausible(*v))
        .map(|v| v as u64)
}
