//! Refresh tokens as sealed, self-contained values: ChaCha20-Poly1305 over the token's claims,
//! keyed from the signing keys (the same box seals authorization codes in a remote store:
//! [`crate::sealed_code`]). Any Envoy with the same configuration opens any other's tokens,
//! also after a restart, with no shared database. What needs memory is only rotation state: the
//! family's current generation, kept in a store ring (see `grants::refresh_token`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::keys::KeySet;

pub const PREFIX: &str = "rt1.";
const AAD: &[u8] = b"oauth-edge refresh token v1";

/// What a refresh token carries.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RefreshClaims {
    /// Family id (128 random bits, base64url), the same for every rotation of one grant.
    pub fam: String,
    /// Generation: 0 for the first token of a family, +1 per rotation.
    pub gen: u32,
    pub cid: String,
    pub sub: String,
    pub scope: String,
    /// Absolute expiry of the family, seconds (rotation does not extend it).
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// The login session of the grant ([`crate::flow::User::sid`]): RP-initiated logout of
    /// that session ends the family ([`crate::session`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When the grant (the family) began, seconds; 0 in tokens sealed before it was kept. A
    /// session's end covers the families that began at or before it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub res: Vec<String>,
    /// RFC 9449 §5: a public client's refresh token is bound to its DPoP key (thumbprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// RFC 8705 §3: ... or to its TLS client certificate (`x5t#S256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
}

pub fn seal(keys: &KeySet, claims: &RefreshClaims, ctx: &mut Ctx<'_>) -> FlowResult<String> {
    let plain = serde_json::to_vec(claims).map_err(|_| crate::flow::internal("encode"))?;
    Ok(format!("{PREFIX}{}", seal_bytes(keys, AAD, &plain, ctx)?))
}

/// Opens a token with any configured key; anything else (tampered, foreign, garbage) is
/// `invalid_grant`.
pub fn open(keys: &KeySet, token: &str) -> Result<RefreshClaims, OAuthError> {
    let bad = || OAuthError::invalid_grant("refresh token is invalid or expired");
    let plain = token
        .strip_prefix(PREFIX)
        .and_then(|r| open_bytes(keys, AAD, r))
        .ok_or_else(bad)?;
    serde_json::from_slice(&plain).map_err(|_| bad())
}

/// `plain` sealed with the active key: base64url(nonce ‖ ciphertext ‖ tag). `aad` names what
/// the value is, so one kind of sealed value never opens as another.
pub fn seal_bytes(
    keys: &KeySet,
    aad: &[u8],
    plain: &[u8],
    ctx: &mut Ctx<'_>,
) -> FlowResult<String> {
    let key = keys
        .sealing_keys()
        .next()
        .ok_or_else(|| crate::flow::internal("no sealing key"))?;
    let mut nonce = [0u8; 12];
    ctx.random(&mut nonce)?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| crate::flow::internal("seal"))?;
    let mut raw = Vec::with_capacity(12 + ct.len());
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&ct);
    Ok(B64.encode(raw))
}

/// What [`seal_bytes`] sealed, opened with any configured key (rotation); `None` for anything
/// tampered, foreign, oversized or not base64url.
pub fn open_bytes(keys: &KeySet, aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
    if sealed.len() > MAX_SEALED {
        return None;
    }
    let raw = B64.decode(sealed).ok()?;
    if raw.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = raw.split_at(12);
    keys.sealing_keys().find_map(|key| {
        ChaCha20Poly1305::new(Key::from_slice(key))
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .ok()
    })
}

/// The longest sealed value opened (base64url characters): more is refused unread.
const MAX_SEALED: usize = 8192;

fn is_zero(v: &u64) -> bool {
    *v == 0
}
