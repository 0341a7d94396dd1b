"""Issue 13: one owner holds a bounded share of each ring (store.share_percent, 10 % of a ring
per record lifetime by default; store.replay_share_percent, 25 % of the replay cache).

The rings of the short-lived store are fixed; before, anyone could fill one and every other
client got 500. Each test here is an attacker on 127.0.0.2 filling a small ring as a stranger
(a public client's id, a logged-in user of their own), and a victim on 127.0.0.3. The attacker
gets 429 with Retry-After past its share, never a 5xx; the victim is served. (Fixed windows: an
owner may create up to twice its share across a window edge, which the counts allow for.)"""
from __future__ import annotations

import http.client
import json
import urllib.parse

import pytest

from support.fixtures_envoy import finish_envoy, start_envoy
from support.fixtures_grants import grants_plugin_config
from helpers import (DPOP_BOUND_CLIENT, RP_CLIENT, SPA_CLIENT, TV_CLIENT, ClientKey, basic_auth, endpoint_urls,
                     client_metadata, dpop_proof, pkce_pair)

SLOTS = 64  # request_uri_slots, code_slots, device_slots
JTI_SLOTS = 16  # the replay cache holds about 4 live entries a slot
SHARE = SLOTS * 10 // 100
REPLAY_SHARE = JTI_SLOTS * 4 // 2 * 25 // 100  # DPoP proofs: half of the replay share
ATTACKER, VICTIM = "127.0.0.2", "127.0.0.3"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def envoy_shares(keys, login_service, registry, backend, partners, tmp_path_factory):
    cfg = grants_plugin_config(login_service, registry, partners,
                               store={"request_uri_slots": SLOTS, "code_slots": SLOTS, "device_slots": SLOTS,
                                      "jti_slots": JTI_SLOTS},
                               # Long enough that nothing expires during a test.
                               lifetimes={"access_token": "60s", "code": "300s", "request_uri": "300s"})
    cfg["clients"].append(client_metadata(DPOP_BOUND_CLIENT))
    inst = start_envoy("ring-shares", tmp_path_factory, route_mode="direct", plugin_config=cfg, default_shares=True,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter(extra_paths=["/oauth/device"])])
    yield inst
    finish_envoy(inst)


def _send(envoy, source: str, method: str, url: str, body: dict[str, str] | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10, source_address=(source, 0))
    try:
        data = urllib.parse.urlencode(body) if body is not None else None
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = FORM
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), data, hdrs)
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed
    finally:
        conn.close()


def _assert_bounded(answers: list[tuple[int, dict, dict]], ok: int, share: int) -> None:
    """The attacker's answers: `ok` up to its share (twice across a window edge), then 429 with
    Retry-After; never anything else."""
    statuses = [s for s, _, _ in answers]
    assert set(statuses) <= {ok, 429}, statuses
    served = statuses.count(ok)
    assert share <= served <= 2 * share, statuses
    assert statuses[-1] == 429, statuses
    for s, h, b in answers:
        if s == 429:
            assert b.get("error") == "rate_limit_exceeded" and int(h["retry-after"]) >= 1, (h, b)
            assert h.get("cache-control") == "no-store", h


def _par_form(client) -> dict[str, str]:
    _, challenge = pkce_pair()
    return {"response_type": "code", "client_id": client.client_id, "scope": "read",
            "redirect_uri": client.extra["redirect_uris"][0], "code_challenge": challenge,
            "code_challenge_method": "S256"}


def test_a_stranger_cannot_fill_the_pushed_requests_of_a_public_client(envoy_shares):
    e = envoy_shares
    answers = [_send(e, ATTACKER, "POST", e.par_url, _par_form(SPA_CLIENT)) for _ in range(SLOTS + 16)]
    _assert_bounded(answers, 201, SHARE)
    # The public client's users elsewhere, and a confidential client, still push requests.
    assert _send(e, VICTIM, "POST", e.par_url, _par_form(SPA_CLIENT))[0] == 201
    rp = _send(e, VICTIM, "POST", e.par_url, _par_form(RP_CLIENT),
               {"Authorization": basic_auth(RP_CLIENT.client_id, RP_CLIENT.secret)})
    assert rp[0] == 201, rp


def test_a_stranger_cannot_fill_the_device_requests_of_a_public_client(envoy_shares):
    e = envoy_shares
    form = {"client_id": TV_CLIENT.client_id, "scope": "read"}
    answers = [_send(e, ATTACKER, "POST", e.device_authorization_url, form) for _ in range(SLOTS + 16)]
    _assert_bounded(answers, 200, SHARE)
    s, _, body = _send(e, VICTIM, "POST", e.device_authorization_url, form)
    assert s == 200 and body.get("device_code"), body


def test_a_logged_in_user_cannot_fill_the_codes_ring(envoy_shares, login_service):
    e = envoy_shares
    mallory = login_service.sign("mallory-shares")

    def authorize(login: str, source: str):
        q = urllib.parse.urlencode(_par_form(RP_CLIENT) | {"scope": "openid read", "state": "st"})
        return _send(e, source, "GET", f"{e.authorize_url}?{q}", headers={"Authorization": f"Bearer {login}"})

    answers = [authorize(mallory, ATTACKER) for _ in range(SLOTS + 16)]
    _assert_bounded(answers, 303, SHARE)
    s, h, _ = authorize(login_service.sign("alice-shares"), VICTIM)
    assert s == 303 and "code=" in h["location"], (s, h)


def test_strangers_proofs_cannot_fill_the_replay_cache(envoy_shares):
    """A public client "authenticates" by its id, so its DPoP proofs are recorded: a stranger
    sends garbage refresh requests as the TV app, each with a fresh proof by a throw-away key."""
    e = envoy_shares

    def garbage(source: str):
        proof = dpop_proof(ClientKey("ES256", None), endpoint_urls(e)["token"])
        return _send(e, source, "POST", e.token_url,
                     {"grant_type": "refresh_token", "refresh_token": "garbage", "client_id": TV_CLIENT.client_id},
                     {"DPoP": proof})

    answers = [garbage(ATTACKER) for _ in range(JTI_SLOTS * 8 + 16)]
    statuses = [s for s, _, _ in answers]
    assert set(statuses) <= {400, 429}, statuses
    assert REPLAY_SHARE <= statuses.count(400) <= 2 * REPLAY_SHARE, statuses
    assert statuses[-1] == 429
    # A confidential DPoP client keeps getting tokens, from anywhere.
    key = ClientKey("ES256", None)
    for source in (VICTIM, ATTACKER):
        s, _, body = _send(e, source, "POST", e.token_url, {"grant_type": "client_credentials"},
                           {"Authorization": basic_auth(DPOP_BOUND_CLIENT.client_id, DPOP_BOUND_CLIENT.secret),
                            "DPoP": dpop_proof(key, endpoint_urls(e)["token"])})
        assert s == 200 and body.get("token_type") == "DPoP", body
