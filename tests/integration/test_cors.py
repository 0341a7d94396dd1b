"""CORS per client through real Envoy (issue 17 item 4), on the demo's configuration: demo-spa, a
public cookie client whose redirect_uris are on two loopback origins; demo-client, a confidential
client without redirect_uris (no browser origin). The filter answers the preflights itself (no
Envoy CORS filter), echoes the exact origin, allows credentials only where a cookie is used."""
from __future__ import annotations

import pytest
import requests

from support.forms import basic_auth, post_form
EVIL = "http://evil.example"


def _preflight(demo, path, origin, method="POST", headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(demo.base_url + path, headers=h, timeout=5)


@pytest.mark.parametrize("path, credentials, allow_headers", [
    ("/oauth/token", True, "Authorization, Content-Type, DPoP"),
    ("/oauth/pushed-authorization", False, "Authorization, Content-Type, DPoP"),
    ("/oauth/revoke", False, "Authorization, Content-Type"),
    ("/oauth/refresh", True, "Content-Type"),
])
def test_preflight_for_the_apps_origins(demo, path, credentials, allow_headers):
    for origin in (demo.base_url, demo.spa_url):
        r = _preflight(demo, path, origin, headers="content-type")
        assert r.status_code == 204, r.text
        assert r.content == b""
        assert r.headers["access-control-allow-origin"] == origin
        assert r.headers["access-control-allow-methods"] == "POST"
        assert r.headers["access-control-allow-headers"] == allow_headers
        assert r.headers["vary"] == "Origin"
        assert r.headers.get("access-control-allow-credentials") == ("true" if credentials else None)
        assert int(r.headers["access-control-max-age"]) > 0
    # The connection stays usable after the answer (no body to drain, nothing half-read).
    with requests.Session() as s:
        for _ in range(3):
            h = {"Origin": demo.spa_url, "Access-Control-Request-Method": "POST"}
            assert s.options(demo.base_url + path, headers=h, timeout=5).status_code == 204


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/pushed-authorization", "/oauth/revoke",
                                  "/oauth/refresh"])
def test_preflight_from_other_origins_is_refused(demo, path):
    for origin in (EVIL, "null", demo.spa_url.replace("127.0.0.1", "localhost")):
        r = _preflight(demo, path, origin)
        assert r.status_code == 403
        assert r.json()["error"] == "invalid_request"
        assert r.headers["cache-control"] == "no-store"
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-credentials" not in r.headers
        assert r.headers["vary"] == "Origin"


@pytest.mark.parametrize("path", ["/oauth/jwks", "/.well-known/oauth-authorization-server",
                                  "/.well-known/openid-configuration"])
def test_public_documents_allow_any_origin_without_credentials(demo, path):
    r = _preflight(demo, path, EVIL, method="GET")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-methods"] == "GET, HEAD"
    assert "access-control-allow-credentials" not in r.headers
    for method in ("GET", "HEAD"):
        r = requests.request(method, demo.base_url + path, headers={"Origin": EVIL}, timeout=5)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers


def test_options_that_is_no_preflight_is_still_405(demo):
    for headers in ({}, {"Origin": demo.spa_url}):
        r = requests.options(demo.base_url + "/oauth/token", headers=headers, timeout=5)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        assert r.json()["error"] == "invalid_request"
    # Endpoints a browser does not call answer no preflight.
    for path in ("/oauth/introspect", "/oauth/authorize"):
        r = _preflight(demo, path, demo.spa_url)
        assert r.status_code == 405, path
        assert "access-control-allow-origin" not in r.headers


def test_token_answers_echo_only_the_clients_own_origins(demo):
    # demo-client has no browser origin: its tokens are never readable cross-origin.
    r = post_form(demo.base_url + "/oauth/token", {"grant_type": "client_credentials"}, timeout=5,
                  headers={"Authorization": basic_auth("demo-client", "demo-secret"), "Origin": demo.spa_url})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers and r.headers["vary"] == "Origin"
    # demo-spa's answers (an error here) are readable from its origins, with credentials (its code
    # redemption sets the refresh cookie); from elsewhere not.
    data = {"grant_type": "authorization_code", "client_id": "demo-spa", "code": "nope",
            "redirect_uri": demo.spa_url + "/app/callback", "code_verifier": "x" * 43}
    r = post_form(demo.base_url + "/oauth/token", data, headers={"Origin": demo.spa_url}, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert r.headers["access-control-allow-origin"] == demo.spa_url
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "DPoP-Nonce" in r.headers["access-control-expose-headers"]
    r = post_form(demo.base_url + "/oauth/token", data, headers={"Origin": EVIL}, timeout=5)
    assert "access-control-allow-origin" not in r.headers
    # PAR and revocation: the origin, never credentials.
    r = post_form(demo.base_url + "/oauth/revoke", {"token": "x", "client_id": "demo-spa"},
                  headers={"Origin": demo.spa_url}, timeout=5)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == demo.spa_url
    assert "access-control-allow-credentials" not in r.headers


def test_refresh_answers_allow_credentials_for_the_exact_origin(demo):
    for origin in (demo.base_url, demo.spa_url, EVIL):
        r = requests.post(demo.base_url + "/oauth/refresh", data="{}", timeout=5, headers={
            "Content-Type": "application/json", "Origin": origin, "Cookie": "oauth_edge_rt=garbage"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_grant"
        assert r.headers["vary"] == "Origin"
        if origin == EVIL:
            assert "access-control-allow-origin" not in r.headers
            assert "access-control-allow-credentials" not in r.headers
        else:
            assert r.headers["access-control-allow-origin"] == origin
            assert r.headers["access-control-allow-credentials"] == "true"


def test_preflight_in_body_mode_buffer(envoy_buffer_direct):
    """Body mode `buffer` (Istio: the filter continues on headers, Envoy's buffer filter holds the
    router): a preflight is still answered by the filter, not by the route's direct_response.
    demo-spa (envoy/oauth-edge.json) is one of its static clients."""
    origin = "http://127.0.0.1:10001"
    for path in ("/oauth/token", "/oauth/refresh"):
        r = requests.options(envoy_buffer_direct.base_url + path, timeout=5,
                             headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert r.status_code == 204, r.text
        assert r.headers["access-control-allow-origin"] == origin
        assert r.headers["access-control-allow-credentials"] == "true"
    r = requests.options(envoy_buffer_direct.base_url + "/oauth/token", timeout=5,
                         headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403 and r.json()["error"] == "invalid_request"
