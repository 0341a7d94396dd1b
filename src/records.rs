//! The records the short-lived store keeps for the grants, in one place: what a code and a
//! device authorization request are bound to, and how a user_code finds its record. The
//! endpoints that create them and the grants that redeem them both read these. (A pushed
//! authorization request's record is [`crate::authz::AuthzRequest`]; a refresh family's entry is
//! [`crate::families`]'s.)

use serde::{Deserialize, Serialize};

use crate::access_token::Issued;
use crate::authz::AuthzRequest;

/// What a code is bound to.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CodeData {
    pub req: AuthzRequest,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// The login session's OpenID Connect `sid` ([`crate::flow::User::sid`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The refresh family issued from this code (set when it is redeemed; a sealed code carries
    /// it from the start, [`crate::sealed_code`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The access token issued from this code (set when it is redeemed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Issued>,
}

/// A device authorization request's state (RFC 8628 §3.4, §3.5).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Issued,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DeviceData {
    /// SHA-256 of the device_code's secret.
    pub dc: String,
    pub client_id: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    pub status: Status,
    /// Seconds between polls; grows by 5 with every slow_down.
    pub interval: u64,
    /// When the device last polled (ms).
    #[serde(default)]
    pub last_poll: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// The approving user's login session ([`crate::flow::User::sid`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// The user_code alphabet of RFC 8628 §6.1: consonants only (no vowels, so no words; no
/// look-alikes like 0/O, 1/I).
pub const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// What users type may carry dashes, spaces and lower case (§6.1): compare without them.
pub fn normalize_user_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The id a user_code's record is found by.
pub fn record_id(user_code: &str) -> String {
    format!("device\0{}", normalize_user_code(user_code))
}
