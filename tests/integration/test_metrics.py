"""The filter's counters (contract: Metrics) in Envoy's admin stats and Prometheus output."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from helpers import DEMO_CLIENT, Client, prom_value, token_request


def test_metrics_prometheus_tokens_issued_by_grant_type(envoy_main):
    before = prom_value(envoy_main.prometheus(), "oauth_edge_tokens_issued", {"grant_type": "client_credentials"})
    for _ in range(3):
        assert token_request(envoy_main, DEMO_CLIENT).status_code == 200
    text = envoy_main.prometheus()
    after = prom_value(text, "oauth_edge_tokens_issued", {"grant_type": "client_credentials"})
    assert after - before == 3, [line for line in text.splitlines() if "oauth_edge" in line]


def test_metrics_prometheus_errors_by_code(envoy_main):
    def errors(code: str) -> float:
        return prom_value(envoy_main.prometheus(), "oauth_edge_errors", {"error": code})

    scope0, client0, grant0 = errors("invalid_scope"), errors("invalid_client"), errors("unsupported_grant_type")
    assert token_request(envoy_main, DEMO_CLIENT, scope="admin").status_code == 400
    assert token_request(envoy_main, Client("demo-client", "bad")).status_code == 401
    assert token_request(envoy_main, Client("demo-client", "bad")).status_code == 401
    assert token_request(envoy_main, DEMO_CLIENT, data="grant_type=password").status_code == 400
    assert errors("invalid_scope") - scope0 == 1
    assert errors("invalid_client") - client0 == 2
    assert errors("unsupported_grant_type") - grant0 == 1


def test_metrics_admin_stats_contract_names(envoy_main):
    """The contract names appear under Envoy's wasm custom-stat namespace."""
    before_token = envoy_main.custom_stat("oauth_edge.requests.token")
    before_jwks = envoy_main.custom_stat("oauth_edge.requests.jwks")
    before_meta = envoy_main.custom_stat("oauth_edge.requests.metadata")
    assert token_request(envoy_main, DEMO_CLIENT).status_code == 200
    assert requests.get(envoy_main.jwks_url, timeout=5).status_code == 200
    assert requests.get(envoy_main.base_url + "/.well-known/oauth-authorization-server", timeout=5).status_code == 200
    assert envoy_main.custom_stat("oauth_edge.requests.token") - before_token == 1
    assert envoy_main.custom_stat("oauth_edge.requests.jwks") - before_jwks == 1
    assert envoy_main.custom_stat("oauth_edge.requests.metadata") - before_meta == 1
    names = envoy_main.stats("oauth_edge")
    assert "wasmcustom.oauth_edge.tokens_issued.client_credentials" in names, sorted(names)


def test_metrics_prometheus_tags_from_stats_config(envoy_main):
    """envoy.yaml.in's stats_tags turn the last name segment into a label."""
    assert token_request(envoy_main, DEMO_CLIENT).status_code == 200
    text = envoy_main.prometheus()
    assert prom_value(text, "oauth_edge_requests", {"endpoint": "token"}) >= 1
    assert prom_value(text, "oauth_edge_tokens_issued", {"grant_type": "client_credentials"}) >= 1
    assert "oauth_edge_tokens_issued_client_credentials" not in text
    for name in ("oauth_edge_registry_calls", "oauth_edge_registry_cache_hits"):
        assert f"# TYPE {name} counter" in text or name not in text


def test_metrics_passthrough_not_counted_as_oauth_request(envoy_main):
    before = sum(v for k, v in envoy_main.stats(r"^wasmcustom\.oauth_edge\.requests\.").items())
    assert requests.get(envoy_main.base_url + "/not-oauth", timeout=5).status_code == 200
    after = sum(v for k, v in envoy_main.stats(r"^wasmcustom\.oauth_edge\.requests\.").items())
    assert after == before


def _documented_stats() -> list[re.Pattern[str]]:
    """The stat names docs/metrics.md's table documents, as patterns: `<x>` is one name
    segment, `{a,b}` one of the listed."""
    section = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    out = []
    for name in re.findall(r"`(oauth_edge\.[^`]+)`", section):
        rx = re.escape(name)
        rx = re.sub(r"\\<[^>]*\\>|<[^>]*>", r"[^.]+", rx)
        rx = re.sub(r"\\\{([^}]*)\\\}", lambda m: "(" + "|".join(p.strip() for p in m.group(1).replace("\\", "").split(",")) + ")", rx)
        out.append(re.compile(rx + "$"))
    return out


def test_metrics_every_stat_the_filter_emits_is_documented(envoy_main):
    assert token_request(envoy_main, DEMO_CLIENT).status_code == 200
    emitted = [k[len("wasmcustom."):] for k in envoy_main.stats("oauth_edge")]
    documented = _documented_stats()
    missing = [n for n in emitted if not any(p.match(n) for p in documented)]
    assert emitted and not missing, missing


def _wait_for(envoy, needle: str, timeout: float = 12.0) -> str:
    """Histograms reach /stats/prometheus at Envoy's stats flush (every 5 s by default)."""
    deadline = time.monotonic() + timeout
    text = envoy.prometheus()
    while needle not in text and time.monotonic() < deadline:
        time.sleep(0.5)
        text = envoy.prometheus()
    return text


def test_metrics_request_duration_histogram_per_endpoint(envoy_main):
    for _ in range(3):
        assert token_request(envoy_main, DEMO_CLIENT).status_code == 200
    deadline = time.monotonic() + 12
    text = envoy_main.prometheus()
    while (prom_value(text, "oauth_edge_request_duration_us_count", {"endpoint": "token"}) < 3
           and time.monotonic() < deadline):
        time.sleep(0.5)
        text = envoy_main.prometheus()
    assert "# TYPE oauth_edge_request_duration_us histogram" in text
    assert prom_value(text, "oauth_edge_request_duration_us_count", {"endpoint": "token"}) >= 3
    assert 'oauth_edge_request_duration_us_bucket{endpoint="token",le="' in text


def test_metrics_prometheus_output_passes_promtool(envoy_main):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make promtool: Debian's prometheus package)")
    assert token_request(envoy_main, DEMO_CLIENT, scope="admin").status_code == 400
    text = _wait_for(envoy_main, "oauth_edge_request_duration_us_count")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    # Exit 1: the exposition does not parse. Exit 3: it parses, with lint advice only, which
    # Envoy's exposition always draws (no HELP lines, counters without _total, Envoy's _ms/_us
    # unit suffixes); anything else about our metrics fails the test.
    assert r.returncode in (0, 3) and "error while linting" not in out, out
    advice = ("no help text", 'should have "_total" suffix', "abbreviated units")
    ours = [l for l in out.splitlines() if l.startswith("oauth_edge") and not any(a in l for a in advice)]
    assert not ours, ours
