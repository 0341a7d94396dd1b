//! Shared data as the gateway's [`Host`]: what the flow tests' host hands the core's lookup
//! policy ([`oauth_edge::gateway::lookup`]) and ring setup, so those run exactly as in Envoy.
//! Only shared data and the log are real here; a stream's request and dispatched calls belong
//! to the full fake in `tests/gateway.rs`.

use std::cell::RefCell;

use oauth_edge::gateway::{Host, HostError, Level, MetricKind, SetError};
use oauth_edge::http::{Call, Headers};
use oauth_edge::secret::SecretRef;

use super::SharedData;

pub struct SharedIo<'a> {
    pub shared: RefCell<&'a mut SharedData>,
    pub logs: RefCell<Vec<(Level, String)>>,
}

impl<'a> SharedIo<'a> {
    pub fn new(shared: &'a mut SharedData) -> Self {
        SharedIo {
            shared: RefCell::new(shared),
            logs: RefCell::new(Vec::new()),
        }
    }
}

const NO_STREAM: &str = "no stream in the flow tests' host";

impl Host for SharedIo<'_> {
    fn now_nanos(&self) -> u64 {
        super::NOW.unix_ms * 1_000_000
    }
    fn log(&self, level: Level, msg: &str) {
        self.logs.borrow_mut().push((level, msg.to_string()));
    }
    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError> {
        Err(NO_STREAM.into())
    }
    fn secret(&self, r: &SecretRef) -> Result<String, String> {
        Err(format!("{r}: no secrets here"))
    }
    fn set_tick_period(&self, _: u32) -> Result<(), HostError> {
        Ok(())
    }
    fn request_header(&self, _: &str) -> Option<String> {
        None
    }
    fn request_headers(&self) -> Headers {
        Headers::default()
    }
    fn request_body(&self, _: usize) -> Result<Vec<u8>, HostError> {
        Err(NO_STREAM.into())
    }
    fn remove_request_header(&self, _: &str) -> Result<(), HostError> {
        Err(NO_STREAM.into())
    }
    fn replace_request_header(&self, _: &str, _: &str) -> Result<(), HostError> {
        Err(NO_STREAM.into())
    }
    fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
        None
    }
    fn set_property(&self, _: &str, _: &str) -> Result<(), HostError> {
        Err(NO_STREAM.into())
    }
    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), HostError> {
        let (v, cas) = self.shared.borrow().get(key);
        Ok((v, cas.unwrap_or(0)))
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        self.shared
            .borrow_mut()
            .set(key, value, cas)
            .map_err(|()| SetError::CasMismatch)
    }
    fn dispatch(&self, _: &Call) -> Result<u32, HostError> {
        Err(NO_STREAM.into())
    }
    fn call_status(&self) -> Result<Option<u16>, HostError> {
        Err(NO_STREAM.into())
    }
    fn call_body(&self, _: usize) -> Result<Vec<u8>, HostError> {
        Err(NO_STREAM.into())
    }
    fn set_stream(&self, _: u32) -> Result<(), HostError> {
        Err(NO_STREAM.into())
    }
    fn respond(&self, _: u16, _: &[(&str, &str)], _: &[u8]) -> Result<(), HostError> {
        Err(NO_STREAM.into())
    }
    fn continue_request(&self) -> Result<(), HostError> {
        Err(NO_STREAM.into())
    }
    fn define_metric(&self, _: MetricKind, _: &str) -> Option<u32> {
        None
    }
    fn increment_metric(&self, _: u32, _: i64) {}
    fn record_metric(&self, _: u32, _: u64) {}
}
