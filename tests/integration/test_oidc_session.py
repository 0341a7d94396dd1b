"""Issue 16 items 4 and 6 through a real Envoy: OpenID Connect userinfo (OIDC Core §5.3) and
RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

Envoy's jwt_authn verifies the login JWTs on /oauth/authorize and /oauth/logout; their `sid`
claim names the login session (the plugin's `user.session_claim`, default `sid`). The registry
fixture doubles as the user-info service (`GET /userinfo/{sub}`). An Authlib client discovers
the endpoints, runs the code flow and reads userinfo; logout is driven as a browser would (GET
with the login JWT) and checked for what it ends (every grant of the login session, for every
client) and what it must not do (end other sessions, redirect anywhere unregistered)."""
from __future__ import annotations

import secrets
import urllib.parse
from typing import Any, Iterator

import pytest
import requests

from support.fixtures_ac import ac_plugin_config
from support.fixtures_envoy import finish_envoy, start_envoy
from support.forms import post_form
from helpers import (AC_ISSUER, Client, ClientKey, assert_oauth_error, bearer, client_metadata, dpop_proof,
                     introspect, issue_code, jws_parts, metadata, redeem_code, refresh_request)

RP_A = Client("oidc-a", "oidc-a-secret", grant_types=("authorization_code", "refresh_token"),
              scope="openid profile email read",
              extra={"redirect_uris": ["https://a.example.test/cb"],
                     "post_logout_redirect_uris": ["https://a.example.test/bye"],
                     "resource_server_audiences": ["oauth-edge"]})
RP_B = Client("oidc-b", "oidc-b-secret", grant_types=("authorization_code", "refresh_token"),
              scope="openid read", extra={"redirect_uris": ["https://b.example.test/cb"]})
LOGOUT_PAGE = "https://login.example.test/logout"
ALICE = {"sub": "alice", "name": "Alice Liddell", "given_name": "Alice", "email": "alice@example.test",
         "email_verified": True, "phone_number": "+44 1865 000000", "internal_note": "never released"}


@pytest.fixture(scope="module")
def envoy_oidc(keys, login_service, registry, backend, tmp_path_factory) -> Iterator[Any]:
    cfg = ac_plugin_config(login_service)
    cfg["clients"] += [client_metadata(RP_A), client_metadata(RP_B)]
    cfg["userinfo"] = {"cluster": "registry", "authority": "users.internal", "path_prefix": "/userinfo/"}
    cfg["end_session"] = {"logout_url": LOGOUT_PAGE, "clear_cookies": ["login_session"]}
    registry.set_profile("alice", ALICE)
    inst = start_envoy("oidc-session", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter(extra_paths=["/oauth/logout"])])
    yield inst
    finish_envoy(inst)


def _tokens(envoy, login_service, client: Client, session_id: str, scope: str = "openid read") -> dict[str, Any]:
    code, verifier = issue_code(envoy, login_service.sign("alice", sid=session_id), client, scope=scope)
    r = redeem_code(envoy, code, verifier, client)
    assert r.status_code == 200, r.text
    return r.json()


def _logout(envoy, params: dict[str, str], login_jwt: str | None = None) -> requests.Response:
    headers = bearer(login_jwt) if login_jwt else {}
    return requests.get(envoy.base_url + "/oauth/logout", params=params, headers=headers,
                        allow_redirects=False, timeout=10)


def test_discovery_names_userinfo_and_end_session(envoy_oidc):
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        doc = requests.get(envoy_oidc.base_url + path, timeout=10).json()
        assert doc["userinfo_endpoint"] == AC_ISSUER + "/oauth/userinfo"
        assert doc["end_session_endpoint"] == AC_ISSUER + "/oauth/logout"
        assert {"sid", "name", "email", "email_verified"} <= set(doc["claims_supported"])


def test_an_authlib_client_reads_userinfo_after_a_code_flow(envoy_oidc, login_service, registry):
    from authlib.integrations.requests_client import OAuth2Session

    meta = metadata(envoy_oidc)
    local = lambda url: url.replace(AC_ISSUER, envoy_oidc.base_url)  # noqa: E731 (the issuer is not resolvable)
    sess = OAuth2Session(RP_A.client_id, RP_A.secret, scope="openid profile",
                         redirect_uri=RP_A.extra["redirect_uris"][0], code_challenge_method="S256")
    verifier = secrets.token_urlsafe(48)
    url, state = sess.create_authorization_url(local(meta["authorization_endpoint"]), code_verifier=verifier)
    r = requests.get(url, headers=bearer(login_service.sign("alice", sid="s-authlib")),
                     allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    token = sess.fetch_token(local(meta["token_endpoint"]), authorization_response=r.headers["Location"],
                             code_verifier=verifier)
    _, id_claims = jws_parts(token["id_token"])
    before = len(registry.userinfo_calls)
    info = sess.get(local(meta["userinfo_endpoint"]), timeout=10)
    assert info.status_code == 200, info.text
    assert info.headers["Cache-Control"] == "no-store"
    # profile releases name and given_name; not email (no email scope), never unknown claims.
    assert info.json() == {"sub": "alice", "name": "Alice Liddell", "given_name": "Alice"}
    assert info.json()["sub"] == id_claims["sub"]
    assert registry.userinfo_calls[before:] == ["alice"]
    # POST with the token in the form body (RFC 6750 §2.2).
    r = post_form(local(meta["userinfo_endpoint"]), {"access_token": token["access_token"]})
    assert r.status_code == 200 and r.json()["name"] == "Alice Liddell", r.text


def test_userinfo_refusals_follow_rfc_6750(envoy_oidc, login_service):
    url = envoy_oidc.base_url + "/oauth/userinfo"
    r = requests.get(url, timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer "), r.headers
    r = requests.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=10)
    assert_oauth_error(r, 401, "invalid_token")
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    no_openid = _tokens(envoy_oidc, login_service, RP_B, "s-scope", scope="read")
    r = requests.get(url, headers=bearer(no_openid["access_token"]), timeout=10)
    assert_oauth_error(r, 403, "insufficient_scope")
    # The user-info service no longer knows the user.
    ok = _tokens(envoy_oidc, login_service, RP_A, "s-gone", scope="openid email")
    code, verifier = issue_code(envoy_oidc, login_service.sign("mallory", sid="s-m"), RP_A, scope="openid email")
    mallory = redeem_code(envoy_oidc, code, verifier, RP_A).json()
    r = requests.get(url, headers=bearer(mallory["access_token"]), timeout=10)
    assert_oauth_error(r, 401, "invalid_token")
    # Garbage, then a valid request.
    for h in ({"Authorization": "Bearer"}, {"Authorization": "DPoP \x01"}, {"Authorization": "Bearer a b c"}):
        assert requests.get(url, headers=h, timeout=10).status_code in (400, 401)
    r = requests.post(url, data=b"\xff\xfe=\xfa", headers={"Content-Type": "application/x-www-form-urlencoded"},
                      timeout=10)
    assert r.status_code in (400, 401)
    r = requests.get(url, headers=bearer(ok["access_token"]), timeout=10)
    assert r.status_code == 200 and r.json() == {"sub": "alice", "email": "alice@example.test",
                                                 "email_verified": True}


def test_userinfo_with_a_dpop_bound_token(envoy_oidc, login_service):
    key = ClientKey("ES256", None)
    code, verifier = issue_code(envoy_oidc, login_service.sign("alice", sid="s-dpop"), RP_A, scope="openid profile")
    htu_token = AC_ISSUER + "/oauth/token"
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": RP_A.extra["redirect_uris"][0],
            "code_verifier": verifier}
    r = post_form(envoy_oidc.token_url, form, basic=RP_A, dpop=dpop_proof(key, htu_token))
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
    at = r.json()["access_token"]
    url = envoy_oidc.base_url + "/oauth/userinfo"
    htu = AC_ISSUER + "/oauth/userinfo"
    import base64
    import hashlib
    ath = base64.urlsafe_b64encode(hashlib.sha256(at.encode()).digest()).rstrip(b"=").decode()
    # A bound token as Bearer is refused (RFC 9449 §7.2).
    r = requests.get(url, headers=bearer(at), timeout=10)
    assert_oauth_error(r, 401, "invalid_token")
    proof = dpop_proof(key, htu, htm="GET", ath=ath)
    r = requests.get(url, headers={"Authorization": f"DPoP {at}", "DPoP": proof}, timeout=10)
    assert r.status_code == 200 and r.json()["name"] == "Alice Liddell", r.text
    # The same proof again: replayed.
    r = requests.get(url, headers={"Authorization": f"DPoP {at}", "DPoP": proof}, timeout=10)
    assert_oauth_error(r, 401, "invalid_dpop_proof")


def test_logout_ends_every_grant_of_the_login_and_nothing_else(envoy_oidc, login_service):
    a = _tokens(envoy_oidc, login_service, RP_A, "login-1")
    b = _tokens(envoy_oidc, login_service, RP_B, "login-1")
    other = _tokens(envoy_oidc, login_service, RP_B, "login-2")
    assert jws_parts(a["id_token"])[1]["sid"] == jws_parts(b["id_token"])[1]["sid"]
    assert jws_parts(a["id_token"])[1]["sid"] != jws_parts(other["id_token"])[1]["sid"]
    r = _logout(envoy_oidc, {"id_token_hint": a["id_token"], "post_logout_redirect_uri": "https://a.example.test/bye",
                             "state": "st 1"}, login_jwt=login_service.sign("alice", sid="login-1"))
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == "https://a.example.test/bye?state=st%201"
    cookies = r.raw.headers.getlist("Set-Cookie")
    assert any(c.startswith("login_session=;") and "Max-Age=0" in c and "Path=/" in c for c in cookies), cookies
    assert any("Path=/oauth/refresh" in c and "Max-Age=0" in c for c in cookies), cookies
    for client, t in ((RP_A, a), (RP_B, b)):
        r = refresh_request(envoy_oidc, t["refresh_token"], client)
        assert_oauth_error(r, 400, "invalid_grant")
    assert introspect(envoy_oidc, a["refresh_token"], RP_A)["active"] is False
    # Another login of the same user is untouched; so is a new login after the logout.
    r = refresh_request(envoy_oidc, other["refresh_token"], RP_B)
    assert r.status_code == 200, r.text
    import time
    time.sleep(1.1)  # the session ended in this second; a login in a later one is a new grant
    again = _tokens(envoy_oidc, login_service, RP_A, "login-1")
    assert refresh_request(envoy_oidc, again["refresh_token"], RP_A).status_code == 200


def test_logout_never_redirects_where_it_should_not(envoy_oidc, login_service):
    a = _tokens(envoy_oidc, login_service, RP_A, "login-r")
    hint = a["id_token"]
    bye = "https://a.example.test/bye"
    refused = [
        {"id_token_hint": hint, "post_logout_redirect_uri": "https://evil.example/"},
        {"id_token_hint": hint, "post_logout_redirect_uri": "https://a.example.test/cb"},
        {"id_token_hint": hint, "post_logout_redirect_uri": bye + "/"},
        {"id_token_hint": hint, "post_logout_redirect_uri": bye, "client_id": RP_B.client_id},
        {"id_token_hint": a["access_token"], "post_logout_redirect_uri": bye},
        {"id_token_hint": hint[:-3] + "AAA", "post_logout_redirect_uri": bye},
        {"id_token_hint": "garbage", "post_logout_redirect_uri": bye},
        {"post_logout_redirect_uri": bye},
        {"client_id": "nobody-registered", "post_logout_redirect_uri": bye},
    ]
    for params in refused:
        r = _logout(envoy_oidc, params)
        assert_oauth_error(r, 400, "invalid_request")
        assert "Location" not in r.headers, params
    # Repeated parameters.
    r = requests.get(envoy_oidc.base_url + "/oauth/logout?" + urllib.parse.urlencode(
        [("id_token_hint", hint), ("id_token_hint", hint)]), allow_redirects=False, timeout=10)
    assert_oauth_error(r, 400, "invalid_request")
    # Nothing was ended by the refusals; the grant still refreshes.
    assert refresh_request(envoy_oidc, a["refresh_token"], RP_A).status_code == 200
    # No hint: the login service's page asks the user; nothing ends here, no cookie is cleared.
    r = _logout(envoy_oidc, {"client_id": RP_A.client_id})
    assert r.status_code == 303 and r.headers["Location"] == LOGOUT_PAGE
    assert "Set-Cookie" not in r.headers
    # A hint without a registered URI: the login service's page, the session ended.
    r = _logout(envoy_oidc, {"id_token_hint": hint})
    assert r.status_code == 303 and r.headers["Location"] == LOGOUT_PAGE
    assert_oauth_error(refresh_request(envoy_oidc, a["refresh_token"], RP_A), 400, "invalid_grant")
    # POST works too; a forged login JWT is refused by jwt_authn before the filter.
    b = _tokens(envoy_oidc, login_service, RP_A, "login-p")
    r = post_form(envoy_oidc.base_url + "/oauth/logout", {"id_token_hint": b["id_token"]}, allow_redirects=False)
    assert r.status_code == 303, r.text
    r = _logout(envoy_oidc, {"id_token_hint": b["id_token"]}, login_jwt="forged.jwt.value")
    assert r.status_code == 401
