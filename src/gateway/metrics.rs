//! Envoy stats from the filter. Counters are defined once per VM; Envoy shows them with its
//! `wasmcustom.` prefix (and in /stats/prometheus, with tags from the stats_tags in envoy.yaml).

use super::host::{Host, MetricKind};

use crate::engine::{Endpoint, Events};
use crate::error::ErrorCode;
use crate::http::Outcome;

/// What `Outcome::Issued` names: grant types at the token endpoint, and the front-channel
/// artefacts (pushed requests, codes).
/// (what the core says, the stat name's last segment): URN grant types get short names.
pub const ISSUED: &[(&str, &str)] = &[
    ("client_credentials", "client_credentials"),
    ("authorization_code", "authorization_code"),
    ("refresh_token", "refresh_token"),
    ("pushed_authorization", "pushed_authorization"),
    ("authorization_code_issued", "authorization_code_issued"),
    ("device_authorization", "device_authorization"),
    (crate::grants::DEVICE_CODE, "device_code"),
    (crate::grants::TOKEN_EXCHANGE, "token_exchange"),
    (crate::grants::PASSWORD, "password"),
];

pub struct Metrics {
    requests: Vec<(&'static str, Option<u32>)>,
    /// Per endpoint: a histogram of the time from the request headers to the answer (µs),
    /// waits for the registry, jwks_uri or etcd included.
    durations: Vec<(&'static str, Option<u32>)>,
    issued: Vec<(&'static str, Option<u32>)>,
    errors: Vec<(ErrorCode, Option<u32>)>,
    registry_calls: Option<u32>,
    cache_hits: Option<u32>,
    registry_not_found: Option<u32>,
    registry_failures: Option<u32>,
    coalesced: Option<u32>,
    /// Requests to protected routes let through.
    forwarded: Option<u32>,
    /// Per ring: its gauge of estimated fill (percent).
    ring_fill: Vec<(&'static str, Option<u32>)>,
}

fn inc(host: &dyn Host, id: Option<u32>, by: u32) {
    if let (Some(id), true) = (id, by > 0) {
        host.increment_metric(id, i64::from(by));
    }
}

fn find<K: PartialEq>(list: &[(K, Option<u32>)], k: K) -> Option<u32> {
    list.iter().find(|(n, _)| *n == k).and_then(|(_, id)| *id)
}

impl Metrics {
    pub fn define(host: &dyn Host, engine: &crate::engine::Engine) -> Metrics {
        let counter = |name: &str| host.define_metric(MetricKind::Counter, name);
        Metrics {
            // One counter and one histogram per metric tag of the endpoint table.
            requests: crate::config::endpoints::metric_tags()
                .map(|tag| (tag, counter(&format!("oauth_edge.requests.{tag}"))))
                .collect(),
            durations: crate::config::endpoints::metric_tags()
                .map(|tag| {
                    let name = format!("oauth_edge.request_duration_us.{tag}");
                    (tag, host.define_metric(MetricKind::Histogram, &name))
                })
                .collect(),
            issued: ISSUED
                .iter()
                .map(|(g, name)| (*g, counter(&format!("oauth_edge.tokens_issued.{name}"))))
                .collect(),
            errors: ErrorCode::ALL
                .iter()
                .map(|c| (*c, counter(&format!("oauth_edge.errors.{}", c.as_str()))))
                .collect(),
            registry_calls: counter("oauth_edge.registry.calls"),
            cache_hits: counter("oauth_edge.registry.cache_hits"),
            registry_not_found: counter("oauth_edge.registry.not_found"),
            registry_failures: counter("oauth_edge.registry.failures"),
            coalesced: counter("oauth_edge.lookups.coalesced"),
            forwarded: counter("oauth_edge.resource.forwarded"),
            ring_fill: engine
                .rings()
                .iter()
                .filter(|r| crate::ring_fill::kind(r).is_some())
                .map(|r| {
                    let name = format!(
                        "oauth_edge.ring_fill_percent.{}",
                        crate::ring_fill::label(r)
                    );
                    (r.name, host.define_metric(MetricKind::Gauge, &name))
                })
                .collect(),
        }
    }

    pub fn request(&self, host: &dyn Host, ep: Endpoint) {
        inc(host, find(&self.requests, ep.name()), 1);
    }

    /// How long a request took, in µs.
    pub fn duration(&self, host: &dyn Host, ep: Endpoint, us: u64) {
        if let Some(id) = find(&self.durations, ep.name()) {
            host.record_metric(id, us);
        }
    }

    pub fn outcome(&self, host: &dyn Host, o: Outcome) {
        match o {
            Outcome::Issued(g) => inc(host, find(&self.issued, g), 1),
            Outcome::Error(code) => inc(host, find(&self.errors, code), 1),
            Outcome::Served => {}
            Outcome::Forwarded => inc(host, self.forwarded, 1),
        }
    }

    pub fn registry_call(&self, host: &dyn Host) {
        inc(host, self.registry_calls, 1);
    }

    /// A ring's estimated fill, in percent.
    pub fn ring_fill(&self, host: &dyn Host, ring: &'static str, percent: u64) {
        if let Some(id) = find(&self.ring_fill, ring) {
            host.record_metric(id, percent);
        }
    }

    /// A request waited for a registry or jwks_uri call already in flight.
    pub fn coalesced(&self, host: &dyn Host) {
        inc(host, self.coalesced, 1);
    }

    pub fn events(&self, host: &dyn Host, e: Events) {
        inc(host, self.cache_hits, e.cache_hits);
        inc(host, self.registry_not_found, e.registry_not_found);
        inc(host, self.registry_failures, e.registry_failures);
    }
}
