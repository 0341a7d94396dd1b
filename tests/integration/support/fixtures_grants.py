"""Revocation (RFC 7009), introspection (RFC 7662), the device flow (RFC 8628), token exchange
(RFC 8693) and the password grant (the GRANTS_* / PASSWORD_* / ALT_* settings below; the trusted
issuers' JWK Sets and the password grant's credential check served by the registry fixture):
  envoy_grants       like envoy_ac (jwt_authn also on /oauth/device), envoy_pop's jwks_fetch and dpop;
                     every opt-in grant on, the GRANTS_CLIENTS; EdDSA
  envoy_device_alt   the device flow at other paths (ALT_ENDPOINTS), ALT_VERIFICATION_URI, short
                     lifetime, longer user codes, no login_url; ES256
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from helpers import (
    AC_ISSUER,
    GRANTS_CLIENTS,
    PARTNER2_AUDIENCE,
    PARTNER2_ISSUER,
    PARTNER_ISSUER,
    LoginService,
    PartnerIdp,
    client_metadata,
)
from registry import BackendServer, RegistryServer
from support.envoy import EnvoyInstance
from support.fixtures_ac import ac_plugin_config
from support.fixtures_envoy import finish_envoy, start_envoy
from support.fixtures_pop import POP_DPOP, POP_JWKS_FETCH
from support.keys import Keys


# envoy_grants: like envoy_ac (jwt_authn, AC_ISSUER, login_url, EdDSA) with jwt_authn also on the
# device verification endpoint, jwks_fetch and dpop as envoy_pop, and every opt-in grant on.
GRANTS_DEVICE_INTERVAL = 1  # s, device.interval (the minimum: polling tests stay fast)


GRANTS_DEVICE_ATTEMPTS = 6  # device.attempts.requests per GRANTS_DEVICE_WINDOW s, per user


GRANTS_DEVICE_WINDOW = 60


GRANTS_DEVICE = {"interval": f"{GRANTS_DEVICE_INTERVAL}s",
                 "attempts": {"requests": GRANTS_DEVICE_ATTEMPTS, "window": f"{GRANTS_DEVICE_WINDOW}s"}}


PASSWORD_TIMEOUT = 1.0  # s, password_grant.timeout


PASSWORD_FAILURES = 3  # password_grant.failures.requests per PASSWORD_WINDOW s (per client: 10x)


PASSWORD_WINDOW = 60


PASSWORD_AUTHORITY = "users.internal"  # password_grant.authority (the :authority of the check)


PASSWORD_GRANT = {"cluster": "registry", "path": "/verify", "authority": PASSWORD_AUTHORITY,
                  "timeout": f"{PASSWORD_TIMEOUT:g}s",
                  "failures": {"requests": PASSWORD_FAILURES, "window": f"{PASSWORD_WINDOW}s"}}


# envoy_device_alt: no login_url, its own paths and verification_uri, short-lived device codes.
ALT_DEVICE_LIFETIME = 30  # s, device.lifetime (the minimum)


ALT_VERIFICATION_URI = "https://tv.example.test/activate?src=device"


ALT_USER_CODE_LENGTH = 12


ALT_ENDPOINTS = {"revocation": "/oauth/v2/revoke", "introspection": "/oauth/v2/introspect",
                 "device_authorization": "/oauth/v2/device", "device_verification": "/activate"}


class PartnerIdps:
    """The trusted issuers of envoy_grants' token exchange (keys made once per session)."""

    def __init__(self) -> None:
        # The first is checked against our issuer as audience (the default), the second
        # against its own configured audience.
        self.idp = PartnerIdp(PARTNER_ISSUER, "partner-idp", "ES256", "partner-es-1", AC_ISSUER)
        self.idp2 = PartnerIdp(PARTNER2_ISSUER, "partner2-idp", "EdDSA", "partner2-ed-1", PARTNER2_AUDIENCE)

    def publish(self, registry: RegistryServer) -> None:
        for p in (self.idp, self.idp2):
            registry.set_jwks(p.jwks_name, p.jwks())

    def trusted_issuers(self, registry: RegistryServer) -> list[dict[str, Any]]:
        return [{"issuer": self.idp.issuer, "jwks_uri": registry.jwks_url(self.idp.jwks_name)},
                {"issuer": self.idp2.issuer, "jwks_uri": registry.jwks_url(self.idp2.jwks_name),
                 "audience": self.idp2.audience}]


@pytest.fixture(scope="session")
def partners(registry: RegistryServer) -> PartnerIdps:
    p = PartnerIdps()
    p.publish(registry)
    return p


def grants_plugin_config(login: LoginService, registry: RegistryServer, partners: PartnerIdps,
                         **overrides: Any) -> dict[str, Any]:
    cfg = ac_plugin_config(login, jwks_fetch=dict(POP_JWKS_FETCH), dpop=dict(POP_DPOP), device=dict(GRANTS_DEVICE),
                           token_exchange={"trusted_issuers": partners.trusted_issuers(registry)},
                           password_grant=dict(PASSWORD_GRANT))
    cfg["clients"] += [client_metadata(c) for c in GRANTS_CLIENTS]
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def envoy_grants(keys: Keys, login_service: LoginService, registry: RegistryServer, backend: BackendServer,
                 partners: PartnerIdps, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Revocation, introspection (default paths), the device flow (GRANTS_DEVICE, default
    lifetime and verification_uri), token exchange (the `partners`), the password grant
    (PASSWORD_GRANT, checked by the registry fixture's POST /verify); EdDSA signing key."""
    inst = start_envoy("grants", tmp_path_factory, route_mode="direct",
                        plugin_config=grants_plugin_config(login_service, registry, partners),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter(extra_paths=["/oauth/device"])])
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_device_alt(keys: Keys, login_service: LoginService, registry: RegistryServer, backend: BackendServer,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """The device flow configured otherwise: ALT_ENDPOINTS, ALT_VERIFICATION_URI, user_codes of
    ALT_USER_CODE_LENGTH, lifetime ALT_DEVICE_LIFETIME s, no login_url (no user: 401); ES256."""
    cfg = ac_plugin_config(login_service, device={"lifetime": f"{ALT_DEVICE_LIFETIME}s", "interval": "1s",
                                                  "user_code_length": ALT_USER_CODE_LENGTH,
                                                  "verification_uri": ALT_VERIFICATION_URI})
    del cfg["login_url"]
    cfg["endpoints"] = dict(cfg.get("endpoints", {}), **ALT_ENDPOINTS)
    cfg["clients"] += [client_metadata(c) for c in GRANTS_CLIENTS]
    inst = start_envoy("device-alt", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.es256], registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter(
                            extra_paths=[ALT_ENDPOINTS["device_verification"]])])
    yield inst
    finish_envoy(inst)
