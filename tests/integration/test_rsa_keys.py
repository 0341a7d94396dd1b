"""RS256 and PS256 signing keys (for relying parties that only know RSA): a client_credentials
token from a real Envoy verifies against the JWKS with PyJWT, and only public parts are published."""
from __future__ import annotations

import base64
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from helpers import (
    ACCESS_TOKEN_LIFETIME,
    DEMO_CLIENT,
    assert_token_response,
    fetch_jwks,
    token_request,
    verify_access_token,
)


def _b64(i: int) -> str:
    return base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def rsa_jwk(kid: str, alg: str) -> dict[str, Any]:
    n = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    pub = n.public_numbers
    return {"kty": "RSA", "kid": kid, "alg": alg, "n": _b64(pub.n), "e": _b64(pub.e), "d": _b64(n.d),
            "p": _b64(n.p), "q": _b64(n.q), "dp": _b64(n.dmp1), "dq": _b64(n.dmq1), "qi": _b64(n.iqmp)}


@pytest.fixture(scope="module", params=["RS256", "PS256"])
def envoy_rsa(request, registry, backend, tmp_path_factory) -> Iterator[Any]:
    alg = request.param
    key = rsa_jwk(f"it-{alg.lower()}", alg)
    inst = start_envoy(f"rsa-{alg.lower()}", tmp_path_factory, route_mode="direct",
                        plugin_config=base_plugin_config(active_signing_key=key["kid"]),
                        signing_keys=[key], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


def test_client_credentials_with_rsa_key_rfc7518_3_3_and_3_5(envoy_rsa):
    for _ in range(3):
        r = token_request(envoy_rsa, DEMO_CLIENT, use="client_secret_basic")
        body = assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)
        header, _ = verify_access_token(body["access_token"], envoy_rsa, client_id="demo-client",
                                        scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)
        assert header["alg"] == envoy_rsa.active_alg
    jwks = fetch_jwks(envoy_rsa)
    assert [k["kty"] for k in jwks["keys"]] == ["RSA"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwks["keys"][0])
