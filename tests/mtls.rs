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
        sans: None,
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
        assert_eq!(err.field, "clients[0]", "{err}");
        assert!(err.problem.contains(why), "{err}");
    }
}

/// A real certificate (tests/fixtures/mtls-client.pem, made with Python's `cryptography`):
/// subject O=Example,CN=device-7 (RFC 4514), SANs first.example, device-7.example,
/// spiffe://example/device-7, 192.0.2.7, 2001:db8::7, ops@Example.com.
const PEM: &str = include_str!("fixtures/mtls-client.pem");
const PEM_SHA256: &str = "c5ab345b77e378b0809222e3d289e267eae3e32d33680f1f678f99bfe974f3cf";

#[test]
fn a_whole_certificate_gives_its_subject_and_every_san() {
    let c = ClientCert::from_pem(PEM).unwrap();
    let hex: String = c.sha256.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, PEM_SHA256);
    assert_eq!(c.subject, None, "the subject comes from XFCC's Subject");
    let sans = c.sans.as_ref().unwrap();
    assert_eq!(sans.dns, ["first.example", "device-7.example"]);
    assert_eq!(sans.uri, ["spiffe://example/device-7"]);
    assert_eq!(
        sans.ip,
        [
            "192.0.2.7".parse::<std::net::IpAddr>().unwrap(),
            "2001:db8::7".parse().unwrap()
        ]
    );
    assert_eq!(sans.email, ["ops@Example.com"]);
    // Through XFCC's Cert (URL-encoded PEM), with or without the hop's Hash; a Hash that is not
    // the certificate's refuses it.
    let enc = percent_encoding::utf8_percent_encode(PEM, percent_encoding::NON_ALPHANUMERIC);
    let from_xfcc = ClientCert::from_xfcc(&format!("Hash={PEM_SHA256};Cert=\"{enc}\"")).unwrap();
    assert_eq!(from_xfcc, c);
    assert_eq!(
        ClientCert::from_xfcc(&format!("Cert=\"{enc}\"")).unwrap(),
        c
    );
    let wrong = "00".repeat(32);
    assert!(ClientCert::from_xfcc(&format!("Hash={wrong};Cert=\"{enc}\"")).is_none());
    assert!(
        ClientCert::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
            .is_none()
    );
    assert!(ClientCert::from_der(b"\x30\x03\x02\x01\x00").is_none());
}

#[test]
fn ip_and_email_sans_match_with_the_whole_certificate() {
    let clients = json!([
        {"client_id": "ip", "token_endpoint_auth_method": "tls_client_auth",
         "tls_client_auth_san_ip": "2001:0db8:0:0:0:0:0:7", "grant_types": ["client_credentials"], "scope": "read"},
        {"client_id": "mail", "token_endpoint_auth_method": "tls_client_auth",
         "tls_client_auth_san_email": "ops@example.COM", "grant_types": ["client_credentials"], "scope": "read"},
        {"client_id": "dns2", "token_endpoint_auth_method": "tls_client_auth",
         "tls_client_auth_san_dns": "device-7.example", "grant_types": ["client_credentials"], "scope": "read"},
        {"client_id": "other-ip", "token_endpoint_auth_method": "tls_client_auth",
         "tls_client_auth_san_ip": "192.0.2.8", "grant_types": ["client_credentials"], "scope": "read"}
    ]);
    let (e, mut h) =
        setup(json!({"mtls": {"chain_verified": true, "source": "xfcc"}, "clients": clients}));
    let enc =
        percent_encoding::utf8_percent_encode(PEM, percent_encoding::NON_ALPHANUMERIC).to_string();
    let xfcc = format!("By=spiffe://gw;Hash={PEM_SHA256};Cert=\"{enc}\"");
    let post = |h: &mut Host, id: &str, xfcc: &str| {
        h.request_at(
            &e,
            "POST",
            "/oauth/token",
            &form_headers(&[("x-forwarded-client-cert", xfcc)]),
            format!("grant_type=client_credentials&client_id={id}").as_bytes(),
            None,
            NOW,
        )
    };
    for id in ["ip", "mail", "dns2"] {
        let r = post(&mut h, id, &xfcc);
        assert_eq!(r.status, 200, "{id}: {}", String::from_utf8_lossy(&r.body));
    }
    assert_error(&post(&mut h, "other-ip", &xfcc), 401, "invalid_client");
    // The same certificate named only by its digest (no Cert): no SAN beyond what is named.
    assert_error(
        &post(&mut h, "ip", &format!("Hash={PEM_SHA256}")),
        401,
        "invalid_client",
    );
    // With the connection as the source, IP and email SANs are refused at start.
    let cfg = json!({"issuer": "https://as.example.com",
                     "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
                     "mtls": {"chain_verified": true}, "clients": [clients[0].clone()]});
    let err = Config::from_json(cfg.to_string().as_bytes()).err().unwrap();
    assert_eq!(err.field, "clients[0]", "{err}");
    assert!(err.problem.contains("mtls.source xfcc"), "{err}");
}
