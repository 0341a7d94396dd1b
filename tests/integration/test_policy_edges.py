"""Token policy edges (issue 12, items 4–8) through a real Envoy.

- the registered token_endpoint_auth_method is enforced (RFC 7591 §2);
- seed and RFC details: JSON PAR needs `scope` (seed 002), /oauth/refresh needs its Content-Type
  (seed 001), every 401 carries a WWW-Authenticate challenge (RFC 9110 §15.5.2), and a cookie
  client may also get its new refresh token in the /oauth/refresh JSON (seeds 001/004);
- a replayed authorization code puts the access tokens issued from it (its own, its refresh
  family's) on the deny-list (RFC 6749 §4.1.2, RFC 9700 §4.5);
- introspection answers only the token's own client, or a resource server registered for one
  of an access token's audiences (RFC 7662 §2.1, §4);
- the FAPI 2.0 profile's refresh tokens survive a client's retry, forbidden grants are refused at
  start, and a reuse interval cannot be used to alternate two generations forever.

Clients that need metadata of their own are added to the registry fixture with fresh ids (each
test its own: no cache to wait for). Requests by `requests` with hand-built forms and JSON
(assertions and DPoP proofs signed with joserfc by the helpers); tokens are read with PyJWT.
Each test fails on the filter before issue 12's items 4–8, except the one of /oauth/refresh
without a Content-Type: that refusal already held, the test pins it.
"""
from __future__ import annotations

import uuid
from http.cookies import SimpleCookie
from typing import Any

import jwt
import requests

from support.fixtures_envoy import validate_plugin_config
from support.fixtures_grants import PASSWORD_GRANT
from support.fixtures_pop import fapi2_plugin_config
from helpers import (
    AC_CLIENT,
    ACCESS_TOKEN_LIFETIME,
    DEMO_CLIENT,
    FAPI_CLIENT,
    FAPI_REDIRECT,
    GW_CLIENT,
    ORDERS_API,
    PK_CLIENT,
    POST_CLIENT,
    REFRESH_COOKIE,
    RP_CLIENT,
    RP_REDIRECT,
    RS_CLIENT,
    SPA_CLIENT,
    SPA_ORIGIN,
    SPA_REDIRECT,
    Client,
    ClientKey,
    assert_oauth_error,
    assert_token_response,
    assertion_form,
    authorize_request,
    basic_auth,
    client_assertion,
    client_metadata,
    device_decide,
    dpop_proof,
    exchange,
    post_form,
    issue_code,
    par_request,
    pkce_pair,
    redeem_code,
    redirect_params,
    refresh_request,
    token_request,
)


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def registered(registry, c: Client) -> Client:
    registry.add_client(client_metadata(c))
    return c


def seed_par_body(client_id: str, **extra: Any) -> dict[str, Any]:
    """Seed 002's JSON PAR body (dto.PushedAuthorizationRequest), PKCE S256."""
    _, challenge = pkce_pair()
    body = {"client_id": client_id, "redirect_uri": RP_REDIRECT, "response_type": "code",
            "scope": "openid read", "code_challenge": challenge, "code_challenge_method": "S256",
            "nonce": "nonce-123", "state": "state-123"}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


# --------------------------------------------------------------------------- item 6: auth method
def test_rfc7591_2_client_secret_basic_client_cannot_send_its_secret_in_the_body(envoy_main):
    """demo-client is registered for client_secret_basic: its right secret in the body is
    401 invalid_client (as Hydra; node-oidc-provider would accept it), Basic works."""
    r = token_request(envoy_main, DEMO_CLIENT, use="client_secret_post")
    assert_oauth_error(r, 401, "invalid_client")
    assert_token_response(token_request(envoy_main, DEMO_CLIENT, use="client_secret_basic"),
                          scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


def test_rfc7591_2_client_secret_post_client_cannot_use_basic(envoy_main):
    """post-client is registered for client_secret_post: Basic with its right secret is 401
    invalid_client with the Basic challenge (RFC 6749 §5.2), the body works."""
    r = token_request(envoy_main, POST_CLIENT, use="client_secret_basic")
    assert_oauth_error(r, 401, "invalid_client")
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic "), r.headers
    assert_token_response(token_request(envoy_main, POST_CLIENT, use="client_secret_post", scope="read"),
                          scope="read", lifetime=ACCESS_TOKEN_LIFETIME)


def test_rfc7591_2_seed_002_json_par_with_client_secret_is_for_post_clients(envoy_ac, registry):
    """Seed 002's JSON PAR carries client_secret in the body: right for a client registered for
    client_secret_post, refused for a client_secret_basic one (which uses the header), at PAR
    and at every other endpoint that authenticates clients (revocation here)."""
    post = registered(registry, Client(fresh_id("seed-post"), "sp-secret", auth_method="client_secret_post",
                                       grant_types=("authorization_code",), scope="openid read",
                                       extra={"redirect_uris": [RP_REDIRECT]}))
    basic = registered(registry, Client(fresh_id("seed-basic"), "sb-secret", grant_types=("authorization_code",),
                                        scope="openid read", extra={"redirect_uris": [RP_REDIRECT]}))
    r = requests.post(envoy_ac.par_url, json=seed_par_body(post.client_id, client_secret=post.secret), timeout=10)
    assert r.status_code == 201, r.text
    r = requests.post(envoy_ac.par_url, json=seed_par_body(basic.client_id, client_secret=basic.secret), timeout=10)
    assert_oauth_error(r, 401, "invalid_client")
    r = requests.post(envoy_ac.par_url, json=seed_par_body(basic.client_id), timeout=10,
                      headers={"Authorization": basic_auth(basic.client_id, basic.secret or "")})
    assert r.status_code == 201, r.text
    # Revocation authenticates the same way (RFC 7009 §2.1): the other method is refused.
    r = post_form(envoy_ac.revocation_url, {"token": "x", "client_id": basic.client_id,
                                            "client_secret": basic.secret or ""})
    assert_oauth_error(r, 401, "invalid_client")
    r = post_form(envoy_ac.revocation_url, {"token": "x"}, basic)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- item 8: seed details
BASIC_CHALLENGE = 'Basic realm="oauth-edge"'


def cookie_of(r: requests.Response) -> str | None:
    """`name=value` of the refresh cookie a response sets (None: it sets none)."""
    values = [v for k, v in r.raw.headers.items() if k.lower() == "set-cookie"]
    if not values:
        return None
    assert len(values) == 1, values
    c = SimpleCookie()
    c.load(values[0])
    return f"{REFRESH_COOKIE}={c[REFRESH_COOKIE].value}"


def browser_login(envoy, login_service, client: Client = SPA_CLIENT, user: str = "erin") -> tuple[dict, str]:
    """A cookie client's code flow: (the token answer, the refresh cookie it set)."""
    code, verifier = issue_code(envoy, login_service.sign(user), client, scope="openid read")
    t = redeem_code(envoy, code, verifier, client)
    assert t.status_code == 200, t.text
    cookie = cookie_of(t)
    assert cookie is not None, t.headers
    return t.json(), cookie


def cookie_refresh(envoy, cookie: str, *, origin: str = SPA_ORIGIN, content_type: str | None = "application/json",
                   body: bytes = b"{}") -> requests.Response:
    headers = {"Origin": origin, "Cookie": cookie, "Accept": "application/json"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(envoy.refresh_url, data=body, headers=headers, timeout=10)


def test_seed_002_json_par_without_scope_is_invalid_request(envoy_ac):
    """Seed 002's dto.PushedAuthorizationRequest requires scope: a JSON PAR without it (or with
    null or an empty one) is 400 invalid_request. The form-encoded PAR (RFC 9126) keeps
    RFC 6749 §3.3's optional scope (the client's registered scopes)."""
    auth = {"Authorization": basic_auth(RP_CLIENT.client_id, RP_CLIENT.secret or "")}
    for scope in (None, "", "  "):
        body = seed_par_body(RP_CLIENT.client_id, scope=scope)
        if scope is None:
            body.pop("scope", None)
        r = requests.post(envoy_ac.par_url, json=body, headers=auth, timeout=10)
        assert_oauth_error(r, 400, "invalid_request")
        assert "scope" in r.json()["error_description"], r.text
    r = requests.post(envoy_ac.par_url, json=dict(seed_par_body(RP_CLIENT.client_id), scope=None), headers=auth,
                      timeout=10)
    assert_oauth_error(r, 400, "invalid_request")
    r = requests.post(envoy_ac.par_url, json=seed_par_body(RP_CLIENT.client_id), headers=auth, timeout=10)
    assert r.status_code == 201, r.text
    _, challenge = pkce_pair()
    r = par_request(envoy_ac, code_challenge=challenge, code_challenge_method="S256", state="s")
    assert r.status_code == 201, r.text


def test_seed_001_refresh_without_content_type_is_invalid_request_and_not_rotated(envoy_ac, login_service):
    """POST /oauth/refresh with the right cookie, Origin and `{}` but no Content-Type at all is
    refused like a wrong one (400 invalid_request) and spends nothing: the same cookie then
    rotates once, as usual."""
    _, cookie = browser_login(envoy_ac, login_service)
    r = cookie_refresh(envoy_ac, cookie, content_type=None)
    assert "content-type" not in {k.lower() for k in r.request.headers}, r.request.headers
    assert_oauth_error(r, 400, "invalid_request")
    assert cookie_of(r) is None, "no new cookie, none cleared"
    r = cookie_refresh(envoy_ac, cookie)
    assert r.status_code == 200, r.text
    assert cookie_of(r) not in (None, cookie)


def assert_challenge(r: requests.Response, status: int, error: str, scheme: str) -> str:
    assert_oauth_error(r, status, error)
    www = r.headers.get("WWW-Authenticate")
    assert www, f"RFC 9110 §15.5.2: a 401 carries WWW-Authenticate ({r.request.url})"
    assert www.split(" ", 1)[0].lower() == scheme.lower() and 'realm="oauth-edge"' in www, www
    return www


def test_rfc9110_15_5_2_every_401_carries_a_challenge(envoy_pop, envoy_ac, login_service, client_keys):
    """Not only after Basic: a wrong client_secret_post secret, a failing private_key_jwt
    assertion, no credentials, a public client at introspection, an unknown client at PAR and
    revocation all answer 401 with `WWW-Authenticate: Basic realm="oauth-edge"` (the one HTTP
    authentication scheme these endpoints take); /oauth/refresh's 401 invalid_grant challenges
    with `Cookie realm="oauth-edge"` (a Basic challenge could make a browser ask for a password)."""
    e = envoy_pop
    wrong_post = Client(POST_CLIENT.client_id, "wrong", auth_method="client_secret_post", scope="read")
    stale = client_assertion(client_keys.pk_es, PK_CLIENT.client_id, e.issuer, lifetime=-60)
    for r in (
        token_request(e, wrong_post, scope="read"),
        post_form(e.token_url, dict({"grant_type": "client_credentials"}, **assertion_form(stale))),
        post_form(e.token_url, {"grant_type": "client_credentials"}),
        post_form(e.introspection_url, {"token": "x"}, SPA_CLIENT),
        requests.post(e.par_url, json=seed_par_body("nobody", client_secret="x"), timeout=10),
        post_form(e.revocation_url, {"token": "x", "client_id": "nobody", "client_secret": "x"}),
    ):
        assert_challenge(r, 401, "invalid_client", "Basic")
    # Basic as before (RFC 6749 §5.2: the scheme the client used).
    www = assert_challenge(token_request(e, Client(DEMO_CLIENT.client_id, "wrong")), 401, "invalid_client", "Basic")
    assert www == BASIC_CHALLENGE
    # The cookie endpoint: its 401 invalid_grant (seed 001) challenges with the cookie scheme.
    r = cookie_refresh(envoy_ac, f"{REFRESH_COOKIE}=rt1.garbage")
    assert_challenge(r, 401, "invalid_grant", "Cookie")


def test_rfc9110_15_5_2_challenges_under_fapi2_and_at_the_device_endpoint(envoy_fapi2, envoy_device_alt, client_keys):
    """Under "profile": "fapi2" the endpoints take no Basic: a 401 to anything but a Basic
    attempt challenges with `private_key_jwt realm="oauth-edge"` (no HTTP scheme exists for an
    assertion in the body; clients skip schemes they do not know), a Basic attempt still gets
    Basic (RFC 6749 §5.2). The device verification endpoint's 401 (no user, no login_url) names
    the user's login as Envoy's jwt_authn would: `Bearer realm="oauth-edge"`."""
    e = envoy_fapi2
    any_key = ClientKey("ES256", None)
    proof = dpop_proof(any_key, e.issuer + "/oauth/token")
    r = post_form(e.token_url, {"grant_type": "client_credentials", "client_id": DEMO_CLIENT.client_id,
                                "client_secret": DEMO_CLIENT.secret or ""}, dpop=proof)
    assert_challenge(r, 401, "invalid_client", "private_key_jwt")
    r = post_form(e.token_url, {"grant_type": "client_credentials"}, basic=DEMO_CLIENT,
                  dpop=dpop_proof(any_key, e.issuer + "/oauth/token"))
    assert r.headers.get("WWW-Authenticate") == BASIC_CHALLENGE, r.headers
    r = device_decide(envoy_device_alt, "BCDF-GHJK", "approve", None)
    assert_challenge(r, 401, "access_denied", "Bearer")


def test_seeds_001_004_refresh_answer_may_carry_the_refresh_token(envoy_ac, registry, login_service):
    """A cookie client registered with refresh_endpoint_returns_refresh_token gets the new
    refresh token in the /oauth/refresh JSON too (seeds 001/004: "includes new access_token and
    refresh_token"), the same token as the new cookie; the cookie stays the carrier (the code
    redemption answer has none in its JSON), and a cookie client without the option never sees
    it in a body."""
    c = registered(registry, Client(fresh_id("spa-json"), None, auth_method="none",
                                    grant_types=("authorization_code", "refresh_token"), scope="openid read",
                                    extra={"redirect_uris": [SPA_REDIRECT], "refresh_token_cookie": True,
                                           "refresh_endpoint_returns_refresh_token": True}))
    t, cookie = browser_login(envoy_ac, login_service, c)
    assert "refresh_token" not in t, t
    r = cookie_refresh(envoy_ac, cookie)
    assert r.status_code == 200, r.text
    new_cookie = cookie_of(r)
    assert new_cookie not in (None, cookie)
    body = r.json()
    assert body.get("refresh_token") and new_cookie == f"{REFRESH_COOKIE}={body['refresh_token']}", (body, new_cookie)
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["client_id"] == c.client_id
    # The body's token is the cookie's: it rotates once more, then the family is spent as usual.
    r2 = cookie_refresh(envoy_ac, f"{REFRESH_COOKIE}={body['refresh_token']}")
    assert r2.status_code == 200, r2.text
    assert_oauth_error(cookie_refresh(envoy_ac, new_cookie), 401, "invalid_grant")
    # Without the option (spa): only the cookie carries it.
    _, spa_cookie = browser_login(envoy_ac, login_service)
    r = cookie_refresh(envoy_ac, spa_cookie)
    assert r.status_code == 200 and "refresh_token" not in r.json(), r.text


# --------------------------------------------------------------------------- item 5: replayed code
INACTIVE = {"active": False}


def introspect_as(envoy, token: str, client: Client) -> dict[str, Any]:
    """RFC 7662 §2.1 by `client` (its own method); asserts 200; the answer."""
    r = post_form(envoy.introspection_url, {"token": token}, client)
    assert r.status_code == 200, r.text
    return r.json()


def test_rfc6749_4_1_2_replayed_code_denies_its_access_token(envoy_grants, login_service):
    """ac-client has no refresh_token grant: the code gives one access token. Replaying the code
    (RFC 6749 §4.1.2, RFC 9700 §4.5) fails with invalid_grant and puts that access token on the
    deny-list: introspection answers exactly {"active":false}, token exchange refuses it."""
    e = envoy_grants
    code, verifier = issue_code(e, login_service.sign("replay-ann"), AC_CLIENT, scope="read")
    t = redeem_code(e, code, verifier, AC_CLIENT)
    assert t.status_code == 200, t.text
    at = t.json()["access_token"]
    assert introspect_as(e, at, AC_CLIENT)["active"] is True
    assert exchange(e, at, extra={"scope": "read"}).status_code == 200
    assert_oauth_error(redeem_code(e, code, verifier, AC_CLIENT), 400, "invalid_grant")
    assert introspect_as(e, at, AC_CLIENT) == INACTIVE
    assert_oauth_error(exchange(e, at), 400, "invalid_request")


def test_rfc6749_4_1_2_replayed_code_denies_every_access_token_of_its_grant(envoy_grants, login_service):
    """rp (refresh tokens): the code's access token and the ones its refreshes issued are all
    denied by a replay of the code, the refresh family is revoked as before; another grant of the
    same client and user is untouched."""
    e = envoy_grants
    code, verifier = issue_code(e, login_service.sign("replay-ben"), scope="openid read")
    t = redeem_code(e, code, verifier)
    assert t.status_code == 200, t.text
    t2 = refresh_request(e, t.json()["refresh_token"])
    assert t2.status_code == 200, t2.text
    other = redeem_code(e, *issue_code(e, login_service.sign("replay-ben"), scope="openid read"))
    assert other.status_code == 200, other.text
    ats = [t.json()["access_token"], t2.json()["access_token"]]
    for at in ats + [other.json()["access_token"]]:
        assert introspect_as(e, at, RP_CLIENT)["active"] is True
    assert_oauth_error(redeem_code(e, code, verifier), 400, "invalid_grant")
    for at in ats:
        assert introspect_as(e, at, RP_CLIENT) == INACTIVE
        assert_oauth_error(exchange(e, at), 400, "invalid_request")
    assert_oauth_error(refresh_request(e, t2.json()["refresh_token"]), 400, "invalid_grant")
    assert introspect_as(e, other.json()["access_token"], RP_CLIENT)["active"] is True
    assert refresh_request(e, other.json()["refresh_token"]).status_code == 200


# --------------------------------------------------------------------------- item 4: introspection
def test_rfc7662_4_access_tokens_only_to_their_client_and_their_audiences_resource_servers(
        envoy_grants, registry, login_service):
    """An access token is introspectable by the client it was issued to and by clients
    registered as the resource server of one of its audiences (resource_server_audiences);
    any other authenticated client gets exactly {"active":false}, as for a token that does not
    exist (RFC 7662 §2.1, §4)."""
    e = envoy_grants
    orders_rs = registered(registry, Client(fresh_id("rs-orders"), "rso-secret", scope="",
                                            extra={"resource_server_audiences": [ORDERS_API]}))
    code, verifier = issue_code(e, login_service.sign("intro-ivy"), scope="openid read")
    t = redeem_code(e, code, verifier)
    assert t.status_code == 200, t.text
    at = t.json()["access_token"]
    assert jwt.decode(at, options={"verify_signature": False})["aud"] == e.issuer
    for who in (RP_CLIENT, RS_CLIENT):
        v = introspect_as(e, at, who)
        assert v["active"] is True and v["client_id"] == "rp" and v["sub"] == "intro-ivy", v
    for who in (orders_rs, DEMO_CLIENT, POST_CLIENT, GW_CLIENT):
        assert introspect_as(e, at, who) == INACTIVE, who.client_id
    # A token for ORDERS_API (token exchange by gw): gw and the orders resource server see it,
    # the issuer audience's resource server does not.
    x = exchange(e, at, extra={"audience": ORDERS_API, "scope": "read"})
    assert x.status_code == 200, x.text
    xat = x.json()["access_token"]
    for who in (GW_CLIENT, orders_rs):
        v = introspect_as(e, xat, who)
        assert v["active"] is True and v["aud"] == ORDERS_API, v
    for who in (RS_CLIENT, RP_CLIENT):
        assert introspect_as(e, xat, who) == INACTIVE, who.client_id


def test_rfc7662_4_refresh_tokens_only_to_their_client(envoy_grants, login_service):
    """A refresh token is introspectable by the client it was issued to only: resource servers
    never receive refresh tokens, and other clients learn nothing."""
    e = envoy_grants
    code, verifier = issue_code(e, login_service.sign("intro-jon"), scope="openid read")
    rt = redeem_code(e, code, verifier).json()["refresh_token"]
    v = introspect_as(e, rt, RP_CLIENT)
    assert v["active"] is True and v["token_type"] == "refresh_token" and v["client_id"] == "rp", v
    for who in (RS_CLIENT, DEMO_CLIENT, POST_CLIENT):
        assert introspect_as(e, rt, who) == INACTIVE, who.client_id


# --------------------------------------------------------------------------- item 7: FAPI 2.0, reuse interval
def fapi_form_auth(e, client_keys) -> dict[str, str]:
    """private_key_jwt for fapi-client, aud = the issuer as a string (§5.3.2.1)."""
    return assertion_form(client_assertion(client_keys.fapi_es, FAPI_CLIENT.client_id, e.issuer))


def test_fapi2_sp_5_3_2_1_refresh_token_retried_after_a_lost_answer(envoy_fapi2, client_keys, login_service):
    """FAPI 2.0 §5.3.2.1: a client that did not receive a refresh answer retries with the
    refresh token it holds, and that must work. Under "profile": "fapi2" refresh tokens are not
    rotated (the choice oauth-edge makes; every client there is confidential): the answer carries
    no new refresh token and the held one keeps working, however late the retry."""
    e = envoy_fapi2
    key = ClientKey("ES256", None)
    token_htu = e.issuer + "/oauth/token"
    verifier, challenge = pkce_pair()
    form = {"response_type": "code", "redirect_uri": FAPI_REDIRECT, "scope": "openid read", "state": "st",
            "code_challenge": challenge, "code_challenge_method": "S256", **fapi_form_auth(e, client_keys)}
    r = post_form(e.par_url, form)
    assert r.status_code == 201, r.text
    a = authorize_request(e, {"client_id": FAPI_CLIENT.client_id, "request_uri": r.json()["request_uri"]},
                          login_jwt=login_service.sign("fapi-retry"))
    code = redirect_params(a, FAPI_REDIRECT)["code"]
    r = post_form(e.token_url, {"grant_type": "authorization_code", "code": code, "redirect_uri": FAPI_REDIRECT,
                                "code_verifier": verifier, **fapi_form_auth(e, client_keys)},
                  dpop=dpop_proof(key, token_htu))
    assert r.status_code == 200, r.text
    rt = r.json()["refresh_token"]
    ats = set()
    for _ in range(3):  # the first answer "lost", then retries
        r = post_form(e.token_url, {"grant_type": "refresh_token", "refresh_token": rt,
                                    **fapi_form_auth(e, client_keys)}, dpop=dpop_proof(key, token_htu))
        assert r.status_code == 200, r.text
        body = r.json()
        assert "refresh_token" not in body and body["token_type"] == "DPoP", body
        ats.add(body["access_token"])
    assert len(ats) == 3


def test_fapi2_sp_5_3_2_1_password_grant_refused_at_start(tmp_path, keys, client_keys, login_service):
    """A fapi2 configuration with the password grant (FAPI 2.0 §5.3.2.1: "shall reject requests
    using the resource owner password credentials grant") is refused at start with a message
    that says why; the same configuration in the default profile loads."""
    cfg = fapi2_plugin_config(login_service, client_keys, password_grant=dict(PASSWORD_GRANT))
    (tmp_path / "fapi").mkdir()
    rc, out = validate_plugin_config(tmp_path / "fapi", cfg, [keys.ed25519])
    assert rc != 0, "Envoy accepted profile fapi2 with the password grant"
    assert "fapi2 forbids the password grant" in out, out[-2000:]
    (tmp_path / "default").mkdir()
    rc, out = validate_plugin_config(tmp_path / "default", dict(cfg, profile="default"), [keys.ed25519])
    assert rc == 0, out[-3000:]


def test_rfc9700_4_14_2_reuse_interval_cannot_be_used_to_take_turns(envoy_ac, registry, login_service):
    """A client with refresh_token_reuse_interval 30 s, and its refresh token also in a thief's
    hands. The grace answers a retry of the previous token once; a thief and the client taking
    turns inside the window (each refresh the other's predecessor) would otherwise go on for
    ever: the second use of a generation the grace handed out twice revokes the family."""
    c = registered(registry, Client(fresh_id("grace"), "grace-secret",
                                    grant_types=("authorization_code", "refresh_token"), scope="openid read",
                                    extra={"redirect_uris": [RP_REDIRECT], "refresh_token_reuse_interval": 30}))
    code, verifier = issue_code(envoy_ac, login_service.sign("turns"), c, scope="openid read")
    shared = redeem_code(envoy_ac, code, verifier, c).json()["refresh_token"]

    def refresh(rt: str) -> requests.Response:
        return refresh_request(envoy_ac, rt, c)

    client1 = refresh(shared)
    assert client1.status_code == 200, client1.text
    thief1 = refresh(shared)  # inside the window: the grace, once
    assert thief1.status_code == 200, thief1.text
    client2 = refresh(client1.json()["refresh_token"])
    assert client2.status_code == 200, client2.text
    assert_oauth_error(refresh(thief1.json()["refresh_token"]), 400, "invalid_grant")
    assert_oauth_error(refresh(client2.json()["refresh_token"]), 400, "invalid_grant")
    # An honest retry still works once: a new grant, one lost answer, the retry, onwards.
    code, verifier = issue_code(envoy_ac, login_service.sign("turns"), c, scope="openid read")
    rt0 = redeem_code(envoy_ac, code, verifier, c).json()["refresh_token"]
    assert refresh(rt0).status_code == 200  # lost
    retry = refresh(rt0)
    assert retry.status_code == 200, retry.text
    assert refresh(retry.json()["refresh_token"]).status_code == 200
