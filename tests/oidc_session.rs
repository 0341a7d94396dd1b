//! OpenID Connect as relying parties use it, through the core: the login session's `sid` in ID
//! tokens, RP-initiated logout (what it ends, and that it never redirects where it should not),
//! and userinfo (Bearer, form body, scopes, the user-info service).

mod common;

use common::*;
use oauth_edge::client::hash_secret;
use oauth_edge::config::Config;
use oauth_edge::engine::Engine;
use oauth_edge::flow::{HttpAnswer, Now, User};
use oauth_edge::http::Call as HttpCall;
use oauth_edge::http::{Headers, Response};
use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;
use serde_json::{json, Value};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const WEB_CB: &str = "https://web.example.com/cb";
const APP_CB: &str = "https://app.example.com/cb";
const WEB_BYE: &str = "https://web.example.com/bye";

fn setup(extra: Value) -> (Engine, Host) {
    let mut v = json!({
        "issuer": "https://as.example.com",
        "signing_keys": [generate_jwk(Alg::EdDSA, "k1", &mut SystemRandom).unwrap()],
        "user": {"metadata_namespace": "envoy.filters.http.jwt_authn", "metadata_key": "user"},
        "store": {"share_percent": 100, "replay_share_percent": 100, "request_uri_slots": 64, "code_slots": 64, "refresh_family_slots": 64, "jti_slots": 64, "revoked_slots": 64},
        "clients": [
            {"client_id": "web", "client_secret": hash_secret("web-secret"),
             "grant_types": ["authorization_code", "refresh_token"], "scope": "openid profile email read",
             "redirect_uris": [WEB_CB], "post_logout_redirect_uris": [WEB_BYE]},
            {"client_id": "app", "client_secret": hash_secret("app-secret"),
             "grant_types": ["authorization_code", "refresh_token"], "scope": "openid read",
             "redirect_uris": [APP_CB]}
        ]
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in e {
            o.insert(k.clone(), val.clone());
        }
    }
    let e = Engine::new(Config::from_json(v.to_string().as_bytes()).unwrap());
    let mut h = Host::without_registry();
    h.init(&e);
    (e, h)
}

fn alice(session: &str) -> User {
    User {
        sub: "alice".into(),
        auth_time: Some(NOW.secs() - 30),
        session: Some(session.into()),
    }
}

fn auth(id: &str) -> Headers {
    form_headers(&[("authorization", &basic(id, &format!("{id}-secret")))])
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A whole code flow of `client` for `user` at `now`: the token answer.
fn login(
    e: &Engine,
    h: &mut Host,
    client: &str,
    cb: &str,
    scope: &str,
    user: User,
    now: Now,
) -> Value {
    let q = format!(
        "response_type=code&client_id={client}&redirect_uri={}&scope={}&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256",
        enc(cb),
        enc(scope)
    );
    let r = h.request_at(
        e,
        "GET",
        &format!("/oauth/authorize?{q}"),
        &Headers::default(),
        b"",
        Some(user),
        now,
    );
    assert_eq!(r.status, 303, "{r:?}");
    let loc = r.header("location").unwrap().to_string();
    let code = loc
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap()
        .to_string();
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
        enc(cb)
    );
    let r = h.request_at(
        e,
        "POST",
        "/oauth/token",
        &auth(client),
        body.as_bytes(),
        None,
        now,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    json_body(&r)
}

fn refresh(e: &Engine, h: &mut Host, client: &str, rt: &str, now: Now) -> Response {
    let body = format!("grant_type=refresh_token&refresh_token={rt}");
    h.request_at(
        e,
        "POST",
        "/oauth/token",
        &auth(client),
        body.as_bytes(),
        None,
        now,
    )
}

fn logout(e: &Engine, h: &mut Host, query: &str, user: Option<User>, now: Now) -> Response {
    h.request_at(
        e,
        "GET",
        &format!("/oauth/logout?{query}"),
        &Headers::default(),
        b"",
        user,
        now,
    )
}

fn later(s: u64) -> Now {
    Now {
        unix_ms: NOW.unix_ms + s * 1000,
    }
}

#[test]
fn one_login_one_sid_for_every_client_and_a_new_login_another() {
    let (e, mut h) = setup(json!({}));
    let web = login(&e, &mut h, "web", WEB_CB, "openid", alice("login-1"), NOW);
    let app = login(&e, &mut h, "app", APP_CB, "openid", alice("login-1"), NOW);
    let other = login(&e, &mut h, "app", APP_CB, "openid", alice("login-2"), NOW);
    let sid = |v: &Value| jwt_parts(v["id_token"].as_str().unwrap()).1["sid"].clone();
    assert!(sid(&web).is_string());
    assert_eq!(sid(&web), sid(&app));
    assert_ne!(sid(&web), sid(&other));
    // The login service's own session id never leaves the gateway.
    assert!(!sid(&web).as_str().unwrap().contains("login-1"));
    // Without a session id from the login, the authentication time tells logins apart.
    let no_session = |t| User {
        sub: "alice".into(),
        auth_time: Some(t),
        session: None,
    };
    assert_ne!(no_session(1).sid(), no_session(2).sid());
    assert_eq!(no_session(1).sid(), no_session(1).sid());
}

#[test]
fn logout_ends_every_grant_of_the_session_and_nothing_else() {
    let (e, mut h) = setup(json!({}));
    let web = login(&e, &mut h, "web", WEB_CB, "openid", alice("login-1"), NOW);
    let app = login(&e, &mut h, "app", APP_CB, "openid", alice("login-1"), NOW);
    let kept = login(&e, &mut h, "app", APP_CB, "openid", alice("login-2"), NOW);
    let hint = web["id_token"].as_str().unwrap();
    let r = logout(
        &e,
        &mut h,
        &format!(
            "id_token_hint={hint}&post_logout_redirect_uri={}&state=st%201",
            enc(WEB_BYE)
        ),
        None,
        later(5),
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(&*format!("{WEB_BYE}?state=st%201"))
    );
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| *n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(cookies
        .iter()
        .any(|c| c.starts_with("__Host-oauth-refresh=;")
            || (c.contains("Max-Age=0") && c.contains("Path=/oauth/refresh"))));
    for (client, t) in [("web", &web), ("app", &app)] {
        let r = refresh(
            &e,
            &mut h,
            client,
            t["refresh_token"].as_str().unwrap(),
            later(6),
        );
        assert_error(&r, 400, "invalid_grant");
        assert!(String::from_utf8_lossy(&r.body).contains("login session"));
    }
    // Another login of the same user goes on.
    let r = refresh(
        &e,
        &mut h,
        "app",
        kept["refresh_token"].as_str().unwrap(),
        later(6),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // And the user's next login in the same session id (after the logout) is not caught.
    let again = login(
        &e,
        &mut h,
        "web",
        WEB_CB,
        "openid",
        alice("login-1"),
        later(10),
    );
    let r = refresh(
        &e,
        &mut h,
        "web",
        again["refresh_token"].as_str().unwrap(),
        later(11),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Introspection sees the ended session's refresh token inactive.
    let body = format!("token={}", web["refresh_token"].as_str().unwrap());
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/introspect",
        &auth("web"),
        body.as_bytes(),
        None,
        later(12),
    );
    assert_eq!(json_body(&r)["active"], false);
}

#[test]
fn logout_never_redirects_where_it_should_not() {
    let (e, mut h) = setup(json!({}));
    let web = login(&e, &mut h, "web", WEB_CB, "openid", alice("login-1"), NOW);
    let app = login(&e, &mut h, "app", APP_CB, "openid", alice("login-1"), NOW);
    let hint = web["id_token"].as_str().unwrap();
    let access = web["access_token"].as_str().unwrap();
    for query in [
        // An unregistered URI, another client's URI, a prefix of the registered one.
        format!(
            "id_token_hint={hint}&post_logout_redirect_uri={}",
            enc("https://evil.example/")
        ),
        format!(
            "id_token_hint={hint}&post_logout_redirect_uri={}",
            enc(APP_CB)
        ),
        format!(
            "id_token_hint={hint}&post_logout_redirect_uri={}",
            enc("https://web.example.com/by")
        ),
        // client_id that is not the hint's audience.
        format!(
            "id_token_hint={hint}&client_id=app&post_logout_redirect_uri={}",
            enc(WEB_BYE)
        ),
        // A hint that is not an ID token of ours: garbage, an access token, a tampered one.
        format!(
            "id_token_hint=abc&post_logout_redirect_uri={}",
            enc(WEB_BYE)
        ),
        format!(
            "id_token_hint={access}&post_logout_redirect_uri={}",
            enc(WEB_BYE)
        ),
        format!(
            "id_token_hint={}x&post_logout_redirect_uri={}",
            &hint[..hint.len() - 2],
            enc(WEB_BYE)
        ),
        // A URI without a client.
        format!("post_logout_redirect_uri={}", enc(WEB_BYE)),
        // An unknown client.
        format!("client_id=nobody&post_logout_redirect_uri={}", enc(WEB_BYE)),
        // Repeated parameters.
        format!("id_token_hint={hint}&id_token_hint={hint}"),
        // No hint, and no logout page to ask the user.
        "client_id=web".to_string(),
        String::new(),
    ] {
        let r = logout(&e, &mut h, &query, None, later(5));
        assert_error(&r, 400, "invalid_request");
        assert!(r.header("location").is_none(), "{query}");
    }
    // Nothing was ended by the refused requests.
    let r = refresh(
        &e,
        &mut h,
        "app",
        app["refresh_token"].as_str().unwrap(),
        later(6),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Other methods.
    let r = h.request_at(
        &e,
        "PUT",
        "/oauth/logout",
        &Headers::default(),
        b"",
        None,
        NOW,
    );
    assert_eq!(r.status, 405);
}

#[test]
fn logout_by_post_with_an_expired_hint_goes_to_the_login_services_page() {
    let (e, mut h) = setup(
        json!({"end_session": {"logout_url": "https://login.example.com/logout", "clear_cookies": ["login"]}}),
    );
    let web = login(&e, &mut h, "web", WEB_CB, "openid", alice("login-1"), NOW);
    // An hour later the ID token has expired: still a hint (§2).
    let body = format!("id_token_hint={}", web["id_token"].as_str().unwrap());
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/logout",
        &form_headers(&[]),
        body.as_bytes(),
        Some(alice("login-1")),
        later(3600),
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://login.example.com/logout")
    );
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| *n == "set-cookie" && v.starts_with("login=;") && v.contains("Max-Age=0")));
    let r = refresh(
        &e,
        &mut h,
        "web",
        web["refresh_token"].as_str().unwrap(),
        later(3601),
    );
    assert_error(&r, 400, "invalid_grant");

    // The browser is logged in as another login: that one's cookies stay.
    let other = login(
        &e,
        &mut h,
        "web",
        WEB_CB,
        "openid",
        alice("login-3"),
        later(3602),
    );
    let body = format!("id_token_hint={}", other["id_token"].as_str().unwrap());
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/logout",
        &form_headers(&[]),
        body.as_bytes(),
        Some(alice("login-4")),
        later(3603),
    );
    assert_eq!(r.status, 303);
    assert!(!r
        .headers
        .iter()
        .any(|(n, v)| *n == "set-cookie" && v.starts_with("login=")));

    // No hint: the login service's page asks the user; nothing ends here.
    let kept = login(
        &e,
        &mut h,
        "web",
        WEB_CB,
        "openid",
        alice("login-5"),
        later(3604),
    );
    let r = logout(
        &e,
        &mut h,
        "client_id=web",
        Some(alice("login-5")),
        later(3605),
    );
    assert_eq!(
        r.header("location"),
        Some("https://login.example.com/logout")
    );
    assert!(!r.headers.iter().any(|(n, _)| *n == "set-cookie"));
    let r = refresh(
        &e,
        &mut h,
        "web",
        kept["refresh_token"].as_str().unwrap(),
        later(3606),
    );
    assert_eq!(r.status, 200);
}

fn userinfo(e: &Engine, h: &mut Host, method: &str, headers: &Headers, body: &[u8]) -> Response {
    h.request_at(e, method, "/oauth/userinfo", headers, body, None, NOW)
}

fn bearer(t: &str) -> Headers {
    Headers(vec![("authorization".into(), format!("Bearer {t}"))])
}

#[test]
fn userinfo_releases_the_claims_of_the_granted_scopes() {
    let (e, mut h) = setup(json!({"userinfo": {"cluster": "users", "path_prefix": "/u/"}}));
    h.http = Box::new(|call: &HttpCall| {
        let path = call
            .headers
            .iter()
            .find(|(k, _)| *k == ":path")
            .map(|(_, v)| v.clone())
            .unwrap();
        match path.as_str() {
            "/u/alice" => HttpAnswer {
                status: Some(200),
                body: json!({"sub": "alice", "name": "Alice", "email": "a@example.com",
                             "email_verified": true, "phone_number": "+1", "secret": "x"})
                .to_string()
                .into_bytes(),
            },
            _ => HttpAnswer {
                status: Some(404),
                body: vec![],
            },
        }
    });
    let t = login(&e, &mut h, "web", WEB_CB, "openid profile", alice("l"), NOW);
    let at = t["access_token"].as_str().unwrap();
    let r = userinfo(&e, &mut h, "GET", &bearer(at), b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(json_body(&r), json!({"sub": "alice", "name": "Alice"}));

    let t = login(&e, &mut h, "web", WEB_CB, "openid email", alice("l"), NOW);
    let at = t["access_token"].as_str().unwrap();
    // RFC 6750 §2.2: the token as a form parameter.
    let r = userinfo(
        &e,
        &mut h,
        "POST",
        &form_headers(&[]),
        format!("access_token={at}").as_bytes(),
    );
    assert_eq!(
        json_body(&r),
        json!({"sub": "alice", "email": "a@example.com", "email_verified": true})
    );
    // Both ways at once.
    let mut both = form_headers(&[]);
    both.0
        .push(("authorization".into(), format!("Bearer {at}")));
    let r = userinfo(
        &e,
        &mut h,
        "POST",
        &both,
        format!("access_token={at}").as_bytes(),
    );
    assert_error(&r, 400, "invalid_request");

    // openid alone: sub, and no call.
    let calls = h.http_calls;
    let t = login(&e, &mut h, "web", WEB_CB, "openid", alice("l"), NOW);
    let r = userinfo(
        &e,
        &mut h,
        "GET",
        &bearer(t["access_token"].as_str().unwrap()),
        b"",
    );
    assert_eq!(json_body(&r), json!({"sub": "alice"}));
    assert_eq!(h.http_calls, calls);

    // Without openid: 403 insufficient_scope.
    let t = login(&e, &mut h, "web", WEB_CB, "read", alice("l"), NOW);
    let r = userinfo(
        &e,
        &mut h,
        "GET",
        &bearer(t["access_token"].as_str().unwrap()),
        b"",
    );
    assert_error(&r, 403, "insufficient_scope");

    // No token, a bad one: 401 with a challenge.
    let r = userinfo(&e, &mut h, "GET", &Headers::default(), b"");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer "));
    let r = userinfo(&e, &mut h, "GET", &bearer("abc.def.ghi"), b"");
    assert_error(&r, 401, "invalid_token");

    // A user the service does not know: 401 invalid_token.
    let bob = User {
        sub: "bob".into(),
        auth_time: None,
        session: None,
    };
    let t = login(&e, &mut h, "web", WEB_CB, "openid profile", bob, NOW);
    let r = userinfo(
        &e,
        &mut h,
        "GET",
        &bearer(t["access_token"].as_str().unwrap()),
        b"",
    );
    assert_error(&r, 401, "invalid_token");

    // A revoked access token.
    let t = login(&e, &mut h, "web", WEB_CB, "openid", alice("l"), NOW);
    let at = t["access_token"].as_str().unwrap();
    let r = h.request_at(
        &e,
        "POST",
        "/oauth/revoke",
        &auth("web"),
        format!("token={at}").as_bytes(),
        None,
        NOW,
    );
    assert_eq!(r.status, 200);
    let r = userinfo(&e, &mut h, "GET", &bearer(at), b"");
    assert_error(&r, 401, "invalid_token");
}

#[test]
fn userinfo_refuses_a_service_that_answers_for_someone_else_and_survives_garbage() {
    let (e, mut h) = setup(json!({"userinfo": {"cluster": "users"}}));
    h.http = Box::new(|_: &HttpCall| HttpAnswer {
        status: Some(200),
        body: br#"{"sub":"mallory","name":"M"}"#.to_vec(),
    });
    let t = login(&e, &mut h, "web", WEB_CB, "openid profile", alice("l"), NOW);
    let at = t["access_token"].as_str().unwrap().to_string();
    let r = userinfo(&e, &mut h, "GET", &bearer(&at), b"");
    assert_error(&r, 500, "server_error");
    for garbage in [&b"\xff\xfe"[..], b"{", b"access_token", b"access_token=%zz"] {
        let r = userinfo(&e, &mut h, "POST", &form_headers(&[]), garbage);
        assert!(r.status == 400 || r.status == 401, "{r:?}");
    }
    h.http = Box::new(|_: &HttpCall| HttpAnswer {
        status: None,
        body: vec![],
    });
    let r = userinfo(&e, &mut h, "GET", &bearer(&at), b"");
    assert_error(&r, 500, "server_error");
}

#[test]
fn discovery_names_both_endpoints() {
    let (e, mut h) = setup(json!({"userinfo": {"cluster": "users"}}));
    let r = h.request_at(
        &e,
        "GET",
        "/.well-known/openid-configuration",
        &Headers::default(),
        b"",
        None,
        NOW,
    );
    let v = json_body(&r);
    assert_eq!(
        v["userinfo_endpoint"],
        "https://as.example.com/oauth/userinfo"
    );
    assert_eq!(
        v["end_session_endpoint"],
        "https://as.example.com/oauth/logout"
    );
    let claims: Vec<&str> = v["claims_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(claims.contains(&"sid") && claims.contains(&"email"));
}
