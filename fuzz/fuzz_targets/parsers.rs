//! Every parser the network reaches, on the same bytes: form bodies, JSON PAR bodies, Basic
//! headers, registry answers and cache entries, request_uri / code handles, sealed refresh
//! tokens and codes, JWS (client assertions, DPoP proofs), JWKs and JWK Sets (DPoP headers, jwks_uri
//! answers), DPoP htu URLs, the host's header maps (proxy-wasm pair encoding) and request paths
//! compared with our endpoint paths, client certificates (XFCC values, PEM, DER). Nothing may
//! panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oauth_edge::authz::RawAuthz;
use oauth_edge::client_auth;
use oauth_edge::form::Form;
use oauth_edge::http::Headers;
use oauth_edge::keys::{generate_jwk, Alg, KeySet};
use oauth_edge::random::SystemRandom;
use oauth_edge::{registry, sealed, store};

fn keys() -> &'static KeySet {
    static K: OnceLock<KeySet> = OnceLock::new();
    K.get_or_init(|| {
        let jwk = generate_jwk(Alg::EdDSA, "k", &mut SystemRandom).expect("key");
        KeySet::from_jwks(&[jwk], None).expect("keyset")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Form::parse(data) {
        let _ = RawAuthz::from_form(&f);
        let text = String::from_utf8_lossy(data).into_owned();
        let h = Headers(vec![("authorization".into(), text)]);
        let _ = client_auth::extract(&h, &f);
    }
    let _ = RawAuthz::from_json(data);
    // A client certificate from Envoy's XFCC header, or its DER (RFC 8705).
    let _ = oauth_edge::mtls::ClientCert::from_der(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = oauth_edge::mtls::ClientCert::from_xfcc(s);
        let _ = oauth_edge::mtls::ClientCert::from_pem(s);
    }
    let _ = registry::classify("c", Some(200), data);
    let _ = registry::decode_entry("c", data, 0);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = store::Handle::decode(s);
        let _ = sealed::open(keys(), s);
        let _ = oauth_edge::sealed_code::open(keys(), s, 0);
        let _ = oauth_edge::duration::parse(s);
        let _ = oauth_edge::scope::parse(s);
        let all = [Alg::EdDSA, Alg::ES256, Alg::RS256, Alg::PS256];
        if let Ok(u) = oauth_edge::jws::Untrusted::parse(s, &all) {
            if let Some(Ok(k)) = u.header.jwk.as_ref().map(oauth_edge::jwk::PublicJwk::parse) {
                if let Ok(v) = u.verify(&k) {
                    let _ = v.claims::<serde_json::Value>();
                }
            }
        }
        let _ = oauth_edge::client_assertion::claimed_client_id(s);
        let _ = oauth_edge::url::normalize_htu(s);
    }
    if let Ok(set) = oauth_edge::jwk::JwkSet::from_slice(data) {
        let _ = set.select(None, Alg::EdDSA);
        let _ = set.select(Some("a"), Alg::RS256);
    }
    let _ = oauth_edge::jwks_fetch::classify(Some(200), data);
    // Shared-data values of the bucketed rings (written by us, but read back after a restart,
    // an upgrade, or another version of the filter sharing the VM id).
    let _ = oauth_edge::families::live_entries(data, 1_800_000_000_000);
    let _ = oauth_edge::replay::live_entries(data, 1_800_000_000_000);
    // A header map from the host decodes or is refused, and what decodes encodes back the same.
    if let Some(pairs) = oauth_edge::pairs::decode(data) {
        let again = oauth_edge::pairs::encode(&pairs);
        assert_eq!(oauth_edge::pairs::decode(&again).as_ref(), Some(&pairs));
    }
    // A ring slot's value, however it was written, gives a load and never panics.
    for kind in [oauth_edge::ring_fill::Kind::Records, oauth_edge::ring_fill::Kind::Buckets] {
        let load = oauth_edge::ring_fill::slot_load(kind, Some(data), 1_000);
        assert!(load >= 0.0);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let c = oauth_edge::path_variant::canonical(s);
        assert!(c.starts_with('/'));
    }
});
