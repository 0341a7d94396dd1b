//! Envoy stats from the filter. Counters are defined once per VM; Envoy shows them with its
//! `wasmcustom.` prefix (and in /stats/prometheus).

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::engine::{Endpoint, Events};
use crate::error::ErrorCode;
use crate::grants;
use crate::http::Outcome;

pub struct Metrics {
    req_token: Option<u32>,
    req_jwks: Option<u32>,
    req_metadata: Option<u32>,
    issued_client_credentials: Option<u32>,
    errors: Vec<(ErrorCode, Option<u32>)>,
    registry_calls: Option<u32>,
    cache_hits: Option<u32>,
    registry_not_found: Option<u32>,
    registry_failures: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn inc(id: Option<u32>, by: u32) {
    if let (Some(id), true) = (id, by > 0) {
        let _ = hostcalls::increment_metric(id, i64::from(by));
    }
}

impl Metrics {
    pub fn define() -> Metrics {
        Metrics {
            req_token: counter("oauth_edge.requests.token"),
            req_jwks: counter("oauth_edge.requests.jwks"),
            req_metadata: counter("oauth_edge.requests.metadata"),
            issued_client_credentials: counter(&format!(
                "oauth_edge.tokens_issued.{}",
                grants::CLIENT_CREDENTIALS
            )),
            errors: ErrorCode::ALL
                .iter()
                .map(|c| (*c, counter(&format!("oauth_edge.errors.{}", c.as_str()))))
                .collect(),
            registry_calls: counter("oauth_edge.registry.calls"),
            cache_hits: counter("oauth_edge.registry.cache_hits"),
            registry_not_found: counter("oauth_edge.registry.not_found"),
            registry_failures: counter("oauth_edge.registry.failures"),
        }
    }

    pub fn request(&self, ep: Endpoint) {
        inc(
            match ep {
                Endpoint::Token => self.req_token,
                Endpoint::Jwks => self.req_jwks,
                Endpoint::AuthorizationServerMetadata | Endpoint::OpenIdConfiguration => {
                    self.req_metadata
                }
            },
            1,
        );
    }

    pub fn outcome(&self, o: Outcome) {
        match o {
            Outcome::Issued(g) if g == grants::CLIENT_CREDENTIALS => {
                inc(self.issued_client_credentials, 1)
            }
            Outcome::Issued(_) | Outcome::Served => {}
            Outcome::Error(code) => {
                if let Some((_, id)) = self.errors.iter().find(|(c, _)| *c == code) {
                    inc(*id, 1);
                }
            }
        }
    }

    pub fn registry_call(&self) {
        inc(self.registry_calls, 1);
    }

    pub fn events(&self, e: Events) {
        inc(self.cache_hits, e.cache_hits);
        inc(self.registry_not_found, e.registry_not_found);
        inc(self.registry_failures, e.registry_failures);
    }
}
