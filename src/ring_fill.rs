//! How full each ring of the short-lived store is, estimated from a sample of its slots.
//!
//! A full ring is a `500` for everyone who needs a slot, so operators need to see it coming.
//! Shared data cannot be counted cheaply (tens of thousands of keys, no listing), so the gateway
//! reads [`SAMPLES`] evenly spaced slots of each ring every few seconds, starting at a moving
//! offset, and this module turns what it read into a fill ratio: the share of record slots that
//! hold a live record, or for the bucketed rings, live entries over what a bucket holds
//! comfortably (the replay cache and deny-list: four, see [`crate::replay`]; refresh families:
//! [`FAMILY_COMFORT`], see [`crate::families`]). With 256 samples the estimate is within about ±3
//! points of the truth (binomial standard error at 50 %). Rate-limit counters are overwritten,
//! never allocated, and are not estimated.

use crate::store::Ring;

/// Slots read per ring per estimate.
pub const SAMPLES: u32 = 256;

/// Live replay entries a bucket holds comfortably (two choices over buckets of 8).
const BUCKET_COMFORT: f64 = 4.0;

/// Live families a bucket holds comfortably (of [`crate::families::BUCKET`], 48): at 40 on
/// average the fullest of 65,536 buckets holds about 44, and the first inserts fail near 45
/// (tests/capacity.rs). The default sizing at 20 logins/s for 24 h reads 26.4 ÷ 40 = 66 %; the
/// warning (80 %) comes at 24 logins/s, with room left to act.
pub const FAMILY_COMFORT: f64 = 40.0;

/// The fill ratio worth a warning.
pub const WARN_AT: f64 = 0.8;

/// How a ring's slots are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One record per slot (`{"exp": ...}`): pushed requests, codes, devices.
    Records,
    /// Buckets of expiring entries: the jti replay cache and the revocation deny-list.
    Buckets,
    /// Buckets of refresh families ([`crate::families`]).
    Families,
}

/// Which rings are estimated, and how.
pub fn kind(ring: &Ring) -> Option<Kind> {
    if ring.remote {
        return None;
    }
    match ring.name {
        "jti" | "rev" => Some(Kind::Buckets),
        "rtf" => Some(Kind::Families),
        "rl" => None,
        _ => Some(Kind::Records),
    }
}

/// The name a ring's gauge carries (`oauth_edge.ring_fill_percent.<label>`).
pub fn label(ring: &Ring) -> &'static str {
    match ring.name {
        "par" => "request_uris",
        "code" => "codes",
        "rtf" => "refresh_families",
        "jti" => "replay_cache",
        "rev" => "revoked_tokens",
        "dev" => "device_requests",
        other => other,
    }
}

/// The configuration setting that sizes a ring.
pub fn setting(ring: &Ring) -> &'static str {
    match ring.name {
        "par" => "request_uri_slots",
        "code" => "code_slots",
        "rtf" => "refresh_family_slots",
        "jti" => "jti_slots",
        "rev" => "revoked_slots",
        "dev" => "device_slots",
        _ => "rate_limit_slots",
    }
}

/// The slots to read for one estimate: evenly spaced from `offset`.
pub fn sample_slots(ring: &Ring, offset: u32) -> impl Iterator<Item = u32> {
    let size = ring.size.max(1);
    let n = SAMPLES.min(size);
    let step = size / n;
    let start = offset % size;
    (0..n).map(move |i| start.wrapping_add(i.wrapping_mul(step)) % size)
}

/// How much of one slot's capacity is in use (0 or 1 for a record; a bucket's live entries
/// over what it holds comfortably).
pub fn slot_load(kind: Kind, value: Option<&[u8]>, now_ms: u64) -> f64 {
    match kind {
        Kind::Records => {
            if crate::store::reusable(value, now_ms) {
                0.0
            } else {
                1.0
            }
        }
        Kind::Buckets => value.map_or(0.0, |v| {
            crate::replay::live_entries(v, now_ms) as f64 / BUCKET_COMFORT
        }),
        Kind::Families => value.map_or(0.0, |v| {
            crate::families::live_entries(v, now_ms) as f64 / FAMILY_COMFORT
        }),
    }
}

/// The fill ratio of a sample (0 for an empty sample).
pub fn estimate(loads: &[f64]) -> f64 {
    if loads.is_empty() {
        return 0.0;
    }
    loads.iter().sum::<f64>() / loads.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(name: &'static str, size: u32) -> Ring {
        Ring {
            name,
            size,
            remote: false,
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(&ring("code", 64)), Some(Kind::Records));
        assert_eq!(kind(&ring("jti", 64)), Some(Kind::Buckets));
        assert_eq!(kind(&ring("rtf", 64)), Some(Kind::Families));
        assert_eq!(kind(&Ring::remote("rtf")), None);
        assert_eq!(kind(&ring("rl", 64)), None);
        assert_eq!(kind(&Ring::remote("code")), None);
    }

    #[test]
    fn samples_are_spread_and_in_range() {
        let r = ring("code", 65_536);
        let slots: Vec<u32> = sample_slots(&r, 70_000).collect();
        assert_eq!(slots.len(), SAMPLES as usize);
        assert!(slots.iter().all(|s| *s < r.size));
        let mut sorted = slots.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), slots.len(), "no slot twice");
        // A small ring is read whole.
        assert_eq!(sample_slots(&ring("dev", 16), 3).count(), 16);
        assert_eq!(
            sample_slots(&ring("dev", 1), u32::MAX).collect::<Vec<_>>(),
            vec![0]
        );
    }

    #[test]
    fn loads() {
        let now = 1_000;
        assert_eq!(slot_load(Kind::Records, None, now), 0.0);
        assert_eq!(slot_load(Kind::Records, Some(b""), now), 0.0);
        assert_eq!(slot_load(Kind::Records, Some(br#"{"exp":999}"#), now), 0.0);
        assert_eq!(slot_load(Kind::Records, Some(br#"{"exp":5000}"#), now), 1.0);
        let h = "A".repeat(22);
        let bucket = format!("{h}:5000;{h}:5000;{h}:10;");
        assert_eq!(slot_load(Kind::Buckets, Some(bucket.as_bytes()), now), 0.5);
        assert_eq!(slot_load(Kind::Buckets, Some(b"garbage"), now), 0.0);
        // Ten live families of twelve (expiry in seconds: 5 is live at 1,000 ms, 1 is not).
        let entry = |exp: u32| {
            let mut e = [0u8; crate::families::ENTRY];
            e[12..16].copy_from_slice(&exp.to_be_bytes());
            e
        };
        let mut fams = vec![crate::families::FORMAT];
        for exp in [5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 1, 1] {
            fams.extend_from_slice(&entry(exp));
        }
        assert_eq!(slot_load(Kind::Families, Some(&fams), now), 0.25);
        assert_eq!(
            slot_load(Kind::Families, Some(br#"{"exp":5000}"#), now),
            0.0
        );
        assert_eq!(estimate(&[1.0, 1.0, 0.0, 1.0]), 0.75);
        assert_eq!(estimate(&[]), 0.0);
    }
}
