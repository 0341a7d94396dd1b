//! The adapter's side of secret references ([`crate::secret`]): reads them from the VM's WASI
//! environment, which is what Envoy hands a wasm VM.
//!
//! Environment variables: Envoy gives the VM exactly the variables of its
//! `vm_config.environment_variables` (`host_env_keys` copied from Envoy's own environment,
//! `key_values` literally; Istio's `vmConfig.env` fills both), through WASI `environ_get`, which
//! `std::env::var` reads. Nothing else of Envoy's environment is visible.
//!
//! Files: Envoy's WASI has no preopened directories (proxy-wasm-cpp-host answers `path_open`
//! with ENOENT and `fd_prestat_get` with EBADF), so a wasm filter cannot read any file. The
//! read is still attempted, so a host that does give the VM a file system works, but in Envoy
//! the answer is always an error that says so and names the way that works.

use std::env::VarError;

use crate::secret::SecretRef;

pub(super) fn read(r: &SecretRef) -> Result<String, String> {
    match r {
        SecretRef::Env(name) => match std::env::var(name) {
            Ok(value) => Ok(value),
            Err(VarError::NotPresent) => Err(format!(
                "{r} is not set (the VM sees only the variables of vm_config.environment_variables: \
                 list it in host_env_keys and set it on the Envoy process; Istio: vmConfig.env)"
            )),
            Err(VarError::NotUnicode(_)) => Err(format!("{r} is not UTF-8")),
        },
        SecretRef::File(path) => std::fs::read_to_string(path).map_err(|e| {
            format!(
                "{r} cannot be read ({e}): Envoy gives wasm filters no file system; pass the \
                 secret through an environment variable of the VM instead ({{\"env\": \"NAME\"}})"
            )
        }),
    }
}
