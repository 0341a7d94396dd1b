"""The demo `make run` starts (issue 17 item 3), through real Envoy: the demo configuration's
client registry, the demo login service behind jwt_authn, the single-page app's files on both
origins. The browser drives the whole app in test_demo_browser.py."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.parse

import jwt
import requests

from support.demo import load_demo_server
from support.forms import basic_auth, post_form

def _token(demo, auth, **form):
    return post_form(demo.base_url + "/oauth/token", form,
                     headers={"Authorization": basic_auth(*auth)} if auth else None)


def test_mistyped_client_id_is_invalid_client_not_server_error(demo):
    """The demo configuration names a registry, and the demo runs it: an unknown id is the
    registry's 404, so 401 invalid_client (before: 500 "the client registry is unavailable")."""
    for auth, form in ((("demo-clent", "demo-secret"), {}),
                       (None, {"client_id": "demo-spaa"}),
                       (("no such client", "x"), {})):
        r = _token(demo, auth, grant_type="client_credentials", **form)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
        assert r.headers["cache-control"] == "no-store"
        assert "www-authenticate" in r.headers


def test_static_and_registry_clients_get_tokens(demo):
    srv = load_demo_server()
    for auth in (("demo-client", "demo-secret"), (srv.REGISTRY_CLIENT_ID, srv.REGISTRY_CLIENT_SECRET)):
        r = _token(demo, auth, grant_type="client_credentials")
        assert r.status_code == 200, r.text
        claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
        assert claims["client_id"] == auth[0]
    r = _token(demo, (srv.REGISTRY_CLIENT_ID, "wrong"), grant_type="client_credentials")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_the_app_is_served_on_both_origins(demo):
    for base in (demo.base_url, demo.spa_url):
        r = requests.get(base + "/", allow_redirects=False, timeout=5)
        assert r.status_code == 303 and r.headers["location"] == "/app/"
        for path in ("/app/", "/app/callback", "/app/app.js", "/app/app.css"):
            r = requests.get(base + path, timeout=5)
            assert r.status_code == 200, path
        cfg = requests.get(base + "/app/config.js", timeout=5).text
        assert json.dumps(demo.base_url) in cfg and '"demo-spa"' in cfg
        assert requests.get(base + "/app/../server.py", timeout=5).status_code in (400, 404)
    # The login service lives behind Envoy only; the second origin serves the app alone.
    assert requests.get(demo.spa_url + "/login", timeout=5).status_code == 404


def _pkce():
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _login(demo, user="alice", password="alice-demo", return_to="/app/"):
    return requests.post(demo.base_url + "/login", allow_redirects=False, timeout=10,
                         data={"username": user, "password": password, "return_to": return_to})


def test_login_sets_a_signed_login_token_cookie(demo):
    page = requests.get(demo.base_url + "/login", timeout=5)
    assert page.status_code == 200 and "alice-demo" in page.text and "bob-demo" in page.text
    r = _login(demo, "alice", "wrong")
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert _login(demo, "mallory", "alice-demo").status_code == 401
    r = _login(demo, "bob", "bob-demo", return_to="/oauth/authorize?x=1")
    assert r.status_code == 303 and r.headers["location"] == "/oauth/authorize?x=1"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("demo_login=")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"path", "max-age", "httponly", "samesite"} <= attrs and "samesite=lax" in cookie.lower()
    token = r.cookies["demo_login"]
    key = json.loads((demo.workdir / "demo-login-key.json").read_text())
    public = jwt.PyJWK({k: v for k, v in key.items() if k != "d"})
    claims = jwt.decode(token, public, algorithms=["EdDSA"], audience="oauth-edge-demo",
                        issuer=demo.base_url + "/login")
    assert claims["sub"] == "bob" and claims["auth_time"] == claims["iat"]
    assert claims["exp"] - claims["iat"] <= 600
    assert claims["name"] == "Bob Example" and claims["email"] == "bob@example.com"
    assert claims["email_verified"] is True and len(claims["sid"]) >= 16
    assert _login(demo, "bob", "bob-demo").cookies["demo_login"] != token  # a new sid per login
    # Never a redirect to another site.
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        assert _login(demo, "bob", "bob-demo", return_to=bad).headers["location"] == "/app/"


def test_authorize_sends_to_the_login_page_then_issues_a_code(demo):
    """login_url (/login) with return_to, jwt_authn reading the login cookie, the plugin's user
    from its payload (sub, auth_time): a code for demo-spa at its redirect_uri."""
    verifier, challenge = _pkce()
    redirect_uri = demo.spa_url + "/app/callback"
    par = post_form(demo.base_url + "/oauth/pushed-authorization", {
        "response_type": "code", "client_id": "demo-spa", "redirect_uri": redirect_uri,
        "scope": "openid profile read", "state": "s1", "nonce": "n1", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    assert par.status_code == 201, par.text
    query = urllib.parse.urlencode({"client_id": "demo-spa", "request_uri": par.json()["request_uri"]})
    authorize = f"{demo.base_url}/oauth/authorize?{query}"
    r = requests.get(authorize, allow_redirects=False, timeout=10)
    assert r.status_code == 303
    loc = urllib.parse.urlsplit(r.headers["location"])
    assert loc.path == "/login"
    return_to = urllib.parse.parse_qs(loc.query)["return_to"][0]
    assert return_to == f"/oauth/authorize?{query}"
    login = _login(demo, return_to=return_to)
    assert login.headers["location"] == return_to
    r = requests.get(demo.base_url + return_to, allow_redirects=False, timeout=10,
                     cookies={"demo_login": login.cookies["demo_login"]})
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(redirect_uri + "?")
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["location"]).query)
    assert params["state"] == ["s1"] and params["iss"] == [demo.base_url]
    tok = post_form(demo.base_url + "/oauth/token", {
        "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": redirect_uri,
        "code_verifier": verifier, "client_id": "demo-spa"})
    assert tok.status_code == 200, tok.text
    body = tok.json()
    assert "refresh_token" not in body  # in the HttpOnly cookie
    assert "oauth_edge_rt=" in tok.headers["set-cookie"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["client_id"] == "demo-spa"
    # A forged login token is refused by jwt_authn (allow_missing, not allow_missing_or_failed).
    forged = login.cookies["demo_login"][:-4] + "AAAA"
    r = requests.get(demo.base_url + return_to, allow_redirects=False, timeout=10,
                     cookies={"demo_login": forged})
    assert r.status_code == 401


def test_demo_spa_must_push_its_request(demo):
    """demo-spa is registered with require_pushed_authorization_requests."""
    _, challenge = _pkce()
    query = urllib.parse.urlencode({
        "client_id": "demo-spa", "response_type": "code", "redirect_uri": demo.base_url + "/app/callback",
        "code_challenge": challenge, "code_challenge_method": "S256", "scope": "read"})
    login = _login(demo)
    r = requests.get(f"{demo.base_url}/oauth/authorize?{query}", allow_redirects=False, timeout=10,
                     cookies={"demo_login": login.cookies["demo_login"]})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request",
                        "error_description": "pushed authorization requests are required"}


def test_logout_page_clears_the_login_and_refresh_cookies(demo):
    r = requests.get(demo.base_url + "/login/logout", params={"return_to": demo.spa_url + "/app/"},
                     allow_redirects=False, timeout=5)
    assert r.status_code == 200 and 'id="logged-out"' in r.text
    assert f'href="{demo.spa_url}/app/"' in r.text
    cookies = r.raw.headers.getlist("Set-Cookie")
    assert any(c.startswith("demo_login=;") and "Max-Age=0" in c for c in cookies), cookies
    assert any(c.startswith("oauth_edge_rt=;") and "Max-Age=0" in c and "Path=/oauth/refresh" in c
               for c in cookies), cookies
    r = requests.get(demo.base_url + "/login/logout", params={"return_to": "https://evil.example/"}, timeout=5)
    assert 'href="/app/"' in r.text


def test_the_demo_api_is_protected_and_found_from_its_challenge(demo):
    """The README's walk-through: the demo API answers 401 with a challenge naming its RFC 9728
    metadata; from there the resource and the authorization server; a token for that resource
    passes, and the API sees the verified claims, never the client's own copies."""
    api = demo.base_url + "/api/whoami"
    r = requests.get(api, timeout=10)
    assert r.status_code == 401, r.text  # no credentials: a challenge without an error (RFC 6750 §3.1)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and "resource_metadata=" in challenge, challenge
    meta_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
    meta = requests.get(meta_url, timeout=10).json()
    assert meta["resource"] == demo.base_url + "/api" and meta["resource_name"] == "Demo API"
    (issuer,) = meta["authorization_servers"]
    as_meta = requests.get(issuer + "/.well-known/oauth-authorization-server", timeout=10).json()
    t = post_form(as_meta["token_endpoint"], {"grant_type": "client_credentials", "scope": "read",
                                              "resource": meta["resource"]},
                  headers={"Authorization": basic_auth("demo-client", "demo-secret")})
    assert t.status_code == 200, t.text
    r = requests.get(api, timeout=10, headers={"Authorization": "Bearer " + t.json()["access_token"],
                                               "X-OAuth-Sub": "admin", "X-OAuth-Scope": "everything"})
    assert r.status_code == 200, r.text
    assert r.json() == {"path": "/api/whoami",
                        "verified_claims": {"sub": "demo-client", "client_id": "demo-client", "scope": "read"}}
    # A token for another audience (none asked: the default one) is refused.
    plain = _token(demo, ("demo-client", "demo-secret"), grant_type="client_credentials").json()["access_token"]
    r = requests.get(api, timeout=10, headers={"Authorization": "Bearer " + plain})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], r.text
