//! The proxy-wasm ABI (0.2.1), spoken directly: the host functions this filter imports, each
//! wrapped so that every status the host can return (including ones the ABI adds later) comes
//! back as a value, and the callbacks the host calls, exported by `host::exports`.
//!
//! Why not the SDK's `hostcalls`: they `panic!("unexpected status")` on any status they did not
//! foresee (e.g. `BadArgument` when reading the headers of a dispatched call that failed after
//! its response began), and in wasm a panic is a trap that takes the VM, and with it every
//! request on that worker, down. Here a status is a number, never an enum the host could put an
//! out-of-range value into. This is the only module where `unsafe` is allowed; each block only
//! passes pointers to live Rust buffers and takes ownership of buffers the host allocated
//! through `proxy_on_memory_allocate`.
#![allow(unsafe_code)]

use std::ptr::{null, null_mut};

/// A host status other than `Ok`, kept as the number the host returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    pub const NOT_FOUND: Status = Status(1);
    pub const CAS_MISMATCH: Status = Status(8);

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            5 => "BadExpression",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            9 => "ResultMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            _ => "Unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

pub type HostResult<T> = Result<T, Status>;

fn check(raw: u32) -> HostResult<()> {
    if raw == 0 {
        Ok(())
    } else {
        Err(Status(raw))
    }
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum LogLevel {
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Map {
    RequestHeaders = 0,
    CallResponseHeaders = 6,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    RequestBody = 0,
    CallResponseBody = 4,
    PluginConfiguration = 7,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(kind: u32, out_data: *mut *mut u8, out_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        kind: u32,
        key: *const u8,
        key_size: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
        out_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_http_call(
        cluster: *const u8,
        cluster_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        out_token: *mut u32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, out_id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period_ms: u32) -> u32;
    fn proxy_replace_header_map_value(
        kind: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(kind: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
}

/// Takes ownership of a buffer the host allocated with `proxy_on_memory_allocate`.
fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the host got `data` from proxy_on_memory_allocate(size), which hands out a boxed
    // slice of exactly `size` bytes (capacity == length == size), and never touches it again.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub fn log(level: LogLevel, msg: &str) {
    // SAFETY: a live &str.
    let _ = unsafe { proxy_log(level as u32, msg.as_ptr(), msg.len()) };
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> HostResult<u64> {
    let mut t = 0u64;
    // SAFETY: a live out-parameter.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

/// Up to `max` bytes of a buffer; `Ok(None)` when the host has none.
pub fn buffer(kind: Buffer, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: live out-parameters; the result is taken by `owned`.
    let raw = unsafe { proxy_get_buffer_bytes(kind as u32, start, max, &mut data, &mut size) };
    match check(raw) {
        Ok(()) => Ok(owned(data, size)),
        Err(Status::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every pair of a header map, values as bytes; a malformed answer is an error, not a panic.
pub fn header_pairs(kind: Map) -> HostResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: live out-parameters; the result is taken by `owned`.
    check(unsafe { proxy_get_header_map_pairs(kind as u32, &mut data, &mut size) })?;
    let bytes = owned(data, size).unwrap_or_default();
    crate::pairs::decode(&bytes).ok_or(Status(3))
}

/// One header's value; `Ok(None)` when it is absent.
pub fn header(kind: Map, name: &str) -> HostResult<Option<Vec<u8>>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: a live &str and out-parameters; the result is taken by `owned`.
    let raw = unsafe {
        proxy_get_header_map_value(kind as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match check(raw) {
        Ok(()) => Ok(Some(owned(data, size).unwrap_or_default())),
        Err(Status::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets a header of the current stream (replacing every value it had).
pub fn replace_header(kind: Map, name: &str, value: &str) -> HostResult<()> {
    // SAFETY: live buffers for the duration of the call.
    check(unsafe {
        proxy_replace_header_map_value(
            kind as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of a header of the current stream (absent is fine).
pub fn remove_header(kind: Map, name: &str) -> HostResult<()> {
    // SAFETY: a live &str for the duration of the call.
    match check(unsafe { proxy_remove_header_map_value(kind as u32, name.as_ptr(), name.len()) }) {
        Err(Status::NOT_FOUND) => Ok(()),
        other => other,
    }
}

/// Lets the current stream's request go on after a pause.
pub fn continue_request() -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_continue_stream(0) })
}

/// Sets a property of the current stream: in Envoy, the filter state `wasm.<key>`. (Envoy
/// takes the path of a write as the key itself, so a one-segment key goes without the NUL
/// separator reads use.)
pub fn set_property(key: &str, value: &str) -> HostResult<()> {
    let path = key.as_bytes();
    // SAFETY: live buffers for the duration of the call.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// Answers the current stream locally. `details` becomes Envoy's response code details
/// (`%RESPONSE_CODE_DETAILS%`), which the shipped local_reply_config uses to tell the filter's
/// own answers from Envoy's.
pub fn send_response(
    status: u32,
    details: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HostResult<()> {
    let headers = crate::pairs::encode(headers);
    // SAFETY: live buffers for the duration of the call.
    check(unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// A shared-data value and its CAS version: `(None, 0)` when the key does not exist.
pub fn shared_get(key: &str) -> HostResult<(Option<Vec<u8>>, u32)> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: a live &str and out-parameters; the result is taken by `owned`.
    let raw =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match check(raw) {
        Ok(()) => Ok((owned(data, size), cas)),
        Err(Status::NOT_FOUND) => Ok((None, 0)),
        Err(e) => Err(e),
    }
}

/// Writes a shared-data value; `cas` 0 writes unconditionally, otherwise the write happens only
/// if the key's version is still `cas` (`Err(CAS_MISMATCH)` if not).
pub fn shared_set(key: &str, value: &[u8], cas: u32) -> HostResult<()> {
    // SAFETY: live buffers for the duration of the call.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// A property such as `["source", "address"]`; `Ok(None)` when the host has none.
pub fn property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let path = crate::pairs::path(path);
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: a live buffer and out-parameters; the result is taken by `owned`.
    let raw = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match check(raw) {
        Ok(()) => Ok(owned(data, size)),
        Err(Status::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Dispatches an HTTP call to a cluster; its answer comes to `proxy_on_http_call_response` with
/// the returned token.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout_ms: u32,
) -> HostResult<u32> {
    let headers = crate::pairs::encode(headers);
    let trailers = crate::pairs::encode::<&str, &str>(&[]);
    let (body_ptr, body_len) = body.map_or((null(), 0), |b| (b.as_ptr(), b.len()));
    let mut token = 0u32;
    // SAFETY: live buffers for the duration of the call and a live out-parameter.
    check(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body_ptr,
            body_len,
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// Makes `context_id` the stream the following calls act on (to answer a waiting request from
/// another stream's callback).
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_effective_context(context_id) })
}

pub fn define_metric(kind: MetricType, name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    // SAFETY: a live &str and out-parameter.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, by: i64) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_increment_metric(id, by) })
}

pub fn record_metric(id: u32, value: u64) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_record_metric(id, value) })
}

/// Asks for `proxy_on_tick` on the current root context every `period_ms`.
pub fn set_tick_period(period_ms: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_tick_period_milliseconds(period_ms) })
}
