"""Issue 11, "the gateway must never go down": the hardening in the shipped Envoy configuration
(envoy/envoy.yaml.in rendered by envoy/render.py), on real Envoy 1.40.

  * listener limits, overload manager, circuit breakers, escaped-slash action and failure policy
    are in every rendered configuration, and Envoy validates them;
  * Envoy's OWN local replies 400 / 408 / 413 / 503 on the filter's exact endpoint paths are flat
    OAuth JSON with no-store, while an application's paths behind the gateway keep Envoy's
    default replies, and the filter's own JSON answers are never rewritten;
  * requests over max_request_headers_kb are refused by Envoy;
  * path variants of the OAuth endpoints carrying client credentials never reach the backend;
  * the registry's circuit breaker sheds calls at once, the overload manager answers 503, and
    FAIL_RELOAD gives a failed VM back (with a test-only filter that traps on demand).

Envoys of this module (route mode `cluster`, so anything not answered goes to the backend):
  hardened    the shipped configuration plus Envoy's fault filter before the wasm filter (it
              aborts only requests that carry x-envoy-fault-abort-request, at 100 %), short
              timeouts (stream idle SHORT_IDLE s, whole request SHORT_REQUEST s) and an access log
              of the response code details
  strict      plus Envoy's buffer filter FIRST (max_request_bytes STRICT_BUFFER, below the plugin's
              max_body_bytes, so Envoy's own 413 comes first) and registry circuit breakers of 1
  overloaded  max_heap_size_bytes 4 MiB: the heap is always "full", every request gets 503
  trap        the shipped failure policy around tests/fixtures/trap_filter instead of the filter
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml

import render
from support import ROOT
from support.envoy import envoy_binary, EnvoyInstance, WASM
from support.fixtures_envoy import base_plugin_config, finish_envoy, RUNNING, start_envoy
from support.forms import post_form
from support.keys import _keygen_python
from helpers import (
    DEMO_CLIENT,
    ENVOY_413_DESCRIPTION,
    FORM,
    MAX_BODY,
    Client,
    assert_oauth_error,
    basic_auth,
    client_metadata,
    oversized_form,
    raw_http,
    read_http_response,
    token_request,
)

SHORT_IDLE = 1        # stream_idle_timeout of `hardened`, seconds
SHORT_REQUEST = 3     # request_timeout of `hardened`, seconds
STRICT_BUFFER = 8192  # the buffer filter of `strict`: below MAX_BODY
assert STRICT_BUFFER < MAX_BODY

# The error_description of each local reply mapper in envoy/envoy.yaml.in.
MAPPED = {
    400: ("invalid_request", "the proxy refused the request"),
    408: ("invalid_request", "request timeout"),
    413: ("invalid_request", ENVOY_413_DESCRIPTION),
    503: ("temporarily_unavailable", "the service is temporarily unavailable"),
}
MAPPER_DESCRIPTIONS = {d for _, d in MAPPED.values()}
DEMO_BASIC = basic_auth(DEMO_CLIENT.client_id, DEMO_CLIENT.secret or "")
FAULT_HEADER = "x-envoy-fault-abort-request"

# Envoy's fault filter: aborts with the status in x-envoy-fault-abort-request, only requests that
# carry it (100 % of those). Before the wasm filter, like any filter an operator might add there.
FAULT_FILTER = {
    "name": "envoy.filters.http.fault",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {"header_abort": {}, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
    },
}


# --------------------------------------------------------------------------- rendered config
def _key() -> dict[str, Any]:
    return _keygen_python("EdDSA", "hardening-test")


def _hcm(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _wasm_config(doc: dict[str, Any]) -> dict[str, Any]:
    wasm = next(f for f in _hcm(doc)["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    return wasm["typed_config"]["config"]


def _cluster(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["static_resources"]["clusters"] if c["name"] == name)


def _render_doc(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("key", _key())
    return yaml.safe_load(render.render(tmp_path, **kw).read_text())


def _mapper_paths(doc: dict[str, Any]) -> dict[int, list[str]]:
    """status -> the path list of that mapper's CEL filter (parsed back from the expression)."""
    out = {}
    for m in _hcm(doc)["local_reply_config"]["mappers"]:
        expr = m["filter"]["extension_filter"]["typed_config"]["expression"]
        status = int(expr.split("response.code == ", 1)[1].split()[0])
        assert "!(response.code_details in ['', 'oauth_edge'])" in expr, expr
        lst = expr.split("request.url_path in ", 1)[1]
        items = []
        for raw in lst.strip()[1:-1].split("', '"):
            items.append(raw.strip("'").replace("\\'", "'").replace("\\\\", "\\"))
        out[status] = items
    return out


@pytest.mark.parametrize("route_mode", render.ROUTE_MODES)
@pytest.mark.parametrize("body_mode", render.BODY_MODES)
def test_rendered_listener_limits_overload_breakers_and_failure_policy(tmp_path, route_mode, body_mode):
    """Every rendered configuration carries the issue-11 hardening, whatever the modes."""
    doc = _render_doc(tmp_path, route_mode=route_mode, body_mode=body_mode)
    hcm = _hcm(doc)
    assert hcm["max_request_headers_kb"] == 32
    assert hcm["http2_protocol_options"] == {"max_concurrent_streams": 100, "initial_stream_window_size": 65536,
                                             "initial_connection_window_size": 1048576}
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"
    assert hcm["common_http_protocol_options"]["idle_timeout"] == "300s"
    assert (hcm["request_headers_timeout"], hcm["stream_idle_timeout"], hcm["request_timeout"]) == ("10s", "30s", "60s")
    assert hcm["path_with_escaped_slashes_action"] == "UNESCAPE_AND_REDIRECT"
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    assert hcm["http_protocol_options"]["override_stream_error_on_invalid_http_message"] is True

    om = doc["overload_manager"]
    monitors = {m["name"]: m["typed_config"] for m in om["resource_monitors"]}
    assert monitors["envoy.resource_monitors.global_downstream_max_connections"][
        "max_active_downstream_connections"] == 10000
    assert monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"] == 1 << 30
    actions = {a["name"]: a["triggers"][0] for a in om["actions"]}
    assert all(t["name"] == "envoy.resource_monitors.fixed_heap" for t in actions.values())
    assert actions["envoy.overload_actions.shrink_heap"]["threshold"]["value"] == 0.90
    assert actions["envoy.overload_actions.stop_accepting_requests"]["threshold"]["value"] == 0.98
    assert actions["envoy.overload_actions.disable_http_keepalive"]["threshold"]["value"] == 0.95
    assert actions["envoy.overload_actions.reset_high_memory_stream"]["scaled"] == {
        "scaling_threshold": 0.90, "saturation_threshold": 0.98}
    assert om["buffer_factory_config"]["minimum_account_to_track_power_of_two"] == 20

    wasm = _wasm_config(doc)
    assert wasm["failure_policy"] == "FAIL_RELOAD"
    assert wasm["reload_config"] == {"backoff": {"base_interval": "0.5s", "max_interval": "10s"}}

    registry = _cluster(doc, "registry")
    assert registry["circuit_breakers"]["thresholds"] == [{
        "priority": "DEFAULT", "max_connections": 256, "max_pending_requests": 256, "max_requests": 256,
        "max_retries": 0}]
    assert "circuit_breakers" not in _cluster(doc, "backend")  # Envoy's defaults, for the application

    statuses = [int(m["filter"]["extension_filter"]["typed_config"]["expression"].split()[2])
                for m in hcm["local_reply_config"]["mappers"]]
    assert statuses == [400, 408, 413, 503]
    for m in hcm["local_reply_config"]["mappers"]:
        status = int(m["filter"]["extension_filter"]["typed_config"]["expression"].split()[2])
        assert m["body_format_override"] == {
            "json_format": {"error": MAPPED[status][0], "error_description": MAPPED[status][1]},
            "content_type": "application/json"}
        assert m["headers_to_add"] == [{"header": {"key": "cache-control", "value": "no-store"},
                                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]


DEFAULT_OAUTH_PATHS = ["/oauth/token", "/oauth/jwks", "/oauth/pushed-authorization", "/oauth/authorize",
                       "/oauth/refresh", "/oauth/revoke", "/oauth/introspect",
                       "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


def test_rendered_mapper_paths_are_the_filters_endpoints(tmp_path):
    """The mappers' path list is what the filter answers, from the plugin configuration rendered:
    defaults, custom endpoint paths, the metadata paths under an issuer's path, the device
    endpoints only with `device` (src/engine.rs route)."""
    doc = _render_doc(tmp_path / "default")
    lists = list(_mapper_paths(doc).values())
    assert len(lists) == 4 and all(paths == lists[0] for paths in lists)  # one list, four mappers
    assert lists[0] == DEFAULT_OAUTH_PATHS

    cfg = json.loads((ROOT / "envoy" / "oauth-edge.json").read_text())
    cfg["endpoints"] = {"token": "/as/token.oauth2", "jwks": "/as/keys", "device_verification": "/activate"}
    cfg["device"] = {}
    doc = _render_doc(tmp_path / "custom", plugin_config=cfg, issuer="https://as.example/tenant1/")
    paths = _mapper_paths(doc)[503]
    assert paths[:2] == ["/as/token.oauth2", "/as/keys"]
    assert "/oauth/token" not in paths and "/oauth/device" not in paths
    assert {"/activate", "/oauth/device_authorization", "/.well-known/oauth-authorization-server/tenant1",
            "/tenant1/.well-known/openid-configuration"} <= set(paths)
    assert render.oauth_paths(render.build_plugin_config(cfg, key=_key(), issuer="https://as.example/tenant1/")) == paths


def test_render_hardening_options_and_refusals(tmp_path):
    key = tmp_path / "key.json"
    key.write_text(json.dumps(_key()))
    res = subprocess.run([sys.executable, str(ROOT / "envoy" / "render.py"), "--out", str(tmp_path / "run"),
                          "--key", str(key), "--max-heap-bytes", str(512 << 20), "--escaped-slashes", "KEEP_UNCHANGED"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load((tmp_path / "run" / "envoy.yaml").read_text())
    heap = next(m for m in doc["overload_manager"]["resource_monitors"] if m["name"] == "envoy.resource_monitors.fixed_heap")
    assert heap["typed_config"]["max_heap_size_bytes"] == 512 << 20
    assert _hcm(doc)["path_with_escaped_slashes_action"] == "KEEP_UNCHANGED"
    res = subprocess.run([sys.executable, str(ROOT / "envoy" / "render.py"), "--out", str(tmp_path / "bad"),
                          "--key", str(key), "--escaped-slashes", "UNESCAPE"], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "escaped-slashes" in res.stderr
    cfg = render.build_plugin_config(key=_key())
    for bad in (0, -1, True, "1G"):
        with pytest.raises(render.RenderError, match="max heap"):
            render.render_text(plugin_config=cfg, max_heap_bytes=bad)
    with pytest.raises(render.RenderError, match="escaped slashes"):
        render.render_text(plugin_config=cfg, escaped_slashes="keep_unchanged")


def _validate(workdir: Path) -> tuple[int, str]:
    shutil.copyfile(WASM, workdir / render.DEFAULT_WASM)
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy.yaml", "-l", "warn"],
                         cwd=workdir, capture_output=True, text=True, timeout=120)
    return res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize("action", render.ESCAPED_SLASHES_ACTIONS)
def test_envoy_validates_the_hardened_config(tmp_path, action):
    """`envoy --mode validate` accepts the rendered configuration (overload actions, CEL
    expressions, FAIL_RELOAD with its backoff, circuit breakers) with each escaped-slash action;
    also with endpoint paths whose characters need escaping in CEL and YAML."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    cfg = json.loads((ROOT / "envoy" / "oauth-edge.json").read_text())
    if action == "KEEP_UNCHANGED":
        cfg["endpoints"] = {"token": "/o'auth/\"token\"\\", "jwks": "/ключи"}
    render.render(tmp_path, key=_key(), plugin_config=cfg, route_mode="cluster", escaped_slashes=action)
    code, out = _validate(tmp_path)
    assert code == 0, out[-3000:]
    assert "OK" in out
    if action == "KEEP_UNCHANGED":
        doc = yaml.safe_load((tmp_path / "envoy.yaml").read_text())
        assert _mapper_paths(doc)[400][:2] == ["/o'auth/\"token\"\\", "/ключи"]


# --------------------------------------------------------------------------- Envoys
def _access_log(path: Path) -> dict[str, Any]:
    return {"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(path),
        "log_format": {"text_format_source": {
            "inline_string": "%REQ(X-TEST-ID)% %RESPONSE_CODE% [%RESPONSE_CODE_DETAILS%] %REQ(:PATH)%\n"}}}}


@pytest.fixture(scope="module")
def hardened(keys, registry, backend, tmp_path_factory) -> Iterator[EnvoyInstance]:
    log = tmp_path_factory.mktemp("hardened-access") / "access.log"

    def edit(doc: dict[str, Any]) -> None:
        hcm = _hcm(doc)
        hcm["stream_idle_timeout"] = f"{SHORT_IDLE}s"
        hcm["request_timeout"] = f"{SHORT_REQUEST}s"
        hcm["access_log"] = [_access_log(log)]

    inst = start_envoy("hardened", tmp_path_factory, route_mode="cluster", plugin_config=base_plugin_config(),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[FAULT_FILTER], edit_config=edit,
                        envoy_args=["--file-flush-interval-msec", "100"])
    inst.access_log = log  # type: ignore[attr-defined]
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="module")
def strict(keys, registry, backend, tmp_path_factory) -> Iterator[EnvoyInstance]:
    def edit(doc: dict[str, Any]) -> None:
        _hcm(doc)["http_filters"].insert(0, {"name": "envoy.filters.http.buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": STRICT_BUFFER}})
        _cluster(doc, "registry")["circuit_breakers"]["thresholds"][0].update(
            max_connections=1, max_pending_requests=1, max_requests=1)

    inst = start_envoy("strict", tmp_path_factory, route_mode="cluster", plugin_config=base_plugin_config(),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                        edit_config=edit)
    yield inst
    finish_envoy(inst)


def _test_id() -> str:
    return uuid.uuid4().hex


def _details(inst: EnvoyInstance, test_id: str, timeout: float = 20.0) -> tuple[int, str, str]:
    """(status, response code details, path) the access log recorded for the request with
    X-Test-Id test_id (`hardened` flushes its access log every 100 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for line in inst.access_log.read_text().splitlines():  # type: ignore[attr-defined]
                tid, status, rest = line.split(" ", 2)
                if tid == test_id:
                    details, _, path = rest.partition("] ")
                    return int(status), details.lstrip("["), path
        except FileNotFoundError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"no access log line for {test_id}")


def _assert_mapped(status: int, headers: dict[str, str], body: bytes, expected: int) -> None:
    """Envoy's own reply, rewritten by the mapper: flat OAuth JSON, no-store."""
    assert status == expected, (status, headers, body[:300])
    assert headers.get("content-type", "").split(";")[0] == "application/json", headers
    assert "no-store" in headers.get("cache-control", ""), headers
    assert json.loads(body) == {"error": MAPPED[expected][0], "error_description": MAPPED[expected][1]}, body


def _assert_envoy_default(status: int, headers: dict[str, str], body: bytes, expected: int) -> None:
    """Envoy's own reply as Envoy makes it: not OAuth JSON."""
    assert status == expected, (status, headers, body[:300])
    assert not headers.get("content-type", "").startswith("application/json"), (headers, body[:300])
    assert b'"error"' not in body, body[:300]


def _hdrs(r: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in r.headers.items()}


# --------------------------------------------------------------------------- the filter's own answers
@pytest.mark.parametrize("case", ["no-credentials-401", "grant-type-missing-400", "body-too-large-413"])
def test_filter_own_error_answers_are_not_rewritten(hardened, case):
    """The mappers match Envoy's replies only: the filter's JSON errors (some with the very status
    codes the mappers handle, 400 and 413) come out as the filter wrote them: its own error and
    description, its Pragma header, compact JSON without the newline Envoy's formatter adds."""
    tid = _test_id()
    if case == "no-credentials-401":
        r = token_request(hardened, None, data="grant_type=client_credentials", headers={"X-Test-Id": tid})
        status, error = 401, "invalid_client"
    elif case == "grant-type-missing-400":
        r = token_request(hardened, DEMO_CLIENT, data="scope=read", headers={"X-Test-Id": tid})
        status, error = 400, "invalid_request"
    else:
        r = token_request(hardened, DEMO_CLIENT, data=oversized_form(MAX_BODY + 1), headers={"X-Test-Id": tid})
        status, error = 413, "invalid_request"
    body = assert_oauth_error(r, status, error)
    assert body["error_description"] not in MAPPER_DESCRIPTIONS, body
    assert r.content == json.dumps(body, separators=(",", ":")).encode(), r.content
    assert r.headers.get("Pragma") == "no-cache", r.headers
    got_status, details, _ = _details(hardened, tid)
    assert got_status == status
    assert details in ("", "oauth_edge"), f"the filter's reply recorded details {details!r}"


# --------------------------------------------------------------------------- Envoy's own replies
def _post_head(path: str, tid: str, *, body_length: int, host: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1"] + (["Host: 127.0.0.1"] if host else []) + [
        f"Content-Type: {FORM}", f"Authorization: {DEMO_BASIC}", f"X-Test-Id: {tid}", f"Content-Length: {body_length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path, oauth", [("/oauth/token", True), ("/oauth/revoke", True),
                                          ("/oauth/callback", False), ("/api/x", False)])
def test_envoy_408_stream_idle_timeout(hardened, path, oauth):
    """Headers and part of a body, then nothing: Envoy's stream_idle_timeout answers 408. On an
    OAuth path flat OAuth JSON (no-store), elsewhere Envoy's plain `stream timeout`."""
    tid = _test_id()
    with socket.create_connection(("127.0.0.1", hardened.listen_port), timeout=SHORT_IDLE + 10) as s:
        s.sendall(_post_head(path, tid, body_length=100) + b"grant_type=client")
        started = time.monotonic()
        status, headers, body = read_http_response(s)
    assert time.monotonic() - started < SHORT_IDLE + 5
    (_assert_mapped if oauth else _assert_envoy_default)(status, headers, body, 408)
    assert _details(hardened, tid)[:2] == (408, "stream_idle_timeout")


def test_envoy_408_request_timeout_trickled_body(hardened):
    """A body trickled faster than the idle timeout but never finished: request_timeout's 408
    (details request_overall_timeout) is flat OAuth JSON too."""
    tid = _test_id()
    with socket.create_connection(("127.0.0.1", hardened.listen_port), timeout=SHORT_REQUEST + 10) as s:
        s.sendall(_post_head("/oauth/token", tid, body_length=1000) + b"grant_type=client")
        status = None
        started = time.monotonic()
        s.settimeout(SHORT_IDLE / 3)
        while time.monotonic() - started < SHORT_REQUEST + 5:
            try:
                s.sendall(b"x")
                peek = s.recv(1, socket.MSG_PEEK)
                if peek:
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        s.settimeout(10)
        status, headers, body = read_http_response(s)
    _assert_mapped(status, headers, body, 408)
    assert _details(hardened, tid)[:2] == (408, "request_overall_timeout")


@pytest.mark.parametrize("path, oauth", [("/oauth/token", True), ("/oauth/jwks?x=1", True),
                                          ("/.well-known/openid-configuration", True),
                                          ("/oauth/callback", False), ("/api/x", False)])
def test_envoy_503_from_a_filter_before_the_wasm_filter(hardened, backend, path, oauth):
    """Envoy's fault filter (abort 503, before the wasm filter): on the OAuth paths the 503 is
    flat OAuth JSON temporarily_unavailable; an application path keeps Envoy's plain reply."""
    tid = _test_id()
    r = post_form(hardened.base_url + path, "grant_type=client_credentials",
                  headers={"Authorization": DEMO_BASIC, FAULT_HEADER: "503", "X-Test-Id": tid})
    (_assert_mapped if oauth else _assert_envoy_default)(r.status_code, _hdrs(r), r.content, 503)
    if not oauth:
        assert r.text == "fault filter abort"
    assert _details(hardened, tid)[:2] == (503, "fault_filter_abort")
    assert not [s for s in backend.seen() if s["headers"].get("x-test-id") == tid]


@pytest.mark.parametrize("path, oauth", [("/oauth/token", True), ("/api/x", False)])
def test_envoy_400_missing_host(hardened, path, oauth):
    """HTTP/1.1 without Host: Envoy refuses it (missing_host_header) after parsing the headers,
    so the path is known: flat OAuth JSON invalid_request on an OAuth path, Envoy's empty 400
    elsewhere."""
    tid = _test_id()
    status, headers, body = raw_http(hardened.listen_port, _post_head(path, tid, body_length=29, host=False)
                                     + b"grant_type=client_credentials")
    (_assert_mapped if oauth else _assert_envoy_default)(status, headers, body, 400)
    assert _details(hardened, tid)[:2] == (400, "missing_host_header")


def test_envoy_400_codec_error_has_no_path_keeps_envoy_reply(hardened):
    """A request Envoy refuses before its headers reach the connection manager's filters (here an
    invalid Host: details http.invalid_authority, no path in the access log) has no path for the
    mappers: Envoy's own plain 400 even on /oauth/token (a documented limit)."""
    status, headers, body = raw_http(hardened.listen_port,
                                     b'POST /oauth/token HTTP/1.1\r\nHost: a"b\r\nContent-Length: 0\r\n\r\n')
    _assert_envoy_default(status, headers, body, 400)


@pytest.mark.parametrize("path", ["/oauth/token", "/api/x"])
def test_request_headers_over_max_request_headers_kb_refused(hardened, backend, path):
    """32 KiB of request headers: 31 KiB pass, 33 KiB get Envoy's 431 (HTTP/1) and never reach
    the filter or the backend."""
    tid = _test_id()
    ok = requests.get(hardened.base_url + path, timeout=10, headers={"X-Test-Id": tid, "X-Pad": "a" * (31 * 1024)})
    assert ok.status_code in (200, 405), ok.status_code  # the backend's echo, or the filter's 405 for GET
    tid = _test_id()
    r = requests.get(hardened.base_url + path, timeout=10, headers={"X-Test-Id": tid, "X-Pad": "a" * (33 * 1024)})
    assert r.status_code == 431, r.status_code
    assert not [s for s in backend.seen() if s["headers"].get("x-test-id") == tid]


def test_headers_with_underscores_are_dropped(hardened, backend):
    """X_Forwarded_User never reaches an application (where it could pose as X-Forwarded-User)."""
    tid = _test_id()
    r = requests.get(hardened.base_url + "/api/x", timeout=10, headers={"X-Test-Id": tid, "X_Forwarded_User": "admin"})
    assert r.status_code == 200
    assert "x_forwarded_user" not in r.json()["headers"]
    assert hardened.stat("http1.dropped_headers_with_underscores") >= 1


# --------------------------------------------------------------------------- path variants
PATH_VARIANTS = {
    "trailing-slash": ("/oauth/token/", "filter"),
    "upper-case": ("/OAUTH/TOKEN", "filter"),
    "path-parameter": ("/oauth/token;x", "filter"),
    "encoded-slash": ("/oauth%2Ftoken", "envoy"),
    "encoded-space": ("/oauth/token%20", "filter"),
    "metadata-trailing-slash": ("/.well-known/oauth-authorization-server/", "filter"),
}


@pytest.mark.parametrize("variant", list(PATH_VARIANTS))
def test_oauth_path_variants_with_credentials_never_reach_the_backend(hardened, backend, variant):
    """A POST with the demo client's Basic credentials to a near-spelling of an OAuth endpoint,
    in route mode `cluster`, is never forwarded: Envoy redirects it (path_with_escaped_slashes
    _action UNESCAPE_AND_REDIRECT: /oauth%2Ftoken -> 307 /oauth/token) or the filter answers it
    with a clean 4xx flat OAuth JSON. The variants marked "filter" depend on the filter refusing
    variants of its own paths (not in builds that match exact paths only)."""
    path, _by = PATH_VARIANTS[variant]
    tid = _test_id()
    r = post_form(hardened.base_url + path, "grant_type=client_credentials&scope=read", allow_redirects=False,
                  headers={"Authorization": DEMO_BASIC, "X-Test-Id": tid})
    leaked = [s for s in backend.seen() if s["headers"].get("x-test-id") == tid]
    assert not leaked, (f"{path} reached the backend as {leaked[0]['path']} with Authorization "
                        f"{leaked[0]['headers'].get('authorization')!r} (answer {r.status_code})")
    if 300 <= r.status_code < 400:
        location = urllib.parse.urlsplit(r.headers["Location"]).path
        assert location in render.oauth_paths(hardened.plugin_config), (path, r.status_code, location)
    else:
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
        if r.headers.get("Content-Type", "").startswith("application/json"):
            body = r.json()
            assert set(body) <= {"error", "error_description", "error_uri"}, body
            assert all(isinstance(v, str) for v in body.values()), body
            assert "no-store" in r.headers.get("Cache-Control", ""), r.headers
        else:
            assert r.headers.get("Server") == "envoy", (path, r.status_code, r.text[:300])


def test_encoded_slash_redirect_then_token(hardened):
    """A client that follows the 307 (same method and body) gets its token from the filter."""
    r = post_form(hardened.base_url + "/oauth%2Ftoken", "grant_type=client_credentials&scope=read",
                  headers={"Authorization": DEMO_BASIC})
    assert [h.status_code for h in r.history] == [307]
    assert r.status_code == 200 and r.json()["scope"] == "read", r.text[:300]


def test_encoded_slash_redirect_applies_to_application_paths(hardened, backend):
    """The price of UNESCAPE_AND_REDIRECT (render.py --escaped-slashes KEEP_UNCHANGED avoids it):
    an application path with %2F is redirected to its unescaped spelling too."""
    r = requests.get(hardened.base_url + "/api/projects/group%2Fname", timeout=10, allow_redirects=False)
    assert r.status_code == 307
    assert r.headers["Location"].endswith("/api/projects/group/name")


def test_application_oauth_callback_passes_through(hardened, backend):
    """/oauth/callback is the application's: it reaches the backend untouched, credentials too."""
    tid = _test_id()
    r = post_form(hardened.base_url + "/oauth/callback?code=abc&state=xyz", "a=b",
                  headers={"Authorization": DEMO_BASIC, "X-Test-Id": tid})
    assert r.status_code == 200, r.text[:300]
    echo = r.json()
    assert echo["backend"] is True and echo["path"] == "/oauth/callback?code=abc&state=xyz"
    assert [s["path"] for s in backend.seen() if s["headers"].get("x-test-id") == tid] == [echo["path"]]


# --------------------------------------------------------------------------- 413 and circuit breakers
@pytest.mark.parametrize("path, oauth", [("/oauth/token", True), ("/oauth/introspect", True), ("/api/x", False)])
def test_envoy_413_buffer_limit(strict, backend, path, oauth):
    """Envoy's buffer filter (before the wasm filter, limit below the plugin's) refuses a body
    first: request_payload_too_large, flat OAuth JSON on the OAuth paths only."""
    body = oversized_form(STRICT_BUFFER + 1000)
    r = post_form(strict.base_url + path, body, headers={"Authorization": DEMO_BASIC})
    (_assert_mapped if oauth else _assert_envoy_default)(r.status_code, _hdrs(r), r.content, 413)
    small = token_request(strict, DEMO_CLIENT)
    assert small.status_code == 200, small.text[:300]


def _overflows(inst: EnvoyInstance) -> int:
    """Calls the registry cluster's circuit breakers refused (pending queue, requests, connections)."""
    return sum(inst.stat(f"cluster.registry.{name}")
               for name in ("upstream_rq_pending_overflow", "upstream_rq_overflow", "upstream_cx_overflow"))


def test_registry_circuit_breaker_sheds_calls_at_once(strict, registry):
    """With the registry cluster's breakers at 1 connection / 1 pending / 1 request and a slow
    registry, concurrent first lookups beyond them fail at once with the filter's JSON
    server_error (cluster.registry.upstream_rq_pending_overflow and friends), instead of queueing."""
    clients = [Client(f"cb-{uuid.uuid4().hex[:8]}-{i}", "cb-secret", scope="read") for i in range(6)]
    for c in clients:
        registry.add_client(client_metadata(c))
    overflow_before = _overflows(strict)
    registry.set_mode("slow", delay=0.3)

    def one(c: Client) -> tuple[int, float, requests.Response]:
        started = time.monotonic()
        r = token_request(strict, c)
        return r.status_code, time.monotonic() - started, r

    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(one, clients))
    statuses = sorted(s for s, _, _ in results)
    assert 200 in statuses, statuses
    shed = [(t, r) for s, t, r in results if s == 500]
    assert shed, statuses
    for t, r in shed:
        assert_oauth_error(r, 500, "server_error")
    assert min(t for t, _ in shed) < 0.25, [round(t, 3) for t, _ in shed]
    assert _overflows(strict) > overflow_before, strict.stats(r"^cluster\.registry\.upstream_(rq|cx)_")
    assert sum(registry.count(c.client_id) for c in clients) < len(clients)


# --------------------------------------------------------------------------- overload manager
class _NotReadyEnvoy(EnvoyInstance):
    """Ready when the admin says LIVE (its OAuth answers are the point of the test)."""

    def _wait_ready(self, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}")
            try:
                if requests.get(self.admin_url + "/ready", timeout=1).text.strip() == "LIVE":
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not ready after {timeout}s")


def _start(cls: type[EnvoyInstance], name: str, tmp_path_factory, **kw: Any) -> EnvoyInstance:
    if not WASM.exists():
        pytest.fail(f"filter not built: {WASM} missing (run `make wasm`)", pytrace=False)
    inst = cls(name, tmp_path_factory.mktemp(f"envoy-{name}"), **kw).start()
    RUNNING.append(inst)
    return inst


def test_overload_manager_stop_accepting_requests(keys, registry, backend, tmp_path_factory):
    """A heap limit of 4 MiB (Envoy itself needs more): stop_accepting_requests is active and
    every request gets 503 at once: flat OAuth JSON on the OAuth paths, `envoy overloaded`
    elsewhere; nothing reaches the backend."""
    def edit(doc: dict[str, Any]) -> None:
        heap = next(m for m in doc["overload_manager"]["resource_monitors"]
                    if m["name"] == "envoy.resource_monitors.fixed_heap")
        heap["typed_config"]["max_heap_size_bytes"] = 4 << 20

    inst = _start(_NotReadyEnvoy, "overloaded", tmp_path_factory, route_mode="cluster",
                  plugin_config=base_plugin_config(), signing_keys=[keys.ed25519], registry_port=registry.port,
                  backend_port=backend.port, edit_config=edit)
    try:
        deadline = time.monotonic() + 10
        while inst.stat("overload.envoy.overload_actions.stop_accepting_requests.active") != 1:
            assert time.monotonic() < deadline, "stop_accepting_requests never became active"
            time.sleep(0.25)
        tid = _test_id()
        r = token_request(inst, DEMO_CLIENT, headers={"X-Test-Id": tid})
        _assert_mapped(r.status_code, _hdrs(r), r.content, 503)
        r = requests.get(inst.jwks_url, timeout=10)
        _assert_mapped(r.status_code, _hdrs(r), r.content, 503)
        r = requests.post(inst.base_url + "/api/x", data="a=b", timeout=10, headers={"X-Test-Id": tid})
        _assert_envoy_default(r.status_code, _hdrs(r), r.content, 503)
        assert r.text == "envoy overloaded"
        assert not [s for s in backend.seen() if s["headers"].get("x-test-id") == tid]
        assert inst.stat("overload.envoy.overload_actions.shrink_heap.active") == 1
    finally:
        finish_envoy(inst)


# --------------------------------------------------------------------------- FAIL_RELOAD
TRAP_CRATE = ROOT / "tests" / "fixtures" / "trap_filter"
TRAP_WASM = ROOT / "target" / "trap_filter" / "wasm32-wasip1" / "release" / "trap_filter.wasm"


@pytest.fixture(scope="module")
def trap_wasm() -> Path:
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo not available: cannot build tests/fixtures/trap_filter")
    res = subprocess.run([cargo, "build", "--quiet", "--release", "--target", "wasm32-wasip1",
                          "--manifest-path", str(TRAP_CRATE / "Cargo.toml"),
                          "--target-dir", str(ROOT / "target" / "trap_filter")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return TRAP_WASM


@pytest.fixture
def trap_envoy(trap_wasm, keys, registry, backend, tmp_path_factory) -> Iterator[EnvoyInstance]:
    """The shipped configuration (FAIL_RELOAD, its backoff, the mappers) around the trap filter;
    stream_idle_timeout 2 s (for the request in flight at a trap)."""
    def edit(doc: dict[str, Any]) -> None:
        wasm = _wasm_config(doc)
        assert wasm["failure_policy"] == "FAIL_RELOAD"
        wasm["vm_config"]["code"]["local"]["filename"] = str(trap_wasm)
        wasm["vm_config"]["vm_id"] = "trap_filter"
        _hcm(doc)["stream_idle_timeout"] = "2s"

    inst = _start(EnvoyInstance, "trap", tmp_path_factory, route_mode="cluster", plugin_config=base_plugin_config(),
                  signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                  edit_config=edit)
    yield inst
    inst.stop()  # not finish_envoy: the traps are the point, the log is full of them
    RUNNING.remove(inst)


def _fresh(inst: EnvoyInstance, **headers: str) -> requests.Response:
    """One request on a new connection (so on either worker), connection closed after it."""
    return requests.get(inst.token_url, timeout=15, headers={"Connection": "close", **headers})


def test_fail_reload_a_trapped_vm_comes_back_with_shared_data(trap_envoy):
    """FAIL_RELOAD: the trapping request gets 503 (flat OAuth JSON on the OAuth path), and the
    next request on that worker runs in a NEW VM (its per-VM count starts again at 1) that sees
    the shared data the old VM wrote; no request but the trapping one fails. With FAIL_CLOSED
    that worker would answer 503 to everything until a restart."""
    vms: dict[int, dict[str, Any]] = {}
    for _ in range(60):  # meet both workers' VMs
        r = _fresh(trap_envoy)
        assert r.status_code == 200, r.text
        vms[r.json()["vm"]] = r.json()
        if len(vms) == 2:
            break
    assert len(vms) == 2, "only one worker answered"
    shared_before = max(v["shared_requests"] for v in vms.values())
    # A VM is reloaded only once the backoff has passed since it was last (re)loaded (here: since
    # Envoy started); within it every request on that worker gets 503 (wasm.*.vm_reload_backoff).
    time.sleep(1.5)

    trapped = _fresh(trap_envoy, **{"x-trap": "1"})
    _assert_mapped(trapped.status_code, _hdrs(trapped), trapped.content, 503)

    for _ in range(60):
        r = _fresh(trap_envoy)
        assert r.status_code == 200, "a request after a single trap failed: " + r.text
        if r.json()["vm"] not in vms:
            break
    else:
        pytest.fail("no request reached the reloaded VM")
    new = r.json()
    assert new["vm_requests"] == 1, new
    assert new["shared_requests"] > shared_before, new
    assert trap_envoy.stat("wasm.oauth-edge.vm_reload_success") == 1
    assert trap_envoy.stat("wasm.oauth-edge.vm_reload_backoff") == 0


def test_fail_reload_trap_loop_backs_off(trap_envoy):
    """A trap soon after a reload: that worker answers 503 at once, without reloading, until the
    backoff (reload_config: 0.5 s, growing to 10 s) has passed, then reloads and answers again.
    One keep-alive connection, so one worker throughout."""
    url = trap_envoy.token_url
    with requests.Session() as s:
        first = s.get(url, timeout=10).json()
        time.sleep(1.5)
        assert s.get(url, headers={"x-trap": "1"}, timeout=10).status_code == 503
        reloaded = s.get(url, timeout=10).json()  # the backoff has passed since the start: reload
        assert reloaded["vm"] != first["vm"] and reloaded["vm_requests"] == 1, (first, reloaded)
        trapped = s.get(url, headers={"x-trap": "1"}, timeout=10)
        _assert_mapped(trapped.status_code, _hdrs(trapped), trapped.content, 503)
        statuses = []
        started = time.monotonic()
        while time.monotonic() - started < 15:
            r = s.get(url, timeout=10)
            statuses.append(r.status_code)
            if r.status_code == 200:
                break
            _assert_mapped(r.status_code, _hdrs(r), r.content, 503)
            time.sleep(0.05)
        waited = time.monotonic() - started
    assert statuses[0] == 503 and statuses[-1] == 200, statuses
    assert r.json()["vm"] not in (first["vm"], reloaded["vm"]) and r.json()["vm_requests"] == 1
    assert waited < 5, waited
    assert trap_envoy.stat("wasm.oauth-edge.vm_reload_backoff") >= statuses.count(503)
    assert trap_envoy.stat("wasm.oauth-edge.vm_reload_success") == 2


def test_fail_reload_request_in_flight_at_the_trap_fails(trap_envoy, registry):
    """A request waiting on the registry when its VM traps never gets its answer: it ends at
    stream_idle_timeout (2 s here) as a 503, flat OAuth JSON on the OAuth path, instead of its
    200 after the registry's 4 s."""
    registry.set_mode("slow", delay=4)
    with requests.Session() as busy, ThreadPoolExecutor(1) as pool:
        vm = busy.get(trap_envoy.token_url, timeout=10).json()["vm"]  # the worker of this connection
        started = time.monotonic()
        pending = pool.submit(busy.get, trap_envoy.token_url, headers={"x-slow": "1"}, timeout=15)
        time.sleep(0.3)
        for _ in range(60):  # a connection on the same worker, to trap that worker's VM
            with requests.Session() as probe:
                if probe.get(trap_envoy.token_url, timeout=10).json()["vm"] == vm:
                    trapped = probe.get(trap_envoy.token_url, headers={"x-trap": "1"}, timeout=10)
                    break
        else:
            pytest.fail("no second connection landed on the busy worker")
        _assert_mapped(trapped.status_code, _hdrs(trapped), trapped.content, 503)
        assert not pending.done()
        r = pending.result()
        elapsed = time.monotonic() - started
    _assert_mapped(r.status_code, _hdrs(r), r.content, 503)
    assert 1.5 < elapsed < 3.9, elapsed
