"""Ring fullness is visible: a gauge per ring (estimated fill, percent) and a warning in Envoy's
log once a ring passes 80 %, before a full ring turns into 500s for everyone."""
from __future__ import annotations

import time

import pytest

from support.fixtures_ac import start_ac_envoy
from support.fixtures_envoy import finish_envoy
from helpers import issue_code, prom_value

CODE_SLOTS = 64
CODES = 56  # 87.5 % of the ring
TICK = 10  # s: how often each worker estimates (src/host/mod.rs TICK_MS)


@pytest.fixture(scope="module")
def envoy_small_codes(keys, login_service, registry, backend, tmp_path_factory):
    inst = start_ac_envoy("ring-fill", login_service, [keys.ed25519], registry, backend, tmp_path_factory,
                          lifetimes={"code": "300s"}, store={"code_slots": CODE_SLOTS, "share_percent": 100})
    yield inst
    finish_envoy(inst)


def _gauge(envoy, label: str) -> int:
    return envoy.custom_stat(f"oauth_edge.ring_fill_percent.{label}")


def test_code_ring_fill_gauge_and_warning_past_80_percent(envoy_small_codes, login_service):
    envoy = envoy_small_codes
    login = login_service.sign("ring-user")
    deadline = time.monotonic() + TICK + 5
    while time.monotonic() < deadline and "ring_fill_percent.codes" not in str(envoy.stats("ring_fill")):
        time.sleep(0.5)
    assert _gauge(envoy, "codes") < 10
    for _ in range(CODES):
        issue_code(envoy, login)
    deadline = time.monotonic() + TICK + 5
    while time.monotonic() < deadline and _gauge(envoy, "codes") < 80:
        time.sleep(0.5)
    # The ring is smaller than the sample, so it is read whole: the estimate is exact.
    assert _gauge(envoy, "codes") == round(100 * CODES / CODE_SLOTS)
    warnings = [line for line in envoy.log_text().splitlines()
                if "the codes ring is about" in line and "store.code_slots" in line]
    assert warnings, "no fill warning in Envoy's log"
    # Other rings are measured too, and nearly empty.
    assert _gauge(envoy, "refresh_families") < 10
    assert "ring_fill_percent.replay_cache" in str(envoy.stats("ring_fill"))


def test_ring_fill_gauges_reach_prometheus_with_a_ring_label(envoy_small_codes):
    text = envoy_small_codes.prometheus()
    assert any(line.startswith("oauth_edge_ring_fill_percent{") and 'ring="codes"' in line
               for line in text.splitlines()), [l for l in text.splitlines() if "ring_fill" in l]
    assert prom_value(text, "oauth_edge_ring_fill_percent", {"ring": "codes"}) >= 80
