//! Authorization codes when the state is in a remote store (etcd): sealed, self-contained
//! values, so issuing a code writes nothing and redeeming one is a single transaction.
//!
//! Why: with the code's record in etcd a redemption took three round trips (read the record,
//! CAS it used, create the refresh family). The record had to be read before it could be
//! checked (client, redirect_uri, PKCE), and an etcd compare needs the exact revision, so the
//! read could not join the write. A sealed code carries its record (ChaCha20-Poly1305 with the
//! refresh tokens' keys, under its own associated data) and the id of the refresh family it
//! will start, drawn when it is issued: the redemption opens and checks it here, then creates
//! the family's record, create-only, in one round trip. That record is the code's used mark
//! (a revoked one for a client without refresh tokens): a second redemption finds it, and
//! revokes the family and the access token whose jti derives from it (RFC 6749 §4.1.2).
//!
//! - Nothing is written for garbage, a forged, foreign or expired code, another client's code,
//!   a wrong redirect_uri or PKCE verifier: strangers can neither fill etcd nor burn a client's
//!   code. A used code is still recognised as one whatever else is wrong (one read).
//! - The family id stays secret: the code is encrypted, and refresh tokens are sealed.
//! - Shared data keeps codes in its ring (bounded memory, reads that cost nothing), unchanged.

use serde::{Deserialize, Serialize};

use crate::flow::{internal, Ctx, FlowResult};
use crate::keys::KeySet;
use crate::records::CodeData;

/// What starts every sealed code (a ring handle is 27 base64url characters, never this).
pub const PREFIX: &str = "ac1.";
/// The longest code issued or opened: a code travels in a redirect URL, and servers commonly
/// refuse request lines over 8 KiB. Only a request with huge `authorization_details` needs more.
pub const MAX_LEN: usize = 8000;
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
    if code.len() > MAX_LEN {
        return None;
    }
    let plain = crate::sealed::open_bytes(keys, AAD, code.strip_prefix(PREFIX)?)?;
    let s: Sealed<CodeData> = serde_json::from_slice(&plain).ok()?;
    (s.exp > now_ms).then_some(Opened {
        data: s.d,
        exp_ms: s.exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::AuthzRequest;
    use crate::flow::{Journal, JwksLookup, Local, Lookup, Now, SessionOp, StoreOp};
    use crate::keys::{generate_jwk, Alg};
    use crate::random::SystemRandom;

    struct NoLocal;
    impl Local for NoLocal {
        fn client(&self, _: &str) -> Option<Lookup> {
            None
        }
        fn jwks(&self, _: &str, _: bool) -> Option<JwksLookup> {
            None
        }
        fn remote_prerequisite(&self, _: &StoreOp) -> Option<SessionOp> {
            None
        }
        fn remote(&self) -> bool {
            false
        }
    }

    fn keys(kid: &str) -> KeySet {
        let k = generate_jwk(Alg::EdDSA, kid, &mut SystemRandom).expect("key");
        KeySet::from_jwks(&[k], None).expect("keys")
    }

    fn data() -> CodeData {
        CodeData {
            req: AuthzRequest {
                client_id: "web".into(),
                redirect_uri: "https://rp.example/cb".into(),
                scope: "openid read".into(),
                state: None,
                nonce: Some("n".into()),
                code_challenge: Some("c".repeat(43)),
                authorization_details: None,
                resources: Vec::new(),
                dpop_jkt: None,
            },
            sub: "alice".into(),
            auth_time: Some(1),
            sid: None,
            family: Some("fam".into()),
            at: None,
        }
    }

    fn seal_at(keys: &KeySet, d: &CodeData, exp: u64) -> String {
        let (mut rng, mut journal, local) = (SystemRandom, Journal::default(), NoLocal);
        let mut ctx = Ctx::new(Now { unix_ms: 0 }, &mut rng, &mut journal, &local);
        seal(keys, d, exp, &mut ctx).expect("seal")
    }

    #[test]
    fn a_code_opens_with_its_keys_until_it_expires_and_never_as_anything_else() {
        let k = keys("a");
        let code = seal_at(&k, &data(), 60_000);
        assert!(code.starts_with(PREFIX));
        let opened = open(&k, &code, 59_999).expect("opens");
        assert_eq!(opened.exp_ms, 60_000);
        assert_eq!(opened.data.req.client_id, "web");
        assert_eq!(opened.data.family.as_deref(), Some("fam"));
        assert!(open(&k, &code, 60_000).is_none(), "expired");
        assert!(
            open(&keys("b"), &code, 0).is_none(),
            "another deployment's keys"
        );
        // A refresh token's box under another name: the associated data keeps them apart.
        let (mut rng, mut journal, local) = (SystemRandom, Journal::default(), NoLocal);
        let mut ctx = Ctx::new(Now { unix_ms: 0 }, &mut rng, &mut journal, &local);
        let other = crate::sealed::seal_bytes(&k, b"oauth-edge refresh token v1", b"{}", &mut ctx)
            .expect("seal");
        assert!(open(&k, &format!("{PREFIX}{other}"), 0).is_none());
        // Tampered, truncated, garbage.
        let mut bytes = code.clone().into_bytes();
        if let Some(b) = bytes.get_mut(10) {
            *b = if *b == b'A' { b'B' } else { b'A' };
        }
        let tampered = String::from_utf8(bytes).expect("ascii");
        for bad in [
            tampered.as_str(),
            &code[..code.len() - 1],
            "ac1.",
            "ac1.%%%",
            "x",
        ] {
            assert!(open(&k, bad, 0).is_none(), "{bad}");
        }
    }
}
