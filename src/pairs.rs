//! The proxy-wasm ABI's byte encodings for header maps and property paths, kept out of the
//! adapter so they run (and are tested and fuzzed) natively.
//!
//! A header map is `count: u32 LE`, then `count` pairs of `(name_len: u32 LE, value_len: u32
//! LE)`, then each name and value followed by a NUL byte. A property path is its segments, each
//! followed by a NUL byte. What the host hands back is decoded without trusting a single length:
//! a malformed map decodes to `None`, never to a panic.

/// Encodes `pairs` the way the host reads a header map.
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&len32(k.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len32(v.as_ref().len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Lengths past u32 cannot be sent at all; the host's own limits are far below.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Decodes a header map from the host. `None` if any length points outside the bytes.
pub fn decode(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = usize::try_from(read_u32(bytes, 0)?).ok()?;
    // Each pair needs 8 bytes of lengths: a count beyond that is a lie, not an allocation.
    if count > bytes.len() / 8 {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    for i in 0..count {
        let at = 4 + i * 8;
        let klen = usize::try_from(read_u32(bytes, at)?).ok()?;
        let vlen = usize::try_from(read_u32(bytes, at + 4)?).ok()?;
        let k = bytes.get(data..data.checked_add(klen)?)?.to_vec();
        data = data.checked_add(klen)?.checked_add(1)?;
        let v = bytes.get(data..data.checked_add(vlen)?)?.to_vec();
        data = data.checked_add(vlen)?.checked_add(1)?;
        out.push((k, v));
    }
    Some(out)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Encodes a property path such as `["source", "address"]`.
pub fn path(segments: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(segments.iter().map(|s| s.len() + 1).sum());
    for s in segments {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pairs = [
            (":path", "/oauth/token"),
            ("content-type", ""),
            ("x", "a\0b"),
        ];
        let bytes = encode(&pairs);
        let back = decode(&bytes).unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(back, want);
        assert_eq!(decode(&encode::<&str, &str>(&[])).unwrap(), vec![]);
        assert_eq!(decode(&[]).unwrap(), vec![]);
    }

    #[test]
    fn malformed_maps_decode_to_none() {
        let good = encode(&[("a", "bc")]);
        for cut in 0..good.len() - 1 {
            // Every truncation but the one that only loses the last NUL is refused.
            let r = decode(&good[..cut]);
            assert!(r.is_none() || cut == 0, "cut at {cut}: {r:?}");
        }
        // A count far beyond the bytes.
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_none());
        // A length pointing past the end.
        let mut lie = good.clone();
        lie[4] = 200;
        assert!(decode(&lie).is_none());
        let mut huge = good;
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_none());
    }

    #[test]
    fn property_paths() {
        assert_eq!(path(&["source", "address"]), b"source\0address\0".to_vec());
        assert!(path(&[]).is_empty());
    }
}
