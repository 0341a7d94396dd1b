"""private_key_jwt client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2) through a real Envoy.

Clients sign with real libraries: Authlib's PrivateKeyJWT on an OAuth2Session for the happy
paths, joserfc for every hand-made assertion (good or bad); nothing is signed by hand. Keys are
registered inline (`jwks`, static client pk-client) or behind a `jwks_uri` the registry fixture
serves (fetched through the Envoy cluster named in `jwks_fetch`). Issued tokens are verified with
PyJWT against GET /oauth/jwks. Every refusal is followed by a valid request that succeeds.

Envoy: envoy_pop (support/fixtures_pop.py): issuer AC_ISSUER, so the token and PAR endpoint URLs an assertion
names are the https URLs of the metadata, not the loopback address the test connects to.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT

from support.fixtures_envoy import validate_plugin_config
from support.fixtures_pop import (
    ASSERTION_MAX_LIFETIME,
    ASSERTION_SKEW,
    JWKS_REFETCH_COOLDOWN,
    pop_plugin_config,
)
from helpers import (
    ACCESS_TOKEN_LIFETIME,
    ASSERTION_TYPE,
    DEMO_CLIENT,
    PK_CLIENT,
    PK_PINNED_CLIENT,
    PK_REDIRECT,
    VERIFY_ALGS,
    ADVERTISED_ALGS,
    Client,
    ClientKey,
    assert_oauth_error,
    assert_token_response,
    assertion_form,
    authlib_session,
    b64url,
    client_assertion,
    code_form,
    crit_registry,
    endpoint_urls,
    hmac_jws,
    jwks_of,
    jws_parts,
    pk_metadata,
    post_form,
    pushed_code,
    unsigned_jws,
    verify_access_token,
    verify_id_token,
)

PK = PK_CLIENT.client_id
METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.fixture
def urls(envoy_pop) -> dict[str, str]:
    """issuer, token and par endpoint URLs as the metadata names them."""
    u = endpoint_urls(envoy_pop)
    assert u["issuer"] == envoy_pop.issuer and u["token"] == envoy_pop.issuer + "/oauth/token", u
    return u


def cc_request(envoy, assertion: str | None, *, client_id: str | None = None, scope: str | None = "read",
               extra: dict[str, str] | None = None, drop: tuple[str, ...] = (), basic: Client | None = None,
               session: requests.Session | None = None) -> requests.Response:
    """client_credentials at the token endpoint, authenticated by `assertion`."""
    form: dict[str, str] = {"grant_type": "client_credentials"}
    if scope is not None:
        form["scope"] = scope
    if assertion is not None:
        form.update(assertion_form(assertion, client_id))
    form.update(extra or {})
    for k in drop:
        form.pop(k, None)
    return post_form(envoy.token_url, form, basic=basic, session=session)


def assert_pk_token(envoy, r: requests.Response, client_id: str = PK, scope: str = "read") -> dict[str, Any]:
    body = assert_token_response(r, scope=scope, lifetime=ACCESS_TOKEN_LIFETIME)
    _, claims = verify_access_token(body["access_token"], envoy, client_id=client_id, scope=scope,
                                    lifetime=ACCESS_TOKEN_LIFETIME)
    assert "cnf" not in claims, claims
    return claims


def valid_request(envoy, client_keys, urls, session: requests.Session | None = None) -> None:
    """The request that must work after every refusal: a fresh ES256 assertion for pk-client."""
    r = cc_request(envoy, client_assertion(client_keys.pk_es, PK, urls["token"]), session=session)
    assert_pk_token(envoy, r)


# --------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("path", METADATA_PATHS)
def test_rfc8414_2_metadata_lists_private_key_jwt_and_its_algs(envoy_pop, path):
    r = requests.get(envoy_pop.base_url + path, timeout=5)
    assert r.status_code == 200, r.text
    m = r.json()
    methods = m["token_endpoint_auth_methods_supported"]
    assert "private_key_jwt" in methods, methods
    assert {"client_secret_basic", "client_secret_post", "none"} <= set(methods), methods
    algs = m["token_endpoint_auth_signing_alg_values_supported"]
    assert isinstance(algs, list) and sorted(algs) == sorted(ADVERTISED_ALGS) == ["ES256", "Ed25519", "EdDSA", "PS256", "RS256"], algs


# --------------------------------------------------------------------------- happy paths (Authlib)
ALG_KEYS = [("pk_es", "ES256"), ("pk_ed", "EdDSA"), ("pk_rsa", "RS256"), ("pk_rsa", "PS256"), ("pk_rsa_ps", "PS256")]


@pytest.mark.parametrize("key_name, alg", ALG_KEYS, ids=[f"{k}-{a}" for k, a in ALG_KEYS])
def test_rfc7523_2_2_authlib_private_key_jwt_client_credentials(envoy_pop, client_keys, urls, key_name, alg):
    """Authlib's PrivateKeyJWT (iss = sub = client_id, aud = the token endpoint URL of the
    metadata, exp, a fresh jti per request) with each algorithm of a key inline in the client's
    jwks: two requests each, so a fresh jti is all a second assertion needs."""
    key: ClientKey = getattr(client_keys, key_name)
    client = authlib_session(PK_CLIENT, key, urls["token"], alg=alg, scope="read")
    try:
        for _ in range(2):
            token = client.fetch_token(envoy_pop.token_url, grant_type="client_credentials")
            assert token["token_type"] == "Bearer" and token["scope"] == "read", token
            assert token["expires_in"] == ACCESS_TOKEN_LIFETIME
            assert not [k for k in token if k.startswith("dpop")], token
            _, claims = verify_access_token(token["access_token"], envoy_pop, client_id=PK, scope="read",
                                            lifetime=ACCESS_TOKEN_LIFETIME)
            assert claims["sub"] == PK and "cnf" not in claims, claims
    finally:
        client.close()


def test_rfc7523_3_authlib_assertion_with_the_issuer_as_audience(envoy_pop, client_keys, urls):
    """aud = the issuer identifier (RFC 7523 §3 "identifies the authorization server")."""
    client = authlib_session(PK_CLIENT, client_keys.pk_ed, urls["issuer"], scope="read write")
    try:
        token = client.fetch_token(envoy_pop.token_url, grant_type="client_credentials")
    finally:
        client.close()
    verify_access_token(token["access_token"], envoy_pop, client_id=PK, scope="read write",
                        lifetime=ACCESS_TOKEN_LIFETIME)


def test_rfc7523_3_authlib_default_one_hour_assertion_is_too_long(envoy_pop, client_keys, urls):
    """Authlib's stock PrivateKeyJWT signs assertions valid for 3600 s: beyond max_lifetime
    (ASSERTION_MAX_LIFETIME + ASSERTION_SKEW), so refused; the same library with a short
    lifetime works right after."""
    assert 3600 > ASSERTION_MAX_LIFETIME + ASSERTION_SKEW
    stock = OAuth2Session(PK, client_keys.pk_es.key, token_endpoint_auth_method="private_key_jwt", scope="read")
    stock.register_client_auth_method(PrivateKeyJWT(urls["token"], headers={"kid": client_keys.pk_es.kid},
                                                    alg="ES256"))
    try:
        r = stock.post(envoy_pop.token_url, data={"grant_type": "client_credentials", "scope": "read"},
                       auth=stock.client_auth("private_key_jwt"))
    finally:
        stock.close()
    assert_oauth_error(r, 401, "invalid_client")
    body = r.request.body.decode() if isinstance(r.request.body, bytes) else r.request.body
    sent = dict(urllib.parse.parse_qsl(body))
    assert sent["client_assertion_type"] == ASSERTION_TYPE
    assert jws_parts(sent["client_assertion"])[1]["exp"] > time.time() + 3000
    valid_request(envoy_pop, client_keys, urls)


@pytest.mark.parametrize("aud", ["issuer", "token", "issuer-in-array", "token-in-array"])
def test_rfc7523_3_audience_forms_accepted(envoy_pop, client_keys, urls, aud):
    """aud: the issuer or the token endpoint URL, as a string or inside an array."""
    value: Any = {
        "issuer": urls["issuer"],
        "token": urls["token"],
        "issuer-in-array": ["https://other.example.test", urls["issuer"]],
        "token-in-array": [urls["token"], "https://other.example.test"],
    }[aud]
    r = cc_request(envoy_pop, client_assertion(client_keys.pk_es, PK, value))
    assert_pk_token(envoy_pop, r)


def test_rfc7523_3_lifetimes_within_the_limits_are_accepted(envoy_pop, client_keys, urls):
    """exp a few seconds ahead, exp close to max_lifetime ahead, no iat at all, iat and nbf a
    little in the future (within the clock skew)."""
    now = int(time.time())
    for kw in ({"exp": now + 5}, {"exp": now + ASSERTION_MAX_LIFETIME - 10},
               {"iat": None}, {"iat": now + ASSERTION_SKEW // 3, "nbf": now + ASSERTION_SKEW // 3}):
        r = cc_request(envoy_pop, client_assertion(client_keys.pk_es, PK, urls["token"], **kw))
        assert r.status_code == 200, f"{kw}: {r.status_code} {r.text}"
        assert_pk_token(envoy_pop, r)


def test_rfc7521_4_2_client_id_parameter_must_equal_sub(envoy_pop, client_keys, urls):
    """RFC 7521 §4.2: client_id is optional beside an assertion; if present it names the
    assertion's subject."""
    r = cc_request(envoy_pop, client_assertion(client_keys.pk_es, PK, urls["token"]), client_id=PK)
    assert_pk_token(envoy_pop, r)
    for other in (PK_PINNED_CLIENT.client_id, DEMO_CLIENT.client_id, "nobody"):
        r = cc_request(envoy_pop, client_assertion(client_keys.pk_es, PK, urls["token"]), client_id=other)
        assert_oauth_error(r, 401, "invalid_client")
        valid_request(envoy_pop, client_keys, urls)


def test_rfc7523_3_without_kid_only_the_one_key_of_its_type(envoy_pop, client_keys, urls):
    """No kid: pk-client has one OKP key (EdDSA works) but two EC keys (ES256 cannot pick one)."""
    r = cc_request(envoy_pop, client_assertion(client_keys.pk_ed, PK, urls["token"], kid=None))
    assert_pk_token(envoy_pop, r)
    r = cc_request(envoy_pop, client_assertion(client_keys.pk_es, PK, urls["token"], kid=None))
    assert_oauth_error(r, 401, "invalid_client")
    valid_request(envoy_pop, client_keys, urls)
    # The second EC key by its kid (its JWK has no alg) is fine.
    assert_pk_token(envoy_pop, cc_request(envoy_pop, client_assertion(client_keys.pk_es2, PK, urls["token"])))


def test_rfc7591_token_endpoint_auth_signing_alg_is_enforced(envoy_pop, client_keys, urls):
    """pk-pinned registers token_endpoint_auth_signing_alg PS256: its RSA key signing RS256 is
    refused, PS256 accepted."""
    pinned = PK_PINNED_CLIENT.client_id
    r = cc_request(envoy_pop, client_assertion(client_keys.pinned_rsa, pinned, urls["token"], alg="RS256"))
    assert_oauth_error(r, 401, "invalid_client")
    r = cc_request(envoy_pop, client_assertion(client_keys.pinned_rsa, pinned, urls["token"], alg="PS256"))
    assert_pk_token(envoy_pop, r, client_id=pinned)


# --------------------------------------------------------------------------- refusals
Case = Callable[[Any, dict[str, str]], tuple[str, dict[str, str]]]


def _payload_swapped(ck, u) -> str:
    """A valid pk-client assertion's header and signature around another payload."""
    good = client_assertion(ck.pk_es, PK, u["token"])
    h, _, s = good.split(".")
    _, claims = jws_parts(good)
    claims["scope_hint"] = "admin"
    return f"{h}.{b64url(json.dumps(claims).encode())}.{s}"


def _now() -> int:
    return int(time.time())


REFUSALS: dict[str, Case] = {
    "wrong-aud": lambda ck, u: (client_assertion(ck.pk_es, PK, "https://other.example.test/token"), {}),
    # The URL the request really went to is not the token endpoint the metadata names.
    "aud-loopback-url": lambda ck, u: (client_assertion(ck.pk_es, PK, u["loopback_token"]), {}),
    "aud-array-without-us": lambda ck, u: (client_assertion(
        ck.pk_es, PK, ["https://other.example.test", u["issuer"] + ".evil.test"]), {}),
    "aud-missing": lambda ck, u: (client_assertion(ck.pk_es, PK, None), {}),
    "expired": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"], iat=_now() - 300,
                                               exp=_now() - ASSERTION_SKEW - 60), {}),
    "exp-too-far-ahead": lambda ck, u: (client_assertion(
        ck.pk_es, PK, u["token"], exp=_now() + ASSERTION_MAX_LIFETIME + ASSERTION_SKEW + 120), {}),
    "exp-missing": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"], exp=None), {}),
    "exp-not-a-number": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"], exp="soon"), {}),
    "iat-in-the-future": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"], iat=_now() + ASSERTION_SKEW + 90,
                                                         exp=_now() + 240), {}),
    "nbf-in-the-future": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"], nbf=_now() + ASSERTION_SKEW + 90,
                                                         exp=_now() + 240), {}),
    "jti-missing": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"], jti=None), {}),
    "alg-none": lambda ck, u: (unsigned_jws({"kid": ck.pk_es.kid, "typ": "JWT"}, jws_parts(
        client_assertion(ck.pk_es, PK, u["token"]))[1]), {}),
    "alg-none-junk-signature": lambda ck, u: (unsigned_jws({"kid": ck.pk_es.kid}, jws_parts(
        client_assertion(ck.pk_es, PK, u["token"]))[1], b"junk"), {}),
    # Key confusion: HMAC keyed with what everybody knows about the registered key.
    "hs256-keyed-with-the-public-pem": lambda ck, u: (hmac_jws({"kid": ck.pk_es.kid}, jws_parts(
        client_assertion(ck.pk_es, PK, u["token"]))[1], ck.pk_es.pem_public()), {}),
    "hs256-keyed-with-the-public-jwk": lambda ck, u: (hmac_jws({"kid": ck.pk_rsa.kid}, jws_parts(
        client_assertion(ck.pk_es, PK, u["token"]))[1], json.dumps(ck.pk_rsa.public_jwk()).encode()), {}),
    "hs256-any-secret": lambda ck, u: (hmac_jws({}, jws_parts(client_assertion(ck.pk_es, PK, u["token"]))[1],
                                                b"a shared secret nobody registered"), {}),
    "unknown-kid": lambda ck, u: (client_assertion(ClientKey("ES256", "no-such-kid"), PK, u["token"]), {}),
    "signed-by-another-key-with-the-registered-kid": lambda ck, u: (client_assertion(
        ck.pk_es, PK, u["token"], sign_with=ClientKey("ES256", None).key), {}),
    "payload-swapped-signature-kept": lambda ck, u: (_payload_swapped(ck, u), {}),
    "kid-of-a-key-of-another-type": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"], kid=ck.pk_ed.kid), {}),
    "rs256-with-a-key-registered-for-ps256": lambda ck, u: (client_assertion(
        ck.pk_rsa_ps, PK, u["token"], alg="RS256"), {}),
    "iss-not-sub": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"], iss=DEMO_CLIENT.client_id), {}),
    "iss-missing": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"], iss=None), {}),
    "sub-another-client": lambda ck, u: (client_assertion(ck.pk_es, PK_PINNED_CLIENT.client_id, u["token"]), {}),
    "sub-a-secret-client": lambda ck, u: (client_assertion(ck.pk_es, DEMO_CLIENT.client_id, u["token"]), {}),
    "sub-unknown": lambda ck, u: (client_assertion(ck.pk_es, "nobody-" + uuid.uuid4().hex[:6], u["token"]), {}),
    "unknown-crit-header": lambda ck, u: (client_assertion(
        ck.pk_es, PK, u["token"], header={"crit": ["urn:example:must-understand"],
                                          "urn:example:must-understand": "x"},
        registry=crit_registry("ES256", "urn:example:must-understand")), {}),
    "wrong-assertion-type": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"]), {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}),
    "assertion-type-missing": lambda ck, u: (client_assertion(ck.pk_es, PK, u["token"]), {
        "client_assertion_type": None}),
    "not-a-jwt": lambda ck, u: ("not-a-jwt", {}),
    "empty": lambda ck, u: ("", {}),
    "json-serialization": lambda ck, u: (json.dumps({"payload": "e30", "signatures": []}), {}),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_rfc7523_3_invalid_assertion_is_invalid_client(envoy_pop, client_keys, urls, case):
    """RFC 7523 §3 / RFC 6749 §5.2: every assertion that does not authenticate the client is a
    401 invalid_client; a valid request succeeds right after."""
    u = dict(urls, loopback_token=envoy_pop.token_url)
    assertion, extra = REFUSALS[case](client_keys, u)
    drop = tuple(k for k, v in extra.items() if v is None)
    r = cc_request(envoy_pop, assertion, extra={k: v for k, v in extra.items() if v is not None}, drop=drop)
    assert_oauth_error(r, 401, "invalid_client")
    valid_request(envoy_pop, client_keys, urls)


def test_rfc7523_3_expired_assertion_is_invalid_client(envoy_pop, client_keys, urls):
    """Expired by more than the clock skew: refused; just expired within the skew: accepted."""
    now = int(time.time())
    r = cc_request(envoy_pop, client_assertion(client_keys.pk_es, PK, urls["token"], iat=now - 120,
                                               exp=now - ASSERTION_SKEW - 5))
    assert_oauth_error(r, 401, "invalid_client")
    valid_request(envoy_pop, client_keys, urls)


def test_rfc7523_3_replayed_jti_is_invalid_client(envoy_pop, client_keys, urls):
    """jti is single use until the assertion expires: the same assertion again, on new
    connections (so on both Envoy workers), and another assertion with the same jti, are
    refused."""
    a = client_assertion(client_keys.pk_es, PK, urls["token"])
    assert_pk_token(envoy_pop, cc_request(envoy_pop, a))
    for _ in range(6):
        assert_oauth_error(cc_request(envoy_pop, a), 401, "invalid_client")
        valid_request(envoy_pop, client_keys, urls)
    same_jti = client_assertion(client_keys.pk_ed, PK, urls["issuer"], jti=jws_parts(a)[1]["jti"])
    assert_oauth_error(cc_request(envoy_pop, same_jti), 401, "invalid_client")
    valid_request(envoy_pop, client_keys, urls)


REPLAY_ROUNDS = 40


def test_rfc7523_3_concurrent_replay_has_exactly_one_winner(envoy_pop, client_keys, urls):
    """One assertion sent twice at the same moment on two new connections: exactly one 200."""
    barrier = threading.Barrier(2)

    def send(a: str) -> requests.Response:
        barrier.wait(timeout=10)
        with requests.Session() as s:
            return cc_request(envoy_pop, a, session=s)

    with ThreadPoolExecutor(2) as pool:
        for i in range(REPLAY_ROUNDS):
            a = client_assertion(client_keys.pk_es, PK, urls["token"])
            results = list(pool.map(lambda _: send(a), range(2)))
            statuses = sorted(r.status_code for r in results)
            assert statuses == [200, 401], f"round {i}: {[(r.status_code, r.text[:120]) for r in results]}"
    valid_request(envoy_pop, client_keys, urls)


def test_rfc6749_2_3_one_authentication_method_only(envoy_pop, client_keys, urls):
    """RFC 6749 §2.3: a client MUST NOT use more than one method. An assertion beside Basic or
    beside client_secret is refused; a private_key_jwt client sending a secret is refused; a
    client_secret client sending an assertion is refused."""
    def a() -> str:
        return client_assertion(client_keys.pk_es, PK, urls["token"])

    attempts = [
        cc_request(envoy_pop, a(), basic=DEMO_CLIENT),
        cc_request(envoy_pop, a(), basic=Client(PK, "whatever")),
        cc_request(envoy_pop, a(), extra={"client_secret": "whatever"}),
        cc_request(envoy_pop, a(), client_id=PK, extra={"client_secret": "whatever"}),
        # pk-client with a secret only (Basic, then in the body)
        cc_request(envoy_pop, None, basic=Client(PK, "guess")),
        cc_request(envoy_pop, None, extra={"client_id": PK, "client_secret": "guess"}),
        # pk-client naming itself like a public client
        cc_request(envoy_pop, None, extra={"client_id": PK}),
        # demo-client (client_secret_basic, no keys) with an assertion signed by some key
        cc_request(envoy_pop, client_assertion(ClientKey("ES256", "demo-key"), DEMO_CLIENT.client_id, urls["token"])),
    ]
    for r in attempts:
        assert_oauth_error(r, 401, "invalid_client")
        valid_request(envoy_pop, client_keys, urls)
    # demo-client still authenticates with its secret.
    r = post_form(envoy_pop.token_url, {"grant_type": "client_credentials"}, basic=DEMO_CLIENT)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- jwks_uri (registry clients)
def _registry_pk_client(registry, label: str, keys: list[ClientKey], *, query: str = "") -> tuple[Client, str]:
    """A private_key_jwt client in the registry whose keys are behind jwks_uri (served by the
    registry fixture at /jwks/{name}); returns (client, jwks name)."""
    name = f"{label}-{uuid.uuid4().hex[:8]}"
    c = Client(f"reg-pk-{name}", None, auth_method="private_key_jwt", scope="read")
    registry.set_jwks(name, jwks_of(*keys))
    registry.add_client(pk_metadata(c, jwks_uri=registry.jwks_url(name) + query))
    return c, name


def test_rfc7591_jwks_uri_client_authlib_then_cached(envoy_pop, registry, urls):
    """A registry client with jwks_uri: the JWK Set is fetched once through the cluster (with
    :authority = host:port of the jwks_uri and :path = its path and query), then served from the
    cache while cache_ttl lasts."""
    key = ClientKey("ES256", "reg-es-1")
    c, name = _registry_pk_client(registry, "cached", [key], query="?v=1")
    with authlib_session(c, key, urls["token"], scope="read") as client:
        for _ in range(5):
            token = client.fetch_token(envoy_pop.token_url, grant_type="client_credentials")
            verify_access_token(token["access_token"], envoy_pop, client_id=c.client_id, scope="read",
                                lifetime=ACCESS_TOKEN_LIFETIME)
    assert registry.jwks_count(name) == 1, registry.stats()["jwks_requests"]
    seen = registry.jwks_headers(name)
    assert seen.get("host") == f"127.0.0.1:{registry.port}", seen
    assert registry.jwks_paths(name)[-1] == f"/jwks/{name}?v=1"


def test_rfc7591_jwks_uri_client_ed25519_and_rsa(envoy_pop, registry, urls):
    eddsa, rsa = ClientKey("EdDSA", "reg-ed"), ClientKey("PS256", "reg-rsa")
    c, name = _registry_pk_client(registry, "multi", [eddsa, rsa])
    with requests.Session() as s:
        for key, alg in ((eddsa, "EdDSA"), (rsa, "PS256"), (rsa, "RS256")):
            r = cc_request(envoy_pop, client_assertion(key, c.client_id, urls["issuer"], alg=alg), session=s)
            assert_pk_token(envoy_pop, r, client_id=c.client_id)
        assert_oauth_error(cc_request(envoy_pop, client_assertion(ClientKey("EdDSA", "reg-ed"), c.client_id,
                                                                  urls["issuer"]), session=s), 401, "invalid_client")
        assert_pk_token(envoy_pop, cc_request(envoy_pop, client_assertion(eddsa, c.client_id, urls["issuer"]),
                                              session=s), client_id=c.client_id)


def test_rfc7591_registry_client_with_inline_jwks(envoy_pop, registry, urls):
    key = ClientKey("ES256", "reg-inline")
    c = Client(f"reg-pk-inline-{uuid.uuid4().hex[:8]}", None, auth_method="private_key_jwt", scope="read")
    registry.add_client(pk_metadata(c, jwks=jwks_of(key)))
    with authlib_session(c, key, urls["token"], scope="read") as client:
        token = client.fetch_token(envoy_pop.token_url, grant_type="client_credentials")
    verify_access_token(token["access_token"], envoy_pop, client_id=c.client_id, scope="read",
                        lifetime=ACCESS_TOKEN_LIFETIME)


def test_rfc7523_kid_miss_refetches_the_jwks_uri_once_after_rotation(envoy_pop, registry, urls):
    """Key rotation behind jwks_uri: a kid missing from the cached set refetches the set once,
    but not again within refetch_cooldown of the last fetch. One keep-alive connection (one
    worker), so the counts do not depend on how workers share the cache."""
    k1, k2 = ClientKey("ES256", "rot-1"), ClientKey("ES256", "rot-2")
    c, name = _registry_pk_client(registry, "rotation", [k1])
    cid = c.client_id

    def send(s, key: ClientKey) -> requests.Response:
        return cc_request(envoy_pop, client_assertion(key, cid, urls["token"]), session=s)

    with requests.Session() as s:
        for _ in range(3):
            assert_pk_token(envoy_pop, send(s, k1), client_id=cid)
        assert registry.jwks_count(name) == 1
        # A kid nobody registered, right after the fetch (within the cooldown): no refetch.
        assert_oauth_error(send(s, ClientKey("ES256", "rot-unknown")), 401, "invalid_client")
        assert registry.jwks_count(name) == 1
        assert_pk_token(envoy_pop, send(s, k1), client_id=cid)

        # Rotate: the set now holds k2 only. Once the cooldown has passed, k2's kid is a miss
        # that refetches the set exactly once; later k2 assertions come from the cache.
        registry.set_jwks(name, jwks_of(k2))
        time.sleep(JWKS_REFETCH_COOLDOWN + 0.3)
        assert_pk_token(envoy_pop, send(s, k2), client_id=cid)
        assert registry.jwks_count(name) == 2
        for _ in range(3):
            assert_pk_token(envoy_pop, send(s, k2), client_id=cid)
        assert registry.jwks_count(name) == 2
        # k1 is gone from the set: refused (and within the cooldown, without a refetch).
        assert_oauth_error(send(s, k1), 401, "invalid_client")
        assert registry.jwks_count(name) == 2
        assert_pk_token(envoy_pop, send(s, k2), client_id=cid)

        # An unknown kid after the cooldown: one refetch, still unknown, refused.
        time.sleep(JWKS_REFETCH_COOLDOWN + 0.3)
        assert_oauth_error(send(s, ClientKey("ES256", "rot-unknown-2")), 401, "invalid_client")
        assert registry.jwks_count(name) == 3
        assert_pk_token(envoy_pop, send(s, k2), client_id=cid)
        assert registry.jwks_count(name) == 3


# --------------------------------------------------------------------------- PAR and the code flow
def test_rfc7523_private_key_jwt_at_par_and_token_endpoints(envoy_pop, client_keys, login_service, urls):
    """PAR authenticated by an assertion for the PAR endpoint URL, the code redeemed with one for
    the token endpoint URL; the user's tokens verify."""
    login_iat = int(time.time()) - 10
    code, verifier = pushed_code(
        envoy_pop, login_service.sign("alice", iat=login_iat), PK_CLIENT, scope="openid read", nonce="n-pk",
        form_auth=lambda: assertion_form(client_assertion(client_keys.pk_es, PK, urls["par"])))
    form = dict(code_form(PK_CLIENT, code, verifier),
                **assertion_form(client_assertion(client_keys.pk_rsa, PK, urls["token"], alg="PS256")))
    r = post_form(envoy_pop.token_url, form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["refresh_token"], body
    verify_access_token(body["access_token"], envoy_pop, client_id=PK, scope="openid read",
                        lifetime=ACCESS_TOKEN_LIFETIME, sub="alice")
    verify_id_token(body["id_token"], body["access_token"], envoy_pop, client_id=PK, sub="alice",
                    nonce="n-pk", auth_time=login_iat)


def test_rfc7523_issuer_audience_at_par_and_refresh_with_an_assertion(envoy_pop, client_keys, login_service, urls):
    code, verifier = pushed_code(
        envoy_pop, login_service.sign("bob"), PK_CLIENT, scope="read",
        form_auth=lambda: assertion_form(client_assertion(client_keys.pk_ed, PK, urls["issuer"])))
    r = post_form(envoy_pop.token_url, dict(code_form(PK_CLIENT, code, verifier), **assertion_form(
        client_assertion(client_keys.pk_ed, PK, urls["issuer"]))))
    assert r.status_code == 200, r.text
    rt = r.json()["refresh_token"]
    r = post_form(envoy_pop.token_url, {"grant_type": "refresh_token", "refresh_token": rt,
                                        **assertion_form(client_assertion(client_keys.pk_es, PK, urls["token"]))})
    assert r.status_code == 200, r.text
    verify_access_token(r.json()["access_token"], envoy_pop, client_id=PK, scope="read",
                        lifetime=ACCESS_TOKEN_LIFETIME, sub="bob")


def test_rfc7523_3_par_refuses_bad_assertions(envoy_pop, client_keys, login_service, urls):
    """At PAR too: a replayed, expired or foreign-signed assertion is 401 invalid_client (and no
    request_uri); a valid one right after works. A jti spent at PAR cannot be used again at the
    token endpoint."""
    base = {"response_type": "code", "redirect_uri": PK_REDIRECT, "scope": "read", "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"}
    spent = client_assertion(client_keys.pk_es, PK, urls["par"])
    r = post_form(envoy_pop.par_url, dict(base, **assertion_form(spent)))
    assert r.status_code == 201, r.text
    now = int(time.time())
    for bad in (spent,
                client_assertion(client_keys.pk_es, PK, urls["par"], iat=now - 400, exp=now - 200),
                client_assertion(client_keys.pk_es, PK, urls["par"], sign_with=ClientKey("ES256", None).key),
                client_assertion(client_keys.pk_es, PK, "https://other.example.test/par")):
        r = post_form(envoy_pop.par_url, dict(base, **assertion_form(bad)))
        assert_oauth_error(r, 401, "invalid_client")
        assert "request_uri" not in r.json()
        ok = post_form(envoy_pop.par_url, dict(base, **assertion_form(
            client_assertion(client_keys.pk_es, PK, urls["par"]))))
        assert ok.status_code == 201, ok.text
    # The assertion spent at PAR, now at the token endpoint (its aud still fits: the issuer).
    spent_issuer = client_assertion(client_keys.pk_es, PK, urls["issuer"])
    assert post_form(envoy_pop.par_url, dict(base, **assertion_form(spent_issuer))).status_code == 201
    assert_oauth_error(cc_request(envoy_pop, spent_issuer), 401, "invalid_client")
    valid_request(envoy_pop, client_keys, urls)


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("variant", ["both", "neither"])
def test_rfc7591_private_key_jwt_client_needs_exactly_one_of_jwks_and_jwks_uri(
        tmp_path, keys, client_keys, login_service, registry, variant):
    """A static private_key_jwt client carries exactly one of jwks and jwks_uri: with only jwks,
    and with only jwks_uri, Envoy loads the configuration; with both or neither, it refuses it
    (on_configure fails)."""
    key = ClientKey("ES256", "cfg-1")
    uri = registry.jwks_url("cfg")

    def config(extra: dict[str, Any]) -> dict[str, Any]:
        cfg = pop_plugin_config(login_service, client_keys)
        cfg["clients"].append(pk_metadata(Client("cfg-client", None, auth_method="private_key_jwt", scope="read",
                                                 extra=extra)))
        return cfg

    for name, good in (("jwks", {"jwks": jwks_of(key)}), ("jwks_uri", {"jwks_uri": uri})):
        (tmp_path / name).mkdir()
        rc, out = validate_plugin_config(tmp_path / name, config(good), [keys.ed25519])
        assert rc == 0, f"a client with {name} only was refused:\n{out[-3000:]}"
    bad = {"jwks": jwks_of(key), "jwks_uri": uri} if variant == "both" else {}
    (tmp_path / variant).mkdir()
    rc, out = validate_plugin_config(tmp_path / variant, config(bad), [keys.ed25519])
    assert rc != 0, f"Envoy accepted a private_key_jwt client with {variant}"
    assert "cfg-client" in out, out[-2000:]
