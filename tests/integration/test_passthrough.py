"""Non-OAuth traffic passes through the filter untouched; OAuth paths are answered in every
route mode (cluster / direct / none), from the whole request body."""
from __future__ import annotations

import hashlib

import pytest
import requests

from support.forms import post_form
from helpers import (
    ACCESS_TOKEN_LIFETIME,
    DEMO_CLIENT,
    assert_token_response,
    basic_auth,
    token_request,
    verify_access_token,
)

MODES = ["cluster", "direct", "none"]
ROUTE_MODE_FIXTURES = {"cluster": "envoy_main", "direct": "envoy_es256", "none": "envoy_none"}


@pytest.fixture(params=MODES)
def any_envoy(request):
    return request.getfixturevalue(ROUTE_MODE_FIXTURES[request.param])


def test_passthrough_cluster_mode_reaches_backend_unchanged(envoy_main):
    body = b"hello=world&grant_type=client_credentials&" + bytes(range(256)) * 8
    r = requests.post(envoy_main.base_url + "/api/things?x=1&y=%20z", data=body, timeout=10,
                      headers={"Content-Type": "application/octet-stream", "X-Test": "kept",
                               "Authorization": "Bearer not-for-the-filter"})
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["backend"] is True
    assert echo["method"] == "POST"
    assert echo["path"] == "/api/things?x=1&y=%20z"
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["headers"]["x-test"] == "kept"
    assert echo["headers"]["authorization"] == "Bearer not-for-the-filter"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_passthrough_cluster_mode_methods(envoy_main, method):
    r = requests.request(method, envoy_main.base_url + "/resource/1", timeout=10)
    assert r.status_code == 200
    assert r.json()["method"] == method


@pytest.mark.parametrize("path", ["/oauth/tokens", "/oauth/token/x", "/oauth/jwks.json", "/oauth",
                                  "/.well-known/other", "/oauth/callback"])
def test_passthrough_lookalike_paths_reach_backend(envoy_main, path):
    """Other paths under the same prefix belong to the application behind the gateway."""
    r = post_form(envoy_main.base_url + path, "grant_type=client_credentials")
    assert r.status_code == 200, (path, r.status_code, r.text[:200])
    assert r.json()["path"] == path


@pytest.mark.parametrize("path", ["/OAUTH/TOKEN", "/oauth/token/", "/oauth/token;x", "/Oauth/Token/",
                                  "/oauth/token%20", "/oauth/jwks/",
                                  "/.well-known/oauth-authorization-server/"])
def test_variants_of_our_paths_answered_404_never_passed_on(envoy_main, path):
    """A near-miss of one of the filter's paths would carry a client's credentials to the
    application: the filter answers it, a clean 404, and the next request still works."""
    r = post_form(envoy_main.base_url + path, "grant_type=client_credentials",
                  headers={"Authorization": "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ="})
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["error"] == "invalid_request"
    ok = post_form(envoy_main.token_url, {"grant_type": "client_credentials"},
                   headers={"Authorization": basic_auth("demo-client", "demo-secret")})
    assert ok.status_code == 200


def test_passthrough_large_upload_not_limited_by_filter(envoy_main):
    """The filter's 16 KiB limit is for its own endpoints only."""
    body = b"x" * (512 * 1024)
    r = requests.put(envoy_main.base_url + "/upload", data=body, timeout=20)
    assert r.status_code == 200
    assert r.json()["body_length"] == len(body)


def test_passthrough_chunked_upload_reaches_backend(envoy_main):
    parts = [b"a" * 1000, b"b" * 70000, b"c"]

    r = requests.post(envoy_main.base_url + "/stream", data=iter(parts), timeout=20)
    assert r.status_code == 200
    echo = r.json()
    assert echo["body_length"] == sum(map(len, parts))
    assert echo["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_passthrough_direct_mode_gets_direct_response(envoy_es256):
    for method in ("GET", "POST"):
        r = requests.request(method, envoy_es256.base_url + "/anything", data=b"payload", timeout=10)
        assert r.status_code == 200
        assert r.text == "direct response from envoy\n"


def test_passthrough_none_mode_gets_404(envoy_none):
    for method in ("GET", "POST"):
        r = requests.request(method, envoy_none.base_url + "/anything", data=b"payload", timeout=10)
        assert r.status_code == 404


def test_token_rfc6749_4_4_answered_in_every_route_mode(any_envoy):
    """POST /oauth/token with a body is answered by the filter whatever the route: it read the
    whole body (the scope is at its very end, after padding split over several reads)."""
    body = ("grant_type=client_credentials&pad=" + "p" * 9000 + "&scope=read").encode()
    r = token_request(any_envoy, DEMO_CLIENT, data=body)
    tok = assert_token_response(r, scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    verify_access_token(tok["access_token"], any_envoy, client_id="demo-client", scope="read",
                        lifetime=ACCESS_TOKEN_LIFETIME)


def test_token_chunked_body_answered_in_every_route_mode(any_envoy):
    parts = [b"grant_type=client", b"_credentials&sc", b"ope=write"]
    r = requests.post(any_envoy.token_url, data=iter(parts), timeout=10,
                      headers={"Content-Type": "application/x-www-form-urlencoded",
                               "Authorization": basic_auth("demo-client", "demo-secret")})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_token_response(r, scope="write", lifetime=ACCESS_TOKEN_LIFETIME)


def test_metadata_and_jwks_answered_in_every_route_mode(any_envoy):
    for path in ("/oauth/jwks", "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        r = requests.get(any_envoy.base_url + path, timeout=5)
        assert r.status_code == 200, (path, r.status_code)
        assert r.headers.get("Content-Type", "").startswith("application/json")


def test_keep_alive_token_requests_every_route_mode(any_envoy):
    with requests.Session() as s:
        for _ in range(5):
            assert token_request(any_envoy, DEMO_CLIENT, session=s).status_code == 200


@pytest.mark.parametrize("path", ["/oauth//token", "/oauth/./token", "/x/../oauth/token", "/oauth/token?x=1"])
def test_token_endpoint_not_bypassed_by_path_variants_rfc6749_3_2(envoy_main, path):
    """Path variants of the token endpoint are answered by the filter, never forwarded to the
    backend (Envoy normalizes the path; RFC 6749 §3.2 allows a query component)."""
    r = requests.post(
        envoy_main.base_url + path, data="grant_type=client_credentials&scope=read", timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "Authorization": basic_auth("demo-client", "demo-secret")})
    assert "backend" not in r.text, f"{path} reached the backend"
    assert_token_response(r, scope="read", lifetime=ACCESS_TOKEN_LIFETIME)


@pytest.mark.parametrize("path", ["/oauth/jwks", "/.well-known/oauth-authorization-server",
                                  "/.well-known/openid-configuration"])
def test_discovery_head_rfc9110_9_3_2_same_headers_as_get(envoy_main, path):
    """RFC 9110 §9.3.2: HEAD answers with the header fields GET would send, without a body."""
    get = requests.get(envoy_main.base_url + path, timeout=5)
    head = requests.head(envoy_main.base_url + path, timeout=5)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers.get("Content-Type") == get.headers.get("Content-Type"), (
        f"HEAD {path}: Content-Type {head.headers.get('Content-Type')!r}, GET: {get.headers.get('Content-Type')!r}"
        " (Envoy drops Content-Type from a local reply with an empty body: send the full body for HEAD,"
        " Envoy strips it and keeps Content-Type/Content-Length)")


@pytest.mark.parametrize("payload", [
    b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    b"POST /oauth/token HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
    b"POST /oauth/token HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
], ids=["bad-header-line", "two-content-lengths", "content-length-and-chunked"])
def test_http1_malformed_request_closes_connection_no_smuggling(envoy_main, backend, payload):
    """override_stream_error_on_invalid_http_message keeps connections after the filter's 400s,
    but malformed HTTP/1 still ends the connection: the request behind it is never served."""
    import socket

    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    with socket.create_connection(("127.0.0.1", envoy_main.listen_port), timeout=5) as s:
        s.sendall(payload + smuggled)
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not part:
                break
            data += part
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert data.count(b"HTTP/1.1 ") == 1, data
    assert b"/smuggled" not in data


def test_token_expect_100_continue_rfc9110_10_1_1(envoy_main):
    """curl sends Expect: 100-continue for bodies over 1 KiB: the token is still answered."""
    import socket

    body = ("grant_type=client_credentials&scope=read&pad=" + "x" * 2000).encode()
    head = (f"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Authorization: {basic_auth('demo-client', 'demo-secret')}\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", envoy_main.listen_port), timeout=5) as s:
        s.sendall(head)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 100"), first[:100]
        s.sendall(body)
        data = first.split(b"\r\n\r\n", 1)[1]
        while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1].endswith(b"}"):
            part = s.recv(65536)
            if not part:
                break
            data += part
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert b'"access_token"' in data


def test_token_body_in_slow_pieces(envoy_main):
    """The body arrives in several reads with pauses: the filter waits for the end of stream."""
    import socket
    import time

    body = b"grant_type=client_credentials&scope=write"
    head = (f"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Authorization: {basic_auth('demo-client', 'demo-secret')}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", envoy_main.listen_port), timeout=5) as s:
        s.sendall(head)
        for i in range(0, len(body), 10):
            time.sleep(0.05)
            s.sendall(body[i:i + 10])
        data = b""
        while not data.endswith(b"}"):
            part = s.recv(65536)
            if not part:
                break
            data += part
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert b'"scope":"write"' in data.replace(b" ", b"")


def test_token_over_http2_cleartext(envoy_main):
    """HTTP/2 (h2c, prior knowledge): the body arrives as DATA frames; curl is the client."""
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if not curl or "HTTP2" not in subprocess.run([curl, "-V"], capture_output=True, text=True).stdout:
        pytest.skip("curl with HTTP/2 support not available")
    res = subprocess.run([curl, "-sS", "--http2-prior-knowledge", "-u", "demo-client:demo-secret",
                          "-d", "grant_type=client_credentials", "-d", "scope=read",
                          "-w", "\\n%{http_version} %{http_code}", envoy_main.token_url],
                         capture_output=True, text=True, timeout=20)
    body, _, status = res.stdout.rpartition("\n")
    assert status == "2 200", (status, body, res.stderr)
    assert '"access_token"' in body


def test_registry_concurrent_first_lookups(envoy_main, registry):
    """20 concurrent first requests for one registry client all succeed."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from helpers import Client, client_metadata

    c = Client(f"reg-herd-{uuid.uuid4().hex[:8]}", "herd-secret", scope="read")
    registry.add_client(client_metadata(c))
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: token_request(envoy_main, c).status_code, range(20)))
    assert statuses == [200] * 20
    assert 1 <= registry.count(c.client_id) <= 20


def test_escaped_unreserved_characters_are_normalised_by_envoy(envoy_main):
    """normalize_path decodes escaped unreserved characters (RFC 3986 §6.2.2.2): the request
    reaches the filter's endpoint itself, not the application."""
    r = post_form(envoy_main.base_url + "/oauth/%74oken", {"grant_type": "client_credentials"},
                  headers={"Authorization": basic_auth("demo-client", "demo-secret")})
    assert r.status_code == 200
    assert "access_token" in r.json()
