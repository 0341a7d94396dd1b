"""Made-up client ids are bounded per source address: each id the registry answers "unknown"
counts against the caller's address (registry.misses_per_address, 30 per 10 s by default); past
that, ids that are not cached get 429 without a registry call, while known clients still work
and other addresses are not affected."""
from __future__ import annotations

import http.client
import json
import secrets

import pytest

from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from helpers import basic_auth, sleep_past_window_edge

DEFAULT_BUDGET = 30


@pytest.fixture(scope="module")
def envoy_default_misses(keys, registry, backend, tmp_path_factory):
    cfg = base_plugin_config()
    cfg["registry"].pop("misses_per_address")  # the default
    inst = start_envoy("registry-misses", tmp_path_factory, route_mode="none", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


def _token(envoy, source_ip: str, client_id: str, secret: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10, source_address=(source_ip, 0))
    try:
        conn.request("POST", "/oauth/token", "grant_type=client_credentials",
                     {"Content-Type": "application/x-www-form-urlencoded",
                      "Authorization": basic_auth(client_id, secret)})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def test_made_up_client_ids_are_limited_per_source_address(envoy_default_misses, registry):
    e = envoy_default_misses
    # The 10 s windows are aligned to the clock: count all of it inside one.
    sleep_past_window_edge(10, 6)
    ghosts = [f"ghost-{secrets.token_hex(6)}" for _ in range(DEFAULT_BUDGET + 10)]
    answers = [_token(e, "127.0.0.3", g, "x") for g in ghosts]
    statuses = [s for s, _ in answers]
    assert statuses[:DEFAULT_BUDGET] == [401] * DEFAULT_BUDGET, statuses
    assert set(statuses[DEFAULT_BUDGET:]) == {429}, statuses
    assert all(b["error"] == "rate_limit_exceeded" for s, b in answers if s == 429)
    asked = sum(registry.count(g) for g in ghosts)
    assert asked == DEFAULT_BUDGET, f"the registry was asked {asked} times"
    # A known client still works from that address; another address still gets answers.
    assert _token(e, "127.0.0.3", "demo-client", "demo-secret")[0] == 200
    assert _token(e, "127.0.0.4", f"ghost-{secrets.token_hex(6)}", "x")[0] == 401
