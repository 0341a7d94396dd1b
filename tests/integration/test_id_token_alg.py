"""Issue 16 item 5: ID tokens signed as OpenID Connect defines it. A client that registered no
`id_token_signed_response_alg` gets RS256 (OIDC Registration §2) when an RS256 key is
configured, whatever key signs access tokens; a client that registered an algorithm gets it.
Checked with Authlib's OpenID Connect ID token validation (CodeIDToken), which a relying party
uses, allowing only the algorithm the client expects."""
from __future__ import annotations

import secrets
from typing import Any, Iterator

import pytest
from authlib.jose import JsonWebKey, jwt as authlib_jwt
from authlib.oidc.core import CodeIDToken

from support.fixtures_ac import ac_plugin_config
from support.fixtures_envoy import finish_envoy, start_envoy
from helpers import RP_CLIENT, Client, client_metadata, fetch_jwks, issue_code, metadata, redeem_code
from test_rsa_keys import rsa_jwk

ED_RP = Client("rp-eddsa", "rp-eddsa-secret", grant_types=("authorization_code",), scope="openid read",
               extra={"redirect_uris": ["https://rp-eddsa.example.test/cb"], "id_token_signed_response_alg": "EdDSA"})


@pytest.fixture(scope="module")
def envoy_two_algs(keys, login_service, registry, backend, tmp_path_factory) -> Iterator[Any]:
    rsa = rsa_jwk("it-rs256-idt", "RS256")
    cfg = ac_plugin_config(login_service, active_signing_key=keys.ed25519["kid"])
    cfg["clients"].append(client_metadata(ED_RP))
    inst = start_envoy("id-token-alg", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519, rsa], registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter()])
    yield inst, rsa
    finish_envoy(inst)


def _id_token(envoy, login_service, client: Client) -> tuple[dict, str, str]:
    nonce = secrets.token_urlsafe(12)
    code, verifier = issue_code(envoy, login_service.sign("alice"), client, scope="openid read", nonce=nonce)
    r = redeem_code(envoy, code, verifier, client)
    assert r.status_code == 200, r.text
    return r.json(), nonce, r.json()["id_token"]


def _validate(envoy, id_token: str, client: Client, nonce: str, access_token: str, alg: str) -> dict:
    keyset = JsonWebKey.import_key_set(fetch_jwks(envoy))
    claims = authlib_jwt.decode(id_token, keyset, claims_cls=CodeIDToken,
                                claims_options={"iss": {"essential": True, "value": envoy.issuer}},
                                claims_params={"nonce": nonce, "client_id": client.client_id,
                                               "access_token": access_token})
    claims.validate(leeway=5)
    assert claims.header["alg"] == alg, claims.header
    return dict(claims)


def test_oidc_registration_2_default_id_token_alg_is_rs256(envoy_two_algs, login_service):
    envoy, rsa = envoy_two_algs
    body, nonce, id_token = _id_token(envoy, login_service, RP_CLIENT)
    claims = _validate(envoy, id_token, RP_CLIENT, nonce, body["access_token"], "RS256")
    assert claims["sub"] == "alice" and claims["aud"] == RP_CLIENT.client_id
    from authlib.jose import JsonWebToken
    # The access token is still signed by the active (EdDSA) key.
    assert JsonWebToken(["EdDSA"]).decode(body["access_token"], JsonWebKey.import_key_set(fetch_jwks(envoy))).header["alg"] == "EdDSA"


def test_a_registered_id_token_alg_is_used(envoy_two_algs, login_service):
    envoy, _ = envoy_two_algs
    body, nonce, id_token = _id_token(envoy, login_service, ED_RP)
    _validate(envoy, id_token, ED_RP, nonce, body["access_token"], "EdDSA")


def test_both_discovery_documents_agree_on_the_oidc_fields(envoy_two_algs):
    envoy, _ = envoy_two_algs
    as_meta = metadata(envoy)
    import requests
    oidc = requests.get(envoy.base_url + "/.well-known/openid-configuration", timeout=10).json()
    for field in ("id_token_signing_alg_values_supported", "subject_types_supported", "claims_supported"):
        assert as_meta[field] == oidc[field], field
    assert "RS256" in oidc["id_token_signing_alg_values_supported"]
