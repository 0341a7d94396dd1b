"""Upstream fixtures: the client registry (an in-process thread on an ephemeral port; it also
serves the user-info service, the password grant's credential check and clients' and trusted
issuers' JWK Sets), the echo backend, the session's signing keys, the login service whose JWTs
Envoy's jwt_authn verifies, and the static private_key_jwt clients' keys."""
from __future__ import annotations

from typing import Iterator

import pytest
import requests

from helpers import ClientKeys, LoginService
from registry import BackendServer, RegistryServer
from support.keys import Keys


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    reg = RegistryServer(port=0).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def backend() -> Iterator[BackendServer]:
    be = BackendServer(port=0).start()
    yield be
    be.stop()


@pytest.fixture(autouse=True)
def _registry_back_to_ok(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "registry" in request.fixturenames:
        reg = request.getfixturevalue("registry")
        reg.set_mode("ok")
        reg.set_verify_mode("ok")


@pytest.fixture(scope="session")
def login_service() -> LoginService:
    """The login service whose JWTs Envoy's jwt_authn verifies (RSA key made for this session)."""
    return LoginService()


@pytest.fixture(scope="session")
def client_keys() -> ClientKeys:
    """The key pairs of the static private_key_jwt clients (joserfc), made once per session."""
    return ClientKeys()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s
