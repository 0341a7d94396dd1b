"""Discovery documents (RFC 8414, OpenID Connect Discovery) and the JWKS (RFC 7517)."""
from __future__ import annotations

import pytest
import requests

from helpers import fetch_jwks

METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_metadata_rfc8414_3_2_document(envoy_main, path):
    r = requests.get(envoy_main.base_url + path, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type", "").split(";")[0] == "application/json"
    m = r.json()
    issuer = f"http://127.0.0.1:{envoy_main.listen_port}"
    assert m["issuer"] == issuer == envoy_main.plugin_config["issuer"]
    assert m["token_endpoint"] == issuer + "/oauth/token"
    assert m["jwks_uri"] == issuer + "/oauth/jwks"
    assert m["grant_types_supported"] == ["authorization_code", "client_credentials", "refresh_token"]
    assert {"client_secret_basic", "client_secret_post", "none"} <= set(m["token_endpoint_auth_methods_supported"])
    assert m["response_types_supported"] == ["code"]
    assert m["authorization_endpoint"] == issuer + "/oauth/authorize"
    assert m["pushed_authorization_request_endpoint"] == issuer + "/oauth/pushed-authorization"
    assert m["code_challenge_methods_supported"] == ["S256"]
    assert m["authorization_response_iss_parameter_supported"] is True
    assert m["require_pushed_authorization_requests"] is False


def test_metadata_rfc8414_3_3_issuer_matches_es256_instance(envoy_es256):
    """Each Envoy renders its own issuer; metadata follows it."""
    m = requests.get(envoy_es256.base_url + METADATA_PATHS[0], timeout=5).json()
    assert m["issuer"] == f"http://127.0.0.1:{envoy_es256.listen_port}"
    assert m["jwks_uri"] == m["issuer"] + "/oauth/jwks"


def test_metadata_documents_agree(envoy_main):
    a = requests.get(envoy_main.base_url + METADATA_PATHS[0], timeout=5).json()
    b = requests.get(envoy_main.base_url + METADATA_PATHS[1], timeout=5).json()
    for k in ("issuer", "token_endpoint", "jwks_uri", "grant_types_supported"):
        assert a[k] == b[k], k


def test_jwks_rfc7517_5_public_keys_only(envoy_main):
    r = requests.get(envoy_main.jwks_url, timeout=5)
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").split(";")[0] in ("application/json", "application/jwk-set+json")
    keys = r.json()["keys"]
    assert [k["kid"] for k in keys] == ["it-ed25519"]
    k = keys[0]
    assert k["kty"] == "OKP" and k["crv"] == "Ed25519" and k["alg"] == "EdDSA" and k["use"] == "sig"
    assert k["x"] == next(s for s in envoy_main.signing_keys if s["kid"] == "it-ed25519")["x"]
    for private in ("d", "p", "q", "dp", "dq", "qi", "k"):
        assert private not in k, f"private member {private} published"


def test_jwks_rfc7517_5_es256_public_members(envoy_es256):
    keys = {k["kid"]: k for k in fetch_jwks(envoy_es256)["keys"]}
    k = keys["it-es256"]
    assert (k["kty"], k["crv"], k["alg"], k["use"]) == ("EC", "P-256", "ES256", "sig")
    assert {"x", "y"} <= set(k) and "d" not in k

