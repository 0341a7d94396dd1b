//! oauth-edge: an OAuth 2.0 authorization server inside the gateway.
//!
//! Everything but `host` is the host-independent protocol core: it never calls proxy-wasm
//! (which is a wasm32-only dependency, so a core module that tried would not even compile
//! natively) and runs under plain `cargo test`. `host` is the thin proxy-wasm adapter: it
//! implements [`gateway::Host`] with host calls and hands every callback to the [`gateway`].
//!
//! Unsafe code is forbidden in the core. The adapter speaks the proxy-wasm ABI itself (the SDK's
//! host calls panic on host statuses they do not expect, and a panic traps the VM): its one
//! module of raw calls, `host::abi`, is the only place `unsafe` is allowed, on wasm32 only.
#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]
#![cfg_attr(target_arch = "wasm32", deny(unsafe_code))]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod access_token;
pub mod authz;
pub mod client;
pub mod client_assertion;
pub mod client_auth;
pub mod config;
pub mod cors;
pub mod dpop;
pub mod duration;
pub mod endpoints;
pub mod engine;
pub mod error;
pub mod error_code;
pub mod es256;
pub mod etcd;
pub mod families;
pub mod flights;
pub mod flow;
pub mod form;
pub mod gateway;
pub mod grants;
pub mod http;
pub mod jwk;
pub mod jwks_fetch;
pub mod jws;
pub mod keys;
pub mod metadata;
pub mod mint;
pub mod mtls;
pub mod oidc;
pub mod oidc_settings;
pub mod pairs;
pub mod path_variant;
pub mod pkce;
pub mod protect;
pub mod random;
pub mod rar;
pub mod rate_limit;
pub mod records;
pub mod registry;
pub mod replay;
pub mod ring_fill;
pub mod ring_share;
pub mod scope;
pub mod sealed;
pub mod sealed_code;
pub mod secret;
pub mod session;
pub mod store;
pub mod token_answer;
pub mod url;

#[cfg(all(target_arch = "wasm32", not(feature = "no-exports")))]
mod host;
