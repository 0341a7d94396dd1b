//! The thin proxy-wasm adapter: [`Host`] implemented with proxy-wasm host calls, and the
//! callbacks the host makes, each handed to the per-VM [`Gateway`] at once. No decision is made
//! here: what a request needs, in which order caches are tried and what a failure becomes are
//! in [`crate::gateway`].
//!
//! It speaks the ABI itself (`abi` for host calls, `exports` for callbacks) rather than through
//! the SDK, whose host calls panic on statuses they do not expect: here every host outcome is a
//! value, and every failure becomes a log line and a clean answer. The host calls, and what each
//! failure becomes, are listed in docs/host-calls.md.

mod abi;
mod exports;
mod secrets;

use std::cell::RefCell;

use crate::gateway::{Action, Gateway, Host, HostError, Level, MetricKind, SetError};
use crate::http::{Call, Headers};
use crate::secret::SecretRef;

use abi::{Buffer, LogLevel, Map, MetricType};

thread_local! {
    static GATEWAY: RefCell<Gateway> = RefCell::new(Gateway::new());
}

/// Runs `f` on the VM's gateway. The host never calls back into the VM while a callback runs
/// (Envoy defers re-entrant callbacks), but should it ever, the inner call does nothing rather
/// than trap.
fn with_gateway<R>(default: R, f: impl FnOnce(&mut Gateway) -> R) -> R {
    GATEWAY.with(|cell| match cell.try_borrow_mut() {
        Ok(mut g) => f(&mut g),
        Err(_) => {
            abi::log(
                LogLevel::Error,
                "oauth-edge: re-entrant host callback ignored",
            );
            default
        }
    })
}

pub(crate) fn on_context_create(context: u32, parent: u32) {
    with_gateway((), |g| g.on_context_create(context, parent));
}

pub(crate) fn on_delete(context: u32) {
    with_gateway((), |g| g.on_delete(context));
}

pub(crate) fn on_configure(root: u32) -> bool {
    with_gateway(false, |g| g.on_configure(&Proxy, root))
}

pub(crate) fn on_tick(root: u32) {
    with_gateway((), |g| g.on_tick(&Proxy, root));
}

pub(crate) fn on_request_headers(context: u32, end_of_stream: bool) -> u32 {
    code(with_gateway(Action::Continue, |g| {
        g.on_request_headers(&Proxy, context, end_of_stream)
    }))
}

pub(crate) fn on_request_body(context: u32, body_size: usize, end_of_stream: bool) -> u32 {
    code(with_gateway(Action::Continue, |g| {
        g.on_request_body(&Proxy, context, body_size, end_of_stream)
    }))
}

pub(crate) fn on_request_trailers(context: u32) -> u32 {
    code(with_gateway(Action::Continue, |g| {
        g.on_request_trailers(&Proxy, context)
    }))
}

pub(crate) fn on_http_call_response(token: u32, num_headers: usize, body_size: usize) {
    with_gateway((), |g| {
        g.on_http_call_response(&Proxy, token, num_headers, body_size)
    });
}

/// A header's bytes as text, in place when they are UTF-8 (as they nearly always are); invalid
/// sequences become U+FFFD, as `String::from_utf8_lossy` makes them.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// proxy-wasm's filter header/body status.
fn code(a: Action) -> u32 {
    match a {
        Action::Continue => 0,
        Action::Pause => 1,
    }
}

/// The host, through proxy-wasm host calls. It holds nothing: the host keeps the current
/// stream.
struct Proxy;

impl Host for Proxy {
    fn now_nanos(&self) -> u64 {
        abi::now_nanos().unwrap_or(0)
    }

    fn log(&self, level: Level, msg: &str) {
        let level = match level {
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
            Level::Critical => LogLevel::Critical,
        };
        abi::log(level, msg);
    }

    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError> {
        abi::buffer(Buffer::PluginConfiguration, 0, usize::MAX)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string())
    }

    fn secret(&self, r: &SecretRef) -> Result<String, String> {
        secrets::read(r)
    }

    fn set_tick_period(&self, period_ms: u32) -> Result<(), HostError> {
        abi::set_tick_period(period_ms).map_err(|e| e.to_string())
    }

    fn request_header(&self, name: &str) -> Option<String> {
        abi::header(Map::RequestHeaders, name)
            .ok()
            .flatten()
            .map(text)
    }

    fn request_headers(&self) -> Headers {
        let pairs = abi::header_pairs(Map::RequestHeaders).unwrap_or_default();
        Headers(pairs.into_iter().map(|(k, v)| (text(k), text(v))).collect())
    }

    fn request_body(&self, max: usize) -> Result<Vec<u8>, HostError> {
        abi::buffer(Buffer::RequestBody, 0, max)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string())
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        abi::remove_header(Map::RequestHeaders, name).map_err(|e| e.to_string())
    }

    fn replace_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        abi::replace_header(Map::RequestHeaders, name, value).map_err(|e| e.to_string())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path).ok().flatten()
    }

    fn set_property(&self, key: &str, value: &str) -> Result<(), HostError> {
        abi::set_property(key, value).map_err(|e| e.to_string())
    }

    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), HostError> {
        abi::shared_get(key).map_err(|e| e.to_string())
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        abi::shared_set(key, value, cas).map_err(|e| match e {
            abi::Status::CAS_MISMATCH => SetError::CasMismatch,
            e => SetError::Other(e.to_string()),
        })
    }

    fn dispatch(&self, call: &Call) -> Result<u32, HostError> {
        let headers: Vec<(&str, &str)> =
            call.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let timeout_ms = u32::try_from(call.timeout.as_millis()).unwrap_or(u32::MAX);
        abi::http_call(&call.cluster, &headers, call.body.as_deref(), timeout_ms)
            .map_err(|e| e.to_string())
    }

    fn call_status(&self) -> Result<Option<u16>, HostError> {
        abi::header(Map::CallResponseHeaders, ":status")
            .map(|v| v.and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u16>().ok()))
            .map_err(|e| e.to_string())
    }

    fn call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        abi::buffer(Buffer::CallResponseBody, 0, size)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string())
    }

    fn set_stream(&self, stream: u32) -> Result<(), HostError> {
        abi::set_effective_context(stream).map_err(|e| e.to_string())
    }

    fn respond(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        abi::send_response(u32::from(status), crate::gateway::DETAILS, headers, body)
            .map_err(|e| e.to_string())
    }

    fn continue_request(&self) -> Result<(), HostError> {
        abi::continue_request().map_err(|e| e.to_string())
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        abi::define_metric(kind, name).ok()
    }

    fn increment_metric(&self, id: u32, by: i64) {
        let _ = abi::increment_metric(id, by);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = abi::record_metric(id, value);
    }
}
