"""Token policy edges (issue 12, items 4–8) through a real Envoy.

- the registered token_endpoint_auth_method is enforced (RFC 7591 §2);
- seed and RFC details: JSON PAR needs `scope` (seed 002), /oauth/refresh needs its Content-Type
  (seed 001), every 401 carries a WWW-Authenticate challenge (RFC 9110 §15.5.2), and a cookie
  client may also get its new refresh token in the /oauth/refresh JSON (seeds 001/004);
- a replayed authorization code puts the access token issued from it on the deny-list
  (RFC 6749 §4.1.2, RFC 9700 §4.5);
- introspection answers only the token's own client, or a resource server registered for one
  of an access token's audiences (RFC 7662 §2.1, §4);
- the FAPI 2.0 profile's refresh tokens survive a client's retry, forbidden grants are refused at
  start, and a reuse interval cannot be used to alternate two generations forever.

Clients that need metadata of their own are added to the registry fixture with fresh ids (each
test its own: no cache to wait for). Requests by `requests` with hand-built forms and JSON, or by
Authlib where a client library's behaviour is the point; tokens are read with PyJWT.
"""
from __future__ import annotations

import uuid
from typing import Any

import requests

from helpers import (
    DEMO_CLIENT,
    FORM,
    POST_CLIENT,
    RP_REDIRECT,
    Client,
    assert_oauth_error,
    assert_token_response,
    basic_auth,
    client_metadata,
    form_post,
    pkce_pair,
    token_request,
    ACCESS_TOKEN_LIFETIME,
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
    r = form_post(envoy_ac.revocation_url, {"token": "x", "client_id": basic.client_id,
                                            "client_secret": basic.secret or ""})
    assert_oauth_error(r, 401, "invalid_client")
    r = form_post(envoy_ac.revocation_url, {"token": "x"}, basic)
    assert r.status_code == 200, r.text
