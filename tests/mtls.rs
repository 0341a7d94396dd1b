//! Mutual TLS through the core (RFC 8705): client authentication by certificate (PKI and
//! self-signed), certificate-bound access and refresh tokens, their check at a protected route,
//! introspection, metadata, the FAPI 2.0 profile, and the XFCC source.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine as _;
use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::Engine;
use oauth_edge::http::{Headers, Response};
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::mtls::ClientCert;
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Stand-ins for certificates: the filter sees only a certificate's digest, subject and SANs.
const PKI_DER: &[u8] = b"pki client certificate DER";
const SELF_DER: &[u8] = b"self-signed client certificate DER";

fn cert(der: &[u8], subject: &str) -> ClientCert {
    ClientCert {
        sha256: Sha256::digest(der).into(),
        subject: Some(subject.into()),
        dns: Some("client.example.com".into()),
        uri: None,
    }
}

fn setup(extra: Value) -> (Engine, Host) {
    let mut v = json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "mtls": {"chain_verified": true, "endpoint_aliases_origin": "https://mtls.as.example.com"},
        "user": {"header": "x-user"},
        "store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 64, "jti_slots": 64, "revoked_slots": 64},
        "resource_protection": {"routes": [{"prefix": "/api", "resource": "https://api.example.com"}]},
        "clients": [
            {"client_id": "pki", "token_endpoint_auth_method": "tls_client_auth",
             "tls_client_auth_subject_dn": "CN=pki client,O=Example",
             "tls_client_certificate_bound_access_tokens": true,
             "grant_types": ["client_credentials"], "scope": "read",
             "allowed_resources": ["https://api.example.com"], "resource_server_audiences": ["https://api.example.com"]},
            {"client_id": "dns", "token_endpoint_auth_method": "tls_client_auth",
             "tls_client_auth_san_dns": "CLIENT.example.com", "grant_types": ["client_credentials"], "scope": "read"},
            {"client_id": "self", "token_endpoint_auth_method": "self_signed_tls_client_auth",
             "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                                "x5c": [STANDARD.encode(SELF_DER)]}]},
             "grant_types": ["client_credentials"], "scope": "read"},
            {"client_id": "spa", "token_endpoint_auth_method": "none",
             "tls_client_certificate_bound_access_tokens": true,
             "grant_types": ["authorization_code", "refresh_token"], "scope": "read",
             "redirect_uris": ["https://spa.example.com/cb"]},
            {"client_id": "secret", "client_secret": hash_secret("s"), "grant_types": ["client_credentials"], "scope": "read"}
        ]
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in e {
            if val.is_null() {
                o.remove(k);
            } else {
                o.insert(k.clone(), val.clone());
            }
        }
    }
    let e = Engine::new(Config::from_json(v.to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    (e, h)
}

fn cc(e: &Engine, h: &mut Host, client: &str, extra: &str) -> Response {
    let body = format!("grant_type=client_credentials&client_id={client}{extra}");
    h.request_at(
        e,
        "POST",
        "/oauth/token",
        &form_headers(&[]),
        body.as_bytes(),
        None,
        NOW,
    )
}

fn api(e: &Engine, h: &mut Host, token: &str) -> Response {
    let headers = Headers(vec![
        (":authority".into(), "api.example.com".into()),
        ("authorization".into(), format!("Bearer {token}")),
    ]);
    h.request_at(e, "GET", "/api/orders", &headers, b"", None, NOW)
}

#[test]
fn pki_client_gets_a_certificate_bound_token_usable_only_with_its_certificate() {
    let (e, mut h) = setup(json!({}));
    let pki = cert(PKI_DER, "CN=pki client, O=Example");
    h.cert = Some(pki.clone());
    let r = cc(&e, &mut h, "pki", "&resource=https%3A%2F%2Fapi.example.com");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = json_body(&r);
    assert_eq!(body["token_type"], "Bearer");
    let at = body["access_token"].as_str().unwrap().to_string();
    let (_, claims) = jwt_parts(&at);
    assert_eq!(
        claims["cnf"],
        json!({"x5t#S256": B64.encode(Sha256::digest(PKI_DER))})
    );
    // Introspection shows the binding; the token stays a Bearer token.
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/introspect",
        &form_headers(&[]),
        format!("token={at}&client_id=pki").as_bytes(),
        None,
        NOW,
    );
    let v = json_body(&r);
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["cnf"]["x5t#S256"], claims["cnf"]["x5t#S256"]);
    // At the protected route: the same certificate passes, another or none does not.
    assert_eq!(api(&e, &mut h, &at).status, 0, "forwarded");
    h.cert = Some(cert(SELF_DER, "CN=pki client,O=Example"));
    assert_error(&api(&e, &mut h, &at), 401, "invalid_token");
    h.cert = None;
    assert_error(&api(&e, &mut h, &at), 401, "invalid_token");
}

#[test]
fn pki_client_is_matched_by_its_registered_name_only() {
    let (e, mut h) = setup(json!({}));
    for (c, ok) in [
        (Some(cert(PKI_DER, "CN=pki client,O=Example")), true),
        (Some(cert(PKI_DER, "CN=pki client,O=Other")), false),
        (Some(cert(PKI_DER, "CN=PKI client,O=Example")), false),
        (None, false),
    ] {
        h.cert = c;
        let r = cc(&e, &mut h, "pki", "");
        if ok {
            assert_eq!(r.status, 200);
        } else {
            assert_error(&r, 401, "invalid_client");
        }
    }
    // A DNS SAN, compared without case.
    h.cert = Some(cert(PKI_DER, "CN=x"));
    assert_eq!(cc(&e, &mut h, "dns", "").status, 200);
    // Where Envoy does not verify chains, tls_client_auth is never accepted.
    let (e, mut h) = setup(json!({"mtls": {"chain_verified": false}}));
    h.cert = Some(cert(PKI_DER, "CN=pki client,O=Example"));
    assert_error(&cc(&e, &mut h, "pki", ""), 401, "invalid_client");
    let (e, mut h) = setup(json!({"mtls": null}));
    h.cert = Some(cert(PKI_DER, "CN=pki client,O=Example"));
    assert_error(&cc(&e, &mut h, "pki", ""), 401, "invalid_client");
}

#[test]
fn self_signed_client_is_matched_by_its_registered_certificate() {
    let (e, mut h) = setup(json!({}));
    h.cert = Some(cert(SELF_DER, "CN=anything"));
    assert_eq!(cc(&e, &mut h, "self", "").status, 200);
    h.cert = Some(cert(PKI_DER, "CN=anything"));
    assert_error(&cc(&e, &mut h, "self", ""), 401, "invalid_client");
    // A certificate does not stand in for a secret.
    h.cert = Some(cert(SELF_DER, "CN=anything"));
    assert_error(&cc(&e, &mut h, "secret", ""), 401, "invalid_client");
}

#[test]
fn a_public_clients_refresh_token_is_bound_to_its_certificate() {
    let (e, mut h) = setup(json!({}));
    let spa = cert(SELF_DER, "CN=browser");
    h.cert = Some(spa.clone());
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let q = format!("response_type=code&client_id=spa&redirect_uri=https%3A%2F%2Fspa.example.com%2Fcb&scope=read&code_challenge={challenge}&code_challenge_method=S256");
    let mut hdrs = Headers::default();
    hdrs.0.push(("x-user".into(), "alice".into()));
    let user = Some(oauth_edge::flow::User {
        sub: "alice".into(),
        auth_time: None,
        session: None,
    });
    let r = h.request_at(
        &e,
        "GET",
        &format!("/oauth/authorize?{q}"),
        &hdrs,
        b"",
        user,
        NOW,
    );
    let loc = r.header("location").unwrap().to_string();
    let code = loc
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap();
    let body = format!("grant_type=authorization_code&client_id=spa&code={code}&redirect_uri=https%3A%2F%2Fspa.example.com%2Fcb&code_verifier={verifier}");
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/token",
        &form_headers(&[]),
        body.as_bytes(),
        None,
        NOW,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rt = json_body(&r)["refresh_token"].as_str().unwrap().to_string();
    let refresh = |h: &mut Host| {
        h.request_at(
            &e,
            "POST",
            "/oauth/token",
            &form_headers(&[]),
            format!("grant_type=refresh_token&client_id=spa&refresh_token={rt}").as_bytes(),
            None,
            NOW,
        )
    };
    h.cert = None;
    assert_error(&refresh(&mut h), 400, "invalid_grant");
    h.cert = Some(cert(PKI_DER, "CN=browser"));
    assert_error(&refresh(&mut h), 400, "invalid_grant");
    h.cert = Some(spa);
    assert_eq!(refresh(&mut h).status, 200);
    // Without a certificate, such a client gets no token at all.
    h.cert = None;
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/token",
        &form_headers(&[]),
        body.as_bytes(),
        None,
        NOW,
    );
    assert!(r.status == 400, "{r:?}");
}

#[test]
fn metadata_offers_the_mtls_methods_and_aliases() {
    let (e, mut h) = setup(json!({}));
    let r = h.request_at(
        &e,
        "GET",
        "/.well-known/oauth-authorization-server",
        &Headers::default(),
        b"",
        None,
        NOW,
    );
    let v = json_body(&r);
    let methods = v["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.contains(&json!("tls_client_auth")));
    assert!(methods.contains(&json!("self_signed_tls_client_auth")));
    assert_eq!(v["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(
        v["mtls_endpoint_aliases"]["token_endpoint"],
        "https://mtls.as.example.com/oauth/token"
    );
    assert_eq!(
        v["mtls_endpoint_aliases"]["userinfo_endpoint"],
        "https://mtls.as.example.com/oauth/userinfo"
    );
    let (e, mut h) = setup(json!({"mtls": {"chain_verified": false}}));
    let r = h.request_at(
        &e,
        "GET",
        "/.well-known/oauth-authorization-server",
        &Headers::default(),
        b"",
        None,
        NOW,
    );
    let v = json_body(&r);
    let methods = v["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(!methods.contains(&json!("tls_client_auth")));
    assert!(v.get("mtls_endpoint_aliases").is_none());
}

#[test]
fn fapi2_takes_mtls_authentication_and_certificate_binding() {
    let (e, mut h) = setup(json!({"profile": "fapi2", "user": null, "resource_protection": null}));
    h.cert = Some(cert(PKI_DER, "CN=pki client,O=Example"));
    let r = cc(&e, &mut h, "pki", "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // A certificate client without bound tokens still needs DPoP; secrets are refused.
    h.cert = Some(cert(PKI_DER, "CN=x"));
    assert_error(&cc(&e, &mut h, "dns", ""), 400, "invalid_dpop_proof");
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/token",
        &form_headers(&[("authorization", &basic("secret", "s"))]),
        b"grant_type=client_credentials",
        None,
        NOW,
    );
    assert_error(&r, 401, "invalid_client");
}

#[test]
fn xfcc_source_reads_the_trusted_hops_certificate() {
    let (e, mut h) = setup(json!({"mtls": {"chain_verified": true, "source": "xfcc"}}));
    let hex: String = Sha256::digest(PKI_DER)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // The connection's certificate is ignored with this source; the header's counts.
    h.cert = None;
    let xfcc = format!("Hash={hex};Subject=\"CN=pki client,O=Example\"");
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/token",
        &form_headers(&[("x-forwarded-client-cert", &xfcc)]),
        b"grant_type=client_credentials&client_id=pki",
        None,
        NOW,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, claims) = jwt_parts(json_body(&r)["access_token"].as_str().unwrap());
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        B64.encode(Sha256::digest(PKI_DER))
    );
    assert_error(&cc(&e, &mut h, "pki", ""), 401, "invalid_client");
}

#[test]
fn registration_refuses_what_cannot_be_checked() {
    for (client, why) in [
        (
            json!({"client_id": "a", "token_endpoint_auth_method": "tls_client_auth", "grant_types": ["client_credentials"]}),
            "exactly one",
        ),
        (
            json!({"client_id": "a", "token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=a", "tls_client_auth_san_dns": "a", "grant_types": ["client_credentials"]}),
            "exactly one",
        ),
        (
            json!({"client_id": "a", "token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_ip": "10.0.0.1", "grant_types": ["client_credentials"]}),
            "IP or email",
        ),
        (
            json!({"client_id": "a", "token_endpoint_auth_method": "self_signed_tls_client_auth", "grant_types": ["client_credentials"]}),
            "jwks",
        ),
        (
            json!({"client_id": "a", "client_secret": hash_secret("s"), "tls_client_auth_subject_dn": "CN=a", "grant_types": ["client_credentials"]}),
            "needs token_endpoint_auth_method",
        ),
    ] {
        let cfg = json!({"issuer": "https://as.example.com",
                         "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
                         "clients": [client]});
        let err = Config::from_json(cfg.to_string().as_bytes()).err().unwrap();
        assert!(err.contains(why), "{err}");
    }
}
