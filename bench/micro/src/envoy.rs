//! The micro-benchmark inside Envoy's V8 (`make micro-envoy`, `bench/micro/envoy.py`): Envoy
//! loads this module as a bootstrap extension (`envoy.bootstrap.wasm`, a singleton service on the
//! main thread), and the root context's `proxy_on_configure` runs the benchmark with the plugin
//! configuration as its arguments (`"rounds ms filter"`, as on the command line). The table goes
//! out through WASI `fd_write`, which Envoy writes to its log (stdout at info, one line per write);
//! `DONE` follows it, so the driver knows when to stop Envoy.
//!
//! The library is linked with its `no-exports` feature (Cargo.toml), so these are the module's
//! only proxy-wasm exports. Envoy also calls `_start` when it starts each VM: with no arguments
//! (Envoy's WASI has none) `main` returns at once.
//!
//! Envoy configures more than one VM from the compiled module: a "canary" VM that checks that
//! the configuration is accepted, then the main thread's own. A shared-data key (shared data is
//! per vm_id, across VMs) lets only the first configure run the benchmark.
#![allow(unsafe_code)]

use std::ptr::null_mut;

/// Printed (alone on its line) once the table is out.
pub const DONE: &str = "oauth-edge-micro: done";

const PLUGIN_CONFIGURATION: u32 = 7;
const KEY: &[u8] = b"oauth-edge-micro/ran";

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        out_value: *mut *mut u8,
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
}

/// Takes back a buffer the host allocated through `proxy_on_memory_allocate`.
fn owned(ptr: *mut u8, size: usize) -> Vec<u8> {
    if ptr.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host filled a boxed slice of exactly `size` bytes from proxy_on_memory_allocate.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, size)) }.into_vec()
}

fn plugin_configuration(size: usize) -> String {
    let (mut ptr, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers to live locals.
    let status =
        unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, &mut ptr, &mut len) };
    if status != 0 {
        return String::new();
    }
    String::from_utf8_lossy(&owned(ptr, len)).into_owned()
}

/// True the first time any VM of this vm_id asks.
fn first_run() -> bool {
    let (mut ptr, mut len, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: the key is a live slice; out-pointers to live locals.
    let found =
        unsafe { proxy_get_shared_data(KEY.as_ptr(), KEY.len(), &mut ptr, &mut len, &mut cas) };
    drop(owned(ptr, len));
    if found == 0 {
        return false;
    }
    // SAFETY: key and value are live slices.
    unsafe { proxy_set_shared_data(KEY.as_ptr(), KEY.len(), b"1".as_ptr(), 1, 0) };
    true
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let buf: Box<[u8]> = vec![0u8; size].into_boxed_slice();
    Box::into_raw(buf).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    if first_run() {
        // "rounds ms filter": the filter is the rest of the line, spaces and all.
        let args: Vec<String> = plugin_configuration(size)
            .trim()
            .splitn(3, ' ')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        crate::run(&args);
        crate::say(DONE.to_owned());
    }
    1
}
