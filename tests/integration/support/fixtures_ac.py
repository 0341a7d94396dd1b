"""The authorization code flow's Envoys (render.py --extra-http-filters: Envoy's jwt_authn before
the wasm filter, verifying login JWTs of the session's `login_service`, whose payload the plugin
reads as the end user; issuer AC_ISSUER; clients rp and spa added):
  envoy_ac        default lifetimes and store sizes, EdDSA active key
  envoy_ac_short  codes and request_uris living SHORT_LIFETIME s in rings of SMALL_RING, ES256
  envoy_ac_churn  CHURN_LIFETIME s in rings of CHURN_RING, for the bounded-memory test only
  ac_replicas     (per test module) two Envoys with the very same plugin configuration, ES256
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from helpers import AC_ISSUER, ACCESS_TOKEN_LIFETIME, LOGIN_URL, RP_CLIENT, SPA_CLIENT, LoginService, client_metadata
from registry import BackendServer, RegistryServer
from support.envoy import EnvoyInstance
from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from support.keys import Keys


def ac_plugin_config(login: LoginService, **overrides: Any) -> dict[str, Any]:
    """base_plugin_config plus the authorization code flow: the issuer replicas share, the end
    user read from jwt_authn's dynamic metadata, the login page, and the RP and SPA clients."""
    cfg = base_plugin_config(issuer=AC_ISSUER, user=login.user_config(), login_url=LOGIN_URL)
    cfg["clients"] += [client_metadata(RP_CLIENT), client_metadata(SPA_CLIENT)]
    cfg.update(overrides)
    return cfg


def start_ac_envoy(name: str, login: LoginService, signing_keys: list[dict[str, Any]],
                   registry: RegistryServer, backend: BackendServer,
                   tmp_path_factory: pytest.TempPathFactory, **overrides: Any) -> EnvoyInstance:
    """An Envoy with jwt_authn before the wasm filter, running ac_plugin_config(**overrides)."""
    return start_envoy(name, tmp_path_factory, route_mode="direct",
                        plugin_config=ac_plugin_config(login, **overrides), signing_keys=signing_keys,
                        registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login.jwt_authn_filter()])


@pytest.fixture(scope="session")
def envoy_ac(keys: Keys, login_service: LoginService, registry: RegistryServer, backend: BackendServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """The authorization code flow with default lifetimes and store sizes, EdDSA key."""
    inst = start_ac_envoy("ac", login_service, [keys.ed25519], registry, backend, tmp_path_factory)
    yield inst
    finish_envoy(inst)


# envoy_ac_short: short-lived codes and request_uris in small rings.
SMALL_RING = 1024


SHORT_LIFETIME = 2  # seconds: lifetimes.code and lifetimes.request_uri


# envoy_ac_churn: the memory test's rings. A slot is taken for a code's or request_uri's lifetime
# (1 s at least), so a ring of N slots holds about N/2 allocations a second before allocations
# start failing ("busy"); CHURN_RING is sized for the ~4000 rounds/s two cores push through.
CHURN_RING = 8192


CHURN_LIFETIME = 1


def _short_lived(lifetime: int, slots: int) -> dict[str, Any]:
    return {
        "lifetimes": {"access_token": f"{ACCESS_TOKEN_LIFETIME}s", "code": f"{lifetime}s",
                      "request_uri": f"{lifetime}s"},
        # One client and user fill these rings on purpose: no per-owner share (test_ring_shares.py).
        "store": {"request_uri_slots": slots, "code_slots": slots, "refresh_family_slots": slots,
                  "share_percent": 100},
    }


@pytest.fixture(scope="session")
def envoy_ac_short(keys: Keys, login_service: LoginService, registry: RegistryServer,
                   backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Codes and request_uris living SHORT_LIFETIME seconds in rings of SMALL_RING slots; ES256."""
    inst = start_ac_envoy("ac-short", login_service, [keys.es256], registry, backend, tmp_path_factory,
                          **_short_lived(SHORT_LIFETIME, SMALL_RING))
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_ac_churn(keys: Keys, login_service: LoginService, registry: RegistryServer,
                   backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Codes and request_uris living CHURN_LIFETIME seconds in rings of CHURN_RING slots, for the
    bounded-memory test alone (nothing else disturbs its readings)."""
    inst = start_ac_envoy("ac-churn", login_service, [keys.ed25519], registry, backend, tmp_path_factory,
                          **_short_lived(CHURN_LIFETIME, CHURN_RING))
    yield inst
    finish_envoy(inst)


REPLICA_RING = 256  # ac_replicas: slots of each ring


@pytest.fixture(scope="module")
def ac_replicas(keys: Keys, login_service: LoginService, registry: RegistryServer, backend: BackendServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EnvoyInstance, EnvoyInstance]]:
    """Two Envoys with the very same plugin configuration (issuer, signing key, clients), as two
    replicas of one authorization server; a test may restart either."""
    store = {"request_uri_slots": REPLICA_RING, "code_slots": REPLICA_RING, "refresh_family_slots": REPLICA_RING,
             "share_percent": 100}
    a = start_ac_envoy("ac-replica-a", login_service, [keys.es256], registry, backend, tmp_path_factory, store=store)
    try:
        b = start_ac_envoy("ac-replica-b", login_service, [keys.es256], registry, backend, tmp_path_factory,
                           store=store)
    except BaseException:
        a.stop()
        raise
    yield a, b
    try:
        finish_envoy(a)
    finally:
        finish_envoy(b)
