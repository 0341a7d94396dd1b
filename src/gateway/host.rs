//! What the gateway needs from its host, as primitive I/O: the current stream's request
//! (headers, body, properties), shared data (get, compare-and-swap), dispatched calls and their
//! answers, the local answer, metrics, the clock and the log. Over proxy-wasm, `crate::host`
//! implements it with host calls; natively, the test fake does. No decision is made behind
//! this trait: the order of caches, what a failure becomes and every retry are in
//! [`crate::gateway`].
//!
//! Every operation that can fail returns the failure as a value (a host status as text for the
//! log): the gateway turns it into a clean answer, never a trap.

use crate::http::{Call, Headers};
use crate::secret::SecretRef;

/// Log levels, as Envoy's log has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
    Critical,
}

/// Metric kinds, as Envoy's stats have them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Why a shared-data write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The key's version moved since it was read.
    CasMismatch,
    /// Anything else the host said (for the log).
    Other(String),
}

/// A host failure, as text for the log.
pub type HostError = String;

pub trait Host {
    /// Wall-clock time in nanoseconds since the Unix epoch (0 if the host cannot tell).
    fn now_nanos(&self) -> u64;
    fn log(&self, level: Level, msg: &str);

    /// The plugin configuration (the filter's JSON).
    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError>;
    /// A secret the configuration refers to (an environment variable or a file of the VM).
    fn secret(&self, r: &SecretRef) -> Result<String, String>;
    fn set_tick_period(&self, period_ms: u32) -> Result<(), HostError>;

    /// One request header of the current stream (the first value).
    fn request_header(&self, name: &str) -> Option<String>;
    /// All request headers of the current stream, every value kept.
    fn request_headers(&self) -> Headers;
    /// Up to `max` bytes of the current stream's buffered request body.
    fn request_body(&self, max: usize) -> Result<Vec<u8>, HostError>;
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;
    fn replace_request_header(&self, name: &str, value: &str) -> Result<(), HostError>;
    /// A property (connection attributes, dynamic metadata) by path.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Filter state other filters and the access log can read.
    fn set_property(&self, key: &str, value: &str) -> Result<(), HostError>;

    /// A shared-data key: its value (`None` if never written) and version (0 if absent).
    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), HostError>;
    /// Writes a key if its version is still `cas` (0: unconditionally).
    fn shared_set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError>;

    /// Dispatches a call to an Envoy cluster; its answer comes in a later callback under the
    /// returned token.
    fn dispatch(&self, call: &Call) -> Result<u32, HostError>;
    /// The `:status` of the dispatched call being answered (`None`: it has none).
    fn call_status(&self) -> Result<Option<u16>, HostError>;
    /// Up to `size` bytes of the body of the dispatched call being answered.
    fn call_body(&self, size: usize) -> Result<Vec<u8>, HostError>;

    /// Makes `stream` the current stream (to resume a request from a call's callback).
    fn set_stream(&self, stream: u32) -> Result<(), HostError>;
    /// Answers the current stream locally.
    fn respond(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError>;
    /// Lets the current stream's request, paused earlier, go on upstream.
    fn continue_request(&self) -> Result<(), HostError>;

    /// Defines a metric (`None` if the host has no metrics).
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, by: i64);
    fn record_metric(&self, id: u32, value: u64);
}
