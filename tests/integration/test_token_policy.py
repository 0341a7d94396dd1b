"""Token policy (issue 12, items 1–3) through a real Envoy (envoy_grants).

1. Resource indicators are a per-client policy (RFC 8707 §2, RFC 9700 §2.3): a client gets
   tokens only for the resources in its `allowed_resources`, in every grant (client_credentials,
   PAR and authorize, the device flow, refresh, token exchange); anything else is
   `400 invalid_target`; no `resource` still gives the default audience; a refresh only narrows.
2. Token exchange never drops a sender constraint (RFC 9449 §6, RFC 8693 §5): a DPoP-bound
   subject is exchanged only with a proof by its key, and the new token is bound to it again.
   Only an audience of the subject token (its client_id in `aud`, or an audience its
   `token_exchange_subject_audiences` lists) may exchange it.
3. Token exchange keeps the delegation chain (RFC 8693 §4.1), and the actor is the client's own
   token or a trusted issuer's: `act.sub` is never an arbitrary other party.

Clients (helpers): demo-client (no list), policy-svc (client_credentials, ORDERS_API),
policy-rp (code + refresh, ORDERS_API and BILLING_API), policy-tv (device flow, ORDERS_API), gw
(exchanges tokens whose audience is our issuer; targets ORDERS_API, BILLING_API and ORDERS_SVC),
orders-svc (exchanges the tokens made for it, by its client_id, for BILLING_API), nosy (has the
grant, is nobody's audience). Tokens are verified with PyJWT against GET /oauth/jwks, proofs
signed with joserfc, RFC 7638 thumbprints computed independently. Every refusal is followed by a
request that works.
"""
from __future__ import annotations

from helpers import (
    AC_ISSUER,
    BILLING_API,
    DEMO_CLIENT,
    GW_CLIENT,
    NOSY_CLIENT,
    ORDERS_API,
    ORDERS_SVC,
    ORDERS_SVC_CLIENT,
    PARTNER_ISSUER,
    POLICY_REDIRECT,
    POLICY_RP_CLIENT,
    POLICY_SVC_CLIENT,
    POLICY_TV_CLIENT,
    POST_CLIENT,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_JWT,
    ClientKey,
    approve_device,
    assert_oauth_error,
    authorize_request,
    device_authorization,
    dpop_proof,
    endpoint_urls,
    exchange,
    introspect,
    issue_code,
    par_request,
    pkce_pair,
    poll_device,
    redeem_code,
    redirect_params,
    refresh_request,
    start_device,
    token_request,
    verify_our_jwt,
)

# The issue's example: a resource nobody registered.
ADMIN_API = "https://admin.internal.example/"


def cc(envoy, client, *resources: str, dpop: str | None = None):
    form = [("grant_type", "client_credentials")] + [("resource", r) for r in resources]
    if client.auth_method == "client_secret_post":  # the registered method only (RFC 7591 §2)
        form += [("client_id", client.client_id), ("client_secret", client.secret or "")]
    return token_request(envoy, client, data=form, use=client.auth_method,
                         headers={"DPoP": dpop} if dpop else None)


def aud_of(r, envoy) -> object:
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    return verify_our_jwt(r.json()["access_token"], envoy)["aud"]


def claims_of(r, envoy) -> dict:
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    return verify_our_jwt(r.json()["access_token"], envoy)


# --------------------------------------------------------------------------- 1. resources
def test_rfc8707_client_credentials_resource_outside_the_clients_list_is_invalid_target(envoy_grants):
    """demo-client has no allowed_resources: the issue's admin resource is refused (it used to
    come back as the token's aud); policy-svc gets exactly its registered resource."""
    e = envoy_grants
    assert_oauth_error(cc(e, DEMO_CLIENT, ADMIN_API), 400, "invalid_target")
    assert aud_of(cc(e, DEMO_CLIENT), e) == AC_ISSUER  # no resource: the default audience
    for resources in ([ADMIN_API], [ORDERS_API, ADMIN_API], [BILLING_API], [ORDERS_API + "/"], [AC_ISSUER]):
        assert_oauth_error(cc(e, POLICY_SVC_CLIENT, *resources), 400, "invalid_target")
        assert aud_of(cc(e, POLICY_SVC_CLIENT, ORDERS_API), e) == ORDERS_API


def test_rfc8707_par_and_authorize_refuse_resources_outside_the_clients_list(envoy_grants, login_service):
    """PAR answers invalid_target (as JSON); a plain authorization request redirects it to the
    client (RFC 6749 §4.1.2.1). The registered resources go through to the access token."""
    e = envoy_grants
    login = login_service.sign("policy-alice")
    _, challenge = pkce_pair()
    base = {"response_type": "code", "client_id": POLICY_RP_CLIENT.client_id, "redirect_uri": POLICY_REDIRECT,
            "scope": "read", "state": "st", "code_challenge": challenge, "code_challenge_method": "S256"}
    r = par_request(e, POLICY_RP_CLIENT, scope="read", code_challenge=challenge, code_challenge_method="S256",
                    resource=ADMIN_API)
    assert_oauth_error(r, 400, "invalid_target")
    r = authorize_request(e, dict(base, resource=ADMIN_API), login_jwt=login)
    p = redirect_params(r, POLICY_REDIRECT)
    assert p["error"] == "invalid_target" and "code" not in p and p["state"] == "st", p

    code, verifier = issue_code(e, login, POLICY_RP_CLIENT, scope="read", resource=BILLING_API)
    assert aud_of(redeem_code(e, code, verifier, POLICY_RP_CLIENT), e) == BILLING_API


def test_rfc8628_device_authorization_refuses_resources_outside_the_clients_list(envoy_grants, login_service):
    e = envoy_grants
    assert_oauth_error(device_authorization(e, POLICY_TV_CLIENT, resource=ADMIN_API), 400, "invalid_target")
    d = start_device(e, POLICY_TV_CLIENT, resource=ORDERS_API)
    approve_device(e, d["user_code"], login_service.sign("policy-tv-user"))
    assert aud_of(poll_device(e, d["device_code"], POLICY_TV_CLIENT), e) == ORDERS_API


def test_rfc8707_2_2_a_refresh_only_narrows_the_resources(envoy_grants, login_service):
    """A grant for ORDERS_API and BILLING_API: a refresh may ask for one of them (the refresh
    token keeps both), never for another resource — not even one the client could ask for in
    a new grant."""
    e = envoy_grants
    code, verifier = issue_code(e, login_service.sign("policy-bob"), POLICY_RP_CLIENT, scope="read",
                                resource=[ORDERS_API, BILLING_API])
    r = redeem_code(e, code, verifier, POLICY_RP_CLIENT)
    assert aud_of(r, e) == [ORDERS_API, BILLING_API]
    rt = r.json()["refresh_token"]

    r = refresh_request(e, rt, POLICY_RP_CLIENT, resource=BILLING_API)
    assert aud_of(r, e) == BILLING_API
    rt = r.json()["refresh_token"]
    for extra in ({"resource": ADMIN_API}, {"resource": AC_ISSUER}):
        assert_oauth_error(refresh_request(e, rt, POLICY_RP_CLIENT, **extra), 400, "invalid_target")
    r = refresh_request(e, rt, POLICY_RP_CLIENT)  # the refused attempts did not rotate it
    assert aud_of(r, e) == [ORDERS_API, BILLING_API]

    # A grant without resources: only the default audience, nothing to narrow to.
    code, verifier = issue_code(e, login_service.sign("policy-bob"), POLICY_RP_CLIENT, scope="read")
    r = redeem_code(e, code, verifier, POLICY_RP_CLIENT)
    assert aud_of(r, e) == AC_ISSUER
    rt = r.json()["refresh_token"]
    assert_oauth_error(refresh_request(e, rt, POLICY_RP_CLIENT, resource=ORDERS_API), 400, "invalid_target")
    assert aud_of(refresh_request(e, rt, POLICY_RP_CLIENT), e) == AC_ISSUER


# --------------------------------------------------------------------------- 2. binding, who
def test_rfc9449_exchanging_a_dpop_bound_token_needs_its_key_and_keeps_cnf(envoy_grants):
    """demo-client's DPoP-bound access token, exchanged by gw: without a proof it used to come
    back as a Bearer token without cnf; now that is invalid_dpop_proof, another key's proof is
    invalid_request, and the holder's proof gives a token bound to the same key."""
    e = envoy_grants
    url = endpoint_urls(e)["token"]
    key, other = ClientKey("ES256", None), ClientKey("EdDSA", None)
    r = cc(e, DEMO_CLIENT, dpop=dpop_proof(key, url))
    assert r.json()["token_type"] == "DPoP", r.text
    bound = r.json()["access_token"]
    assert verify_our_jwt(bound, e)["cnf"] == {"jkt": key.thumbprint()}

    assert_oauth_error(exchange(e, bound, extra={"scope": "read"}), 400, "invalid_dpop_proof")
    assert_oauth_error(exchange(e, bound, dpop=dpop_proof(other, url)), 400, "invalid_request")
    r = exchange(e, bound, dpop=dpop_proof(key, url), extra={"scope": "read", "audience": ORDERS_API})
    assert r.json()["token_type"] == "DPoP", r.text
    c = claims_of(r, e)
    assert c["cnf"] == {"jkt": key.thumbprint()} and c["aud"] == ORDERS_API and c["sub"] == "demo-client", c
    v = introspect(e, r.json()["access_token"], GW_CLIENT)
    assert v["token_type"] == "DPoP" and v["cnf"] == {"jkt": key.thumbprint()}, v

    # gw's own bound token as the actor binds the result the same way.
    actor = cc(e, GW_CLIENT, dpop=dpop_proof(key, url)).json()["access_token"]
    plain = cc(e, DEMO_CLIENT).json()["access_token"]
    act = {"actor_token": actor, "actor_token_type": TOKEN_TYPE_ACCESS}
    assert_oauth_error(exchange(e, plain, extra=act), 400, "invalid_dpop_proof")
    assert claims_of(exchange(e, plain, dpop=dpop_proof(key, url), extra=act), e)["cnf"] == {"jkt": key.thumbprint()}


def test_rfc9449_a_trusted_issuers_binding_is_kept_or_the_exchange_refused(envoy_grants, partners):
    """A partner's JWT with cnf.jkt: exchanged with a proof by that key, bound again; with an
    mTLS binding (x5t#S256), which a DPoP proof cannot show: refused."""
    e = envoy_grants
    url = endpoint_urls(e)["token"]
    key = ClientKey("ES256", None)
    subject = partners.idp.token("u-bound", scope="read", cnf={"jkt": key.thumbprint()})
    assert_oauth_error(exchange(e, subject, TOKEN_TYPE_JWT), 400, "invalid_dpop_proof")
    r = exchange(e, subject, TOKEN_TYPE_JWT, dpop=dpop_proof(key, url))
    assert claims_of(r, e)["cnf"] == {"jkt": key.thumbprint()}
    mtls = partners.idp.token("u-mtls", scope="read", cnf={"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"})
    assert_oauth_error(exchange(e, mtls, TOKEN_TYPE_JWT, dpop=dpop_proof(key, url)), 400, "invalid_request")
    assert_oauth_error(exchange(e, mtls, TOKEN_TYPE_JWT), 400, "invalid_request")
    assert claims_of(exchange(e, partners.idp.token("u-free", scope="read"), TOKEN_TYPE_JWT), e)["sub"] == "u-free"


def test_rfc8693_only_an_audience_of_the_subject_token_may_exchange_it(envoy_grants, partners):
    """nosy is registered for the grant but is no audience of demo-client's token (aud: our
    issuer) nor of the partner's: refused. gw's policy names our issuer. The token gw makes for
    ORDERS_SVC is for orders-svc (its client_id): orders-svc may exchange it, gw may not."""
    e = envoy_grants
    subject = cc(e, DEMO_CLIENT).json()["access_token"]
    assert_oauth_error(exchange(e, subject, client=NOSY_CLIENT), 400, "invalid_request")
    assert_oauth_error(exchange(e, partners.idp.token("u-1", scope="read"), TOKEN_TYPE_JWT, client=NOSY_CLIENT),
                       400, "invalid_request")
    r = exchange(e, subject, extra={"audience": ORDERS_SVC, "scope": "read"})
    assert aud_of(r, e) == ORDERS_SVC
    for_orders = r.json()["access_token"]
    r = exchange(e, for_orders, client=ORDERS_SVC_CLIENT, extra={"audience": BILLING_API})
    c = claims_of(r, e)
    assert (c["aud"], c["client_id"], c["sub"], c["scope"]) == (BILLING_API, ORDERS_SVC, "demo-client", "read"), c
    assert_oauth_error(exchange(e, for_orders), 400, "invalid_request")
    assert_oauth_error(exchange(e, r.json()["access_token"], client=ORDERS_SVC_CLIENT), 400, "invalid_request")


# --------------------------------------------------------------------------- 3. act
def test_rfc8693_4_1_re_exchanging_a_delegated_token_keeps_the_act_chain(envoy_grants, partners):
    """gw acts for demo-client (its own token as the actor) towards orders-svc; orders-svc
    exchanges that token for BILLING_API without an actor_token: act stays {"sub": "gw"} (it
    used to vanish). With a trusted actor on top, the chain nests newest first."""
    e = envoy_grants
    subject = cc(e, DEMO_CLIENT).json()["access_token"]
    own = cc(e, GW_CLIENT).json()["access_token"]
    r = exchange(e, subject, extra={"actor_token": own, "actor_token_type": TOKEN_TYPE_ACCESS,
                                    "audience": ORDERS_SVC})
    assert claims_of(r, e)["act"] == {"sub": "gw"}
    delegated = r.json()["access_token"]

    r = exchange(e, delegated, client=ORDERS_SVC_CLIENT, extra={"audience": BILLING_API})
    c = claims_of(r, e)
    assert c["act"] == {"sub": "gw"} and c["sub"] == "demo-client" and c["aud"] == BILLING_API, c
    assert introspect(e, r.json()["access_token"], ORDERS_SVC_CLIENT)["act"] == {"sub": "gw"}

    robot = partners.idp.token("robot-1")
    r = exchange(e, delegated, client=ORDERS_SVC_CLIENT,
                 extra={"actor_token": robot, "actor_token_type": TOKEN_TYPE_JWT, "audience": BILLING_API})
    assert claims_of(r, e)["act"] == {"sub": "robot-1", "iss": PARTNER_ISSUER, "act": {"sub": "gw"}}

    # A partner's subject with its own chain keeps it too.
    chained = partners.idp.token("u-5", scope="read", act={"sub": "agent-7", "act": {"sub": "agent-3"}})
    r = exchange(e, chained, TOKEN_TYPE_JWT, extra={"audience": ORDERS_API})
    assert claims_of(r, e)["act"] == {"sub": "agent-7", "act": {"sub": "agent-3"}}


def test_rfc8693_the_actor_is_the_clients_own_token_or_a_trusted_issuers(envoy_grants, partners):
    """gw naming another client's token as the actor used to make act.sub that client; now only
    gw's own tokens and trusted issuers' JWTs may act."""
    e = envoy_grants
    subject = cc(e, DEMO_CLIENT).json()["access_token"]
    for stranger in (POST_CLIENT, POLICY_SVC_CLIENT, DEMO_CLIENT):
        actor = cc(e, stranger).json()["access_token"]
        r = exchange(e, subject, extra={"actor_token": actor, "actor_token_type": TOKEN_TYPE_ACCESS})
        assert_oauth_error(r, 400, "invalid_request")
        own = cc(e, GW_CLIENT).json()["access_token"]
        r = exchange(e, subject, extra={"actor_token": own, "actor_token_type": TOKEN_TYPE_ACCESS})
        assert claims_of(r, e)["act"] == {"sub": "gw"}
    r = exchange(e, subject, extra={"actor_token": partners.idp.token("gateway-3"), "actor_token_type": TOKEN_TYPE_JWT})
    assert claims_of(r, e)["act"] == {"sub": "gateway-3", "iss": PARTNER_ISSUER}
