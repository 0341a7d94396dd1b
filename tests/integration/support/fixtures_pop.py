"""private_key_jwt (RFC 7523), DPoP (RFC 9449), FAPI 2.0 and rate limits (the settings below;
client keys from the session's `client_keys`, clients' jwks_uri served by the registry fixture):
  envoy_pop          like envoy_ac (jwt_authn, AC_ISSUER, EdDSA) plus jwks_fetch, client_assertion,
                     dpop and the clients pk-client, pk-pinned, dpop-bound, dpop-public
  envoy_dpop_nonce   (per module) route mode `none`, dpop.require_nonce true
  envoy_fapi2        like envoy_pop with "profile": "fapi2" and the client fapi-client
  envoy_rate_client  (per module) rate_limits.per_client  RATE_CLIENT_REQUESTS per RATE_CLIENT_WINDOW s
  envoy_rate_address (per module) rate_limits.per_address RATE_ADDRESS_REQUESTS per RATE_ADDRESS_WINDOW s
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from helpers import (
    DPOP_BOUND_CLIENT,
    DPOP_PUBLIC_CLIENT,
    FAPI_CLIENT,
    PK_CLIENT,
    PK_PINNED_CLIENT,
    RATE_CLIENTS,
    RATE_PAR_CLIENT,
    RATE_PUBLIC_CLIENT,
    ClientKeys,
    LoginService,
    client_metadata,
    jwks_of,
    pk_metadata,
)
from registry import BackendServer, RegistryServer
from support.envoy import EnvoyInstance
from support.fixtures_ac import ac_plugin_config
from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from support.keys import Keys


# Settings of envoy_pop and envoy_fapi2 (tests read the numbers from here).
JWKS_REFETCH_COOLDOWN = 1  # s: a kid missing from the cached JWK Set refetches it at most this often


POP_JWKS_FETCH = {"cluster": "registry", "timeout": "1s", "cache_ttl": "10m",
                  "refetch_cooldown": f"{JWKS_REFETCH_COOLDOWN}s", "require_https": False}


ASSERTION_MAX_LIFETIME = 300  # s, client_assertion.max_lifetime


ASSERTION_SKEW = 30  # s, client_assertion.clock_skew


POP_CLIENT_ASSERTION = {"max_lifetime": f"{ASSERTION_MAX_LIFETIME}s", "clock_skew": f"{ASSERTION_SKEW}s"}


DPOP_PROOF_LIFETIME = 60  # s, dpop.proof_lifetime


DPOP_SKEW = 10  # s, dpop.clock_skew


POP_DPOP = {"proof_lifetime": f"{DPOP_PROOF_LIFETIME}s", "clock_skew": f"{DPOP_SKEW}s",
            "require_nonce": False, "nonce_lifetime": "5m"}


# Rate limits (fixed windows).
RATE_CLIENT_REQUESTS = 5


RATE_CLIENT_WINDOW = 3  # s


RATE_ADDRESS_REQUESTS = 8


RATE_ADDRESS_WINDOW = 2  # s


def pop_plugin_config(login: LoginService, ck: ClientKeys, **overrides: Any) -> dict[str, Any]:
    """ac_plugin_config plus jwks_fetch (the registry cluster, plain http), client_assertion, dpop
    and the private_key_jwt / DPoP clients (inline jwks for the static ones)."""
    cfg = ac_plugin_config(login, jwks_fetch=dict(POP_JWKS_FETCH), client_assertion=dict(POP_CLIENT_ASSERTION),
                           dpop=dict(POP_DPOP))
    cfg["clients"] += [
        pk_metadata(PK_CLIENT, jwks=ck.pk_client_jwks()),
        pk_metadata(PK_PINNED_CLIENT, jwks=jwks_of(ck.pinned_rsa)),
        client_metadata(DPOP_BOUND_CLIENT),
        client_metadata(DPOP_PUBLIC_CLIENT),
    ]
    cfg.update(overrides)
    return cfg


def fapi2_plugin_config(login: LoginService, ck: ClientKeys, **overrides: Any) -> dict[str, Any]:
    """The FAPI 2.0 profile over the authorization code setup: all of ac_plugin_config's clients
    stay (client_secret_basic and public ones, which the profile must refuse at request time)
    and fapi-client (private_key_jwt, ES256 and RSA keys inline) is added."""
    cfg = ac_plugin_config(login, profile="fapi2", jwks_fetch=dict(POP_JWKS_FETCH),
                           client_assertion=dict(POP_CLIENT_ASSERTION), dpop=dict(POP_DPOP))
    cfg["clients"].append(pk_metadata(FAPI_CLIENT, jwks=jwks_of(ck.fapi_es, ck.fapi_rsa)))
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def envoy_pop(keys: Keys, client_keys: ClientKeys, login_service: LoginService, registry: RegistryServer,
              backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Default profile with private_key_jwt and DPoP: jwt_authn for the code flow (AC_ISSUER),
    EdDSA signing key, POP_JWKS_FETCH / POP_CLIENT_ASSERTION / POP_DPOP."""
    inst = start_envoy("pop", tmp_path_factory, route_mode="direct",
                        plugin_config=pop_plugin_config(login_service, client_keys), signing_keys=[keys.ed25519],
                        registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter()])
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="module")
def envoy_dpop_nonce(keys: Keys, registry: RegistryServer, backend: BackendServer,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """DPoP with require_nonce (RFC 9449 §8): route mode `none`, loopback issuer, EdDSA."""
    cfg = base_plugin_config(dpop=dict(POP_DPOP, require_nonce=True))
    cfg["clients"].append(client_metadata(DPOP_BOUND_CLIENT))
    inst = start_envoy("dpop-nonce", tmp_path_factory, route_mode="none", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_fapi2(keys: Keys, client_keys: ClientKeys, login_service: LoginService, registry: RegistryServer,
                backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """"profile": "fapi2" over the envoy_pop setup (EdDSA signing key)."""
    inst = start_envoy("fapi2", tmp_path_factory, route_mode="direct",
                        plugin_config=fapi2_plugin_config(login_service, client_keys), signing_keys=[keys.ed25519],
                        registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter()])
    yield inst
    finish_envoy(inst)


def _rate_plugin_config(limits: dict[str, Any]) -> dict[str, Any]:
    cfg = base_plugin_config(rate_limits=limits, store={"rate_limit_slots": 1024})
    cfg["clients"] += [client_metadata(c) for c in (*RATE_CLIENTS, RATE_PAR_CLIENT, RATE_PUBLIC_CLIENT)]
    return cfg


@pytest.fixture(scope="module")
def envoy_rate_client(keys: Keys, registry: RegistryServer, backend: BackendServer,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """rate_limits.per_client: RATE_CLIENT_REQUESTS per RATE_CLIENT_WINDOW s; route mode `direct`."""
    cfg = _rate_plugin_config({"per_client": {"requests": RATE_CLIENT_REQUESTS, "window": f"{RATE_CLIENT_WINDOW}s"}})
    inst = start_envoy("rate-client", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="module")
def envoy_rate_address(keys: Keys, registry: RegistryServer, backend: BackendServer,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """rate_limits.per_address: RATE_ADDRESS_REQUESTS per RATE_ADDRESS_WINDOW s; route mode `direct`."""
    cfg = _rate_plugin_config({"per_address": {"requests": RATE_ADDRESS_REQUESTS,
                                               "window": f"{RATE_ADDRESS_WINDOW}s"}})
    inst = start_envoy("rate-address", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)
