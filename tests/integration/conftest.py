"""Real-Envoy integration fixtures for oauth-edge: registered from the support package, one
module per area (support/__init__.py lists them; support/fixtures_envoy.py lists the Envoys and
the environment overrides)."""
from __future__ import annotations

import support  # noqa: F401  (puts tests/fixtures and envoy/ on sys.path)

pytest_plugins = [
    "support.fixtures_upstreams",
    "support.fixtures_envoy",
    "support.fixtures_ac",
    "support.fixtures_pop",
    "support.fixtures_grants",
    "support.fixtures_etcd",
    "support.fixtures_tls",
    "support.fixtures_demo",
]
