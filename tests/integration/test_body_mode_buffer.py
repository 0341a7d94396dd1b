"""Body mode `buffer` (render.py --body-mode buffer): the setup for hosts that cannot set the wasm
filter's allow_on_headers_stop_iteration (Istio's WasmPlugin). The plugin continues on the token
request's headers (pause_on_request_headers: false) and pauses on its body until the end of
stream; Envoy's buffer filter after the wasm filter holds the router back meanwhile. The token
endpoint must behave as in the default body mode `pause`, in route modes `cluster` and `direct`.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid

import pytest
import requests
import yaml

import render
from support import ROOT
from support.envoy import http_filters
from support.keys import _keygen_python
from helpers import (
    AC_CLIENT,
    ACCESS_TOKEN_LIFETIME,
    DEMO_CLIENT,
    ENVOY_413_DESCRIPTION,
    FORM,
    MAX_BODY,
    POST_CLIENT,
    Client,
    assert_oauth_error,
    assert_token_response,
    basic_auth,
    client_metadata,
    oversized_form,
    raw_http,
    raw_request_head,
    read_http_response,
    token_request,
    verify_access_token,
)

ROUTE_MODE_FIXTURES = {"cluster": "envoy_buffer_cluster", "direct": "envoy_buffer_direct"}


@pytest.fixture(params=list(ROUTE_MODE_FIXTURES))
def buffered(request):
    """An Envoy in body mode `buffer`, once per route mode."""
    return request.getfixturevalue(ROUTE_MODE_FIXTURES[request.param])


def assert_still_issues_tokens(envoy) -> None:
    r = token_request(envoy, DEMO_CLIENT)
    assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


def _chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


# ---------------------------------------------------------------- render.py --body-mode
def _render_cli(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    key = tmp_path / "key.json"
    if not key.exists():
        key.write_text(json.dumps(_keygen_python("EdDSA", "body-mode-test")))
    return subprocess.run([sys.executable, str(ROOT / "envoy" / "render.py"), "--out", str(tmp_path / "run"),
                           "--key", str(key), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("route_mode", render.ROUTE_MODES)
def test_render_cli_body_mode_buffer(tmp_path, route_mode):
    res = _render_cli(tmp_path, "--route-mode", route_mode, "--body-mode", "buffer")
    assert res.returncode == 0, res.stderr
    filters = http_filters(yaml.safe_load((tmp_path / "run" / "envoy.yaml").read_text()))
    assert [f["name"] for f in filters] == [
        "envoy.filters.http.wasm", "envoy.filters.http.buffer", "envoy.filters.http.router"]
    wasm = filters[0]["typed_config"]["config"]
    assert "allow_on_headers_stop_iteration" not in wasm
    assert wasm["failure_policy"] == "FAIL_RELOAD"
    plugin = json.loads(wasm["configuration"]["value"])
    assert plugin["pause_on_request_headers"] is False
    buffer = filters[1]["typed_config"]
    assert buffer["@type"] == "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
    assert buffer["max_request_bytes"] == render.BUFFER_MAX_REQUEST_BYTES == 1048576
    assert buffer["max_request_bytes"] > plugin["limits"]["max_body_bytes"]


def test_render_cli_body_mode_pause_is_the_default(tmp_path):
    default = _render_cli(tmp_path, "--route-mode", "direct")
    assert default.returncode == 0, default.stderr
    text = (tmp_path / "run" / "envoy.yaml").read_text()
    explicit = _render_cli(tmp_path, "--route-mode", "direct", "--body-mode", "pause")
    assert explicit.returncode == 0, explicit.stderr
    assert (tmp_path / "run" / "envoy.yaml").read_text() == text
    filters = http_filters(yaml.safe_load(text))
    assert [f["name"] for f in filters] == ["envoy.filters.http.wasm", "envoy.filters.http.router"]
    wasm = filters[0]["typed_config"]["config"]
    assert wasm["allow_on_headers_stop_iteration"] is True
    assert "pause_on_request_headers" not in json.loads(wasm["configuration"]["value"])


@pytest.mark.parametrize("body_mode, pause", [("pause", False), ("buffer", True)])
def test_render_refuses_pause_setting_contradicting_body_mode(body_mode, pause):
    key = _keygen_python("EdDSA", "body-mode-test")
    cfg = render.build_plugin_config(key=key)
    cfg["pause_on_request_headers"] = pause
    with pytest.raises(render.RenderError, match="pause_on_request_headers"):
        render.build_plugin_config(cfg, body_mode=body_mode)
    with pytest.raises(render.RenderError, match="pause_on_request_headers"):
        render.render_text(plugin_config=cfg, body_mode=body_mode)


def test_render_cli_refuses_unknown_body_mode(tmp_path):
    res = _render_cli(tmp_path, "--body-mode", "stream")
    assert res.returncode == 2
    assert "--body-mode" in res.stderr


# ---------------------------------------------------------------- tokens (RFC 6749 §4.4)
def test_buffer_mode_client_credentials_basic_rfc6749_4_4(buffered):
    r = token_request(buffered, DEMO_CLIENT)
    body = assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)
    verify_access_token(body["access_token"], buffered, client_id=DEMO_CLIENT.client_id,
                        scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


def test_buffer_mode_client_credentials_post_rfc6749_2_3_1(buffered):
    r = token_request(buffered, POST_CLIENT, scope="read")
    body = assert_token_response(r, scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    verify_access_token(body["access_token"], buffered, client_id=POST_CLIENT.client_id,
                        scope="read", lifetime=ACCESS_TOKEN_LIFETIME)


def test_buffer_mode_registry_client_answered_after_slow_lookup(buffered, registry):
    """The registry call is dispatched after the whole body is in; its answer ends the request."""
    c = Client(f"buf-{uuid.uuid4().hex[:10]}", "buf-secret", scope="read")
    registry.add_client(client_metadata(c))
    registry.set_mode("slow", 0.2)
    r = token_request(buffered, c, scope="read")
    assert_token_response(r, scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    assert registry.count(c.client_id) == 1


def test_buffer_mode_body_at_limit_is_accepted(buffered):
    r = token_request(buffered, DEMO_CLIENT, data=oversized_form(MAX_BODY))
    assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


# ---------------------------------------------------------------- bodies in pieces
def test_buffer_mode_chunked_body_sent_slowly(buffered):
    """Transfer-Encoding: chunked, one chunk at a time with pauses: answered after the last one."""
    pieces = [b"grant_type=", b"client_cred", b"entials&sc", b"ope=write"]
    with socket.create_connection(("127.0.0.1", buffered.listen_port), timeout=10) as s:
        s.sendall(raw_request_head(extra="Transfer-Encoding: chunked\r\n"))
        for p in pieces:
            time.sleep(0.1)
            s.sendall(b"%x\r\n%s\r\n" % (len(p), p))
        time.sleep(0.1)
        s.sendall(b"0\r\n\r\n")
        status, hdrs, body = read_http_response(s)
    assert status == 200, body[:300]
    assert json.loads(body)["scope"] == "write"


def test_buffer_mode_content_length_body_in_slow_pieces(buffered):
    body = b"grant_type=client_credentials&scope=read"
    pieces = [body[i:i + 10] for i in range(0, len(body), 10)]

    def slow():
        for p in pieces:
            time.sleep(0.05)
            yield p

    status, _, resp = raw_http(buffered.listen_port, raw_request_head(body_length=len(body)), body_chunks=slow())
    assert status == 200, resp[:300]
    assert json.loads(resp)["scope"] == "read"


def test_buffer_mode_chunked_body_from_requests(buffered):
    def gen():
        yield b"grant_type=client_credentials"
        yield b"&scope=read"

    r = requests.post(buffered.token_url, data=gen(), timeout=10,
                      headers={"Content-Type": FORM, "Authorization": basic_auth("demo-client", "demo-secret")})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_token_response(r, scope="read", lifetime=ACCESS_TOKEN_LIFETIME)


def test_buffer_mode_expect_100_continue_rfc9110_10_1_1(buffered):
    body = ("grant_type=client_credentials&scope=read&pad=" + "x" * 2000).encode()
    with socket.create_connection(("127.0.0.1", buffered.listen_port), timeout=10) as s:
        s.sendall(raw_request_head(body_length=len(body), extra="Expect: 100-continue\r\n"))
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 100"), first[:100]
        s.sendall(body)
        rest = first.split(b"\r\n\r\n", 1)[1]
        if rest:  # the final answer came in the same read (unlikely before the body was sent)
            pytest.fail(f"answered before the body was sent: {rest[:200]!r}")
        status, _, resp = read_http_response(s)
    assert status == 200, resp[:300]
    assert json.loads(resp)["scope"] == "read"


def test_buffer_mode_token_over_http2_cleartext(buffered):
    curl = shutil.which("curl")
    if not curl or "HTTP2" not in subprocess.run([curl, "-V"], capture_output=True, text=True).stdout:
        pytest.skip("curl with HTTP/2 support not available")
    res = subprocess.run([curl, "-sS", "--http2-prior-knowledge", "-u", "demo-client:demo-secret",
                          "-d", "grant_type=client_credentials", "-d", "scope=read",
                          "-w", "\\n%{http_version} %{http_code}", buffered.token_url],
                         capture_output=True, text=True, timeout=20)
    body, _, status = res.stdout.rpartition("\n")
    assert status == "2 200", (status, body, res.stderr)
    assert json.loads(body)["scope"] == "read"


# ---------------------------------------------------------------- body size (413)
def test_buffer_mode_oversized_content_length_filter_413_json(buffered):
    r = token_request(buffered, DEMO_CLIENT, data=oversized_form(MAX_BODY + 1))
    body = assert_oauth_error(r, 413, "invalid_request")
    assert body["error_description"] != ENVOY_413_DESCRIPTION, "the filter's own 413 must come first"
    assert_still_issues_tokens(buffered)


def test_buffer_mode_oversized_chunked_filter_413_json(buffered):
    body = oversized_form(3 * MAX_BODY)
    r = requests.post(buffered.token_url, data=(body[i:i + 4096] for i in range(0, len(body), 4096)),
                      timeout=10, headers={"Content-Type": FORM,
                                           "Authorization": basic_auth("demo-client", "demo-secret")})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    body = assert_oauth_error(r, 413, "invalid_request")
    assert body["error_description"] != ENVOY_413_DESCRIPTION, "the filter's own 413 must come first"
    assert_still_issues_tokens(buffered)


def test_buffer_mode_oversized_beyond_buffer_limits_413_json(buffered):
    """2 MiB: above the connection buffer and the buffer filter's max_request_bytes: still JSON."""
    body = oversized_form(2 * 1024 * 1024)
    status, hdrs, resp = raw_http(buffered.listen_port, raw_request_head(body_length=len(body)),
                                  body_chunks=[body])
    assert status == 413, (status, resp[:200])
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    assert "no-store" in hdrs.get("cache-control", ""), hdrs
    assert json.loads(resp)["error"] == "invalid_request"


# ---------------------------------------------------------------- errors (RFC 6749 §5.2)
NEGATIVE_CASES = {
    "missing-grant-type": (dict(client=DEMO_CLIENT, data="scope=read"), 400, "invalid_request"),
    "empty-body": (dict(client=DEMO_CLIENT, data=""), 400, "invalid_request"),
    "duplicate-parameter": (dict(client=DEMO_CLIENT, data="grant_type=client_credentials&scope=read&scope=write"),
                            400, "invalid_request"),
    "json-content-type": (dict(client=DEMO_CLIENT, data='{"grant_type":"client_credentials"}',
                               headers={"Content-Type": "application/json"}), 400, "invalid_request"),
    "non-utf8-body": (dict(client=DEMO_CLIENT, data=b"grant_type=client_credentials&scope=r\xff\xfeead"),
                      400, "invalid_request"),
    "unsupported-grant-type": (dict(client=DEMO_CLIENT, data="grant_type=password"), 400, "unsupported_grant_type"),
    "invalid-scope": (dict(client=DEMO_CLIENT, scope="read admin"), 400, "invalid_scope"),
    "unauthorized-client": (dict(client=AC_CLIENT), 400, "unauthorized_client"),
    "wrong-secret-post": (dict(client=Client("demo-client", "wrong"), use="client_secret_post"), 401, "invalid_client"),
    "no-client-authentication": (dict(client=None), 401, "invalid_client"),
    "two-auth-methods": (dict(client=DEMO_CLIENT, data="grant_type=client_credentials&client_id=demo-client"
                              "&client_secret=demo-secret"), 401, "invalid_client"),
    "unknown-client-registry-404": (dict(client=Client("no-such-client-buffered", "x")), 401, "invalid_client"),
}


@pytest.mark.parametrize("case", list(NEGATIVE_CASES))
def test_buffer_mode_token_errors_rfc6749_5_2(buffered, case):
    kwargs, status, error = NEGATIVE_CASES[case]
    kwargs = dict(kwargs)
    r = token_request(buffered, kwargs.pop("client"), **kwargs)
    assert_oauth_error(r, status, error)
    assert_still_issues_tokens(buffered)


def test_buffer_mode_wrong_secret_basic_www_authenticate_rfc6749_5_2(buffered):
    r = token_request(buffered, Client("demo-client", "wrong-secret"), use="client_secret_basic")
    assert_oauth_error(r, 401, "invalid_client")
    assert r.headers.get("WWW-Authenticate", "").lower().startswith("basic"), r.headers


def test_buffer_mode_registry_down_server_error(buffered, registry):
    registry.set_mode("down-500")
    r = token_request(buffered, Client(f"buf-down-{uuid.uuid4().hex[:10]}", "x"))
    assert_oauth_error(r, 500, "server_error")


def test_buffer_mode_token_endpoint_get_405(buffered):
    r = requests.get(buffered.token_url, params={"grant_type": "client_credentials"}, timeout=10,
                     headers={"Authorization": basic_auth("demo-client", "demo-secret")})
    assert_oauth_error(r, 405, "invalid_request")
    assert "POST" in r.headers.get("Allow", "")


# ---------------------------------------------------------------- keep-alive (RFC 9112 §9.3)
def test_buffer_mode_keep_alive_several_token_requests_one_connection(buffered):
    """Answers come after the whole body: Envoy keeps the connection for the next request."""
    def form(**fields: str) -> bytes:
        return urllib.parse.urlencode({"grant_type": "client_credentials", **fields}).encode()

    post_form = form(client_id=POST_CLIENT.client_id, client_secret=POST_CLIENT.secret or "")
    chunked = _chunked([b"grant_type=client_credentials", b"&scope=write"])
    sequence = [
        (raw_request_head(body_length=len(form())) + form(), 200),
        (raw_request_head(body_length=len(post_form), client=None) + post_form, 200),
        (raw_request_head(extra="Transfer-Encoding: chunked\r\n") + chunked, 200),
        (raw_request_head(body_length=len(form(scope="admin"))) + form(scope="admin"), 400),
        (raw_request_head(body_length=len(form()), client=Client("demo-client", "nope")) + form(), 401),
        (raw_request_head(body_length=len(form(scope="read"))) + form(scope="read"), 200),
    ]
    with socket.create_connection(("127.0.0.1", buffered.listen_port), timeout=10) as s:
        for i, (request, expected) in enumerate(sequence):
            s.sendall(request)
            status, hdrs, body = read_http_response(s)
            assert status == expected, (i, status, body[:300])
            assert hdrs.get("connection", "").lower() != "close", (i, hdrs)
            assert ("access_token" if expected == 200 else "error") in json.loads(body), (i, body[:300])


def test_buffer_mode_cluster_token_requests_never_reach_the_backend(envoy_buffer_cluster):
    """The buffer filter holds the router back: no upstream request starts for a token request,
    whatever the filter answers (token, error, 413) and however the body arrives."""
    before = envoy_buffer_cluster.stat("cluster.backend.upstream_rq_total")
    assert_still_issues_tokens(envoy_buffer_cluster)
    assert_oauth_error(token_request(envoy_buffer_cluster, DEMO_CLIENT, scope="admin"), 400, "invalid_scope")
    assert_oauth_error(token_request(envoy_buffer_cluster, DEMO_CLIENT, data=oversized_form(MAX_BODY + 1)),
                       413, "invalid_request")
    pieces = [b"grant_type=client_credentials", b"&scope=read"]
    status, _, _ = raw_http(envoy_buffer_cluster.listen_port,
                            raw_request_head(extra="Transfer-Encoding: chunked\r\n"),
                            body_chunks=[_chunked(pieces)])
    assert status == 200
    assert envoy_buffer_cluster.stat("cluster.backend.upstream_rq_total") == before
    # ... while any other path does reach it.
    assert requests.get(envoy_buffer_cluster.base_url + "/x", timeout=10).json()["backend"] is True
    assert envoy_buffer_cluster.stat("cluster.backend.upstream_rq_total") == before + 1


# ---------------------------------------------------------------- other paths pass through
def test_buffer_mode_cluster_passthrough_reaches_backend_unchanged(envoy_buffer_cluster):
    body = b"hello=world&grant_type=client_credentials&" + bytes(range(256)) * 8
    r = requests.post(envoy_buffer_cluster.base_url + "/api/things?x=1", data=body, timeout=10,
                      headers={"Content-Type": "application/octet-stream", "X-Test": "kept"})
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["backend"] is True
    assert (echo["method"], echo["path"]) == ("POST", "/api/things?x=1")
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["headers"]["x-test"] == "kept"
    r = requests.get(envoy_buffer_cluster.base_url + "/oauth/tokens", timeout=10)
    assert r.status_code == 200 and r.json()["path"] == "/oauth/tokens", r.text[:200]


def test_buffer_mode_cluster_passthrough_chunked_upload(envoy_buffer_cluster):
    body = b"x" * (256 * 1024)
    r = requests.put(envoy_buffer_cluster.base_url + "/upload", timeout=20,
                     data=(body[i:i + 16384] for i in range(0, len(body), 16384)))
    assert r.status_code == 200, r.text[:200]
    assert r.json()["body_length"] == len(body)


def test_buffer_mode_cluster_passthrough_upload_over_buffer_limit_413(envoy_buffer_cluster):
    """The price of body mode `buffer`: the buffer filter holds every request, so a non-OAuth
    upload over max_request_bytes gets 413 (body mode `pause` streams it to the backend)."""
    body = b"x" * (render.BUFFER_MAX_REQUEST_BYTES + 1)
    r = requests.put(envoy_buffer_cluster.base_url + "/upload", data=body, timeout=20)
    assert r.status_code == 413, r.text[:200]


def test_buffer_mode_direct_passthrough_gets_direct_response(envoy_buffer_direct):
    r = requests.get(envoy_buffer_direct.base_url + "/anything", timeout=10)
    assert (r.status_code, r.text) == (200, render.DIRECT_RESPONSE_BODY)
    r = requests.post(envoy_buffer_direct.base_url + "/api/things", data=b"a=b" * 1000, timeout=10,
                      headers={"Content-Type": FORM})
    assert (r.status_code, r.text) == (200, render.DIRECT_RESPONSE_BODY)


def test_buffer_mode_jwks_answered(buffered):
    r = requests.get(buffered.jwks_url, timeout=10)
    assert r.status_code == 200
    assert buffered.active_kid in {k["kid"] for k in r.json()["keys"]}


# ---------------------------------------------------------------- why the buffer filter is needed
def test_without_buffer_filter_direct_response_wins_over_token_endpoint(envoy_unbuffered):
    """pause_on_request_headers false and no buffer filter (route mode `direct`): the filter lets the
    token request's headers go on, and the router sends the route's direct_response at once, before
    the body (and so the filter's answer) exists. Deterministic: the router acts on the headers
    even when headers and body arrive in one packet. This is why render.py refuses the setup."""
    body = b"grant_type=client_credentials&scope=read"
    tokens_before = envoy_unbuffered.custom_stat("oauth_edge.tokens_issued.client_credentials")
    for _ in range(10):
        status, _, resp = raw_http(envoy_unbuffered.listen_port,
                                   raw_request_head(body_length=len(body)) + body)
        assert (status, resp) == (200, render.DIRECT_RESPONSE_BODY.encode()), (status, resp[:300])
    r = token_request(envoy_unbuffered, DEMO_CLIENT)
    assert (r.status_code, r.text) == (200, render.DIRECT_RESPONSE_BODY), r.text[:300]
    assert envoy_unbuffered.custom_stat("oauth_edge.tokens_issued.client_credentials") == tokens_before
    # Requests the filter answers from their headers alone are unaffected.
    assert requests.get(envoy_unbuffered.jwks_url, timeout=10).json()["keys"]
