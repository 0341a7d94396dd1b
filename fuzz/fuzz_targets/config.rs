//! The plugin configuration: refused or accepted, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = oauth_edge::config::Config::from_json(data);
});
