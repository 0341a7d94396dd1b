"""Client credentials grant (RFC 6749 §4.4) through a real Envoy, tokens checked independently."""
from __future__ import annotations

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from helpers import (
    ACCESS_TOKEN_LIFETIME,
    MAIN_AUDIENCE,
    DEMO_CLIENT,
    POST_CLIENT,
    WEIRD_CLIENT,
    assert_oauth_error,
    assert_token_response,
    fetch_jwks,
    token_request,
    verify_access_token,
)


def test_client_credentials_rfc6749_4_4_basic(envoy_main):
    r = token_request(envoy_main, DEMO_CLIENT, use="client_secret_basic")
    body = assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)
    header, claims = verify_access_token(body["access_token"], envoy_main, client_id="demo-client",
                                         scope="read write", lifetime=ACCESS_TOKEN_LIFETIME,
                                         alg="EdDSA", kid="it-ed25519")
    assert claims["iss"] == envoy_main.issuer == f"http://127.0.0.1:{envoy_main.listen_port}"
    assert claims["aud"] in (MAIN_AUDIENCE, [MAIN_AUDIENCE])


def test_client_credentials_rfc7591_2_basic_client_cannot_use_client_secret_post(envoy_main):
    """The registered token_endpoint_auth_method is enforced (RFC 7591 §2, as Hydra does): the
    right secret of a client_secret_basic client, sent in the body, is 401 invalid_client (with
    a challenge); its registered way still works."""
    r = token_request(envoy_main, DEMO_CLIENT, use="client_secret_post")
    assert_oauth_error(r, 401, "invalid_client")
    r = token_request(envoy_main, DEMO_CLIENT, use="client_secret_basic")
    assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


def test_client_credentials_rfc6749_2_3_1_post_registered_client(envoy_main):
    r = token_request(envoy_main, POST_CLIENT, use="client_secret_post")
    body = assert_token_response(r, scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    verify_access_token(body["access_token"], envoy_main, client_id="post-client", scope="read",
                        lifetime=ACCESS_TOKEN_LIFETIME)


def test_client_credentials_rfc6749_2_3_1_basic_is_form_urlencoded(envoy_main):
    """Client id and secret with ':', ' ', '+', '%' and '/' are form-urlencoded inside Basic."""
    r = token_request(envoy_main, WEIRD_CLIENT, use="client_secret_basic")
    body = assert_token_response(r, scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    _, claims = verify_access_token(body["access_token"], envoy_main, client_id=WEIRD_CLIENT.client_id,
                                    scope="read", lifetime=ACCESS_TOKEN_LIFETIME)
    assert claims["sub"] == "weird:client id+1"


def test_client_credentials_rfc6749_4_4_es256_active_key(envoy_es256):
    r = token_request(envoy_es256, DEMO_CLIENT)
    body = assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)
    _, claims = verify_access_token(body["access_token"], envoy_es256, client_id="demo-client",
                                    scope="read write", lifetime=ACCESS_TOKEN_LIFETIME,
                                    alg="ES256", kid="it-es256")
    # Without access_token_audience the audience is the issuer (contract).
    assert claims["aud"] in (envoy_es256.issuer, [envoy_es256.issuer])


def test_jwks_rfc7517_publishes_retired_public_key_and_signs_with_active(envoy_es256):
    kids = {k["kid"]: k for k in fetch_jwks(envoy_es256)["keys"]}
    assert set(kids) == {"it-es256", "it-ed25519-retired"}
    assert kids["it-ed25519-retired"]["alg"] == "EdDSA"
    token = token_request(envoy_es256, DEMO_CLIENT).json()["access_token"]

    assert jwt.get_unverified_header(token)["kid"] == "it-es256"


@pytest.mark.parametrize("requested, granted", [
    ("read", "read"),
    ("write", "write"),
    ("write read", "read write"),
    ("read  write", "read write"),
])
def test_client_credentials_rfc6749_3_3_scope_subset(envoy_main, requested, granted):
    r = token_request(envoy_main, DEMO_CLIENT, scope=requested)
    body = assert_token_response(r, scope=granted, lifetime=ACCESS_TOKEN_LIFETIME)
    verify_access_token(body["access_token"], envoy_main, client_id="demo-client", scope=granted,
                        lifetime=ACCESS_TOKEN_LIFETIME)


def test_client_credentials_rfc6749_4_4_2_content_type_with_charset(envoy_main):
    r = token_request(envoy_main, DEMO_CLIENT,
                      headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


def test_client_credentials_rfc6749_4_4_unrecognized_parameters_ignored(envoy_main):
    """RFC 6749 §3.2: the server MUST ignore unrecognized request parameters."""
    r = token_request(envoy_main, DEMO_CLIENT,
                      data="grant_type=client_credentials&foo=bar&resource_hint=x")
    assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


def test_client_credentials_rfc9068_2_2_jti_unique(envoy_main):
    jtis = set()

    for _ in range(5):
        token = token_request(envoy_main, DEMO_CLIENT).json()["access_token"]
        jtis.add(jwt.decode(token, options={"verify_signature": False})["jti"])
    assert len(jtis) == 5


@pytest.mark.parametrize("client", [DEMO_CLIENT, POST_CLIENT], ids=lambda c: c.auth_method)
def test_client_credentials_rfc6749_4_4_authlib_client(envoy_main, client):
    """A real OAuth client library (Authlib) fetches a token, each client by its registered
    method; joserfc verifies it."""
    c = client
    client = OAuth2Session(c.client_id, c.secret, scope="read", token_endpoint_auth_method=c.auth_method)
    try:
        token = client.fetch_token(envoy_main.token_url, grant_type="client_credentials")
    finally:
        client.close()
    assert token["token_type"].lower() == "bearer"
    assert token["scope"] == "read"
    assert token["expires_in"] == ACCESS_TOKEN_LIFETIME
    decoded = jose_jwt.decode(token["access_token"], KeySet.import_key_set(fetch_jwks(envoy_main)),
                              algorithms=["EdDSA"])
    assert decoded.header["typ"].lower() == "at+jwt"
    assert decoded.claims["client_id"] == c.client_id
    assert decoded.claims["iss"] == envoy_main.issuer


def test_client_credentials_rfc9112_keep_alive_one_connection(envoy_main):
    """Several token requests on one connection: the filter answers after the whole body, so
    Envoy keeps the connection open (one new downstream connection for all of them)."""
    before = envoy_main.stat("http.ingress_http.downstream_cx_total")
    with requests.Session() as s:
        for i in range(10):
            r = token_request(envoy_main, DEMO_CLIENT if i % 2 else POST_CLIENT, session=s)
            assert r.status_code == 200, r.text
            assert r.headers.get("Connection", "").lower() != "close"
    after = envoy_main.stat("http.ingress_http.downstream_cx_total")
    assert after - before == 1, f"{after - before} connections for 10 keep-alive requests"


def test_client_credentials_rfc9112_keep_alive_after_error_answers(envoy_main):
    """4xx answers to complete requests keep the connection too."""
    before = envoy_main.stat("http.ingress_http.downstream_cx_total")
    with requests.Session() as s:
        assert token_request(envoy_main, DEMO_CLIENT, scope="admin", session=s).status_code == 400
        assert token_request(envoy_main, DEMO_CLIENT, data="grant_type=password", session=s).status_code == 400
        assert token_request(envoy_main, None, session=s).status_code == 401
        assert token_request(envoy_main, DEMO_CLIENT, session=s).status_code == 200
    after = envoy_main.stat("http.ingress_http.downstream_cx_total")
    assert after - before == 1, f"{after - before} connections for 4 keep-alive requests"
