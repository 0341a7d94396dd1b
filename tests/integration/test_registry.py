"""Clients from the external registry (contract: Registry contract), through Envoy's dispatch."""
from __future__ import annotations

import time
import urllib.parse
import uuid

import pytest

from helpers import (
    ACCESS_TOKEN_LIFETIME,
    Client,
    assert_oauth_error,
    assert_token_response,
    client_metadata,
    token_request,
    verify_access_token,
)


def _new_client(registry, label: str, *, register: bool = True, **kw) -> Client:
    c = Client(f"reg-{label}-{uuid.uuid4().hex[:8]}", "reg-secret-" + label, scope=kw.pop("scope", "read"), **kw)
    if register:
        registry.add_client(client_metadata(c))
    return c


def test_registry_client_rfc7591_gets_token_then_cached(envoy_main, registry):
    c = _new_client(registry, "cached")
    hits_before = envoy_main.custom_stat("oauth_edge.registry.cache_hits")
    calls_before = envoy_main.custom_stat("oauth_edge.registry.calls")

    body = assert_token_response(token_request(envoy_main, c), scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    verify_access_token(body["access_token"], envoy_main, client_id=c.client_id, scope="read",
                        lifetime=ACCESS_TOKEN_LIFETIME)
    assert registry.count(c.client_id) == 1

    # The registry request itself follows the contract.
    seen = registry.stats()["last_headers"]
    assert seen.get("host") == "registry.local", seen
    assert "application/json" in seen.get("accept", ""), seen

    for _ in range(4):  # likely spread over both workers: the cache is shared data
        assert_token_response(token_request(envoy_main, c), scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    assert registry.count(c.client_id) == 1, "second and later requests must be served from the cache"
    assert envoy_main.custom_stat("oauth_edge.registry.cache_hits") - hits_before >= 4
    assert envoy_main.custom_stat("oauth_edge.registry.calls") - calls_before == 1


def test_registry_client_id_percent_encoded_in_path(envoy_main, registry):
    """GET {path_prefix}{percent-encoded client_id}: '/', ' ' and '?' must not break the path."""
    c = Client(f"reg/odd id?{uuid.uuid4().hex[:6]}", "odd-secret", scope="read")
    registry.add_client(client_metadata(c))
    assert_token_response(token_request(envoy_main, c), scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    assert registry.count(c.client_id) == 1


def test_registry_client_wrong_secret_rfc6749_5_2_invalid_client(envoy_main, registry):
    c = _new_client(registry, "wrongsecret")
    r = token_request(envoy_main, Client(c.client_id, "not-the-secret"))
    assert_oauth_error(r, 401, "invalid_client")
    # The fetched record is cached, the right secret works without another registry call.
    assert_token_response(token_request(envoy_main, c), scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    assert registry.count(c.client_id) == 1


def test_registry_404_rfc6749_5_2_invalid_client(envoy_main, registry):
    c = _new_client(registry, "missing", register=False)
    nf_before = envoy_main.custom_stat("oauth_edge.registry.not_found")
    r = token_request(envoy_main, c)
    assert_oauth_error(r, 401, "invalid_client")
    assert registry.count(c.client_id) == 1
    assert envoy_main.custom_stat("oauth_edge.registry.not_found") - nf_before == 1


def test_registry_404_negative_cache_then_registered(envoy_main, registry):
    """A 404 is cached per worker only for negative_cache_ttl (5s): after it, a newly registered
    client works without a restart."""
    c = _new_client(registry, "late", register=False)
    assert_oauth_error(token_request(envoy_main, c), 401, "invalid_client")
    registry.add_client(client_metadata(c))
    deadline = time.monotonic() + 12
    while True:
        r = token_request(envoy_main, c)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        assert_oauth_error(r, 401, "invalid_client")
        time.sleep(0.5)
    assert_token_response(r, scope="read", lifetime=ACCESS_TOKEN_LIFETIME)


@pytest.mark.parametrize("mode, delay", [
    ("down-500", 0),
    ("slow", 1.5),        # past the 500ms registry timeout
    ("garbage", 0),
    ("reset", 0),
    ("wrong-id", 0),      # 200 with another client's record
    ("redirect", 0),      # 302
    ("empty", 0),         # 200 with an empty body
])
def test_registry_trouble_rfc6749_5_2_server_error_then_recovers(envoy_main, registry, mode, delay):
    c = _new_client(registry, mode)
    failures_before = envoy_main.custom_stat("oauth_edge.registry.failures")
    registry.set_mode(mode, delay)
    started = time.monotonic()
    r = token_request(envoy_main, c)
    elapsed = time.monotonic() - started
    assert_oauth_error(r, 500, "server_error")
    assert registry.count(c.client_id) >= 1
    if mode == "slow":
        assert elapsed < 1.4, f"the 500ms registry timeout did not cut the call short ({elapsed:.2f}s)"
    assert envoy_main.custom_stat("oauth_edge.registry.failures") > failures_before

    # Nothing was cached: once the registry is fine again, the same client gets a token.
    registry.set_mode("ok")
    r = token_request(envoy_main, c)
    assert_token_response(r, scope="read", lifetime=ACCESS_TOKEN_LIFETIME)


def test_registry_down_does_not_affect_static_clients(envoy_main, registry):
    registry.set_mode("down-500")
    from helpers import DEMO_CLIENT

    assert_token_response(token_request(envoy_main, DEMO_CLIENT), scope="read write",
                          lifetime=ACCESS_TOKEN_LIFETIME)


def test_registry_fixture_control_api(registry):
    """The fixture's HTTP control API (used when it runs as a separate process)."""
    import json
    import urllib.request

    from registry import control

    st = control(registry.url, "slow", 0.01)
    assert st["mode"] == "slow"
    control(registry.url, "ok")
    req = urllib.request.Request(registry.url + "/_clients", method="POST",
                                 data=json.dumps({"client_id": "ctl-x", "scope": "read"}).encode())
    assert "ctl-x" in json.loads(urllib.request.urlopen(req, timeout=5).read())["clients"]
    got = json.loads(urllib.request.urlopen(registry.url + "/clients/" + urllib.parse.quote("ctl-x"), timeout=5).read())
    assert got["client_id"] == "ctl-x"
    assert json.loads(urllib.request.urlopen(registry.url + "/_stats", timeout=5).read())["requests"]["ctl-x"] == 1


def test_registry_record_with_plaintext_secret_rfc6749_5_2_server_error(envoy_main, registry):
    """A registry record must carry a sha256: hash; a plaintext secret is invalid metadata."""
    c = _new_client(registry, "plain", register=False)
    meta = client_metadata(c)
    meta["client_secret"] = c.secret
    registry.add_client(meta)
    assert_oauth_error(token_request(envoy_main, c), 500, "server_error")


def test_registry_record_without_grant_rfc6749_5_2_unauthorized_client(envoy_main, registry):
    c = _new_client(registry, "nogrant", grant_types=("authorization_code",),
                    extra={"redirect_uris": ["https://client.example/cb"]})
    assert_oauth_error(token_request(envoy_main, c), 400, "unauthorized_client")


def test_registry_record_scope_enforced_rfc6749_3_3(envoy_main, registry):
    c = _new_client(registry, "scoped", scope="read")
    assert_oauth_error(token_request(envoy_main, c, scope="write"), 400, "invalid_scope")
    assert_token_response(token_request(envoy_main, c, scope="read"), scope="read", lifetime=ACCESS_TOKEN_LIFETIME)


def test_registry_cache_ttl_expires_and_rotated_secret_is_seen(envoy_short_ttl, registry):
    """cache_ttl 1s: after it, the record is fetched again, so a rotated secret takes effect."""
    c = _new_client(registry, "ttl")
    assert_token_response(token_request(envoy_short_ttl, c), scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    assert_token_response(token_request(envoy_short_ttl, c), scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    assert registry.count(c.client_id) == 1
    rotated = Client(c.client_id, "rotated-secret", scope="read")
    registry.add_client(client_metadata(rotated))
    time.sleep(1.3)
    assert_token_response(token_request(envoy_short_ttl, rotated), scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    assert registry.count(c.client_id) == 2
    assert_oauth_error(token_request(envoy_short_ttl, c), 401, "invalid_client")


def test_registry_negative_cache_ttl_expires(envoy_short_ttl, registry):
    c = _new_client(registry, "negttl", register=False)
    for _ in range(4):
        assert_oauth_error(token_request(envoy_short_ttl, c), 401, "invalid_client")
    assert 1 <= registry.count(c.client_id) <= 2, "404s are cached per worker"
    registry.add_client(client_metadata(c))
    time.sleep(1.3)
    assert_token_response(token_request(envoy_short_ttl, c), scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
