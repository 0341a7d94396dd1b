"""DPoP (RFC 9449): sender-constrained tokens through a real Envoy.

Proofs are signed with joserfc (header typ dpop+jwt, alg, jwk; claims jti, htm, htu, iat), never
by hand. The access token's `cnf.jkt` is compared with the RFC 7638 thumbprint computed in the
test (helpers.jwk_thumbprint: SHA-256 over the required members in lexicographic order), and the
token itself is verified with PyJWT against GET /oauth/jwks. `htu` is the endpoint URL the
metadata names (envoy_pop's issuer is AC_ISSUER, https, not where the test connects). Every
refusal is followed by a valid request that succeeds.

Envoys: envoy_pop (default profile, dpop.require_nonce false), envoy_dpop_nonce (require_nonce).
"""
from __future__ import annotations

import json
import random
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest
import requests

from support.fixtures_pop import DPOP_PROOF_LIFETIME, DPOP_SKEW
from helpers import (
    DEMO_CLIENT,
    DPOP_BOUND_CLIENT,
    DPOP_PUBLIC_CLIENT,
    FORM,
    PK_CLIENT,
    RP_CLIENT,
    RP_REDIRECT,
    VERIFY_ALGS,
    ADVERTISED_ALGS,
    ClientKey,
    assert_bearer_token_response,
    assert_dpop_token_response,
    assert_oauth_error,
    assertion_form,
    authlib_session,
    authorize_request,
    b64url,
    basic_auth,
    client_assertion,
    code_form,
    dpop_proof,
    endpoint_urls,
    hmac_jws,
    jwk_thumbprint,
    jws_parts,
    lax_registry,
    pkce_pair,
    post_form,
    pushed_code,
    raw_post,
    redirect_params,
    unsigned_jws,
)

METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
DEMO = DEMO_CLIENT.client_id


@pytest.fixture
def urls(envoy_pop) -> dict[str, str]:
    return endpoint_urls(envoy_pop)


def cc_dpop(envoy, proof: str | None, *, client=DEMO_CLIENT, scope: str = "read",
            session: requests.Session | None = None) -> requests.Response:
    """client_credentials (client_secret_basic) with one DPoP header, or none."""
    return post_form(envoy.token_url, {"grant_type": "client_credentials", "scope": scope}, basic=client,
                     dpop=proof, session=session)


def valid_dpop(envoy, token_url: str, key: ClientKey | None = None) -> dict[str, Any]:
    """The request that must work after every refusal: a fresh proof, a bound token."""
    key = key or ClientKey("ES256", None)
    r = cc_dpop(envoy, dpop_proof(key, token_url))
    return assert_dpop_token_response(r, envoy, key, client_id=DEMO, scope="read")


def redeem(envoy, client, code: str, verifier: str, proof: str | None) -> requests.Response:
    form = code_form(client, code, verifier)
    if client.secret is None:
        form["client_id"] = client.client_id
    return post_form(envoy.token_url, form, basic=client if client.secret else None, dpop=proof)


def refresh(envoy, client, rt: str, proof: str | None) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": rt}
    if client.secret is None:
        form["client_id"] = client.client_id
    return post_form(envoy.token_url, form, basic=client if client.secret else None, dpop=proof)


# --------------------------------------------------------------------------- metadata, thumbprints
@pytest.mark.parametrize("path", METADATA_PATHS)
def test_rfc9449_5_1_metadata_dpop_signing_alg_values_supported(envoy_pop, path):
    m = requests.get(envoy_pop.base_url + path, timeout=5).json()
    algs = m.get("dpop_signing_alg_values_supported")
    assert isinstance(algs, list) and set(algs) == set(ADVERTISED_ALGS) and len(algs) == len(ADVERTISED_ALGS), algs


def test_rfc7638_3_thumbprint_helper_matches_the_rfc_example():
    """The test's own thumbprint code against RFC 7638 §3.1's worked example (an RSA key)."""
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
         "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
         "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
         "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
    jwk = {"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    for alg in ("ES256", "EdDSA", "PS256"):
        k = ClientKey(alg, "x")
        assert k.thumbprint() == k.key.thumbprint()  # joserfc agrees


# --------------------------------------------------------------------------- bound tokens
@pytest.mark.parametrize("alg", VERIFY_ALGS)
def test_rfc9449_5_client_credentials_token_bound_to_the_proof_key(envoy_pop, urls, alg):
    """token_type DPoP, dpop_access_token_bound, dpop_signing_alg = the proof's alg, and
    cnf.jkt = the RFC 7638 thumbprint of the proof's jwk (its kid, use and alg members do not
    count)."""
    key = ClientKey(alg, f"proof-{alg.lower()}", jwk_alg=True)
    assert {"kid", "use", "alg"} <= set(key.public_jwk())
    r = cc_dpop(envoy_pop, dpop_proof(key, urls["token"]))
    claims = assert_dpop_token_response(r, envoy_pop, key, client_id=DEMO, scope="read")
    assert claims["cnf"]["jkt"] == jwk_thumbprint({"kty": key.kty, **{
        k: v for k, v in key.public_jwk().items() if k in ("crv", "x", "y", "n", "e")}})


def test_rfc9449_5_no_proof_means_a_bearer_token(envoy_pop):
    r = cc_dpop(envoy_pop, None)
    assert_bearer_token_response(r, envoy_pop, client_id=DEMO, scope="read")


def test_rfc9449_5_authlib_private_key_jwt_client_with_a_dpop_proof(envoy_pop, client_keys, urls):
    """A real client library (Authlib, private_key_jwt) sending the DPoP header: the token is
    bound to the proof's key, which is not the client's assertion key."""
    proof_key = ClientKey("EdDSA", None)
    with authlib_session(PK_CLIENT, client_keys.pk_es, urls["token"], scope="read") as client:
        for _ in range(2):
            token = client.fetch_token(envoy_pop.token_url, grant_type="client_credentials", headers={
                "Content-Type": FORM, "Accept": "application/json", "DPoP": dpop_proof(proof_key, urls["token"])})
            assert token["token_type"] == "DPoP" and token["dpop_access_token_bound"] is True, token
            assert token["dpop_signing_alg"] == "EdDSA", token
            claims = jws_parts(token["access_token"])[1]
            assert claims["cnf"] == {"jkt": proof_key.thumbprint()} != {"jkt": client_keys.pk_es.thumbprint()}
    # Verified properly (PyJWT, JWKS) on one more request.
    r = post_form(envoy_pop.token_url, {"grant_type": "client_credentials", "scope": "read", **assertion_form(
        client_assertion(client_keys.pk_es, PK_CLIENT.client_id, urls["token"]))},
        dpop=dpop_proof(proof_key, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, proof_key, client_id=PK_CLIENT.client_id, scope="read")


def test_rfc9449_5_2_dpop_bound_access_tokens_client_needs_a_proof(envoy_pop, urls):
    """dpop_bound_access_tokens true (RFC 9449 §5.2): no proof is invalid_dpop_proof."""
    client = DPOP_BOUND_CLIENT
    assert_oauth_error(cc_dpop(envoy_pop, None, client=client), 400, "invalid_dpop_proof")
    key = ClientKey("ES256", None)
    r = cc_dpop(envoy_pop, dpop_proof(key, urls["token"]), client=client)
    assert_dpop_token_response(r, envoy_pop, key, client_id=client.client_id, scope="read")


@pytest.mark.parametrize("variant", ["iat-near-the-lifetime", "iat-within-the-skew-ahead", "htu-upper-case-host",
                                     "htu-default-port", "htu-query-and-fragment"])
def test_rfc9449_4_3_accepted_iat_and_htu_forms(envoy_pop, urls, variant):
    """iat inside [now - proof_lifetime - skew, now + skew]; htu compared after normalisation
    (scheme and host case, default port) without query and fragment."""
    key = ClientKey("ES256", None)
    now = int(time.time())
    issuer = urls["issuer"]
    assert issuer == "https://as.example.test" and urls["token"] == issuer + "/oauth/token"
    kw: dict[str, Any] = {
        "iat-near-the-lifetime": {"iat": now - DPOP_PROOF_LIFETIME + 5},
        "iat-within-the-skew-ahead": {"iat": now + DPOP_SKEW - 4},
        "htu-upper-case-host": {"htu": "HTTPS://AS.Example.TEST/oauth/token"},
        "htu-default-port": {"htu": "https://as.example.test:443/oauth/token"},
        "htu-query-and-fragment": {"htu": "https://as.example.test/oauth/token?x=1#frag"},
    }[variant]
    htu = kw.pop("htu", urls["token"])
    r = cc_dpop(envoy_pop, dpop_proof(key, htu, **kw))
    assert_dpop_token_response(r, envoy_pop, key, client_id=DEMO, scope="read")


# --------------------------------------------------------------------------- refusals
def _now() -> int:
    return int(time.time())


def _swapped(key: ClientKey, u: dict[str, str]) -> str:
    good = dpop_proof(key, u["token"])
    h, _, s = good.split(".")
    _, claims = jws_parts(good)
    claims["htu"] = "https://as.example.test/elsewhere"
    return f"{h}.{b64url(json.dumps(claims).encode())}.{s}"


ProofCase = Callable[[ClientKey, dict[str, str]], str]

PROOF_REFUSALS: dict[str, ProofCase] = {
    "htm-get": lambda k, u: dpop_proof(k, u["token"], htm="GET"),
    "htm-missing": lambda k, u: dpop_proof(k, u["token"], htm=None),
    "htu-the-par-endpoint": lambda k, u: dpop_proof(k, u["par"]),
    "htu-another-host": lambda k, u: dpop_proof(k, "https://other.example.test/oauth/token"),
    "htu-another-port": lambda k, u: dpop_proof(k, "https://as.example.test:8443/oauth/token"),
    "htu-http-scheme": lambda k, u: dpop_proof(k, "http://as.example.test/oauth/token"),
    "htu-path-case": lambda k, u: dpop_proof(k, "https://as.example.test/OAUTH/TOKEN"),
    "htu-relative": lambda k, u: dpop_proof(k, "/oauth/token"),
    # The address the test connects to is not the endpoint URL of the metadata.
    "htu-the-loopback-url": lambda k, u: dpop_proof(k, u["loopback_token"]),
    "htu-missing": lambda k, u: dpop_proof(k, None),
    "iat-stale": lambda k, u: dpop_proof(k, u["token"], iat=_now() - DPOP_PROOF_LIFETIME - DPOP_SKEW - 30),
    "iat-in-the-future": lambda k, u: dpop_proof(k, u["token"], iat=_now() + DPOP_SKEW + 30),
    "iat-missing": lambda k, u: dpop_proof(k, u["token"], iat=None),
    "iat-not-a-number": lambda k, u: dpop_proof(k, u["token"], iat="now"),
    "jti-missing": lambda k, u: dpop_proof(k, u["token"], jti=None),
    "private-key-in-jwk": lambda k, u: dpop_proof(k, u["token"], jwk=k.private_jwk()),
    "jwk-missing": lambda k, u: dpop_proof(k, u["token"], jwk=None),
    "jwk-not-an-object": lambda k, u: dpop_proof(k, u["token"], jwk="not-a-jwk",
                                                  registry=lax_registry(k.alg, "jwk")),
    "jwk-of-another-key": lambda k, u: dpop_proof(k, u["token"], sign_with=ClientKey(k.alg, None).key),
    "jwk-of-another-type": lambda k, u: dpop_proof(k, u["token"], jwk=ClientKey("EdDSA", None).public_jwk()),
    "payload-swapped-signature-kept": lambda k, u: _swapped(k, u),
    "typ-jwt": lambda k, u: dpop_proof(k, u["token"], typ="JWT"),
    "typ-missing": lambda k, u: dpop_proof(k, u["token"], typ=None),
    "alg-none": lambda k, u: unsigned_jws({"typ": "dpop+jwt", "jwk": k.public_jwk()},
                                          jws_parts(dpop_proof(k, u["token"]))[1]),
    "hs256-keyed-with-the-public-pem": lambda k, u: hmac_jws(
        {"typ": "dpop+jwt", "jwk": k.public_jwk()}, jws_parts(dpop_proof(k, u["token"]))[1], k.pem_public()),
    "hs256-with-an-oct-jwk": lambda k, u: hmac_jws(
        {"typ": "dpop+jwt", "jwk": {"kty": "oct", "k": b64url(b"s" * 32)}},
        jws_parts(dpop_proof(k, u["token"]))[1], b"s" * 32),
    "not-a-jwt": lambda k, u: "not-a-jwt",
    "empty": lambda k, u: "",
}


@pytest.mark.parametrize("case", list(PROOF_REFUSALS))
def test_rfc9449_4_3_invalid_proof_is_invalid_dpop_proof(envoy_pop, urls, case):
    """RFC 9449 §4.3 checks, each failing alone: 400 invalid_dpop_proof, no token; then a valid
    proof works."""
    key = ClientKey("ES256", None)
    proof = PROOF_REFUSALS[case](key, dict(urls, loopback_token=envoy_pop.token_url))
    r = cc_dpop(envoy_pop, proof)
    assert_oauth_error(r, 400, "invalid_dpop_proof")
    valid_dpop(envoy_pop, urls["token"])


def test_rfc9449_11_1_replayed_proof_is_invalid_dpop_proof(envoy_pop, urls):
    """A proof's jti is single use (within its acceptance window): the same proof again, on new
    connections (so on both workers), and a new proof reusing the jti, are refused."""
    key = ClientKey("ES256", None)
    proof = dpop_proof(key, urls["token"])
    assert_dpop_token_response(cc_dpop(envoy_pop, proof), envoy_pop, key, client_id=DEMO, scope="read")
    for _ in range(6):
        assert_oauth_error(cc_dpop(envoy_pop, proof), 400, "invalid_dpop_proof")
        valid_dpop(envoy_pop, urls["token"], key)
    again = dpop_proof(key, urls["token"], jti=jws_parts(proof)[1]["jti"], iat=_now() - 1)
    assert_oauth_error(cc_dpop(envoy_pop, again), 400, "invalid_dpop_proof")
    valid_dpop(envoy_pop, urls["token"], key)


def test_rfc9449_4_3_two_dpop_headers_are_invalid_dpop_proof(envoy_pop, urls):
    """§4.3 check 1: exactly one DPoP header. Two header lines (http.client, since requests keeps
    one value per name), whether the same proof twice or two valid proofs."""
    a, b = ClientKey("ES256", None), ClientKey("EdDSA", None)
    auth = ("Authorization", basic_auth(DEMO_CLIENT.client_id, DEMO_CLIENT.secret or ""))
    form = {"grant_type": "client_credentials", "scope": "read"}
    path = envoy_pop.plugin_config.get("endpoints", {}).get("token", "/oauth/token")
    same = dpop_proof(a, urls["token"])
    for lines in ([("DPoP", same), ("DPoP", same)],
                  [("DPoP", dpop_proof(a, urls["token"])), ("DPoP", dpop_proof(b, urls["token"]))],
                  [("DPoP", dpop_proof(a, urls["token"])), ("dpop", dpop_proof(a, urls["token"]))]):
        status, headers, body = raw_post(envoy_pop, path, form, [auth, *lines])
        assert status == 400 and body.get("error") == "invalid_dpop_proof", (status, body)
        assert "access_token" not in body and "no-store" in headers.get("cache-control", "")
        valid_dpop(envoy_pop, urls["token"])
    # One DPoP line through the same raw client works (the request itself is fine).
    status, _, body = raw_post(envoy_pop, path, form, [auth, ("DPoP", dpop_proof(a, urls["token"]))])
    assert status == 200 and body["token_type"] == "DPoP", body


# --------------------------------------------------------------------------- refresh tokens
def test_rfc9449_5_public_client_refresh_token_bound_to_the_dpop_key(envoy_pop, login_service, urls):
    """A public client's refresh token issued under DPoP is bound to that key (RFC 9449 §5):
    another key's proof is invalid_grant, no proof is invalid_dpop_proof, the same key works and
    each new access token is bound to it again."""
    c = DPOP_PUBLIC_CLIENT
    a, b = ClientKey("ES256", None), ClientKey("ES256", None)
    code, verifier = pushed_code(envoy_pop, login_service.sign("alice"), c, scope="openid read")
    r = redeem(envoy_pop, c, code, verifier, dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, a, client_id=c.client_id, scope="openid read", sub="alice")
    rt = r.json()["refresh_token"]

    assert_oauth_error(refresh(envoy_pop, c, rt, dpop_proof(b, urls["token"])), 400, "invalid_grant")
    r = refresh(envoy_pop, c, rt, dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, a, client_id=c.client_id, scope="openid read", sub="alice")
    rt = r.json()["refresh_token"]

    assert_oauth_error(refresh(envoy_pop, c, rt, None), 400, "invalid_dpop_proof")
    r = refresh(envoy_pop, c, rt, dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, a, client_id=c.client_id, scope="openid read", sub="alice")
    rt = r.json()["refresh_token"]

    # Another key with an otherwise perfect proof, again: still refused, still not spent.
    assert_oauth_error(refresh(envoy_pop, c, rt, dpop_proof(b, urls["token"])), 400, "invalid_grant")
    r = refresh(envoy_pop, c, rt, dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, a, client_id=c.client_id, scope="openid read", sub="alice")


def test_rfc9449_5_confidential_refresh_token_not_bound_new_access_token_is(envoy_pop, login_service, urls):
    """A confidential client's refresh token is bound to the client, not to a key: a refresh
    with another key's proof gives a token bound to that key, without a proof a Bearer token."""
    a, b = ClientKey("ES256", None), ClientKey("PS256", None)
    code, verifier = pushed_code(envoy_pop, login_service.sign("bob"), RP_CLIENT, scope="openid read")
    r = redeem(envoy_pop, RP_CLIENT, code, verifier, dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, a, client_id="rp", scope="openid read", sub="bob")
    r = refresh(envoy_pop, RP_CLIENT, r.json()["refresh_token"], dpop_proof(b, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, b, client_id="rp", scope="openid read", sub="bob")
    r = refresh(envoy_pop, RP_CLIENT, r.json()["refresh_token"], None)
    assert_bearer_token_response(r, envoy_pop, client_id="rp", scope="openid read", sub="bob")
    r = refresh(envoy_pop, RP_CLIENT, r.json()["refresh_token"], dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, a, client_id="rp", scope="openid read", sub="bob")


def test_rfc9449_5_code_redeemed_without_proof_gives_bearer_tokens(envoy_pop, login_service):
    code, verifier = pushed_code(envoy_pop, login_service.sign("carol"), RP_CLIENT, scope="openid read")
    r = redeem(envoy_pop, RP_CLIENT, code, verifier, None)
    assert_bearer_token_response(r, envoy_pop, client_id="rp", scope="openid read", sub="carol")


# --------------------------------------------------------------------------- binding the code (§10)
def test_rfc9449_10_dpop_jkt_at_par_binds_the_code(envoy_pop, login_service, urls):
    a, b = ClientKey("ES256", None), ClientKey("ES256", None)
    code, verifier = pushed_code(envoy_pop, login_service.sign("alice"), RP_CLIENT, dpop_jkt=a.thumbprint())
    assert_oauth_error(redeem(envoy_pop, RP_CLIENT, code, verifier, dpop_proof(b, urls["token"])), 400, "invalid_grant")
    no_proof = redeem(envoy_pop, RP_CLIENT, code, verifier, None)
    assert_oauth_error(no_proof, 400, ("invalid_grant", "invalid_dpop_proof"))
    r = redeem(envoy_pop, RP_CLIENT, code, verifier, dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, a, client_id="rp", scope="openid read", sub="alice")


def test_rfc9449_10_dpop_jkt_at_authorize_binds_the_code(envoy_pop, login_service, urls):
    """dpop_jkt as a parameter of a plain (not pushed) authorization request."""
    a, b = ClientKey("EdDSA", None), ClientKey("EdDSA", None)
    verifier, challenge = pkce_pair()
    q = authorize_request(envoy_pop, {"client_id": "rp", "response_type": "code", "redirect_uri": RP_REDIRECT,
                                      "scope": "openid read", "state": "s", "code_challenge": challenge,
                                      "code_challenge_method": "S256", "dpop_jkt": a.thumbprint()},
                          login_jwt=login_service.sign("dave"))
    code = redirect_params(q, RP_REDIRECT)["code"]
    assert_oauth_error(redeem(envoy_pop, RP_CLIENT, code, verifier, dpop_proof(b, urls["token"])), 400, "invalid_grant")
    r = redeem(envoy_pop, RP_CLIENT, code, verifier, dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, a, client_id="rp", scope="openid read", sub="dave")


def test_rfc9449_10_1_dpop_proof_at_par_binds_the_code(envoy_pop, login_service, urls):
    """A DPoP header at PAR (htu = the PAR endpoint URL) binds the code to its key."""
    a, b = ClientKey("ES256", None), ClientKey("ES256", None)
    code, verifier = pushed_code(envoy_pop, login_service.sign("erin"), RP_CLIENT,
                                 dpop=lambda: dpop_proof(a, urls["par"]))
    assert_oauth_error(redeem(envoy_pop, RP_CLIENT, code, verifier, dpop_proof(b, urls["token"])), 400, "invalid_grant")
    r = redeem(envoy_pop, RP_CLIENT, code, verifier, dpop_proof(a, urls["token"]))
    assert_dpop_token_response(r, envoy_pop, a, client_id="rp", scope="openid read", sub="erin")


def test_rfc9449_10_1_par_proof_key_must_match_dpop_jkt(envoy_pop, urls):
    """PAR with a DPoP proof by one key and dpop_jkt naming another: invalid_dpop_proof. An
    invalid proof at PAR (htu = the token endpoint) is refused too; a consistent request works."""
    a, b = ClientKey("ES256", None), ClientKey("ES256", None)
    verifier, challenge = pkce_pair()
    base = {"response_type": "code", "redirect_uri": RP_REDIRECT, "scope": "read", "state": "s",
            "code_challenge": challenge, "code_challenge_method": "S256"}
    r = post_form(envoy_pop.par_url, dict(base, dpop_jkt=b.thumbprint()), basic=RP_CLIENT,
                  dpop=dpop_proof(a, urls["par"]))
    assert_oauth_error(r, 400, "invalid_dpop_proof")
    ok = post_form(envoy_pop.par_url, dict(base, dpop_jkt=a.thumbprint()), basic=RP_CLIENT,
                   dpop=dpop_proof(a, urls["par"]))
    assert ok.status_code == 201, ok.text
    r = post_form(envoy_pop.par_url, base, basic=RP_CLIENT, dpop=dpop_proof(a, urls["token"]))
    assert_oauth_error(r, 400, "invalid_dpop_proof")
    ok = post_form(envoy_pop.par_url, base, basic=RP_CLIENT, dpop=dpop_proof(a, urls["par"]))
    assert ok.status_code == 201, ok.text


# --------------------------------------------------------------------------- nonces (§8)
def test_rfc9449_8_server_provided_nonce(envoy_dpop_nonce):
    """require_nonce: a proof without the server's nonce (or with a wrong one) is 400
    use_dpop_nonce with a DPoP-Nonce header; the retry with it succeeds, and successful answers
    carry a DPoP-Nonce too."""
    e = envoy_dpop_nonce
    token_url = endpoint_urls(e)["token"]
    assert token_url == e.token_url  # loopback issuer here
    key = ClientKey("ES256", None)
    with requests.Session() as s:
        r = cc_dpop(e, dpop_proof(key, token_url), session=s)
        assert_oauth_error(r, 400, "use_dpop_nonce")
        nonce = r.headers.get("DPoP-Nonce")
        assert nonce and all(0x21 <= ord(ch) <= 0x7E for ch in nonce), r.headers  # RFC 9449 §8.1 NQCHAR

        r = cc_dpop(e, dpop_proof(key, token_url, nonce=nonce), session=s)
        assert_dpop_token_response(r, e, key, client_id=DEMO, scope="read")
        next_nonce = r.headers.get("DPoP-Nonce")
        assert next_nonce, r.headers

        r = cc_dpop(e, dpop_proof(key, token_url, nonce="not-the-servers-nonce"), session=s)
        assert_oauth_error(r, 400, "use_dpop_nonce")
        fresh = r.headers.get("DPoP-Nonce")
        assert fresh, r.headers
        r = cc_dpop(e, dpop_proof(key, token_url, nonce=fresh), session=s)
        assert_dpop_token_response(r, e, key, client_id=DEMO, scope="read")

        # The nonce from a successful answer works for the next request.
        r = cc_dpop(e, dpop_proof(key, token_url, nonce=next_nonce), session=s)
        assert_dpop_token_response(r, e, key, client_id=DEMO, scope="read")


def test_rfc9449_8_nonce_does_not_excuse_other_checks(envoy_dpop_nonce):
    """A proof with the right nonce but a wrong htm is still invalid_dpop_proof; a replayed
    proof with a nonce too."""
    e = envoy_dpop_nonce
    token_url = e.token_url
    key = ClientKey("EdDSA", None)
    nonce = cc_dpop(e, dpop_proof(key, token_url)).headers.get("DPoP-Nonce")
    assert nonce
    assert_oauth_error(cc_dpop(e, dpop_proof(key, token_url, htm="PUT", nonce=nonce)), 400, "invalid_dpop_proof")
    good = dpop_proof(key, token_url, nonce=nonce)
    assert_dpop_token_response(cc_dpop(e, good), e, key, client_id=DEMO, scope="read")
    assert_oauth_error(cc_dpop(e, good), 400, "invalid_dpop_proof")
    assert_dpop_token_response(cc_dpop(e, dpop_proof(key, token_url, nonce=nonce)), e, key,
                               client_id=DEMO, scope="read")


# --------------------------------------------------------------------------- robustness
BURST_TOTAL = 3000
BURST_WORKERS = 12


def _b64j(obj: Any) -> str:
    return b64url(json.dumps(obj).encode())


def _burst_jobs(envoy, ck, u: dict[str, str], rng: random.Random):
    """(kind, expected (status, error) or None for "any 4xx", fn(session) -> Response)."""
    tok = envoy.token_url
    pk = PK_CLIENT.client_id
    demo_auth = {"Content-Type": FORM, "Authorization": basic_auth(DEMO, DEMO_CLIENT.secret or "")}
    ec = ClientKey("ES256", None)
    rsa = ClientKey("PS256", None)
    cc = "grant_type=client_credentials&scope=read"

    def with_assertion(a: str) -> str:
        return cc + "&" + "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in assertion_form(a).items())

    def garbage_jws(header: Any, payload: Any = None) -> str:
        return ".".join([_b64j(header) if not isinstance(header, str) else header,
                         _b64j(payload if payload is not None else {"jti": "x", "htm": "POST", "htu": u["token"],
                                                                   "iat": int(time.time())}),
                         b64url(rng.randbytes(64))])

    def good_assertion() -> str:
        return client_assertion(ck.pk_es, pk, u["token"])

    def assertion_garbage() -> str:
        good = good_assertion()
        choice = rng.randrange(8)
        if choice == 0:
            return good[: rng.randint(1, len(good) - 1)]  # truncated
        if choice == 1:
            return ".".join(b64url(rng.randbytes(rng.randint(0, 300))) for _ in range(3))  # random base64
        if choice == 2:
            return _b64j({"alg": "ES256", "kid": "k" * 6000}) + "." + _b64j({"sub": pk}) + ".AAAA"  # huge
        if choice == 3:
            return garbage_jws(rng.choice([[], 1, "str", None, True, [{"alg": "ES256"}]]))  # header not an object
        if choice == 4:
            return garbage_jws({"alg": "ES256", "kid": ck.pk_es.kid}, rng.choice([[], "x", 7, None]))  # claims not an object
        if choice == 5:
            return b64url(b"[" * 3000 + b"]" * 3000) + "." + _b64j({}) + ".AAAA"  # deep nesting
        if choice == 6:
            return b64url(b"\xff\xfe\xfd{\"alg\":") + "." + b64url(rng.randbytes(50)) + "." + b64url(rng.randbytes(64))
        return good.replace(".", "..", 1)

    def proof_garbage() -> str:
        good = dpop_proof(ec, u["token"])
        choice = rng.randrange(9)
        if choice == 0:
            return good[: rng.randint(1, len(good) - 1)]
        if choice == 1:
            return ".".join(b64url(rng.randbytes(rng.randint(0, 400))) for _ in range(3))
        if choice == 2:
            return garbage_jws({"typ": "dpop+jwt", "alg": "ES256",
                                "jwk": rng.choice(["abc", 1, [], None, True, [ec.public_jwk()]])})  # jwk not an object
        if choice == 3:
            return garbage_jws(rng.choice([[], 1, "str", None, True]))
        if choice == 4:
            return garbage_jws({"typ": "dpop+jwt", "alg": rng.choice(["ES256", "PS256", "EdDSA", "RS256"]),
                                "jwk": rng.choice([
                                    {"kty": "EC", "crv": "P-256", "x": "!!!", "y": ""},
                                    {"kty": "EC", "crv": "P-256", "x": b64url(rng.randbytes(32)), "y": b64url(rng.randbytes(32))},
                                    {"kty": "EC", "crv": "P-521", "x": b64url(rng.randbytes(66)), "y": b64url(rng.randbytes(66))},
                                    {"kty": "OKP", "crv": "X25519", "x": b64url(rng.randbytes(32))},
                                    {"kty": "OKP", "crv": "Ed25519", "x": b64url(rng.randbytes(rng.randint(0, 64)))},
                                    {"kty": "RSA", "n": b64url(rng.randbytes(1024)), "e": "AQAB"},
                                    {"kty": "RSA", "n": b64url(rng.randbytes(256)), "e": b64url(rng.randbytes(300))},
                                    {"kty": "RSA", "n": "", "e": ""},
                                    {"kty": 7}, {}, {"kty": "oct", "k": "c2VjcmV0"}])})
        if choice == 5:
            return "A" * 30000 + "." + "B" * 100 + ".C"  # a huge header
        if choice == 6:
            return garbage_jws({"typ": "dpop+jwt", "alg": "ES256", "jwk": ec.public_jwk()},
                               rng.choice([[], "x", 7, None, {"htu": ["a"], "iat": "x", "jti": 5, "htm": {}}]))
        if choice == 7:
            return garbage_jws({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": "a" * 5000,
                                                                           "y": "b" * 5000}})
        return good + ".extra"

    kinds: dict[str, tuple[Any, Callable[[requests.Session], requests.Response]]] = {
        "valid-dpop": ((200, None), lambda s: s.post(tok, data=cc, headers=dict(demo_auth, DPoP=dpop_proof(ec, u["token"])))),
        "valid-pk": ((200, None), lambda s: s.post(tok, data=with_assertion(good_assertion()),
                                                   headers={"Content-Type": FORM})),
        "valid-pk-dpop-rsa": ((200, None), lambda s: s.post(tok, data=with_assertion(good_assertion()), headers={
            "Content-Type": FORM, "DPoP": dpop_proof(rsa, u["token"])})),
        "garbage-assertion": ((401, "invalid_client"), lambda s: s.post(tok, data=with_assertion(assertion_garbage()),
                                                                        headers={"Content-Type": FORM})),
        "garbage-proof": ((400, "invalid_dpop_proof"), lambda s: s.post(tok, data=cc, headers=dict(
            demo_auth, DPoP=proof_garbage()))),
        "garbage-both": (None, lambda s: s.post(tok, data=with_assertion(assertion_garbage()), headers={
            "Content-Type": FORM, "DPoP": proof_garbage()})),
        "garbage-proof-at-par": (None, lambda s: s.post(envoy.par_url, data="response_type=code&redirect_uri=" + (
            urllib.parse.quote(RP_REDIRECT, safe="")) + "&code_challenge_method=S256&code_challenge=" + pkce_pair()[1],
            headers={"Content-Type": FORM, "Authorization": basic_auth("rp", RP_CLIENT.secret or ""),
                     "DPoP": proof_garbage()})),
    }
    names = sorted(kinds)
    weights = [4 if n.startswith("valid") else 3 for n in names]
    for _ in range(BURST_TOTAL):
        name = rng.choices(names, weights)[0]
        yield name, kinds[name][0], kinds[name][1]


def test_rfc9449_rfc7523_burst_of_garbage_proofs_and_assertions(envoy_pop, client_keys, urls):
    """BURST_TOTAL requests from BURST_WORKERS threads mixing valid DPoP / private_key_jwt
    requests with garbage ones (truncated JWS, random base64, huge headers, headers and claims
    that are not JSON objects, jwk members that are not objects or not keys): no 5xx, every
    garbage request a 4xx, every valid one a 200, no wasm failure or trap, still serving."""
    rng = random.Random(9449)
    jobs = list(_burst_jobs(envoy_pop, client_keys, urls, rng))
    local = threading.local()

    def run(job):
        name, expected, fn = job
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        try:
            r = fn(s)
            try:
                err = r.json().get("error") if r.headers.get("Content-Type", "").startswith("application/json") else None
            except ValueError:
                err = "<not JSON>"
            return name, expected, r.status_code, err, r.text[:160]
        except requests.RequestException as exc:
            local.s = None
            return name, expected, -1, None, repr(exc)

    with ThreadPoolExecutor(BURST_WORKERS) as pool:
        results = list(pool.map(run, jobs, timeout=600))

    tally = Counter((name, status, err) for name, _, status, err, _ in results)
    problems = []
    for name, expected, status, err, text in results:
        if status < 0 or status >= 500:
            problems.append((name, status, text))
        elif expected is None:
            if not 400 <= status < 500:
                problems.append((name, status, text))
        elif status != expected[0] or (expected[1] is not None and err != expected[1]):
            problems.append((name, status, err, text))
    assert not problems, f"{len(problems)} bad answers, first: {problems[:5]}; all: {dict(tally)}"
    assert sum(1 for name, *_ in results if name.startswith("valid")) > BURST_TOTAL // 4
    failures = {k: v for k, v in envoy_pop.stats(r"^wasm\.").items() if "fail" in k or "crash" in k}
    assert not any(failures.values()), failures
    assert envoy_pop.health_problems() == []
    valid_dpop(envoy_pop, urls["token"])
    r = post_form(envoy_pop.token_url, {"grant_type": "client_credentials", "scope": "read", **assertion_form(
        client_assertion(client_keys.pk_es, PK_CLIENT.client_id, urls["token"]))})
    assert r.status_code == 200, r.text


def test_rfc9449_dpop_header_on_a_passthrough_path_is_left_alone(envoy_pop):
    """A DPoP header on a path the filter does not own goes on to the route untouched."""
    r = requests.post(envoy_pop.base_url + "/api/resource", data=b"x", headers={"DPoP": "garbage"}, timeout=5)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- abuse resistance
@pytest.fixture(scope="module")
def envoy_small_jti(keys, registry, backend, tmp_path_factory):
    """A replay cache of the smallest size (16 slots, about 64 live ids): strangers would fill
    it in a few hundred requests if their proofs were recorded."""
    from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
    from support.fixtures_pop import POP_DPOP
    cfg = base_plugin_config(dpop=dict(POP_DPOP), store={"jti_slots": 16, "replay_share_percent": 100})
    inst = start_envoy("small-jti", tmp_path_factory, route_mode="none", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


def test_rfc9449_11_1_unauthenticated_proofs_never_fill_the_replay_cache(envoy_small_jti):
    """DPoP proofs signed with throw-away keys by callers without valid credentials are not
    recorded, so they cannot fill the replay cache and turn real clients' requests into 500s."""
    e = envoy_small_jti
    throwaway = ClientKey("ES256", None)
    with requests.Session() as s:
        for _ in range(400):
            r = post_form(e.token_url, {"grant_type": "client_credentials"}, session=s,
                          headers={"Authorization": basic_auth("demo-client", "wrong"),
                                   "DPoP": dpop_proof(throwaway, e.token_url)})
            assert r.status_code == 401, r.text[:200]
    real = ClientKey("ES256", None)
    for _ in range(20):
        r = post_form(e.token_url, {"grant_type": "client_credentials"}, basic=DEMO_CLIENT,
                      dpop=dpop_proof(real, e.token_url))
        assert r.status_code == 200, r.text[:200]
        assert r.json()["token_type"] == "DPoP"
