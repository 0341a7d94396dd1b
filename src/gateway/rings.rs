//! The store rings in shared data: their keys created once at start (so each has a version to
//! compare-and-swap on), and their fill estimated on each tick (see [`crate::ring_fill`]).

use std::collections::HashMap;

use crate::engine::Engine;

use super::host::{Host, Level};
use super::metrics::Metrics;

/// At most one fill warning per ring per worker in this long.
const WARN_EVERY_MS: u64 = 60_000;

/// Creates every ring key once (empty), and the revocation epoch's. Envoy configures the main thread's VM before the
/// workers start; a marker per ring and size lets the workers' VMs skip the walk.
pub fn create_keys(host: &dyn Host, engine: &Engine) {
    for ring in engine.rings() {
        let marker = format!("oauth_edge.{}.created.{}", ring.name, ring.size);
        if let Ok((Some(_), _)) = host.shared_get(&marker) {
            continue;
        }
        for key in ring.keys() {
            if let Ok((_, 0)) = host.shared_get(&key) {
                let _ = host.shared_set(&key, &[], 0);
            }
        }
        let _ = host.shared_set(&marker, b"1", 0);
    }
    // The revocation epoch (its version is all it carries; see
    // `access_token::revocation_epoch`), so the first call to a protected route need not make it.
    if !engine.config.rings.revoked.remote {
        let key = crate::access_token::EPOCH_KEY;
        if let Ok((_, 0)) = host.shared_get(key) {
            let _ = host.shared_set(key, &[], 0);
        }
    }
}

/// One tick's estimate of how full each ring is: a gauge per ring, and a warning in Envoy's
/// log past [`crate::ring_fill::WARN_AT`], at most once a minute per ring.
pub fn measure(
    host: &dyn Host,
    engine: &Engine,
    metrics: Option<&Metrics>,
    ticks: u32,
    warned: &mut HashMap<&'static str, u64>,
) {
    // A prime stride moves the sample across the whole ring over the ticks.
    let offset = ticks.wrapping_mul(7_919);
    let now_ms = host.now_nanos() / 1_000_000;
    for ring in engine.rings() {
        let Some(kind) = crate::ring_fill::kind(&ring) else {
            continue;
        };
        let loads: Vec<f64> = crate::ring_fill::sample_slots(&ring, offset)
            .map(|slot| {
                let value = host.shared_get(&ring.key(slot)).ok().and_then(|(v, _)| v);
                crate::ring_fill::slot_load(kind, value.as_deref(), now_ms)
            })
            .collect();
        let fill = crate::ring_fill::estimate(&loads);
        if let Some(m) = metrics {
            m.ring_fill(host, ring.name, (fill * 100.0).round() as u64);
        }
        let last = warned.get(ring.name).copied().unwrap_or(0);
        if fill >= crate::ring_fill::WARN_AT
            && (last == 0 || now_ms.saturating_sub(last) >= WARN_EVERY_MS)
        {
            warned.insert(ring.name, now_ms);
            host.log(
                Level::Warn,
                &format!(
                    "oauth-edge: the {} ring is about {:.0} % full ({} slots): when it is \
                     full, requests that need a slot fail; raise store.{} or shorten the \
                     lifetimes",
                    crate::ring_fill::label(&ring),
                    fill * 100.0,
                    ring.size,
                    crate::ring_fill::setting(&ring),
                ),
            );
        }
    }
}
