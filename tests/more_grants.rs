//! Revocation (RFC 7009), introspection (RFC 7662), the device authorization grant (RFC 8628),
//! token exchange (RFC 8693) and the password grant, through the core with the fake host.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::Engine;
use oauth_edge::flow::{HttpAnswer, Now, User};
use oauth_edge::http::Call as HttpCall;
use oauth_edge::http::{Headers, Response};
use oauth_edge::keys::{generate_jwk, Alg, KeySet};
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};

const ISS: &str = "https://as.example.com";
const PARTNER: &str = "https://idp.partner.example";
const PARTNER_JWKS: &str = "https://idp.partner.example/jwks";

fn engine(extra: Value) -> Engine {
    let mut cfg = json!({
        "issuer": ISS,
        "signing_keys": [generate_jwk(Alg::EdDSA, "as1", &mut SystemRandom).unwrap()],
        "access_token_audience": "https://api.example.com",
        "store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 64,
                  "jti_slots": 64, "rate_limit_slots": 64, "device_slots": 64, "revoked_slots": 64},
        "jwks_fetch": {"cluster": "jwks"},
        "device": {"interval": "5s", "lifetime": "600s"},
        "token_exchange": {"trusted_issuers": [{"issuer": PARTNER, "jwks_uri": PARTNER_JWKS}]},
        "password_grant": {"cluster": "users", "path": "/verify", "failures": {"requests": 3, "window": "60s"}},
        "clients": [
            {"client_id": "svc", "client_secret": hash_secret("s"),
             "grant_types": ["client_credentials"], "scope": "read write"},
            {"client_id": "rs", "client_secret": hash_secret("rs"),
             "grant_types": ["client_credentials"], "scope": "",
             "resource_server_audiences": ["https://api.example.com", "https://orders.example.com"]},
            {"client_id": "tv", "token_endpoint_auth_method": "none",
             "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
             "scope": "read write"},
            {"client_id": "gw", "client_secret": hash_secret("g"),
             "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"],
             "scope": "read write", "token_exchange_audiences": ["https://orders.example.com"],
             "token_exchange_subject_audiences": ["https://api.example.com", ISS]},
            {"client_id": "legacy", "client_secret": hash_secret("l"),
             "grant_types": ["password", "refresh_token"], "scope": "read"},
            {"client_id": "modern", "client_secret": hash_secret("m"),
             "grant_types": ["client_credentials"], "scope": "read"}
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    Engine::new(Config::from_json(cfg.to_string().as_bytes()).unwrap())
}

fn host(e: &Engine) -> Host {
    let mut h = Host::without_registry();
    h.init(e);
    h
}

fn post(h: &mut Host, e: &Engine, path: &str, auth: Option<(&str, &str)>, body: &str) -> Response {
    let b;
    let hs = match auth {
        Some((id, s)) => {
            b = basic(id, s);
            form_headers(&[("authorization", &b)])
        }
        None => form_headers(&[]),
    };
    h.request_inline(e, "POST", path, &hs, body.as_bytes(), None)
}

fn cc_token(h: &mut Host, e: &Engine) -> String {
    let r = post(
        h,
        e,
        "/oauth/token",
        Some(("svc", "s")),
        "grant_type=client_credentials",
    );
    assert_eq!(r.status, 200);
    json_body(&r)["access_token"].as_str().unwrap().to_string()
}

fn introspect(h: &mut Host, e: &Engine, token: &str) -> Value {
    let r = post(
        h,
        e,
        "/oauth/introspect",
        Some(("rs", "rs")),
        &format!("token={}", enc(token)),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    json_body(&r)
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn rfc7662_introspection_and_rfc7009_revocation_of_access_tokens() {
    let e = engine(json!({}));
    let mut h = host(&e);
    let at = cc_token(&mut h, &e);
    let v = introspect(&mut h, &e, &at);
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], "svc");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "read write");
    // Garbage, a foreign JWT, a tampered one: inactive and nothing else.
    let mut tampered = at.clone();
    tampered.push('A');
    for t in ["x", "a.b.c", "rt1.garbage", tampered.as_str()] {
        assert_eq!(introspect(&mut h, &e, t), json!({"active": false}), "{t}");
    }
    // Unauthenticated, or a public client: refused.
    let r = post(
        &mut h,
        &e,
        "/oauth/introspect",
        None,
        &format!("token={at}"),
    );
    assert_error(&r, 401, "invalid_client");
    let r = post(
        &mut h,
        &e,
        "/oauth/introspect",
        None,
        &format!("client_id=tv&token={at}"),
    );
    assert_error(&r, 401, "invalid_client");
    // Another client cannot revoke it (200 all the same), its own client can.
    let r = post(
        &mut h,
        &e,
        "/oauth/revoke",
        Some(("rs", "rs")),
        &format!("token={at}"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(introspect(&mut h, &e, &at)["active"], true);
    let r = post(
        &mut h,
        &e,
        "/oauth/revoke",
        Some(("svc", "s")),
        &format!("token={at}&token_type_hint=access_token"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(introspect(&mut h, &e, &at), json!({"active": false}));
    // Revoking garbage is fine too (§2.2); without credentials it is not.
    assert_eq!(
        post(
            &mut h,
            &e,
            "/oauth/revoke",
            Some(("svc", "s")),
            "token=nope"
        )
        .status,
        200
    );
    assert_error(
        &post(&mut h, &e, "/oauth/revoke", None, "token=nope"),
        401,
        "invalid_client",
    );
    assert_error(
        &post(&mut h, &e, "/oauth/revoke", Some(("svc", "s")), ""),
        400,
        "invalid_request",
    );
    // Expired: inactive.
    let later = Now {
        unix_ms: NOW.unix_ms + 3_600_000,
    };
    let fresh = cc_token(&mut h, &e);
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/introspect",
        &form_headers(&[("authorization", &basic("rs", "rs"))]),
        format!("token={fresh}").as_bytes(),
        None,
        later,
    );
    assert_eq!(json_body(&r), json!({"active": false}));
}

fn device_start(h: &mut Host, e: &Engine) -> (String, String, Value) {
    let r = post(
        h,
        e,
        "/oauth/device_authorization",
        None,
        "client_id=tv&scope=read",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_body(&r);
    (
        v["device_code"].as_str().unwrap().to_string(),
        v["user_code"].as_str().unwrap().to_string(),
        v,
    )
}

fn poll(h: &mut Host, e: &Engine, dc: &str, at: Now) -> Response {
    h.request_at(
        e,
        "POST",
        "/oauth/token",
        &form_headers(&[]),
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=tv&device_code={}", enc(dc)).as_bytes(),
        None,
        at,
    )
}

fn decide(h: &mut Host, e: &Engine, user_code: &str, action: &str, sub: &str) -> Response {
    let hs = form_headers(&[("origin", ISS)]);
    h.request_inline(
        e,
        "POST",
        "/oauth/device",
        &hs,
        format!("user_code={}&action={action}", enc(user_code)).as_bytes(),
        Some(User {
            sub: sub.into(),
            auth_time: Some(NOW.unix_ms / 1000),
            session: None,
        }),
    )
}

fn at(s: u64) -> Now {
    Now {
        unix_ms: NOW.unix_ms + s * 1000,
    }
}

#[test]
fn rfc8628_device_flow_pending_slow_down_tokens_once() {
    let e = engine(json!({}));
    let mut h = host(&e);
    let (dc, uc, v) = device_start(&mut h, &e);
    assert_eq!(v["interval"], 5);
    assert_eq!(v["expires_in"], 600);
    assert_eq!(v["verification_uri"], format!("{ISS}/oauth/device"));
    assert_eq!(
        v["verification_uri_complete"],
        format!("{ISS}/oauth/device?user_code={uc}")
    );
    assert!(
        uc.len() == 9
            && uc
                .chars()
                .all(|c| c == '-' || "BCDFGHJKLMNPQRSTVWXZ".contains(c)),
        "{uc}"
    );
    assert_error(&poll(&mut h, &e, &dc, at(0)), 400, "authorization_pending");
    assert_error(&poll(&mut h, &e, &dc, at(1)), 400, "slow_down");
    // The interval is now 10 s: 6 s later is still too fast.
    assert_error(&poll(&mut h, &e, &dc, at(7)), 400, "slow_down");
    assert_error(&poll(&mut h, &e, &dc, at(30)), 400, "authorization_pending");
    // The user looks the code up (any case, no dash) and approves it.
    let q = format!(
        "/oauth/device?user_code={}",
        uc.replace('-', "").to_lowercase()
    );
    let user = Some(User {
        sub: "alice".into(),
        auth_time: None,
        session: None,
    });
    let r = h.request_inline(&e, "GET", &q, &Headers::default(), b"", user);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_body(&r)["client_id"], "tv");
    assert_eq!(json_body(&r)["status"], "pending");
    // Without an Origin the POST is refused (CSRF), with it approved.
    let r = h.request_inline(
        &e,
        "POST",
        "/oauth/device",
        &form_headers(&[]),
        format!("user_code={uc}&action=approve").as_bytes(),
        Some(User {
            sub: "alice".into(),
            auth_time: None,
            session: None,
        }),
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        json_body(&decide(&mut h, &e, &uc, "approve", "alice"))["status"],
        "approved"
    );
    assert_error(
        &decide(&mut h, &e, &uc, "deny", "alice"),
        400,
        "invalid_request",
    );
    let r = poll(&mut h, &e, &dc, at(45));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_body(&r);
    let (_, claims) = jwt_parts(v["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "alice");
    assert!(v["refresh_token"].is_string());
    assert_error(&poll(&mut h, &e, &dc, at(60)), 400, "invalid_grant");
    // Denial and expiry.
    let (dc, uc, _) = device_start(&mut h, &e);
    decide(&mut h, &e, &uc, "deny", "bob");
    assert_error(&poll(&mut h, &e, &dc, at(10)), 400, "access_denied");
    let (dc, _, _) = device_start(&mut h, &e);
    assert_error(&poll(&mut h, &e, &dc, at(700)), 400, "expired_token");
    // Garbage device codes, another client's.
    assert_error(&poll(&mut h, &e, "nope", at(0)), 400, "invalid_grant");
    let mut forged = dc.clone();
    forged.replace_range(10..11, if &dc[10..11] == "A" { "B" } else { "A" });
    assert_error(&poll(&mut h, &e, &forged, at(0)), 400, "invalid_grant");
}

#[test]
fn rfc8628_s5_1_user_code_guessing_is_throttled() {
    let e = engine(json!({"device": {"attempts": {"requests": 3, "window": "60s"}}}));
    let mut h = host(&e);
    let user = || {
        Some(User {
            sub: "mallory".into(),
            auth_time: None,
            session: None,
        })
    };
    let mut statuses = vec![];
    for guess in ["BCDFBCDF", "BCDFBCDG", "BCDFBCDH", "BCDFBCDJ", "BCDFBCDK"] {
        let r = h.request_inline(
            &e,
            "GET",
            &format!("/oauth/device?user_code={guess}"),
            &Headers::default(),
            b"",
            user(),
        );
        statuses.push(r.status);
    }
    assert_eq!(statuses, [400, 400, 400, 429, 429]);
    // Without a user: 401 (no login_url configured).
    let r = h.request_inline(
        &e,
        "GET",
        "/oauth/device?user_code=X",
        &Headers::default(),
        b"",
        None,
    );
    assert_error(&r, 401, "access_denied");
}

/// A partner IdP's token, signed with its key.
fn partner_token(key: &Value, claims: Value) -> String {
    let ks = KeySet::from_jwks(std::slice::from_ref(key), None).unwrap();
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg":"ES256","kid":"p1","typ":"JWT"}).to_string()),
        B64.encode(claims.to_string())
    );
    let sig = ks.active().unwrap().sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

fn exchange(h: &mut Host, e: &Engine, extra: &str) -> Response {
    post(
        h,
        e,
        "/oauth/token",
        Some(("gw", "g")),
        &format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange{extra}"),
    )
}

#[test]
fn rfc8693_token_exchange_narrows_and_delegates() {
    let e = engine(json!({}));
    let mut h = host(&e);
    let partner_key = generate_jwk(Alg::ES256, "p1", &mut SystemRandom).unwrap();
    let mut public = partner_key.clone();
    public.as_object_mut().unwrap().remove("d");
    h.jwks.insert(
        PARTNER_JWKS.into(),
        (
            Some(200),
            json!({"keys": [public]}).to_string().into_bytes(),
        ),
    );
    let at_type = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token";
    let jwt_type = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt";

    // Our own access token as the subject, an actor, a narrower scope and an allowed audience.
    let subject = cc_token(&mut h, &e);
    let actor = partner_token(
        &partner_key,
        json!({"iss": PARTNER, "sub": "gateway-7", "aud": ISS, "exp": NOW.unix_ms / 1000 + 60}),
    );
    let r = exchange(&mut h, &e, &format!("&subject_token={subject}&subject_token_type={at_type}&actor_token={actor}&actor_token_type={jwt_type}&scope=read&audience={}", enc("https://orders.example.com")));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_body(&r);
    assert_eq!(
        v["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "read");
    let (_, c) = jwt_parts(v["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "svc");
    assert_eq!(c["aud"], "https://orders.example.com");
    assert_eq!(c["act"], json!({"sub": "gateway-7", "iss": PARTNER}));
    assert_eq!(c["client_id"], "gw");

    // A trusted issuer's JWT as the subject.
    let foreign = partner_token(
        &partner_key,
        json!({"iss": PARTNER, "sub": "u-42", "aud": ISS, "exp": NOW.unix_ms / 1000 + 60, "scope": "read write"}),
    );
    let r = exchange(
        &mut h,
        &e,
        &format!("&subject_token={foreign}&subject_token_type={jwt_type}"),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, c) = jwt_parts(json_body(&r)["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["scope"].as_str()),
        (Some("u-42"), Some("read write"))
    );

    // Refusals: an audience outside the policy, a scope the subject lacks, a tampered or
    // foreign subject, an untrusted issuer, a revoked subject, an unknown token type.
    let r = exchange(&mut h, &e, &format!("&subject_token={subject}&subject_token_type={at_type}&audience=https%3A%2F%2Fevil.example"));
    assert_error(&r, 400, "invalid_target");
    let narrow = partner_token(
        &partner_key,
        json!({"iss": PARTNER, "sub": "u", "aud": ISS, "exp": NOW.unix_ms / 1000 + 60, "scope": "read"}),
    );
    let r = exchange(
        &mut h,
        &e,
        &format!("&subject_token={narrow}&subject_token_type={jwt_type}&scope=write"),
    );
    assert_error(&r, 400, "invalid_scope");
    let mut tampered = subject.clone();
    tampered.replace_range(subject.len() - 3.., "AAA");
    let stranger = generate_jwk(Alg::ES256, "p1", &mut SystemRandom).unwrap();
    let forged = partner_token(
        &stranger,
        json!({"iss": PARTNER, "sub": "u", "aud": ISS, "exp": NOW.unix_ms / 1000 + 60}),
    );
    let untrusted = partner_token(
        &partner_key,
        json!({"iss": "https://other.example", "sub": "u", "aud": ISS, "exp": NOW.unix_ms / 1000 + 60}),
    );
    let wrong_aud = partner_token(
        &partner_key,
        json!({"iss": PARTNER, "sub": "u", "aud": "https://else", "exp": NOW.unix_ms / 1000 + 60}),
    );
    for bad in [
        tampered.as_str(),
        forged.as_str(),
        untrusted.as_str(),
        wrong_aud.as_str(),
        "garbage",
    ] {
        let r = exchange(
            &mut h,
            &e,
            &format!("&subject_token={bad}&subject_token_type={jwt_type}"),
        );
        assert_error(&r, 400, "invalid_request");
    }
    let r = exchange(
        &mut h,
        &e,
        &format!("&subject_token={subject}&subject_token_type=urn%3Ax"),
    );
    assert_error(&r, 400, "invalid_request");
    post(
        &mut h,
        &e,
        "/oauth/revoke",
        Some(("svc", "s")),
        &format!("token={subject}"),
    );
    let r = exchange(
        &mut h,
        &e,
        &format!("&subject_token={subject}&subject_token_type={at_type}"),
    );
    assert_error(&r, 400, "invalid_request");
    // Only clients registered for the grant.
    let r = post(&mut h, &e, "/oauth/token", Some(("svc", "s")), &format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={foreign}&subject_token_type={jwt_type}"));
    assert_error(&r, 400, "unauthorized_client");
}

#[test]
fn password_grant_is_opt_in_checked_upstream_and_throttled() {
    let e = engine(json!({}));
    let mut h = host(&e);
    h.http = Box::new(|call: &HttpCall| {
        let v: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
        assert_eq!(call.cluster, "users");
        if v["username"] == "alice" && v["password"] == "correct horse" {
            HttpAnswer {
                status: Some(200),
                body: br#"{"sub":"user-1"}"#.to_vec(),
            }
        } else {
            HttpAnswer {
                status: Some(401),
                body: vec![],
            }
        }
    });
    let r = post(
        &mut h,
        &e,
        "/oauth/token",
        Some(("legacy", "l")),
        "grant_type=password&username=alice&password=correct+horse",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, c) = jwt_parts(json_body(&r)["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "user-1");
    assert!(json_body(&r)["refresh_token"].is_string());
    // Not for clients that did not opt in.
    let r = post(
        &mut h,
        &e,
        "/oauth/token",
        Some(("modern", "m")),
        "grant_type=password&username=alice&password=correct+horse",
    );
    assert_error(&r, 400, "unauthorized_client");
    // Wrong passwords: invalid_grant, then 429 without asking the upstream.
    for _ in 0..3 {
        let r = post(
            &mut h,
            &e,
            "/oauth/token",
            Some(("legacy", "l")),
            "grant_type=password&username=bob&password=x",
        );
        assert_error(&r, 400, "invalid_grant");
    }
    let calls = h.http_calls;
    let r = post(
        &mut h,
        &e,
        "/oauth/token",
        Some(("legacy", "l")),
        "grant_type=password&username=bob&password=x",
    );
    assert_error(&r, 429, "rate_limit_exceeded");
    assert_eq!(h.http_calls, calls, "no upstream call once throttled");
    // The upstream down: a clean server_error.
    h.http = Box::new(|_: &HttpCall| HttpAnswer {
        status: None,
        body: vec![],
    });
    let r = post(
        &mut h,
        &e,
        "/oauth/token",
        Some(("legacy", "l")),
        "grant_type=password&username=carol&password=x",
    );
    assert_error(&r, 500, "server_error");
    // Off server-wide: the grant does not exist.
    let e = engine(json!({"password_grant": null}));
    let mut h = host(&e);
    let r = post(
        &mut h,
        &e,
        "/oauth/token",
        Some(("legacy", "l")),
        "grant_type=password&username=alice&password=x",
    );
    assert_error(&r, 400, "unsupported_grant_type");
}

#[test]
fn metadata_advertises_only_what_is_enabled() {
    let e = engine(json!({}));
    let mut h = host(&e);
    let r = h.request_inline(
        &e,
        "GET",
        "/.well-known/oauth-authorization-server",
        &Headers::default(),
        b"",
        None,
    );
    let m = json_body(&r);
    assert_eq!(m["revocation_endpoint"], format!("{ISS}/oauth/revoke"));
    assert_eq!(
        m["introspection_endpoint"],
        format!("{ISS}/oauth/introspect")
    );
    assert_eq!(
        m["device_authorization_endpoint"],
        format!("{ISS}/oauth/device_authorization")
    );
    let grants = m["grant_types_supported"].as_array().unwrap();
    for g in [
        "urn:ietf:params:oauth:grant-type:device_code",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "password",
    ] {
        assert!(grants.iter().any(|x| x == g), "{g}");
    }
    let e = engine(json!({"device": null, "token_exchange": null, "password_grant": null}));
    let mut h = host(&e);
    let r = h.request_inline(
        &e,
        "GET",
        "/.well-known/oauth-authorization-server",
        &Headers::default(),
        b"",
        None,
    );
    let m = json_body(&r);
    assert!(m.get("device_authorization_endpoint").is_none());
    assert_eq!(
        m["grant_types_supported"],
        json!(["authorization_code", "client_credentials", "refresh_token"])
    );
    assert!(
        e.route("/oauth/device_authorization").is_none(),
        "not answered when off"
    );
}
