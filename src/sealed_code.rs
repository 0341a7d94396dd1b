//! Authorization codes when the state is in a remote store (etcd): sealed, self-contained
//! values, so issuing a code writes nothing and redeeming one is a single transaction.
//!
//! Why: with the code's record in etcd a redemption took three round trips (read the record,
//! CAS it used, create the refresh family). The record had to be read before it could be
//! checked (client, redirect_uri, PKCE), and an etcd compare needs the exact revision, so the
//! read could not join the write. A sealed code carries its record (ChaCha20-Poly1305 with the
//! refresh tokens' keys, under its own associated data): the redemption opens and checks it
//! here, then one transaction creates the code's used mark and the refresh family together,
//! if the mark does not exist yet; when it does, the same round trip reads the mark back (a
//! replay: what the first redemption issued is revoked).
//!
//! - Nothing is written for garbage, a forged, foreign or expired code, another client's code,
//!   a wrong redirect_uri or PKCE verifier: strangers can neither fill etcd nor burn a client's
//!   code. A used code is still recognised as one whatever else is wrong (one read).
//! - The mark is named by SHA-256 of the code, lives as long as the code could be redeemed,
//!   and names the refresh family and the access token issued from it.
//! - Shared data keeps codes in its ring (bounded memory, reads that cost nothing), unchanged.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access_token::Issued;
use crate::flow::{internal, Ctx, FlowResult};
use crate::keys::KeySet;
use crate::records::CodeData;

/// What starts every sealed code (a ring handle is 27 base64url characters, never this).
pub const PREFIX: &str = "ac1.";
const AAD: &[u8] = b"oauth-edge authorization code v1";

/// What a code seals (`D`: the record, or a reference to it when sealing).
#[derive(Serialize, Deserialize)]
struct Sealed<D> {
    /// Expiry, ms since the epoch.
    exp: u64,
    d: D,
}

/// A new code for `data`, redeemable until `exp_ms`.
pub fn seal(keys: &KeySet, data: &CodeData, exp_ms: u64, ctx: &mut Ctx<'_>) -> FlowResult<String> {
    let plain = serde_json::to_vec(&Sealed {
        exp: exp_ms,
        d: data,
    })
    .map_err(|_| internal("encode"))?;
    Ok(format!(
        "{PREFIX}{}",
        crate::sealed::seal_bytes(keys, AAD, &plain, ctx)?
    ))
}

/// An opened code: what it was issued for and until when (ms).
pub struct Opened {
    pub data: CodeData,
    pub exp_ms: u64,
}

/// The code's record if it is one of ours and not expired; `None` for anything else.
pub fn open(keys: &KeySet, code: &str, now_ms: u64) -> Option<Opened> {
    let plain = crate::sealed::open_bytes(keys, AAD, code.strip_prefix(PREFIX)?)?;
    let s: Sealed<CodeData> = serde_json::from_slice(&plain).ok()?;
    (s.exp > now_ms).then_some(Opened {
        data: s.d,
        exp_ms: s.exp,
    })
}

/// The key of a code's used mark.
pub fn used_key(code: &str) -> String {
    format!(
        "oauth_edge.code_used.{}",
        B64.encode(Sha256::digest(code.as_bytes()))
    )
}

/// A used mark: what the redemption issued, for a replay to revoke.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Redeemed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Issued>,
}
