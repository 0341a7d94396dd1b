"""The device authorization grant (RFC 8628) through a real Envoy.

The device (tv: a public client; kiosk: confidential, client_secret_post) asks the device
authorization endpoint for a device_code and a user_code, then polls the token endpoint. The
user is authenticated by the gateway as at GET /oauth/authorize: Envoy's REAL jwt_authn filter
(before the wasm filter, on the verification endpoint too) verifies the login JWT and puts its
payload into dynamic metadata, where the plugin reads the user. The verification endpoint is a
JSON API (GET: what is asked; POST with the issuer's Origin: approve / deny). Tokens are
verified with PyJWT against GET /oauth/jwks. Every refusal is followed by a valid request.

Envoys:
  envoy_grants      device.interval GRANTS_DEVICE_INTERVAL s, lifetime 600 s (the default),
                    verification_uri the default (issuer origin + /oauth/device), login_url set,
                    device.attempts GRANTS_DEVICE_ATTEMPTS per GRANTS_DEVICE_WINDOW s per user
  envoy_device_alt  lifetime ALT_DEVICE_LIFETIME s, ALT_VERIFICATION_URI, user codes of
                    ALT_USER_CODE_LENGTH, ALT_ENDPOINTS, no login_url
  envoy_ac          no "device" section: the device endpoints are not the filter's
The expiry test polls a device_code made when this module starts (see _expiring_device_code),
so its wait overlaps with the other tests.
"""
from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from support.fixtures_grants import (
    ALT_DEVICE_LIFETIME,
    ALT_ENDPOINTS,
    ALT_USER_CODE_LENGTH,
    ALT_VERIFICATION_URI,
    GRANTS_DEVICE_ATTEMPTS,
    GRANTS_DEVICE_INTERVAL,
    GRANTS_DEVICE_WINDOW,
)
from helpers import (
    ACCESS_TOKEN_LIFETIME,
    AC_ISSUER,
    DEMO_CLIENT,
    DEVICE_CODE_GRANT,
    KIOSK_CLIENT,
    RS_CLIENT,
    LOGIN_URL,
    TV_CLIENT,
    USER_CODE_ALPHABET,
    Client,
    approve_device,
    assert_no_store_json,
    assert_oauth_error,
    bearer,
    device_authorization,
    device_decide,
    device_flow_tokens,
    device_lookup,
    post_form,
    introspect,
    normalize_user_code,
    poll_device,
    sleep_past_window_edge,
    start_device,
    verify_access_token,
    verify_id_token,
)
from render import DIRECT_RESPONSE_BODY

USER_CODE_RE = re.compile(f"^[{USER_CODE_ALPHABET}]{{4}}-[{USER_CODE_ALPHABET}]{{4}}$")
DEVICE_ANSWER = {"device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in",
                 "interval"}
_user_seq = iter(range(1, 10**6))


def user(prefix: str) -> str:
    """A fresh user name per call: device.attempts counts per user, across tests."""
    return f"{prefix}-{int(time.time() * 1000) % 10**8}-{next(_user_seq)}"


def poll_after_interval(envoy, device_code: str, client: Client = TV_CLIENT, last: float | None = None,
                        interval: float = GRANTS_DEVICE_INTERVAL) -> requests.Response:
    """Poll, waiting first until `interval` seconds (+ a margin) have passed since `last`."""
    if last is not None:
        time.sleep(max(0.0, last + interval + 0.25 - time.monotonic()))
    return poll_device(envoy, device_code, client)


# --------------------------------------------------------------------------- the expiring code
@pytest.fixture(scope="module", autouse=True)
def _expiring_device_code(envoy_device_alt) -> dict:
    """A tv device_code on envoy_device_alt (ALT_DEVICE_LIFETIME s), made when the module starts,
    polled once (pending); test_rfc8628_3_5_expired_token, the module's last test, polls it
    again after it expired."""
    d = start_device(envoy_device_alt, TV_CLIENT, "read")
    made = time.time()
    assert_oauth_error(poll_device(envoy_device_alt, d["device_code"]), 400, "authorization_pending")
    return dict(d, made=made)


# --------------------------------------------------------------------------- §3.1, §3.2
def test_rfc8628_3_2_device_authorization_response(envoy_grants):
    e = envoy_grants
    r = device_authorization(e, TV_CLIENT, "openid read")
    assert r.status_code == 200, r.text
    assert_no_store_json(r)
    d = r.json()
    assert set(d) == DEVICE_ANSWER, d
    assert USER_CODE_RE.match(d["user_code"]), d["user_code"]  # §6.1: XXXX-XXXX, 20 consonants
    assert d["verification_uri"] == AC_ISSUER + "/oauth/device"  # the default: issuer origin + path
    assert d["verification_uri_complete"] == d["verification_uri"] + "?user_code=" + d["user_code"]
    assert d["expires_in"] == 600 and d["interval"] == GRANTS_DEVICE_INTERVAL, d
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", d["device_code"]), d["device_code"]
    # Every request gets its own codes.
    others = [start_device(e, TV_CLIENT, "read") for _ in range(5)]
    assert len({o["device_code"] for o in others} | {d["device_code"]}) == 6
    assert len({o["user_code"] for o in others} | {d["user_code"]}) == 6
    # Without scope: the client's registered scope.
    r = device_authorization(e, TV_CLIENT, None)
    assert r.status_code == 200, r.text


def test_rfc8628_3_1_confidential_client_authenticates(envoy_grants):
    """kiosk authenticates with client_secret_post as at the token endpoint."""
    e = envoy_grants
    assert set(start_device(e, KIOSK_CLIENT, "read")) == DEVICE_ANSWER
    wrong = Client("kiosk", "wrong", auth_method="client_secret_post")
    assert_oauth_error(device_authorization(e, wrong, "read"), 401, "invalid_client")
    # Naming itself without its secret is not enough for a confidential client.
    assert_oauth_error(post_form(e.device_authorization_url, {"client_id": "kiosk", "scope": "read"}), 401,
                       "invalid_client")
    assert set(start_device(e, KIOSK_CLIENT, "read")) == DEVICE_ANSWER


@pytest.mark.parametrize("case", ["not-registered-for-the-grant", "unknown-client", "no-client", "scope-beyond",
                                  "json-body", "get"])
def test_rfc8628_3_1_device_authorization_refusals(envoy_grants, case):
    e = envoy_grants
    url = e.device_authorization_url
    if case == "not-registered-for-the-grant":  # demo-client: client_credentials only
        assert_oauth_error(device_authorization(e, DEMO_CLIENT, "read"), 400, "unauthorized_client")
    elif case == "unknown-client":
        assert_oauth_error(post_form(url, {"client_id": "no-such-tv", "scope": "read"}), 401, "invalid_client")
    elif case == "no-client":
        assert_oauth_error(post_form(url, {"scope": "read"}), 401, "invalid_client")
    elif case == "scope-beyond":
        assert_oauth_error(device_authorization(e, TV_CLIENT, "read admin"), 400, "invalid_scope")
    elif case == "json-body":
        r = requests.post(url, json={"client_id": "tv", "scope": "read"}, timeout=5)
        assert_oauth_error(r, 400, "invalid_request")
    elif case == "get":
        assert_oauth_error(requests.get(url, params={"client_id": "tv"}, timeout=5), 405, "invalid_request")
    assert set(start_device(e, TV_CLIENT, "read")) == DEVICE_ANSWER


# --------------------------------------------------------------------------- §3.3 - §3.5, the whole flow
def test_rfc8628_3_3_to_3_5_approve_then_tokens_exactly_once(envoy_grants, login_service):
    e = envoy_grants
    alice = user("dev-alice")
    login_iat = int(time.time()) - 17
    login = login_service.sign(alice, iat=login_iat)
    d = start_device(e, TV_CLIENT, "openid read")
    assert_oauth_error(poll_device(e, d["device_code"]), 400, "authorization_pending")
    last = time.monotonic()

    # The user types the code in lower case without the dash: found all the same.
    r = device_lookup(e, d["user_code"].replace("-", "").lower(), login)
    assert r.status_code == 200, r.text
    assert_no_store_json(r)
    assert r.json() == {"user_code": normalize_user_code(d["user_code"]), "client_id": "tv",
                        "client_name": "Living-room TV", "scope": "openid read", "status": "pending"}, r.json()
    # Still pending until the user decides (polling at the interval).
    assert_oauth_error(poll_after_interval(e, d["device_code"], last=last), 400, "authorization_pending")

    r = device_decide(e, d["user_code"], "approve", login)
    assert r.status_code == 200 and r.json() == {"status": "approved"}, r.text
    assert_no_store_json(r)
    assert device_lookup(e, d["user_code"], login).json()["status"] == "approved"

    # Approved: tokens at the next poll (no interval to wait once decided).
    r = poll_device(e, d["device_code"])
    assert r.status_code == 200, r.text
    assert_no_store_json(r)
    t = r.json()
    assert t["token_type"] == "Bearer" and t["expires_in"] == ACCESS_TOKEN_LIFETIME and t["scope"] == "openid read", t
    _, claims = verify_access_token(t["access_token"], e, client_id="tv", scope="openid read",
                                    lifetime=ACCESS_TOKEN_LIFETIME, sub=alice)
    assert claims["auth_time"] == login_iat, claims
    verify_id_token(t["id_token"], t["access_token"], e, client_id="tv", sub=alice, nonce=None, auth_time=login_iat)
    assert isinstance(t.get("refresh_token"), str), t

    # Exactly once: a later poll is invalid_grant; the request shows as issued; no second decision.
    assert_oauth_error(poll_device(e, d["device_code"]), 400, "invalid_grant")
    assert device_lookup(e, d["user_code"], login).json()["status"] == "issued"
    assert_oauth_error(device_decide(e, d["user_code"], "deny", login), 400, "invalid_request")
    assert_oauth_error(poll_device(e, d["device_code"]), 400, "invalid_grant")

    # The refresh token works (public client, client_id in the form) for the same user.
    r = post_form(e.token_url, {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, TV_CLIENT)
    assert r.status_code == 200, r.text
    verify_access_token(r.json()["access_token"], e, client_id="tv", scope="openid read",
                        lifetime=ACCESS_TOKEN_LIFETIME, sub=alice)


def test_rfc8628_3_5_confidential_client_without_refresh_grant_gets_no_refresh_token(envoy_grants, login_service):
    e = envoy_grants
    bob = user("dev-bob")
    t = device_flow_tokens(e, login_service.sign(bob), KIOSK_CLIENT, "read")
    assert "refresh_token" not in t and "id_token" not in t, t
    verify_access_token(t["access_token"], e, client_id="kiosk", scope="read", lifetime=ACCESS_TOKEN_LIFETIME, sub=bob)


def test_rfc8628_3_5_slow_down_grows_the_interval_for_good(envoy_grants):
    """Polling faster than the interval: slow_down, and the interval is 5 s longer from then on
    (code A: polled again after the old interval, still too fast). Waiting the new interval
    works (code B: authorization_pending again)."""
    e = envoy_grants
    a = start_device(e, TV_CLIENT, "read")
    b = start_device(e, TV_CLIENT, "read")
    for d in (a, b):
        assert_oauth_error(poll_device(e, d["device_code"]), 400, "authorization_pending")
        body = assert_oauth_error(poll_device(e, d["device_code"]), 400, "slow_down")
        assert "error_uri" not in body
    slowed = time.monotonic()
    grown = GRANTS_DEVICE_INTERVAL + 5
    # A: the original interval (and a margin) later: still too fast.
    assert_oauth_error(poll_after_interval(e, a["device_code"], last=slowed), 400, "slow_down")
    # B: the grown interval later: pending.
    assert_oauth_error(poll_after_interval(e, b["device_code"], last=slowed, interval=grown), 400,
                       "authorization_pending")


def test_rfc8628_3_5_access_denied(envoy_grants, login_service):
    e = envoy_grants
    carol = login_service.sign(user("dev-carol"))
    d = start_device(e, TV_CLIENT, "read")
    r = device_decide(e, d["user_code"], "deny", carol)
    assert r.status_code == 200 and r.json() == {"status": "denied"}, r.text
    assert device_lookup(e, d["user_code"], carol).json()["status"] == "denied"
    for _ in range(2):
        assert_oauth_error(poll_device(e, d["device_code"]), 400, "access_denied")
    # Decided is decided.
    assert_oauth_error(device_decide(e, d["user_code"], "approve", carol), 400, "invalid_request")
    assert_oauth_error(poll_device(e, d["device_code"]), 400, "access_denied")
    # A new request of the same device works.
    assert device_flow_tokens(e, carol)["token_type"] == "Bearer"


RACE_ROUNDS = 5
RACE_POLLERS = 6


def _concurrent_polls(e, device_code: str) -> list[requests.Response]:
    barrier = threading.Barrier(RACE_POLLERS)

    def one(_: int) -> requests.Response:
        with requests.Session() as s:
            barrier.wait(timeout=10)
            return poll_device(e, device_code, session=s)

    with ThreadPoolExecutor(RACE_POLLERS) as pool:
        return list(pool.map(one, range(RACE_POLLERS)))


def test_rfc8628_3_5_concurrent_polls_of_an_approved_code_issue_once(envoy_grants, login_service):
    """RACE_POLLERS polls of one device_code at the same moment, each on its own connection.
    Pending: one authorization_pending, the others (too fast after it) slow_down, never a 5xx.
    Approved: exactly one 200, the others invalid_grant. RACE_ROUNDS rounds."""
    e = envoy_grants
    for _ in range(RACE_ROUNDS):
        d = start_device(e, TV_CLIENT, "read")
        out = _concurrent_polls(e, d["device_code"])
        errors = Counter(r.json().get("error") for r in out if r.status_code == 400)
        assert errors == {"authorization_pending": 1, "slow_down": RACE_POLLERS - 1}, \
            [(r.status_code, r.text[:100]) for r in out]
        approve_device(e, d["user_code"], login_service.sign(user("dev-race")))
        out = _concurrent_polls(e, d["device_code"])
        got = Counter(r.status_code for r in out)
        assert got == {200: 1, 400: RACE_POLLERS - 1}, [(r.status_code, r.text[:100]) for r in out]
        for r in out:
            if r.status_code == 400:
                assert_oauth_error(r, 400, "invalid_grant")
        # A new request polls fine afterwards.
        assert_oauth_error(poll_device(e, start_device(e)["device_code"]), 400, "authorization_pending")


@pytest.mark.parametrize("case", ["garbage", "missing", "tampered", "another-clients", "client-not-registered",
                                  "confidential-without-secret"])
def test_rfc8628_3_5_poll_refusals(envoy_grants, login_service, case):
    """Nothing of these changes the real request: it still polls pending, then issues."""
    e = envoy_grants
    d = start_device(e, TV_CLIENT, "read")
    dc = d["device_code"]
    token_url = e.token_url
    if case == "garbage":
        assert_oauth_error(poll_device(e, "not-a-device-code"), 400, "invalid_grant")
    elif case == "missing":
        assert_oauth_error(post_form(token_url, {"grant_type": DEVICE_CODE_GRANT}, TV_CLIENT), 400, "invalid_request")
    elif case == "tampered":
        i = len(dc) // 2
        forged = dc[:i] + ("A" if dc[i] != "A" else "B") + dc[i + 1:]
        assert_oauth_error(poll_device(e, forged), 400, "invalid_grant")
    elif case == "another-clients":  # kiosk polls tv's code
        assert_oauth_error(poll_device(e, dc, KIOSK_CLIENT), 400, "invalid_grant")
    elif case == "client-not-registered":
        assert_oauth_error(poll_device(e, dc, DEMO_CLIENT), 400, "unauthorized_client")
    elif case == "confidential-without-secret":
        assert_oauth_error(post_form(token_url, {"grant_type": DEVICE_CODE_GRANT, "device_code": dc,
                                                 "client_id": "kiosk"}), 401, "invalid_client")
    assert_oauth_error(poll_device(e, dc), 400, "authorization_pending")
    approve_device(e, d["user_code"], login_service.sign(user("dev-refusals")))
    assert poll_device(e, dc).status_code == 200


# --------------------------------------------------------------------------- the verification endpoint
@pytest.mark.parametrize("typed", ["as-shown", "lower-case", "no-dash", "spaces", "dash-and-spaces"])
def test_rfc8628_6_1_user_code_is_case_insensitive_and_ignores_dashes_and_spaces(envoy_grants, login_service, typed):
    e = envoy_grants
    login = login_service.sign(user("dev-typist"))
    d = start_device(e, TV_CLIENT, "read")
    uc = d["user_code"]
    variant = {"as-shown": uc, "lower-case": uc.lower(), "no-dash": uc.replace("-", ""),
               "spaces": " ".join(uc.replace("-", "")), "dash-and-spaces": f" {uc[:2]} {uc[2:].lower()} "}[typed]
    r = device_lookup(e, variant, login)
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text
    r = device_decide(e, variant, "approve", login)
    assert r.status_code == 200 and r.json() == {"status": "approved"}, r.text
    assert poll_device(e, d["device_code"]).status_code == 200


@pytest.mark.parametrize("origin", [None, "https://evil.example", "null", AC_ISSUER + ".evil.example",
                                    "http://as.example.test", AC_ISSUER + ":8443"])
def test_rfc8628_5_4_decision_needs_the_issuers_origin(envoy_grants, login_service, origin):
    """The POST carries an Origin of the issuer (browsers send it; a cross-site form cannot fake
    it): none or another → 403, and the request stays pending."""
    e = envoy_grants
    login = login_service.sign(user("dev-origin"))
    d = start_device(e, TV_CLIENT, "read")
    r = device_decide(e, d["user_code"], "approve", login, origin=origin)
    assert_oauth_error(r, 403, "invalid_request")
    assert device_lookup(e, d["user_code"], login).json()["status"] == "pending"
    assert_oauth_error(poll_device(e, d["device_code"]), 400, "authorization_pending")
    r = device_decide(e, d["user_code"], "approve", login)  # the issuer's Origin
    assert r.status_code == 200 and r.json() == {"status": "approved"}, r.text
    assert poll_device(e, d["device_code"]).status_code == 200


def test_rfc8628_3_3_user_must_be_authenticated(envoy_grants, login_service):
    """No login JWT: GET → 303 to login_url with return_to; POST → 401 access_denied (never a
    redirect for a decision). A forged login JWT: jwt_authn itself refuses (401). The request
    stays pending throughout and is approved by the real user afterwards."""
    e = envoy_grants
    d = start_device(e, TV_CLIENT, "read")
    r = device_lookup(e, d["user_code"], None)
    assert r.status_code == 303, r.text
    loc = r.headers["Location"]
    base, _, query = loc.partition("?")
    assert base == LOGIN_URL, loc
    back = dict(urllib.parse.parse_qsl(query))
    assert set(back) == {"return_to"}, back
    assert back["return_to"] == "/oauth/device?" + urllib.parse.urlencode({"user_code": d["user_code"]}), back
    assert "no-store" in r.headers.get("Cache-Control", "")
    # Following return_to, logged in: the lookup.
    login = login_service.sign(user("dev-returning"))
    r = requests.get(e.base_url + back["return_to"], headers=bearer(login), allow_redirects=False, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text

    assert_oauth_error(device_decide(e, d["user_code"], "approve", None), 401, "access_denied")
    forged = login_service.sign("mallory", iss="https://evil.example.test")
    r = device_decide(e, d["user_code"], "approve", forged)
    assert r.status_code == 401 and "www-authenticate" in r.headers, r.text  # jwt_authn's answer
    assert device_lookup(e, d["user_code"], login).json()["status"] == "pending"
    r = device_decide(e, d["user_code"], "approve", login)
    assert r.status_code == 200, r.text
    assert poll_device(e, d["device_code"]).status_code == 200


def test_rfc8628_3_3_verification_refusals(envoy_grants, login_service):
    e = envoy_grants
    login = login_service.sign(user("dev-refuse"))
    d = start_device(e, TV_CLIENT, "read")
    uc = d["user_code"]
    url = e.device_verification_url
    assert_oauth_error(device_lookup(e, "", login), 400, "invalid_request")
    assert_oauth_error(requests.get(url, headers=bearer(login), timeout=5), 400, "invalid_request")
    assert_oauth_error(device_decide(e, uc, "maybe", login), 400, "invalid_request")
    assert_oauth_error(device_decide(e, uc, "", login), 400, "invalid_request")
    r = requests.post(url, json={"user_code": uc, "action": "approve"},
                      headers={"Origin": AC_ISSUER, **bearer(login)}, timeout=5)
    assert_oauth_error(r, 400, "invalid_request")
    r = requests.put(url, data={"user_code": uc, "action": "approve"}, headers={"Origin": AC_ISSUER, **bearer(login)},
                     timeout=5)
    assert_oauth_error(r, 405, "invalid_request")
    assert device_lookup(e, uc, login).json()["status"] == "pending"
    r = device_decide(e, uc, "approve", login)
    assert r.status_code == 200 and r.json() == {"status": "approved"}, r.text


def test_rfc8628_5_1_user_code_guessing_is_throttled_per_user(envoy_grants, login_service):
    """Every lookup or decision counts against device.attempts per user: past
    GRANTS_DEVICE_ATTEMPTS in the window, 429 with Retry-After, even for a real code; another
    user is not affected."""
    e = envoy_grants
    sleep_past_window_edge(GRANTS_DEVICE_WINDOW, 4)
    mallory = login_service.sign(user("dev-mallory"))
    d = start_device(e, TV_CLIENT, "read")
    statuses = []
    for i in range(GRANTS_DEVICE_ATTEMPTS):
        guess = "".join(USER_CODE_ALPHABET[(i * 7 + j) % 20] for j in range(8))
        if normalize_user_code(guess) == normalize_user_code(d["user_code"]):
            guess = "BBBBBBBB"
        r = device_lookup(e, guess, mallory)
        statuses.append(r.status_code)
        assert_oauth_error(r, 400, "invalid_request")
    for r in (device_lookup(e, "BCDFBCDF", mallory), device_lookup(e, d["user_code"], mallory),
              device_decide(e, d["user_code"], "approve", mallory)):
        assert_oauth_error(r, 429, "rate_limit_exceeded")
        retry = r.headers.get("Retry-After", "")
        assert retry.isdigit() and 1 <= int(retry) <= GRANTS_DEVICE_WINDOW, retry
    # The request was not approved by the throttled user; another user can.
    assert_oauth_error(poll_device(e, d["device_code"]), 400, "authorization_pending")
    approve_device(e, d["user_code"], login_service.sign(user("dev-honest")))
    assert poll_device(e, d["device_code"]).status_code == 200


# --------------------------------------------------------------------------- configuration
def test_rfc8628_disabled_without_the_device_section(envoy_ac):
    """No "device" section: the endpoints are not the filter's (the route's direct response
    answers them), and the grant is unsupported at the token endpoint."""
    e = envoy_ac
    r = post_form(e.base_url + "/oauth/device_authorization", {"client_id": "tv", "scope": "read"})
    assert r.status_code == 200 and r.text == DIRECT_RESPONSE_BODY, r.text
    r = requests.get(e.base_url + "/oauth/device", params={"user_code": "BCDF-GHJK"}, timeout=5)
    assert r.status_code == 200 and r.text == DIRECT_RESPONSE_BODY, r.text
    r = post_form(e.token_url, {"grant_type": DEVICE_CODE_GRANT, "device_code": "x"}, DEMO_CLIENT)
    assert_oauth_error(r, 400, "unsupported_grant_type")
    assert e.custom_stat("oauth_edge.requests.device_authorization") == 0


def test_rfc8628_configured_paths_verification_uri_and_code_length(envoy_device_alt, login_service):
    """envoy_device_alt: endpoints at ALT_ENDPOINTS, verification_uri ALT_VERIFICATION_URI (it has
    a query: verification_uri_complete appends with &), ALT_USER_CODE_LENGTH-character codes
    shown as two halves, expires_in ALT_DEVICE_LIFETIME; the verification_uri's origin is
    accepted for decisions; no login_url: a lookup without a user is 401 access_denied."""
    e = envoy_device_alt
    assert e.device_authorization_url.endswith(ALT_ENDPOINTS["device_authorization"])
    m = requests.get(e.base_url + "/.well-known/oauth-authorization-server", timeout=5).json()
    assert m["device_authorization_endpoint"] == AC_ISSUER + ALT_ENDPOINTS["device_authorization"]
    d = start_device(e, TV_CLIENT, "read")
    half = ALT_USER_CODE_LENGTH // 2
    assert re.fullmatch(f"[{USER_CODE_ALPHABET}]{{{half}}}-[{USER_CODE_ALPHABET}]{{{half}}}", d["user_code"]), d
    assert d["verification_uri"] == ALT_VERIFICATION_URI
    assert d["verification_uri_complete"] == ALT_VERIFICATION_URI + "&user_code=" + d["user_code"]
    assert d["expires_in"] == ALT_DEVICE_LIFETIME and d["interval"] == 1, d
    # The default paths are not the filter's here.
    r = post_form(e.base_url + "/oauth/device_authorization", {"client_id": "tv"})
    assert r.text == DIRECT_RESPONSE_BODY, r.text

    assert_oauth_error(device_lookup(e, d["user_code"], None), 401, "access_denied")
    login = login_service.sign(user("dev-alt"))
    assert device_lookup(e, d["user_code"], login).json()["status"] == "pending"
    tv_origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(ALT_VERIFICATION_URI))
    r = device_decide(e, d["user_code"], "approve", login, origin=tv_origin)
    assert r.status_code == 200 and r.json() == {"status": "approved"}, r.text
    r = poll_device(e, d["device_code"])
    assert r.status_code == 200, r.text
    # rs, the resource server of the issuer audience, introspects it (RFC 7662 §4).
    assert introspect(e, r.json()["access_token"], client=RS_CLIENT)["sub"].startswith("dev-alt-")


def test_rfc8628_3_5_expired_token(envoy_device_alt, login_service, _expiring_device_code):
    """The device_code made when the module started (pending then), polled once its lifetime
    (ALT_DEVICE_LIFETIME s) is over: expired_token; the user can no longer find or approve it.
    A new request works."""
    e = envoy_device_alt
    d = _expiring_device_code
    time.sleep(max(0.0, d["made"] + ALT_DEVICE_LIFETIME + 1.0 - time.time()))
    assert_oauth_error(poll_device(e, d["device_code"]), 400, "expired_token")
    login = login_service.sign(user("dev-late"))
    assert_oauth_error(device_lookup(e, d["user_code"], login), 400, "invalid_request")
    assert_oauth_error(device_decide(e, d["user_code"], "approve", login), 400, "invalid_request")
    assert_oauth_error(poll_device(e, d["device_code"]), 400, "expired_token")
    t = device_flow_tokens(e, login, TV_CLIENT, "read")
    assert t["token_type"] == "Bearer"
