//! Ended login sessions (OpenID Connect RP-Initiated Logout 1.0): when a relying party logs its
//! user out, every refresh-token family granted in that login session ends, whichever client it
//! belongs to. The session is named by the `sid` of the ID tokens ([`crate::flow::User::sid`]),
//! which refresh tokens carry sealed ([`crate::sealed::RefreshClaims::sid`]).
//!
//! Why a record per ended session rather than revoking each family: families are not indexed
//! by session (an index would cost a write per grant and a bounded list per session), while a
//! logout is rare and a refresh already reads its family. So a logout writes one record, "this
//! session ended at T", and a refresh or an introspection of a token with a `sid` reads it: a
//! family that began at or before T is revoked on the spot (with its newest access tokens on the
//! deny-list, as any revocation), one that began after T (a new login that derived the same
//! `sid`, possible when the login service names no session and gives no authentication time)
//! goes on.
//!
//! The record lives in the families table ([`crate::families`]) under its own id, so it has the
//! same capacity planning (a logout per login at most), bucket layout and etcd form; it is kept
//! as long as a family of the session could live (the refresh token lifetime). Its entry is a
//! revoked [`Family`] whose `n` holds the time of the logout in ms.

use crate::config::Config;
use crate::error::OAuthError;
use crate::families::{self, Family};
use crate::flow::{Ctx, FlowResult, Interrupt};

/// The families-table id of session `sid`'s record (family ids are base64url, so no family id
/// can be one of these).
fn record_id(sid: &str) -> String {
    format!("session\0{sid}")
}

/// Records that session `sid` ended now (a second logout moves the time forward).
pub fn end(cfg: &Config, ctx: &mut Ctx<'_>, sid: &str) -> FlowResult<()> {
    let ring = cfg.rings.families;
    let now_ms = ctx.now.unix_ms;
    let exp = now_ms.saturating_add(crate::duration::millis(cfg.lifetimes.refresh_token)) / 1000;
    let ended = Family {
        gen: 0,
        n: now_ms,
        exp,
        rotated_at: now_ms,
        revoked: true,
        twice_current: false,
        twice_previous: false,
    };
    let id = record_id(sid);
    for _ in 0..3 {
        let Some(found) = families::find_or_insert(ctx, ring, &id, &ended)? else {
            return Ok(());
        };
        if found.family.n >= now_ms && found.family.exp >= exp {
            return Ok(());
        }
        if families::update(ctx, ring, &found, &ended)? {
            return Ok(());
        }
    }
    Err(Interrupt::Error(OAuthError::server_error(
        "the authorization server is busy, try again",
    )))
}

/// Whether session `sid` ended at or after `began` (seconds: when a family of it began).
pub fn ended_since(cfg: &Config, ctx: &mut Ctx<'_>, sid: &str, began: u64) -> FlowResult<bool> {
    Ok(families::find(ctx, cfg.rings.families, &record_id(sid))?
        .is_some_and(|f| f.family.revoked && f.family.n >= began.saturating_mul(1000)))
}
