"""OAuth 2.0 Token Exchange (RFC 8693) through a real Envoy.

gw (confidential, client_secret_basic, registered for the grant, allowed_resources ORDERS_API
and BILLING_API, token_exchange_subject_audiences our issuer and PARTNER2_AUDIENCE) trades a
subject token — one of our own access tokens, or a JWT of a trusted issuer — and optionally an
actor token for a narrower access token. (The policy itself — DPoP bindings, who may exchange,
the act chain, actors — is tested in test_token_policy.py.) The trusted
issuers' JWK Sets are served by the registry fixture (/jwks/{name}) and fetched by the filter
through jwks_fetch (cluster `registry`); their JWTs are signed with joserfc by the test. The new
tokens are verified with PyJWT against GET /oauth/jwks (act, aud, sub, client_id, scope, exp).
Every refusal is followed by a valid exchange.

Envoys: envoy_grants (token_exchange with the two `partners`: idp checked against our issuer as
audience, idp2 against PARTNER2_AUDIENCE), envoy_ac (no token_exchange section).
"""
from __future__ import annotations

import time

import jwt
import pytest

from helpers import (
    AC_ISSUER,
    ACCESS_TOKEN_LIFETIME,
    BILLING_API,
    DEMO_CLIENT,
    GW_CLIENT,
    ORDERS_API,
    PARTNER2_AUDIENCE,
    PARTNER_ISSUER,
    POST_CLIENT,
    TOKEN_EXCHANGE_GRANT,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_JWT,
    TOKEN_TYPE_REFRESH,
    TX_PUBLIC_CLIENT,
    Client,
    ClientKey,
    assert_no_store_json,
    assert_oauth_error,
    assert_revoked_ok,
    basic_auth,
    dpop_proof,
    endpoint_urls,
    exchange,
    post_form,
    introspect,
    revoke,
    token_request,
    unsigned_jws,
    verify_our_jwt,
)

ANSWER = {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}


def cc_token(envoy, client=DEMO_CLIENT, scope: str = "read write") -> str:
    r = token_request(envoy, client, scope=scope)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def assert_exchanged(r, envoy, *, sub: str, scope: str, aud, act=None, max_expires_in: int = ACCESS_TOKEN_LIFETIME,
                     token_type: str = "Bearer") -> dict:
    """RFC 8693 §2.2.1: issued_token_type access_token, token_type, no refresh token; the new
    access token verified with PyJWT. Its claims."""
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert_no_store_json(r)
    body = r.json()
    extra = {"dpop_access_token_bound", "dpop_signing_alg"} if token_type == "DPoP" else set()
    assert set(body) - extra == ANSWER, body
    assert "refresh_token" not in body
    assert body["issued_token_type"] == TOKEN_TYPE_ACCESS, body
    assert body["token_type"] == token_type, body
    assert body["scope"] == scope, body
    assert 0 < body["expires_in"] <= max_expires_in, body
    claims = verify_our_jwt(body["access_token"], envoy, audience=aud if isinstance(aud, str) else aud[0])
    assert claims["aud"] == aud, claims
    assert claims["sub"] == sub and claims["client_id"] == "gw", claims
    assert claims["scope"] == scope, claims
    assert claims.get("act") == act, claims
    assert abs(claims["exp"] - (claims["iat"] + body["expires_in"])) <= 1, (claims, body)
    return claims


def valid_exchange(envoy) -> None:
    """The exchange that must work after every refusal."""
    r = exchange(envoy, cc_token(envoy), extra={"scope": "read", "audience": ORDERS_API})
    assert_exchanged(r, envoy, sub="demo-client", scope="read", aud=ORDERS_API)


# --------------------------------------------------------------------------- §2.1, §2.2.1, §4.1
def test_rfc8693_2_1_own_access_token_with_a_trusted_actor(envoy_grants, partners):
    """Delegation: our access token as the subject, a partner's JWT as the actor: sub stays the
    subject's, act names the actor (with its issuer, not ours), the audience is the one asked
    for, the scope narrowed."""
    e = envoy_grants
    subject = cc_token(e)
    subject_exp = jwt.decode(subject, options={"verify_signature": False})["exp"]
    actor = partners.idp.token("gateway-7")
    r = exchange(e, subject, extra={"actor_token": actor, "actor_token_type": TOKEN_TYPE_JWT, "scope": "read",
                                    "audience": ORDERS_API})
    claims = assert_exchanged(r, e, sub="demo-client", scope="read", aud=ORDERS_API,
                              act={"sub": "gateway-7", "iss": PARTNER_ISSUER})
    assert claims["exp"] <= subject_exp, claims
    # Introspection shows the same (RFC 7662 with RFC 8693 §4.1's act) to gw, the token's client.
    v = introspect(e, r.json()["access_token"], client=GW_CLIENT)
    assert v["active"] is True and v["act"] == {"sub": "gateway-7", "iss": PARTNER_ISSUER}, v
    assert v["aud"] == ORDERS_API and v["client_id"] == "gw" and v["sub"] == "demo-client", v


def test_rfc8693_4_1_act_chain_nests_the_subjects_own_act(envoy_grants, partners):
    """Our own token as actor (gw's own: an actor is the client itself or a trusted issuer's):
    act {"sub"} without iss (it is us). Exchanging the result again (its audience is the
    default, our issuer, which gw may exchange) with another actor nests the first act inside
    the new one (newest first)."""
    e = envoy_grants
    actor = cc_token(e, GW_CLIENT, "read")
    r = exchange(e, cc_token(e), extra={"actor_token": actor, "actor_token_type": TOKEN_TYPE_ACCESS})
    first = assert_exchanged(r, e, sub="demo-client", scope="read write", aud=AC_ISSUER,
                             act={"sub": "gw"})
    r2 = exchange(e, r.json()["access_token"], extra={"actor_token": partners.idp.token("gateway-9"),
                                                      "actor_token_type": TOKEN_TYPE_JWT, "scope": "read"})
    assert_exchanged(r2, e, sub="demo-client", scope="read", aud=AC_ISSUER,
                     act={"sub": "gateway-9", "iss": PARTNER_ISSUER, "act": {"sub": "gw"}},
                     max_expires_in=first["exp"] - int(time.time()) + 1)


def test_rfc8693_2_1_trusted_issuers_jwt_as_subject(envoy_grants, partners):
    """A partner's JWT (ES256, aud = our issuer): sub and scope from it; no scope asked: the
    subject's scope within the client's (admin dropped); never longer than the subject lives."""
    e = envoy_grants
    subject = partners.idp.token("u-42", lifetime=40, scope="read write")
    exp = jwt.decode(subject, options={"verify_signature": False})["exp"]
    claims = assert_exchanged(exchange(e, subject, TOKEN_TYPE_JWT), e, sub="u-42", scope="read write",
                              aud=AC_ISSUER, max_expires_in=40)
    assert claims["exp"] == exp, claims
    r = exchange(e, partners.idp.token("u-43", scope="read admin"), TOKEN_TYPE_JWT)
    assert_exchanged(r, e, sub="u-43", scope="read", aud=AC_ISSUER)


def test_rfc8693_2_1_trusted_issuer_with_its_own_audience(envoy_grants, partners):
    """idp2 (EdDSA) is configured with audience PARTNER2_AUDIENCE: its JWTs must name that, not
    our issuer."""
    e = envoy_grants
    r = exchange(e, partners.idp2.token("u-7", scope="read"), TOKEN_TYPE_JWT)
    assert_exchanged(r, e, sub="u-7", scope="read", aud=AC_ISSUER)
    r = exchange(e, partners.idp2.token("u-7", scope="read", aud=AC_ISSUER), TOKEN_TYPE_JWT)
    assert_oauth_error(r, 400, "invalid_request")
    r = exchange(e, partners.idp2.token("u-7", scope="read", aud=[PARTNER2_AUDIENCE, "https://x.example"]),
                 TOKEN_TYPE_JWT)
    assert_exchanged(r, e, sub="u-7", scope="read", aud=AC_ISSUER)


def test_rfc8693_2_2_1_dpop_bound_exchange_rfc9449(envoy_grants):
    """With a DPoP proof the new token is bound to its key: token_type DPoP, cnf.jkt."""
    e = envoy_grants
    key = ClientKey("EdDSA", None)
    proof = dpop_proof(key, endpoint_urls(e)["token"])
    r = exchange(e, cc_token(e), dpop=proof, extra={"scope": "read"})
    claims = assert_exchanged(r, e, sub="demo-client", scope="read", aud=AC_ISSUER, token_type="DPoP")
    assert claims["cnf"] == {"jkt": key.thumbprint()}, claims
    v = introspect(e, r.json()["access_token"])
    assert v["token_type"] == "DPoP" and v["cnf"] == {"jkt": key.thumbprint()}, v


# --------------------------------------------------------------------------- targets and scope
def test_rfc8693_2_1_audience_and_resource_within_the_clients_policy(envoy_grants):
    """Every audience and resource must be in gw's token_exchange_audiences (invalid_target
    otherwise); none asked for: the default audience (our issuer here)."""
    e = envoy_grants
    subject = cc_token(e)
    r = exchange(e, subject, extra={"resource": BILLING_API, "scope": "read"})
    assert_exchanged(r, e, sub="demo-client", scope="read", aud=BILLING_API)
    r = exchange(e, subject, extra=[("resource", ORDERS_API), ("resource", BILLING_API), ("scope", "read")])
    assert_exchanged(r, e, sub="demo-client", scope="read", aud=[ORDERS_API, BILLING_API])
    r = exchange(e, subject, extra=[("audience", ORDERS_API), ("resource", BILLING_API), ("scope", "read")])
    assert_exchanged(r, e, sub="demo-client", scope="read", aud=[ORDERS_API, BILLING_API])
    for extra in ({"audience": "https://evil.example"},
                  [("audience", ORDERS_API), ("resource", "https://evil.example")],
                  [("resource", BILLING_API), ("resource", "https://evil.example/api")],
                  {"resource": "https://evil.example/api"},
                  {"audience": ORDERS_API + "/"},
                  {"audience": AC_ISSUER}):
        assert_oauth_error(exchange(e, subject, extra=extra), 400, "invalid_target")
        valid_exchange(e)


def test_rfc8693_2_1_several_audience_parameters(envoy_grants):
    """RFC 8693 §2.1: "Multiple audience parameters MAY be used to indicate that the issued
    token is intended to be used at multiple locations" (like resource, RFC 8707)."""
    e = envoy_grants
    subject = cc_token(e)
    r = exchange(e, subject, extra=[("audience", ORDERS_API), ("audience", BILLING_API), ("scope", "read")])
    assert_exchanged(r, e, sub="demo-client", scope="read", aud=[ORDERS_API, BILLING_API])
    r = exchange(e, subject, extra=[("audience", ORDERS_API), ("audience", "https://evil.example")])
    assert_oauth_error(r, 400, "invalid_target")
    valid_exchange(e)


@pytest.mark.parametrize("scope", ["admin", "read admin", "openid"])
def test_rfc8693_2_1_scope_beyond_subject_or_client_is_invalid_scope(envoy_grants, partners, scope):
    e = envoy_grants
    assert_oauth_error(exchange(e, cc_token(e), extra={"scope": scope}), 400, "invalid_scope")
    # The subject had only read: write is beyond it even though gw may have write.
    narrow = partners.idp.token("u-1", scope="read")
    assert_oauth_error(exchange(e, narrow, TOKEN_TYPE_JWT, extra={"scope": "write"}), 400, "invalid_scope")
    assert_exchanged(exchange(e, narrow, TOKEN_TYPE_JWT, extra={"scope": "read"}), e, sub="u-1", scope="read",
                     aud=AC_ISSUER)
    valid_exchange(e)


# --------------------------------------------------------------------------- §2.2.2 refusals
def _tampered(token: str) -> str:
    head, body, sig = token.split(".")
    return f"{head}.{body}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"


def _swapped_payload(token: str, other: str) -> str:
    return ".".join([token.split(".")[0], other.split(".")[1], token.split(".")[2]])


BAD_SUBJECTS = ["tampered-own", "own-payload-swapped", "stranger-key-same-kid", "untrusted-issuer", "wrong-audience",
                "expired", "not-yet-valid", "no-sub", "empty-sub", "alg-none", "garbage", "revoked-own",
                "refresh-token", "unknown-kid"]


def _bad_subject(case: str, e, partners, login_service) -> str:
    idp = partners.idp
    if case == "tampered-own":
        return _tampered(cc_token(e))
    if case == "own-payload-swapped":
        return _swapped_payload(cc_token(e), cc_token(e, POST_CLIENT, "read"))
    if case == "stranger-key-same-kid":
        return idp.token("u", key=ClientKey("ES256", idp.key.kid))
    if case == "untrusted-issuer":
        return idp.token("u", iss="https://other.example")
    if case == "wrong-audience":
        return idp.token("u", aud="https://else.example")
    if case == "expired":
        return idp.token("u", exp=int(time.time()) - 5)
    if case == "not-yet-valid":
        return idp.token("u", nbf=int(time.time()) + 600)
    if case == "no-sub":
        return idp.token(None)
    if case == "empty-sub":
        return idp.token("")
    if case == "alg-none":
        return unsigned_jws({"kid": idp.key.kid, "typ": "JWT"},
                            {"iss": PARTNER_ISSUER, "sub": "u", "aud": AC_ISSUER, "exp": int(time.time()) + 60})
    if case == "garbage":
        return "garbage"
    if case == "revoked-own":
        at = cc_token(e)
        assert_revoked_ok(revoke(e, at, DEMO_CLIENT))
        return at
    if case == "refresh-token":
        from helpers import issue_code, redeem_code

        code, verifier = issue_code(e, login_service.sign("tx-user"), scope="openid read")
        return redeem_code(e, code, verifier).json()["refresh_token"]
    if case == "unknown-kid":
        return idp.token("u", key=ClientKey("ES256", "partner-unknown-kid"))
    raise AssertionError(case)


@pytest.mark.parametrize("case", BAD_SUBJECTS)
def test_rfc8693_2_2_2_bad_subject_token_is_invalid_request(envoy_grants, partners, login_service, case):
    e = envoy_grants
    bad = _bad_subject(case, e, partners, login_service)
    for token_type in (TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS):
        assert_oauth_error(exchange(e, bad, token_type), 400, "invalid_request")
    # The same, as the actor of a good subject.
    r = exchange(e, cc_token(e), extra={"actor_token": bad, "actor_token_type": TOKEN_TYPE_JWT})
    assert_oauth_error(r, 400, "invalid_request")
    valid_exchange(e)


@pytest.mark.parametrize("case", ["unknown-subject-type", "refresh-subject-type", "no-subject-token",
                                  "no-subject-type", "actor-without-type", "actor-type-without-actor",
                                  "requested-refresh-token", "requested-unknown-type"])
def test_rfc8693_2_1_malformed_requests_are_invalid_request(envoy_grants, case):
    e = envoy_grants
    subject = cc_token(e)
    form = {"grant_type": TOKEN_EXCHANGE_GRANT, "subject_token": subject, "subject_token_type": TOKEN_TYPE_ACCESS}
    if case == "unknown-subject-type":
        form["subject_token_type"] = "urn:example:unknown"
    elif case == "refresh-subject-type":
        form["subject_token_type"] = TOKEN_TYPE_REFRESH
    elif case == "no-subject-token":
        del form["subject_token"]
    elif case == "no-subject-type":
        del form["subject_token_type"]
    elif case == "actor-without-type":
        form["actor_token"] = cc_token(e, POST_CLIENT, "read")
    elif case == "actor-type-without-actor":
        form["actor_token_type"] = TOKEN_TYPE_ACCESS
    elif case == "requested-refresh-token":
        form["requested_token_type"] = TOKEN_TYPE_REFRESH
    elif case == "requested-unknown-type":
        form["requested_token_type"] = "urn:example:saml"
    assert_oauth_error(post_form(e.token_url, form, GW_CLIENT), 400, "invalid_request")
    # requested_token_type access_token or jwt is fine (ours are JWTs).
    for requested in (TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT):
        r = exchange(e, subject, extra={"requested_token_type": requested, "scope": "read"})
        assert_exchanged(r, e, sub="demo-client", scope="read", aud=AC_ISSUER)


# --------------------------------------------------------------------------- the client
def test_rfc8693_2_1_only_confidential_clients_registered_for_the_grant(envoy_grants):
    e = envoy_grants
    subject = cc_token(e)
    # demo-client: confidential, not registered for the grant.
    assert_oauth_error(exchange(e, subject, client=DEMO_CLIENT), 400, "unauthorized_client")
    # tx-public lists the grant but cannot authenticate: token exchange is for confidential clients.
    assert_oauth_error(exchange(e, subject, client=TX_PUBLIC_CLIENT), 400, "unauthorized_client")
    assert_oauth_error(exchange(e, subject, client=Client("gw", "wrong")), 401, "invalid_client")
    r = post_form(e.token_url, {"grant_type": TOKEN_EXCHANGE_GRANT, "subject_token": subject,
                                "subject_token_type": TOKEN_TYPE_ACCESS})
    assert_oauth_error(r, 401, "invalid_client")
    valid_exchange(e)


def test_rfc8693_partner_key_rotation_is_picked_up(envoy_grants, partners, registry):
    """The partner adds a key: a JWT signed with it (a kid the cached JWK Set lacks) makes the
    filter fetch the set again (after jwks_fetch.refetch_cooldown) and is accepted; JWTs signed
    with the old key still work."""
    e = envoy_grants
    idp = partners.idp
    assert exchange(e, idp.token("u-rot", scope="read"), TOKEN_TYPE_JWT).status_code == 200  # set cached
    new_key = ClientKey("ES256", "partner-es-2")
    fetches = registry.jwks_count(idp.jwks_name)
    registry.set_jwks(idp.jwks_name, idp.jwks(new_key))
    try:
        time.sleep(1.2)  # POP_JWKS_FETCH refetch_cooldown is 1 s
        r = exchange(e, idp.token("u-rot", scope="read", key=new_key), TOKEN_TYPE_JWT)
        assert_exchanged(r, e, sub="u-rot", scope="read", aud=AC_ISSUER)
        assert registry.jwks_count(idp.jwks_name) > fetches
        assert exchange(e, idp.token("u-rot", scope="read"), TOKEN_TYPE_JWT).status_code == 200
    finally:
        registry.set_jwks(idp.jwks_name, idp.jwks())


def test_rfc8693_disabled_without_the_token_exchange_section(envoy_ac):
    r = post_form(envoy_ac.token_url, {"grant_type": TOKEN_EXCHANGE_GRANT, "subject_token": "x",
                                       "subject_token_type": TOKEN_TYPE_ACCESS}, DEMO_CLIENT)
    assert_oauth_error(r, 400, "unsupported_grant_type")
    assert token_request(envoy_ac, DEMO_CLIENT).status_code == 200


def test_rfc8693_basic_auth_header_alone_authenticates(envoy_grants):
    """client_secret_basic as RFC 6749 §2.3.1 says (form-urlencoded, then Basic)."""
    e = envoy_grants
    r = post_form(e.token_url, {"grant_type": TOKEN_EXCHANGE_GRANT, "subject_token": cc_token(e),
                                "subject_token_type": TOKEN_TYPE_ACCESS, "scope": "read"},
                  headers={"Authorization": basic_auth("gw", "gw-secret")})
    assert_exchanged(r, e, sub="demo-client", scope="read", aud=AC_ISSUER)
