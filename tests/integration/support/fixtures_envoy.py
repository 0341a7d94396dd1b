"""The suite's Envoys and how they start and end.

Each session starts (lazily, only if a test needs it) Envoy 1.40 processes running the built
oauth_edge.wasm, on free ports, with --use-dynamic-base-id so they run beside a demo on 10000/9901:
  envoy_main   route mode `cluster`, EdDSA active key, registry, audience set explicitly
  envoy_es256  route mode `direct`,  ES256 active key + a public-only (retired) EdDSA key
  envoy_none   route mode `none`,    EdDSA active key
  (and envoy_short_ttl: route mode `none`, registry cache TTLs of 1s)
For body mode `buffer` (render.py --body-mode buffer: no allow_on_headers_stop_iteration, Envoy's
buffer filter after the wasm filter, plugin pause_on_request_headers false):
  envoy_buffer_cluster  route mode `cluster`, EdDSA active key, registry
  envoy_buffer_direct   route mode `direct`,  EdDSA active key, registry
  envoy_unbuffered      route mode `direct`, body mode `buffer` with the buffer filter taken out
                        again (a broken setup render.py refuses to produce; one test shows why)
The other areas' Envoys are in fixtures_ac.py, fixtures_pop.py and fixtures_grants.py.

Environment overrides:
  OAUTH_EDGE_WASM    path of the filter (default target/wasm32-wasip1/release/oauth_edge.wasm)
  OAUTH_EDGE_ENVOY   Envoy binary (default .venv/bin/envoy, then `envoy` on PATH)
  OAUTH_EDGE_KEYGEN  see support/keys.py
  OAUTH_EDGE_KEEP_LOGS  print each Envoy's log path when it stops
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

import render  # noqa: E402  (envoy/render.py: the same code path as `make run`)
from helpers import (
    AC_CLIENT,
    ACCESS_TOKEN_LIFETIME,
    DEMO_CLIENT,
    MAIN_AUDIENCE,
    MAX_BODY,
    POST_CLIENT,
    WEIRD_CLIENT,
    client_metadata,
)
from registry import BackendServer, RegistryServer
from support import ROOT
from support.envoy import WASM, EnvoyInstance, envoy_binary, http_filters
from support.keys import Keys


def base_plugin_config(**overrides: Any) -> dict[str, Any]:
    """envoy/oauth-edge.json plus the clients the tests need."""
    cfg = json.loads((ROOT / "envoy" / "oauth-edge.json").read_text())
    # The demo's rate limits would throttle the suite's bursts; the rate-limit tests set their own.
    cfg.pop("rate_limits", None)
    # The demo's login (its jwt_authn and login page, envoy/demo/server.py) is not in front of
    # these Envoys: nobody is logged in; ac_plugin_config sets the tests' own login.
    cfg.pop("user", None)
    cfg.pop("login_url", None)
    # ... and the demo's user-info service and login logout page.
    cfg.pop("userinfo", None)
    cfg.pop("end_session", None)
    # ... and the demo's protected API (test_demo.py covers it; test_protected_routes.py sets
    # its own routes): without routes a request that passes through reads only its path.
    cfg.pop("resource_protection", None)
    for c in cfg["clients"]:
        c.pop("allowed_resources", None)
    cfg["lifetimes"] = {"access_token": f"{ACCESS_TOKEN_LIFETIME}s"}
    cfg["limits"] = {"max_body_bytes": MAX_BODY}
    cfg["registry"]["timeout"] = "500ms"
    # The suite sends many made-up client ids from loopback; test_registry_misses.py checks the
    # default budget on an Envoy of its own.
    cfg["registry"]["misses_per_address"] = {"requests": 1000000, "window": "10s"}
    by_id = {c["client_id"]: c for c in cfg["clients"]}
    assert DEMO_CLIENT.client_id in by_id, "envoy/oauth-edge.json must keep demo-client"
    for c in (POST_CLIENT, AC_CLIENT, WEIRD_CLIENT):
        cfg["clients"].append(client_metadata(c))
    cfg.update(overrides)
    return cfg


RUNNING: list[EnvoyInstance] = []


def start_envoy(name: str, tmp_factory: pytest.TempPathFactory, *, default_shares: bool = False,
                 **kw: Any) -> EnvoyInstance:
    """default_shares: keep the shipped per-owner ring shares. Otherwise they are off unless the
    test sets them: the suite is one heavy owner (a thousand race rounds by one client and user),
    and test_ring_shares.py checks the defaults on an Envoy of its own."""
    if not WASM.exists() or WASM.stat().st_size < 1000:
        pytest.fail(f"filter not built: {WASM} missing (run `make wasm`)", pytrace=False)
    cfg = kw.get("plugin_config")
    if cfg is not None and not default_shares:
        store = cfg.setdefault("store", {})
        if store.get("backend") != "etcd":
            store.setdefault("share_percent", 100)
            store.setdefault("replay_share_percent", 100)
    inst = EnvoyInstance(name, tmp_factory.mktemp(f"envoy-{name}"), **kw).start()
    RUNNING.append(inst)
    return inst


def finish_envoy(inst: EnvoyInstance) -> None:
    problems = inst.health_problems()
    inst.stop()
    RUNNING.remove(inst)
    if os.environ.get("OAUTH_EDGE_KEEP_LOGS"):
        sys.stderr.write(f"\nEnvoy {inst.name} log: {inst.log_path}\n")
    assert not problems, (f"Envoy {inst.name} was not healthy:\n  " + "\n  ".join(problems)
                          + f"\n--- log tail ---\n{inst.log_tail(40)}")


@pytest.fixture(scope="session")
def envoy_main(keys: Keys, registry: RegistryServer, backend: BackendServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    inst = start_envoy("main", tmp_path_factory, route_mode="cluster",
                        plugin_config=base_plugin_config(access_token_audience=MAIN_AUDIENCE),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_es256(keys: Keys, registry: RegistryServer, backend: BackendServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    inst = start_envoy("es256", tmp_path_factory, route_mode="direct",
                        plugin_config=base_plugin_config(),
                        signing_keys=[keys.es256, Keys.public(keys.ed25519_retired)],
                        registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_none(keys: Keys, registry: RegistryServer, backend: BackendServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    inst = start_envoy("none", tmp_path_factory, route_mode="none",
                        plugin_config=base_plugin_config(),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_short_ttl(keys: Keys, registry: RegistryServer, backend: BackendServer,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Registry cache TTLs of 1s, to watch entries expire."""
    cfg = base_plugin_config()
    cfg["registry"].update({"cache_ttl": "1s", "negative_cache_ttl": "1s"})
    inst = start_envoy("short-ttl", tmp_path_factory, route_mode="none", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


def validate_plugin_config(workdir: Path, plugin_config: dict[str, Any],
                           signing_keys: list[dict[str, Any]]) -> tuple[int, str]:
    """Render `plugin_config` and run `envoy --mode validate` on it (the wasm filter's
    on_configure runs): (exit code, output). Non-zero: Envoy refused the configuration."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    render.render(workdir, key=signing_keys, plugin_config=plugin_config, route_mode="direct")
    shutil.copyfile(WASM, workdir / render.DEFAULT_WASM)
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy.yaml", "-l", "info"],
                         cwd=workdir, capture_output=True, text=True, timeout=120)
    return res.returncode, res.stdout + res.stderr


def _start_buffer_mode_envoy(name: str, route_mode: str, keys: Keys, registry: RegistryServer,
                             backend: BackendServer, tmp_path_factory: pytest.TempPathFactory,
                             **kw: Any) -> EnvoyInstance:
    return start_envoy(name, tmp_path_factory, route_mode=route_mode, body_mode="buffer",
                        plugin_config=base_plugin_config(), signing_keys=[keys.ed25519],
                        registry_port=registry.port, backend_port=backend.port, **kw)


@pytest.fixture(scope="session")
def envoy_buffer_cluster(keys: Keys, registry: RegistryServer, backend: BackendServer,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Body mode `buffer`, route mode `cluster`."""
    inst = _start_buffer_mode_envoy("buffer-cluster", "cluster", keys, registry, backend, tmp_path_factory)
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_buffer_direct(keys: Keys, registry: RegistryServer, backend: BackendServer,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Body mode `buffer`, route mode `direct`."""
    inst = _start_buffer_mode_envoy("buffer-direct", "direct", keys, registry, backend, tmp_path_factory)
    yield inst
    finish_envoy(inst)


def _drop_buffer_filter(doc: dict[str, Any]) -> None:
    filters = http_filters(doc)
    kept = [f for f in filters if f["name"] != "envoy.filters.http.buffer"]
    assert len(kept) == len(filters) - 1, [f["name"] for f in filters]
    filters[:] = kept


@pytest.fixture(scope="session")
def envoy_unbuffered(keys: Keys, registry: RegistryServer, backend: BackendServer,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Route mode `direct`, pause_on_request_headers false, no allow_on_headers_stop_iteration and
    NO buffer filter: the misconfiguration body mode `buffer` exists to prevent."""
    inst = _start_buffer_mode_envoy("unbuffered", "direct", keys, registry, backend, tmp_path_factory,
                                    edit_config=_drop_buffer_filter)
    yield inst
    finish_envoy(inst)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        seen = set()
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, EnvoyInstance) and value.name not in seen:
                seen.add(value.name)
                rep.sections.append((f"Envoy {value.name} log tail ({value.log_path})", value.log_tail(40)))
        if not seen:
            for inst in RUNNING:
                rep.sections.append((f"Envoy {inst.name} log tail ({inst.log_path})", inst.log_tail(25)))


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"oauth-edge wasm: {WASM} ({'present' if WASM.exists() else 'MISSING'})",
            f"envoy: {os.environ.get('OAUTH_EDGE_ENVOY') or ROOT / '.venv' / 'bin' / 'envoy'}"]
