"""The FAPI 2.0 Security Profile ("profile": "fapi2") through a real Envoy.

FAPI 2.0 Security Profile §5.3.2.1 (authorization server): PAR only, PKCE S256, redirect_uri at
PAR, confidential clients authenticated by private_key_jwt (or mTLS, not offered), sender
constrained tokens (here DPoP), an assertion audience that is the issuer identifier, PS256 /
ES256 / EdDSA only, codes (and request_uris) of at most 60 s.

Client side with Authlib (private_key_jwt via PrivateKeyJWT on an OAuth2Session, PKCE S256) for
the happy path and joserfc for every hand-made assertion and DPoP proof; tokens verified with
PyJWT against GET /oauth/jwks; cnf.jkt compared with the RFC 7638 thumbprint computed by the
test. Every refusal is followed by a valid request that succeeds.

Envoy: envoy_fapi2 (support/fixtures_pop.py): AC_ISSUER, jwt_authn, EdDSA signing key, every client of
ac_plugin_config (client_secret_basic and public ones too) plus fapi-client.
"""
from __future__ import annotations

import time
import urllib.parse
from typing import Any

import pytest
import requests

from support.fixtures_envoy import validate_plugin_config
from support.fixtures_pop import fapi2_plugin_config
from helpers import (
    ACCESS_TOKEN_LIFETIME,
    DEMO_CLIENT,
    FAPI2_ALGS,
    FAPI2_ADVERTISED_ALGS,
    FAPI_CLIENT,
    FAPI_REDIRECT,
    FORM,
    RP_CLIENT,
    RP_REDIRECT,
    SPA_CLIENT,
    SPA_REDIRECT,
    ClientKey,
    assert_dpop_token_response,
    assert_oauth_error,
    assertion_form,
    authlib_session,
    authorize_request,
    client_assertion,
    code_form,
    dpop_proof,
    endpoint_urls,
    pkce_pair,
    post_form,
    redirect_params,
    verify_access_token,
    verify_id_token,
)

FAPI = FAPI_CLIENT.client_id
METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.fixture
def urls(envoy_fapi2) -> dict[str, str]:
    u = endpoint_urls(envoy_fapi2)
    assert u["issuer"] == envoy_fapi2.issuer
    return u


def par_form(**params: str | None) -> dict[str, str]:
    """A complete FAPI authorization request for fapi-client (PKCE S256); None drops a field."""
    _, challenge = pkce_pair()
    form = {"response_type": "code", "redirect_uri": FAPI_REDIRECT, "scope": "openid read", "state": "st",
            "code_challenge": challenge, "code_challenge_method": "S256", **params}
    return {k: v for k, v in form.items() if v is not None}


def fapi_par(envoy, u, client_keys, *, form: dict[str, str] | None = None, assertion: str | None = None,
             dpop: str | None = None) -> requests.Response:
    a = assertion or client_assertion(client_keys.fapi_es, FAPI, u["issuer"])
    return post_form(envoy.par_url, dict(form or par_form(), **assertion_form(a)), dpop=dpop)


def valid_par(envoy, u, client_keys) -> None:
    r = fapi_par(envoy, u, client_keys)
    assert r.status_code == 201, r.text


def fapi_code(envoy, u, client_keys, login_jwt: str, *, par_dpop: ClientKey | None = None) -> tuple[str, str]:
    """PAR (private_key_jwt, aud = issuer; a DPoP proof if par_dpop) then authorize: (code, verifier)."""
    verifier, challenge = pkce_pair()
    form = par_form(code_challenge=challenge)
    r = fapi_par(envoy, u, client_keys, form=form, dpop=dpop_proof(par_dpop, u["par"]) if par_dpop else None)
    assert r.status_code == 201, r.text
    q = authorize_request(envoy, {"client_id": FAPI, "request_uri": r.json()["request_uri"]}, login_jwt=login_jwt)
    p = redirect_params(q, FAPI_REDIRECT)
    assert p.get("iss") == envoy.issuer and p.get("state") == "st", p
    return p["code"], verifier


def fapi_redeem(envoy, u, client_keys, code: str, verifier: str, *, dpop: str | None,
                assertion: str | None = None) -> requests.Response:
    a = assertion or client_assertion(client_keys.fapi_es, FAPI, u["issuer"])
    return post_form(envoy.token_url, dict(code_form(FAPI_CLIENT, code, verifier), **assertion_form(a)), dpop=dpop)


# --------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("path", METADATA_PATHS)
def test_fapi2_sp_5_3_2_1_metadata_rfc8414(envoy_fapi2, path):
    m = requests.get(envoy_fapi2.base_url + path, timeout=5).json()
    assert m["require_pushed_authorization_requests"] is True, m
    assert m["token_endpoint_auth_methods_supported"] == ["private_key_jwt"], m
    assert m["code_challenge_methods_supported"] == ["S256"], m
    dpop_algs = m["dpop_signing_alg_values_supported"]
    assert set(dpop_algs) == set(FAPI2_ADVERTISED_ALGS) and len(dpop_algs) == 4 and "RS256" not in dpop_algs, dpop_algs
    auth_algs = m["token_endpoint_auth_signing_alg_values_supported"]
    assert sorted(auth_algs) == ["ES256", "Ed25519", "EdDSA", "PS256"], auth_algs
    assert m["pushed_authorization_request_endpoint"] == m["issuer"] + "/oauth/pushed-authorization"


# --------------------------------------------------------------------------- the happy path
def test_fapi2_sp_5_3_2_1_happy_path_authlib_par_authorize_token_refresh_with_dpop(envoy_fapi2, client_keys, login_service, urls):
    """Authlib: PAR (private_key_jwt, assertion aud = issuer, PKCE S256, a DPoP proof for the PAR
    URL) -> authorize (login JWT through jwt_authn) -> token (private_key_jwt + DPoP) -> refresh
    (private_key_jwt + DPoP). Tokens bound to the DPoP key: cnf.jkt = its RFC 7638 thumbprint."""
    e = envoy_fapi2
    dpop_key = ClientKey("EdDSA", None)
    login_iat = int(time.time()) - 20
    login_jwt = login_service.sign("alice", iat=login_iat)
    verifier = pkce_pair()[0]

    def dpop_headers(htu: str) -> dict[str, str]:
        return {"Content-Type": FORM, "Accept": "application/json", "DPoP": dpop_proof(dpop_key, htu)}

    client = authlib_session(FAPI_CLIENT, client_keys.fapi_es, urls["issuer"], scope="openid read",
                             redirect_uri=FAPI_REDIRECT, code_challenge_method="S256")
    try:
        uri, state = client.create_authorization_url(e.par_url, code_verifier=verifier, nonce="n-fapi")
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(uri).query))
        assert params["code_challenge_method"] == "S256"
        r = client.post(e.par_url, data=params, headers=dpop_headers(urls["par"]),
                        auth=client.client_auth("private_key_jwt"))
        assert r.status_code == 201, r.text
        pushed = r.json()
        assert pushed["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
        assert 1 <= pushed["expires_in"] <= 60, pushed  # FAPI 2.0: short-lived

        a = authorize_request(e, {"client_id": FAPI, "request_uri": pushed["request_uri"]}, login_jwt=login_jwt)
        back = redirect_params(a, FAPI_REDIRECT)
        assert back["state"] == state and back["iss"] == e.issuer, back

        token = client.fetch_token(e.token_url, authorization_response=a.headers["Location"],
                                   code_verifier=verifier, headers=dpop_headers(urls["token"]))
        _check_bound(e, token, dpop_key, sub="alice", auth_time=login_iat)
        verify_id_token(token["id_token"], token["access_token"], e, client_id=FAPI, sub="alice",
                        nonce="n-fapi", auth_time=login_iat)

        t2 = client.refresh_token(e.token_url, refresh_token=token["refresh_token"], headers=dpop_headers(urls["token"]))
        _check_bound(e, t2, dpop_key, sub="alice", auth_time=login_iat)
        # Not rotated under the profile (§5.3.2.1): the answer has no new refresh token, and
        # Authlib keeps the one it holds (RFC 6749 §6).
        assert t2["refresh_token"] == token["refresh_token"]

        # Every token request carries a proof: a refresh without one is refused (not spent).
        r = client.post(e.token_url, data={"grant_type": "refresh_token", "refresh_token": t2["refresh_token"]},
                        headers={"Content-Type": FORM}, auth=client.client_auth("private_key_jwt"))
        assert_oauth_error(r, 400, "invalid_dpop_proof")
        t3 = client.refresh_token(e.token_url, refresh_token=t2["refresh_token"], headers=dpop_headers(urls["token"]))
        _check_bound(e, t3, dpop_key, sub="alice", auth_time=login_iat)
    finally:
        client.close()


def _check_bound(envoy, token: dict[str, Any], key: ClientKey, *, sub: str, auth_time: int) -> None:
    assert token["token_type"] == "DPoP", token
    assert token["dpop_access_token_bound"] is True and token["dpop_signing_alg"] == key.alg, token
    assert token["expires_in"] == ACCESS_TOKEN_LIFETIME
    _, claims = verify_access_token(token["access_token"], envoy, client_id=FAPI, scope="openid read",
                                    lifetime=ACCESS_TOKEN_LIFETIME, sub=sub)
    assert claims["cnf"] == {"jkt": key.thumbprint()}, claims
    assert claims.get("auth_time") == auth_time, claims


def test_fapi2_sp_5_3_2_1_rfc9449_10_1_code_bound_at_par_joserfc(envoy_fapi2, client_keys, login_service, urls):
    """The same flow with joserfc proofs: the PAR proof binds the code to its key, so redeeming
    with another key's proof is invalid_grant; the right key gets the bound token."""
    e = envoy_fapi2
    a, b = ClientKey("ES256", None), ClientKey("ES256", None)
    code, verifier = fapi_code(e, urls, client_keys, login_service.sign("bob"), par_dpop=a)
    assert_oauth_error(fapi_redeem(e, urls, client_keys, code, verifier, dpop=dpop_proof(b, urls["token"])),
                       400, "invalid_grant")
    r = fapi_redeem(e, urls, client_keys, code, verifier, dpop=dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, e, a, client_id=FAPI, scope="openid read", sub="bob")


# --------------------------------------------------------------------------- what the profile requires
def test_fapi2_sp_5_3_2_1_token_request_without_dpop_is_invalid_dpop_proof(envoy_fapi2, client_keys, login_service, urls):
    e = envoy_fapi2
    code, verifier = fapi_code(e, urls, client_keys, login_service.sign("carol"))
    assert_oauth_error(fapi_redeem(e, urls, client_keys, code, verifier, dpop=None), 400, "invalid_dpop_proof")
    key = ClientKey("PS256", None)
    r = fapi_redeem(e, urls, client_keys, code, verifier, dpop=dpop_proof(key, urls["token"]))
    assert_dpop_token_response(r, e, key, client_id=FAPI, scope="openid read", sub="carol")


def test_fapi2_sp_5_3_2_1_authorize_without_par_is_refused(envoy_fapi2, client_keys, login_service, urls):
    """PAR is required for every client: a complete plain authorization request is refused the
    existing way (400 invalid_request shown, nothing redirected); through PAR it works."""
    e = envoy_fapi2
    params = dict(par_form(), client_id=FAPI)
    a = authorize_request(e, params, login_jwt=login_service.sign("dave"))
    assert_oauth_error(a, 400, "invalid_request")
    assert "Location" not in a.headers
    for client, redirect in ((RP_CLIENT, RP_REDIRECT), (SPA_CLIENT, SPA_REDIRECT)):
        plain = dict(par_form(redirect_uri=redirect, scope="openid read"), client_id=client.client_id)
        a = authorize_request(e, plain, login_jwt=login_service.sign("dave"))
        assert_oauth_error(a, 400, "invalid_request")
        assert "Location" not in a.headers
    fapi_code(e, urls, client_keys, login_service.sign("dave"))


@pytest.mark.parametrize("params", [
    {"code_challenge": None, "code_challenge_method": None},
    {"code_challenge_method": "plain"},
    {"code_challenge_method": None},
    {"redirect_uri": None},
], ids=["no-pkce", "pkce-plain", "pkce-method-missing", "no-redirect-uri"])
def test_fapi2_sp_5_3_2_1_par_requires_pkce_s256_and_redirect_uri(envoy_fapi2, client_keys, urls, params):
    r = fapi_par(envoy_fapi2, urls, client_keys, form=par_form(**params))
    assert_oauth_error(r, 400, "invalid_request")
    assert "request_uri" not in r.json()
    valid_par(envoy_fapi2, urls, client_keys)


def test_fapi2_sp_5_3_2_1_only_private_key_jwt_authenticates(envoy_fapi2, client_keys, urls):
    """client_secret_basic / client_secret_post clients and public clients are 401
    invalid_client at PAR and at the token endpoint (they are in the configuration, the profile
    refuses them at request time)."""
    e = envoy_fapi2
    any_key = ClientKey("ES256", None)
    attempts = [
        # rp (client_secret_basic) at PAR and at the token endpoint
        post_form(e.par_url, dict(par_form(redirect_uri=RP_REDIRECT)), basic=RP_CLIENT,
                  dpop=dpop_proof(any_key, urls["par"])),
        post_form(e.token_url, {"grant_type": "authorization_code", "code": "A" * 27, "redirect_uri": RP_REDIRECT,
                                "code_verifier": pkce_pair()[0]}, basic=RP_CLIENT,
                  dpop=dpop_proof(any_key, urls["token"])),
        post_form(e.par_url, dict(par_form(redirect_uri=RP_REDIRECT), client_id=RP_CLIENT.client_id,
                                  client_secret=RP_CLIENT.secret or "")),
        # demo-client: client_credentials with Basic, with the secret in the body, with a proof
        post_form(e.token_url, {"grant_type": "client_credentials"}, basic=DEMO_CLIENT,
                  dpop=dpop_proof(any_key, urls["token"])),
        post_form(e.token_url, {"grant_type": "client_credentials", "client_id": DEMO_CLIENT.client_id,
                                "client_secret": DEMO_CLIENT.secret or ""}, dpop=dpop_proof(any_key, urls["token"])),
        # public clients (token_endpoint_auth_method none)
        post_form(e.par_url, dict(par_form(redirect_uri=SPA_REDIRECT, scope="openid read"),
                                  client_id=SPA_CLIENT.client_id), dpop=dpop_proof(any_key, urls["par"])),
        post_form(e.par_url, dict(par_form(redirect_uri="http://127.0.0.1:8080/callback", scope="read"),
                                  client_id="demo-public")),
        post_form(e.token_url, {"grant_type": "authorization_code", "code": "A" * 27, "client_id": SPA_CLIENT.client_id,
                                "redirect_uri": SPA_REDIRECT, "code_verifier": pkce_pair()[0]},
                  dpop=dpop_proof(any_key, urls["token"])),
    ]
    for r in attempts:
        assert_oauth_error(r, 401, "invalid_client")
        valid_par(e, urls, client_keys)


def test_fapi2_sp_5_3_2_1_assertion_audience_must_be_the_issuer_string(envoy_fapi2, client_keys, login_service, urls):
    """FAPI 2.0 §5.3.2.1: the assertion's aud is the issuer identifier, as a string. The token
    or PAR endpoint URL (accepted by the default profile) and an array are refused."""
    e = envoy_fapi2
    for aud in (urls["par"], urls["token"], [urls["issuer"]]):
        r = fapi_par(e, urls, client_keys, assertion=client_assertion(client_keys.fapi_es, FAPI, aud))
        assert_oauth_error(r, 401, "invalid_client")
        valid_par(e, urls, client_keys)
    code, verifier = fapi_code(e, urls, client_keys, login_service.sign("erin"))
    key = ClientKey("ES256", None)
    for aud in (urls["token"], [urls["issuer"]], [urls["issuer"], urls["token"]]):
        r = fapi_redeem(e, urls, client_keys, code, verifier, dpop=dpop_proof(key, urls["token"]),
                        assertion=client_assertion(client_keys.fapi_es, FAPI, aud))
        assert_oauth_error(r, 401, "invalid_client")
        valid_par(e, urls, client_keys)
    r = fapi_redeem(e, urls, client_keys, code, verifier, dpop=dpop_proof(key, urls["token"]))
    assert_dpop_token_response(r, e, key, client_id=FAPI, scope="openid read", sub="erin")


def test_fapi2_sp_5_4_rs256_assertions_and_proofs_are_refused(envoy_fapi2, client_keys, login_service, urls):
    """RS256 is out (FAPI 2.0 §5.4: PS256, ES256, EdDSA): the client's RSA key signing an RS256
    assertion is invalid_client, PS256 works; an RS256 DPoP proof is invalid_dpop_proof, PS256
    works (and is what dpop_signing_alg says)."""
    e = envoy_fapi2
    rsa = client_keys.fapi_rsa
    r = fapi_par(e, urls, client_keys, assertion=client_assertion(rsa, FAPI, urls["issuer"], alg="RS256"))
    assert_oauth_error(r, 401, "invalid_client")
    r = fapi_par(e, urls, client_keys, assertion=client_assertion(rsa, FAPI, urls["issuer"], alg="PS256"))
    assert r.status_code == 201, r.text

    code, verifier = fapi_code(e, urls, client_keys, login_service.sign("frank"))
    proof_key = ClientKey("RS256", None)
    r = fapi_redeem(e, urls, client_keys, code, verifier, dpop=dpop_proof(proof_key, urls["token"], alg="RS256"))
    assert_oauth_error(r, 400, "invalid_dpop_proof")
    r = fapi_redeem(e, urls, client_keys, code, verifier, dpop=dpop_proof(proof_key, urls["token"], alg="PS256"),
                    assertion=client_assertion(rsa, FAPI, urls["issuer"], alg="PS256"))
    assert_dpop_token_response(r, e, proof_key, client_id=FAPI, scope="openid read", sub="frank", alg="PS256")


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("lifetimes", [
    {"code": "120s"},
    {"code": "61s"},
    {"request_uri": "90s"},
], ids=["code-120s", "code-61s", "request-uri-90s"])
def test_fapi2_sp_5_3_2_1_code_and_request_uri_lifetimes_capped_at_60s(tmp_path, keys, client_keys, login_service, lifetimes):
    """A fapi2 configuration with a code or request_uri lifetime over 60 s is refused at start
    (on_configure fails, Envoy does not load it); the same configuration with 60 s or less
    loads."""
    def config(lt: dict[str, str]) -> dict[str, Any]:
        cfg = fapi2_plugin_config(login_service, client_keys)
        cfg["lifetimes"] = dict(cfg["lifetimes"], **lt)
        return cfg

    for i, good in enumerate(({"code": "60s", "request_uri": "60s"}, {"code": "30s"})):
        (tmp_path / f"ok{i}").mkdir()
        rc, out = validate_plugin_config(tmp_path / f"ok{i}", config(good), [keys.ed25519])
        assert rc == 0, f"profile fapi2 with lifetimes {good} was refused:\n{out[-3000:]}"
    (tmp_path / "over").mkdir()
    rc, out = validate_plugin_config(tmp_path / "over", config(lifetimes), [keys.ed25519])
    assert rc != 0, f"Envoy accepted profile fapi2 with lifetimes {lifetimes}"
    assert next(iter(lifetimes)) in out, out[-2000:]
