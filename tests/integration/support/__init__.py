"""The integration suite's support package (and the benchmark's Envoy launcher).

  envoy.py              the one Envoy launcher (EnvoyInstance): render.py, start, readiness,
                        restart, stop, stats and logs; used by the tests, the demo run and
                        bench/bench.py
  forms.py              the one form poster (post_form) and Basic credentials
  keys.py               the session's signing keys (oauth-edge-keygen, or `cryptography`)
  demo.py               `make run` on free ports (DemoRun, an EnvoyInstance behind the demo server)
  etcd.py               a three-member etcd cluster on loopback (the etcd store's upstream)
  tls.py                the certificates of the mutual TLS tests (Pki)
  fixtures_upstreams.py the registry (also the user-info service, the password check and the
                        jwks_uri host), the backend, keys, login service, client keys, partners
  fixtures_envoy.py     the suite's Envoys (main, es256, none, short TTL, body mode buffer),
                        start_envoy / finish_envoy, validate_plugin_config, failure reports
  fixtures_ac.py        the authorization code flow Envoys
  fixtures_pop.py       private_key_jwt, DPoP, FAPI 2.0 and rate-limit Envoys
  fixtures_grants.py    revocation, introspection, device flow, token exchange, password grant
  fixtures_etcd.py      the etcd cluster fixture
  fixtures_tls.py       the PKI fixture
  fixtures_demo.py      the demo fixture

Importing the package puts tests/integration, tests/fixtures and envoy/ on sys.path (helpers,
registry, chaos and render are imported by those names)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parents[1]
for _p in (HERE, ROOT / "tests" / "fixtures", ROOT / "envoy"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
