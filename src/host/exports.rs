//! The callbacks the host calls (proxy-wasm ABI 0.2.1), each handing over to `host` at once.
//! Only the callbacks this filter needs are exported: the host skips the others (response
//! headers and bodies pass untouched, with no wasm call at all).
//!
//! `proxy_on_done` and `proxy_on_log` are not exported either: each would be one more call into
//! the VM per stream, for nothing. proxy-wasm-cpp-host (`ContextBase::onDone`, `onLog` in
//! src/context.cc) calls them only when the module exports them, and a missing `proxy_on_done`
//! counts as "done" (`true`), which is what this filter always answered.
//!
//! Exporting an unmangled symbol counts as unsafe code to the compiler, hence the allow; there
//! is no other unsafe operation here than running the WASI constructors once.
#![allow(unsafe_code)]

use super::abi;

extern "C" {
    /// Static constructors of a WASI reactor module: run once before anything else.
    fn __wasm_call_ctors();
}

#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: called once by the host, before any other export.
    unsafe { __wasm_call_ctors() };
    // A panic traps the VM (panic = "abort"); the code never panics on purpose, but if it ever
    // does, say where, at a level operators see.
    std::panic::set_hook(Box::new(|info| {
        abi::log(
            abi::LogLevel::Critical,
            &format!("oauth-edge: panic: {info}"),
        );
    }));
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Buffers the host hands us (header maps, bodies, shared data) are allocated here, as a boxed
/// slice of exactly `size` bytes that `abi::owned` takes back.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let buf: Box<[u8]> = vec![0u8; size].into_boxed_slice();
    Box::into_raw(buf).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _vm_config_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root: u32, _size: usize) -> u32 {
    u32::from(super::on_configure(root))
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root: u32) {
    super::on_tick(root);
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context: u32, parent: u32) {
    super::on_context_create(context, parent);
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context: u32,
    _headers: usize,
    end_of_stream: u32,
) -> u32 {
    super::on_request_headers(context, end_of_stream != 0)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context: u32, size: usize, end_of_stream: u32) -> u32 {
    super::on_request_body(context, size, end_of_stream != 0)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context: u32, _trailers: usize) -> u32 {
    super::on_request_trailers(context)
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    _root: u32,
    token: u32,
    headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    super::on_http_call_response(token, headers, body_size);
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context: u32) {
    super::on_delete(context);
}
