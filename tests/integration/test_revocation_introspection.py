"""Token revocation (RFC 7009) and introspection (RFC 7662) through a real Envoy, plus the
metadata of the endpoints (RFC 8414) and a garbage burst at every endpoint of this feature set
(revocation, introspection, the device flow, token exchange, the password grant).

Requests are built by Authlib's OAuth2Session (revoke_token / introspect_token, with the
client's own authentication method: client_secret_basic, client_secret_post, or none with
client_id in the body). Tokens are verified with PyJWT against GET /oauth/jwks; DPoP proofs are
signed with joserfc and thumbprints computed by the tests (helpers.jwk_thumbprint). Every
refusal is followed by a valid request that succeeds.

Envoys: envoy_grants (everything on, default paths), envoy_ac (the opt-in grants off),
envoy_device_alt (revocation and introspection at other paths: ALT_ENDPOINTS).
"""
from __future__ import annotations

import os
import random
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from support.fixtures_grants import ALT_ENDPOINTS
from helpers import (
    ACCESS_TOKEN_LIFETIME,
    AC_ISSUER,
    BURST_CLIENT,
    DEMO_CLIENT,
    DEVICE_CODE_GRANT,
    FORM,
    MAX_BODY,
    ORDERS_API,
    POST_CLIENT,
    RP_CLIENT,
    RS_CLIENT,
    TOKEN_EXCHANGE_GRANT,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_JWT,
    TV_CLIENT,
    ClientKey,
    assert_oauth_error,
    assert_revoked_ok,
    authlib_client,
    basic_auth,
    device_flow_tokens,
    dpop_proof,
    endpoint_urls,
    exchange,
    post_form,
    introspect,
    issue_code,
    metadata,
    redeem_code,
    refresh_request,
    revoke,
    token_request,
    verify_access_token,
)
from render import DIRECT_RESPONSE_BODY

METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
ALL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
INACTIVE = {"active": False}


def cc_token(envoy, client=DEMO_CLIENT, scope: str = "read") -> str:
    r = token_request(envoy, client, scope=scope)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def rp_tokens(envoy, login_service, user: str = "alice") -> dict:
    """The authorization code flow for rp (confidential, refresh tokens): the token answer."""
    code, verifier = issue_code(envoy, login_service.sign(user), scope="openid read")
    r = redeem_code(envoy, code, verifier)
    assert r.status_code == 200, r.text
    return r.json()


def unverified(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


# --------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("path", METADATA_PATHS)
def test_rfc8414_2_rfc7009_rfc7662_metadata_with_every_grant_on(envoy_grants, path):
    m = requests.get(envoy_grants.base_url + path, timeout=5).json()
    assert m["revocation_endpoint"] == AC_ISSUER + "/oauth/revoke"
    assert m["introspection_endpoint"] == AC_ISSUER + "/oauth/introspect"
    assert m["revocation_endpoint_auth_methods_supported"] == ALL_AUTH_METHODS
    # RFC 7662 §2.1: introspection needs an authenticated caller: no "none".
    assert m["introspection_endpoint_auth_methods_supported"] == [a for a in ALL_AUTH_METHODS if a != "none"]
    assert m["device_authorization_endpoint"] == AC_ISSUER + "/oauth/device_authorization"  # RFC 8628 §4
    assert m["grant_types_supported"] == ["authorization_code", "client_credentials", "refresh_token",
                                          DEVICE_CODE_GRANT, TOKEN_EXCHANGE_GRANT, "password"]


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_rfc8414_2_metadata_without_the_opt_in_grants(envoy_ac, path):
    """Revocation and introspection are always there; the device flow, token exchange and the
    password grant only when configured."""
    m = requests.get(envoy_ac.base_url + path, timeout=5).json()
    assert m["revocation_endpoint"] == AC_ISSUER + "/oauth/revoke"
    assert m["introspection_endpoint"] == AC_ISSUER + "/oauth/introspect"
    assert "revocation_endpoint_auth_methods_supported" in m
    assert "introspection_endpoint_auth_methods_supported" in m
    assert "device_authorization_endpoint" not in m
    assert m["grant_types_supported"] == ["authorization_code", "client_credentials", "refresh_token"]


def test_rfc8414_2_configured_endpoint_paths(envoy_device_alt):
    """endpoints.revocation / endpoints.introspection move the endpoints: the metadata names the
    new URLs, they answer there, and the default paths are no longer the filter's (the route's
    direct response answers them)."""
    e = envoy_device_alt
    m = metadata(e)
    assert m["revocation_endpoint"] == AC_ISSUER + ALT_ENDPOINTS["revocation"]
    assert m["introspection_endpoint"] == AC_ISSUER + ALT_ENDPOINTS["introspection"]
    assert e.revocation_url.endswith(ALT_ENDPOINTS["revocation"])
    at = cc_token(e)
    assert introspect(e, at, client=DEMO_CLIENT)["active"] is True
    assert_revoked_ok(revoke(e, at, DEMO_CLIENT))
    assert introspect(e, at, client=DEMO_CLIENT) == INACTIVE
    for old in ("/oauth/revoke", "/oauth/introspect"):
        r = post_form(e.base_url + old, {"token": at}, headers={"Authorization": basic_auth("demo-client", "demo-secret")},
                      timeout=5)
        assert r.status_code == 200 and r.text == DIRECT_RESPONSE_BODY, (old, r.status_code, r.text[:200])


# --------------------------------------------------------------------------- revocation (RFC 7009)
def test_rfc7009_2_1_revoking_an_access_token_puts_it_on_the_deny_list(envoy_grants):
    e = envoy_grants
    at = cc_token(e, scope="read write")
    assert introspect(e, at)["active"] is True
    assert exchange(e, at, extra={"scope": "read"}).status_code == 200  # usable as a subject

    assert_revoked_ok(revoke(e, at, DEMO_CLIENT, token_type_hint="access_token"))
    assert introspect(e, at) == INACTIVE
    # Token exchange refuses it as a subject (and as an actor).
    assert_oauth_error(exchange(e, at), 400, "invalid_request")
    other = cc_token(e, POST_CLIENT)
    assert_oauth_error(exchange(e, other, extra={"actor_token": at, "actor_token_type": TOKEN_TYPE_ACCESS}),
                       400, "invalid_request")
    # Revoking again is fine (still 200), and the token stays revoked.
    assert_revoked_ok(revoke(e, at, DEMO_CLIENT))
    assert introspect(e, at) == INACTIVE
    # Other tokens of the same client are untouched; a new one works.
    fresh = cc_token(e, scope="read write")
    assert introspect(e, fresh)["active"] is True
    assert exchange(e, fresh, extra={"scope": "read"}).status_code == 200


def test_rfc7009_2_1_revoking_a_refresh_token_revokes_its_family(envoy_grants, login_service):
    """rp (client_secret_basic): the newest refresh token revoked → it and the access path it
    opens are gone (refresh: invalid_grant, introspection: inactive)."""
    e = envoy_grants
    t1 = rp_tokens(e, login_service, "rev-alice")
    r = refresh_request(e, t1["refresh_token"])
    assert r.status_code == 200, r.text
    rt2 = r.json()["refresh_token"]
    assert introspect(e, rt2, client=RP_CLIENT)["active"] is True
    assert_revoked_ok(revoke(e, rt2, RP_CLIENT, token_type_hint="refresh_token"))
    assert introspect(e, rt2, client=RP_CLIENT) == INACTIVE
    assert_oauth_error(refresh_request(e, rt2), 400, "invalid_grant")
    # A new grant is not affected.
    t = rp_tokens(e, login_service, "rev-alice")
    r = refresh_request(e, t["refresh_token"])
    assert r.status_code == 200, r.text


def test_rfc7009_2_1_an_older_generation_or_a_wrong_hint_revokes_the_family_too(envoy_grants, login_service):
    """The hint only orders the lookups (§2.1): a refresh token sent with token_type_hint
    access_token is found all the same; a rotated (older) token still names its family."""
    e = envoy_grants
    t1 = rp_tokens(e, login_service, "rev-bob")
    r = refresh_request(e, t1["refresh_token"])
    assert r.status_code == 200, r.text
    rt2 = r.json()["refresh_token"]
    with authlib_client(RP_CLIENT) as s:  # client_secret_basic by Authlib
        assert_revoked_ok(s.revoke_token(e.revocation_url, t1["refresh_token"], token_type_hint="access_token"))
    assert introspect(e, rt2, client=RP_CLIENT) == INACTIVE
    assert_oauth_error(refresh_request(e, rt2), 400, "invalid_grant")
    assert refresh_request(e, rp_tokens(e, login_service, "rev-bob")["refresh_token"]).status_code == 200


def test_rfc7009_2_1_public_client_revokes_with_its_client_id(envoy_grants, login_service):
    """tv is a public client (none): Authlib sends client_id in the body; its refresh token
    (from the device flow) is revoked."""
    e = envoy_grants
    t = device_flow_tokens(e, login_service.sign("rev-carol"), TV_CLIENT, "read")
    rt = t["refresh_token"]
    # Only its own client may introspect a refresh token (RFC 7662 §4), and tv, public, may not
    # introspect at all: to anyone else it is {"active": false}.
    assert introspect(e, rt) == INACTIVE
    r = revoke(e, rt, TV_CLIENT)
    assert r.request.headers.get("Authorization") is None
    assert "client_id=tv" in r.request.body
    assert_revoked_ok(r)
    r = post_form(e.token_url, {"grant_type": "refresh_token", "refresh_token": rt}, TV_CLIENT)
    assert_oauth_error(r, 400, "invalid_grant")
    # A new device grant's refresh token works.
    t = device_flow_tokens(e, login_service.sign("rev-carol"), TV_CLIENT, "read")
    r = post_form(e.token_url, {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, TV_CLIENT)
    assert r.status_code == 200, r.text


def test_rfc7009_2_1_another_clients_token_is_left_alone(envoy_grants, login_service):
    """§2.1: the server checks the token was issued to the client asking; otherwise nothing is
    revoked, and the answer is 200 all the same (§2.2)."""
    e = envoy_grants
    at = cc_token(e)  # demo-client's
    assert_revoked_ok(revoke(e, at, POST_CLIENT))  # client_secret_post by Authlib
    assert introspect(e, at)["active"] is True
    t = rp_tokens(e, login_service, "rev-dave")
    assert_revoked_ok(revoke(e, t["refresh_token"], DEMO_CLIENT, token_type_hint="refresh_token"))
    assert_revoked_ok(revoke(e, t["refresh_token"], TV_CLIENT))
    r = refresh_request(e, t["refresh_token"])
    assert r.status_code == 200, r.text
    assert introspect(e, r.json()["refresh_token"], client=RP_CLIENT)["active"] is True


def _tampered(token: str) -> str:
    head, body, sig = token.split(".")
    return f"{head}.{body}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"


def test_rfc7009_2_2_unknown_invalid_and_foreign_tokens_answer_200(envoy_grants, partners):
    e = envoy_grants
    at = cc_token(e)
    for token in ["x", "a.b.c", "rt1.garbage", "rt1." + "A" * 200, _tampered(at), partners.idp.token("p"),
                  "é" * 10]:
        for hint in (None, "access_token", "refresh_token", "something_else"):
            assert_revoked_ok(revoke(e, token, DEMO_CLIENT, token_type_hint=hint))
    assert introspect(e, at)["active"] is True  # the real token was not touched


def test_rfc7009_2_1_client_authentication_is_required(envoy_grants):
    e = envoy_grants
    at = cc_token(e)
    cases = {
        "no credentials": dict(client=None),
        "wrong secret": dict(headers={"Authorization": basic_auth("demo-client", "wrong")}),
        "unknown public client": dict(form={"client_id": "nobody"}),
        "unknown confidential client": dict(headers={"Authorization": basic_auth("nobody", "x")}),
    }
    for name, c in cases.items():
        form = {"token": at, **c.get("form", {})}
        r = post_form(e.revocation_url, form, headers=c.get("headers", {}), timeout=5)
        assert_oauth_error(r, 401, "invalid_client")
        assert introspect(e, at)["active"] is True, name  # nothing happened
    # The request itself: POST only, a form, a token.
    assert_oauth_error(requests.get(e.revocation_url, params={"token": at}, timeout=5), 405, "invalid_request")
    r = requests.post(e.revocation_url, json={"token": at}, timeout=5,
                      headers={"Authorization": basic_auth("demo-client", "demo-secret")})
    assert_oauth_error(r, 400, "invalid_request")
    for form in ({"token_type_hint": "access_token"}, {"token": ""}):
        assert_oauth_error(post_form(e.revocation_url, form, DEMO_CLIENT), 400, "invalid_request")
    assert introspect(e, at)["active"] is True
    assert_revoked_ok(revoke(e, at, DEMO_CLIENT))
    assert introspect(e, at) == INACTIVE


# --------------------------------------------------------------------------- introspection (RFC 7662)
def test_rfc7662_2_2_active_access_token(envoy_grants):
    """An active Bearer token: its claims (as PyJWT reads them from the verified token) and
    token_type Bearer, nothing else; the hint changes nothing."""
    e = envoy_grants
    at = cc_token(e, scope="read write")
    _, claims = verify_access_token(at, e, client_id="demo-client", scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)
    for hint in (None, "access_token", "refresh_token"):
        v = introspect(e, at, token_type_hint=hint)
        assert v == {"active": True, "iss": claims["iss"], "sub": claims["sub"], "aud": claims["aud"],
                     "client_id": "demo-client", "scope": "read write", "iat": claims["iat"],
                     "exp": claims["exp"], "jti": claims["jti"], "token_type": "Bearer"}, v


def test_rfc7662_2_2_user_access_token_carries_auth_time(envoy_grants, login_service):
    e = envoy_grants
    iat = int(time.time()) - 30
    code, verifier = issue_code(e, login_service.sign("intro-erin", iat=iat), scope="openid read")
    t = redeem_code(e, code, verifier).json()
    v = introspect(e, t["access_token"])
    assert v["active"] is True and v["sub"] == "intro-erin" and v["client_id"] == "rp", v
    assert v["auth_time"] == iat and v["scope"] == "openid read" and v["token_type"] == "Bearer", v


def test_rfc7662_2_2_dpop_bound_access_token_rfc9449_6_2(envoy_grants):
    """token_type DPoP and cnf.jkt: the RFC 7638 thumbprint of the proof's key."""
    e = envoy_grants
    key = ClientKey("ES256", None)
    proof = dpop_proof(key, endpoint_urls(e)["token"])
    r = token_request(e, DEMO_CLIENT, scope="read", headers={"DPoP": proof})
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
    v = introspect(e, r.json()["access_token"])
    assert v["active"] is True and v["token_type"] == "DPoP", v
    assert v["cnf"] == {"jkt": key.thumbprint()}, v
    # Not bound: Bearer, no cnf.
    v = introspect(e, cc_token(e))
    assert v["token_type"] == "Bearer" and "cnf" not in v, v


def test_rfc7662_2_2_active_refresh_token_and_its_rotation(envoy_grants, login_service):
    e = envoy_grants
    t = rp_tokens(e, login_service, "intro-frank")
    # Its own client asks (RFC 7662 §4: a refresh token is nobody else's business).
    assert introspect(e, t["refresh_token"], token_type_hint="refresh_token") == INACTIVE
    v = introspect(e, t["refresh_token"], client=RP_CLIENT, token_type_hint="refresh_token")
    assert set(v) == {"active", "token_type", "client_id", "sub", "scope", "exp", "iss"}, v
    assert v["active"] is True and v["token_type"] == "refresh_token", v
    assert (v["client_id"], v["sub"], v["scope"], v["iss"]) == ("rp", "intro-frank", "openid read", AC_ISSUER), v
    assert v["exp"] > time.time() + 3600, v
    # Rotated: the old one is inactive (and nothing else), the new one active.
    r = refresh_request(e, t["refresh_token"])
    assert r.status_code == 200, r.text
    assert introspect(e, t["refresh_token"], client=RP_CLIENT) == INACTIVE
    assert introspect(e, r.json()["refresh_token"], client=RP_CLIENT)["active"] is True


def test_rfc7662_2_2_inactive_is_active_false_and_nothing_else(envoy_grants, partners):
    """Garbage, tampered, another issuer's JWT, revoked and expired tokens: {"active": false}."""
    e = envoy_grants
    at = cc_token(e)
    revoked = cc_token(e)
    assert_revoked_ok(revoke(e, revoked, DEMO_CLIENT))
    for token in ["x", "a.b.c", "rt1.garbage", "rt1." + "A" * 120, _tampered(at), partners.idp.token("p"),
                  at + "x", revoked, "€"]:
        for hint in (None, "refresh_token"):
            assert introspect(e, token, token_type_hint=hint) == INACTIVE, token
    # Expired: a token exchange never outlives its subject, so a partner token living 2 s
    # gives one of our access tokens that expires 2 s from now.
    short = exchange(e, partners.idp.token("intro-gina", lifetime=2, scope="read"), TOKEN_TYPE_JWT)
    assert short.status_code == 200, short.text
    exp = unverified(short.json()["access_token"])["exp"]
    assert introspect(e, short.json()["access_token"])["active"] is True
    time.sleep(max(0.0, exp - time.time()) + 1.1)
    assert introspect(e, short.json()["access_token"]) == INACTIVE
    assert introspect(e, at)["active"] is True


def test_rfc7662_2_1_only_authenticated_confidential_clients(envoy_grants):
    e = envoy_grants
    at = cc_token(e)
    refusals = [
        ({}, {}),  # nobody
        ({"client_id": "tv"}, {}),  # a public client naming itself
        ({"client_id": "nobody"}, {}),
        ({}, {"Authorization": basic_auth("rs", "wrong")}),
        ({"client_id": "rs", "client_secret": "wrong"}, {}),
    ]
    for form, headers in refusals:
        r = post_form(e.introspection_url, {"token": at, **form}, headers=headers, timeout=5)
        assert_oauth_error(r, 401, "invalid_client")
        assert "active" not in r.json()
    # Authlib with a public client: refused too.
    with authlib_client(TV_CLIENT) as s:
        assert_oauth_error(s.introspect_token(e.introspection_url, token=at), 401, "invalid_client")
    assert_oauth_error(requests.get(e.introspection_url, params={"token": at}, timeout=5), 405, "invalid_request")
    assert_oauth_error(post_form(e.introspection_url, {}, RS_CLIENT), 400, "invalid_request")
    # A confidential client asks by its own method (client_secret_basic, client_secret_post):
    # the resource server of the token's audience, and the token's own client, see it; another
    # client sees exactly {"active": false} (RFC 7662 §4; test_policy_edges has the rest).
    assert introspect(e, at, client=RS_CLIENT)["active"] is True
    assert introspect(e, at, client=DEMO_CLIENT)["active"] is True
    assert introspect(e, at, client=POST_CLIENT) == INACTIVE
    assert introspect(e, cc_token(e, POST_CLIENT), client=POST_CLIENT)["active"] is True


# --------------------------------------------------------------------------- garbage burst
BURST_REQUESTS = 400


def _garbage_value(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return ""
    if kind == 1:
        return "".join(chr(rng.randrange(1, 0x250)) for _ in range(rng.randrange(1, 40)))
    if kind == 2:
        return ".".join(os.urandom(rng.randrange(1, 30)).hex() for _ in range(3))
    if kind == 3:
        return "rt1." + os.urandom(rng.randrange(0, 200)).hex()
    if kind == 4:
        return "A" * rng.randrange(1, 5000)
    if kind == 5:
        return rng.choice([DEVICE_CODE_GRANT, TOKEN_EXCHANGE_GRANT, "password", TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT])
    if kind == 6:
        return "%zz%00\x00\r\n;=&"
    if kind == 7:
        return rng.choice(["approve", "deny", "BCDF-GHJK", "bcdfghjk", "https://orders.example.test"])
    return str(rng.randrange(-10, 10**12))


_NAMES = ["token", "token_type_hint", "client_id", "client_secret", "grant_type", "device_code", "user_code",
          "action", "scope", "subject_token", "subject_token_type", "actor_token", "actor_token_type",
          "audience", "resource", "requested_token_type", "username", "password", "refresh_token"]


def _template(endpoint: str, rng: random.Random, tokens: list[str], partner_token: str) -> list[tuple[str, str]]:
    """A nearly valid request of its kind (so the burst reaches past the first checks)."""
    pick = lambda: rng.choice(tokens) if rng.random() < 0.5 else _garbage_value(rng)  # noqa: E731
    if endpoint in ("revoke", "introspect"):
        return [("token", pick()), ("token_type_hint", rng.choice(["access_token", "refresh_token", "x"]))]
    if endpoint == "device_authorization":
        return [("scope", rng.choice(["read", "openid read", "admin", _garbage_value(rng)]))]
    if endpoint == "device":
        code = "".join(rng.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(8))
        return [("user_code", rng.choice([code, code.lower(), code[:4] + "-" + code[4:], _garbage_value(rng)])),
                ("action", rng.choice(["approve", "deny", _garbage_value(rng)]))]
    grant = rng.choice([DEVICE_CODE_GRANT, TOKEN_EXCHANGE_GRANT, "password"])
    if grant == DEVICE_CODE_GRANT:
        return [("grant_type", grant), ("device_code", _garbage_value(rng))]
    if grant == TOKEN_EXCHANGE_GRANT:
        return [("grant_type", grant), ("subject_token", rng.choice([pick(), partner_token])),
                ("subject_token_type", rng.choice([TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT, _garbage_value(rng)])),
                ("audience", rng.choice([ORDERS_API, _garbage_value(rng)]))]
    return [("grant_type", grant), ("username", _garbage_value(rng)), ("password", _garbage_value(rng))]


def _garbage_request(e, rng: random.Random, login_jwt: str, tokens: list[str],
                     partner_token: str) -> tuple[str, requests.Response]:
    endpoint = rng.choice(["revoke", "introspect", "device_authorization", "device", "device", "token", "token"])
    url = {"revoke": e.revocation_url, "introspect": e.introspection_url,
           "device_authorization": e.device_authorization_url, "device": e.device_verification_url,
           "token": e.token_url}[endpoint]
    pairs = _template(endpoint, rng, tokens, partner_token) if rng.random() < 0.7 else []
    if endpoint == "token" and not pairs:
        pairs.append(("grant_type", rng.choice([DEVICE_CODE_GRANT, TOKEN_EXCHANGE_GRANT, "password"])))
    pairs += [(rng.choice(_NAMES), rng.choice(tokens) if rng.random() < 0.2 else _garbage_value(rng))
              for _ in range(rng.randrange(0, 4 if pairs else 8))]
    rng.shuffle(pairs)
    headers: dict[str, str] = {}
    auth = rng.randrange(5)
    if auth in (0, 4):
        headers["Authorization"] = basic_auth(BURST_CLIENT.client_id, BURST_CLIENT.secret)
    elif auth == 1:
        headers["Authorization"] = "Basic " + _garbage_value(rng).encode("utf-8", "replace").hex()
    elif auth == 2:
        pairs.append(("client_id", rng.choice(["tv", "burst", "nobody", _garbage_value(rng)])))
    if endpoint == "device" and rng.random() < 0.8:
        headers["Authorization"] = "Bearer " + (login_jwt if rng.random() < 0.8 else _garbage_value(rng))
    if rng.random() < 0.6:
        headers["Origin"] = rng.choice([AC_ISSUER, AC_ISSUER, "https://evil.example", "null", _garbage_value(rng)])
    shape = rng.randrange(12)
    if shape == 0:
        body: bytes = os.urandom(rng.randrange(0, 2000))
    elif shape == 1:
        body = b"x=" + b"y" * (MAX_BODY + rng.randrange(1, 100))  # over limits.max_body_bytes
    else:
        body = urllib.parse.urlencode(pairs).encode()
    ctype = rng.choice([FORM] * 6 + ["application/json", "text/plain", "", FORM + "; charset=utf-8"])
    if ctype:
        headers["Content-Type"] = ctype
    for k in list(headers):  # what an HTTP client can send: visible ASCII and inner spaces
        headers[k] = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in headers[k]).strip() or "?"
    method = "GET" if endpoint == "device" and rng.random() < 0.5 else rng.choice(["POST"] * 15 + ["PUT"])
    if method == "GET":
        r = requests.get(url + "?" + urllib.parse.urlencode(pairs), headers=headers, timeout=10,
                         allow_redirects=False)
    else:
        r = requests.request(method, url, data=body, headers=headers, timeout=10, allow_redirects=False)
    grants = {v for k, v in pairs if k == "grant_type"} if shape > 1 or method == "GET" else set()
    return f"{method} {endpoint} {' '.join(sorted(grants))}", r


def _burst(e, login_jwt: str, tokens: list[str], partner_token: str,
           seed: int) -> list[tuple[str, requests.Response]]:
    def one(i: int):
        return _garbage_request(e, random.Random(seed * 100_000 + i), login_jwt, tokens, partner_token)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(BURST_REQUESTS)))


def test_garbage_burst_at_the_new_endpoints_no_5xx(envoy_grants, login_service, registry, partners):
    """BURST_REQUESTS random requests (random parameters, bodies, content types, credentials,
    Origins, oversized bodies) at revocation, introspection, device authorization, device
    verification and the token endpoint's device_code / token-exchange / password grants: never
    a 5xx while the credential check works. With the credential check down (500), only the
    password grant may answer 500, and only as a clean server_error. Envoy keeps serving, and
    no wasm failure shows."""
    e = envoy_grants
    login_jwt = login_service.sign("burst-user")
    tokens = [cc_token(e), device_flow_tokens(e, login_service.sign("burst-owner"), TV_CLIENT)["refresh_token"]]
    partner_token = partners.idp.token("burst-partner", scope="read")
    out = _burst(e, login_jwt, tokens, partner_token, seed=1)
    bad = [(what, r.status_code, r.text[:160]) for what, r in out if r.status_code >= 500]
    assert not bad, bad
    statuses = sorted({r.status_code for _, r in out})
    assert set(statuses) <= {200, 303, 400, 401, 403, 405, 413, 415, 429}, statuses

    registry.set_verify_mode("down-500")
    try:
        out = _burst(e, login_jwt, tokens, partner_token, seed=2)
    finally:
        registry.set_verify_mode("ok")
    for what, r in out:
        if r.status_code >= 500:
            assert what.startswith("POST token ") and "password" in what.split(), (what, r.status_code, r.text[:200])
            assert_oauth_error(r, 500, "server_error")

    # Still serving, every endpoint: valid requests work.
    assert_revoked_ok(revoke(e, "nothing", DEMO_CLIENT))
    assert introspect(e, tokens[0])["active"] is True
    t = device_flow_tokens(e, login_service.sign("burst-after"), TV_CLIENT)
    assert introspect(e, t["access_token"])["sub"] == "burst-after"
    assert exchange(e, tokens[0]).status_code == 200
    assert e.health_problems() == []
