"""Rate limits (rate_limits.per_client and rate_limits.per_address) through a real Envoy.

Fixed windows (RATE_CLIENT_WINDOW and RATE_ADDRESS_WINDOW seconds). per_client counts the requests of an authenticated client
at the token and PAR endpoints; per_address counts every request to the filter's POST endpoints
by the downstream address Envoy saw (never a header a client sets). Over the limit: 429
{"error": "rate_limit_exceeded", "error_description": ...}, Retry-After in whole seconds (1 to
the window), Cache-Control no-store. Never a 5xx; the Envoys stay healthy.

Fixed windows may be aligned to the clock or start with a counter's first request: each burst
starts just after a multiple of the window (in seconds of wall-clock time) and, on the per-address Envoy (one address
for every test), more than a window after that Envoy's previous request, so it fits in one
window either way.

Envoys: envoy_rate_client (per_client RATE_CLIENT_REQUESTS), envoy_rate_address (per_address
RATE_ADDRESS_REQUESTS); both route mode `direct`, loopback issuer.
"""
from __future__ import annotations

import http.client
import threading
import urllib.parse
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from support.fixtures_pop import (
    RATE_ADDRESS_REQUESTS,
    RATE_ADDRESS_WINDOW,
    RATE_CLIENT_REQUESTS,
    RATE_CLIENT_WINDOW,
)
from support.forms import post_form
from helpers import (
    ACCESS_TOKEN_LIFETIME,
    DEMO_CLIENT,
    POST_CLIENT,
    RATE_CLIENTS,
    RATE_PAR_CLIENT,
    RATE_PUBLIC_CLIENT,
    RATE_PAR_REDIRECT,
    Client,
    assert_oauth_error,
    assert_token_response,
    pkce_pair,
    token_request,
)

BURST = 20
_last_request: dict[str, float] = {}  # Envoy name -> time of the last request a test sent it


def window(envoy) -> int:
    return RATE_CLIENT_WINDOW if envoy.name == "rate-client" else RATE_ADDRESS_WINDOW


def start_of_window(envoy, *, after_quiet: bool = False) -> None:
    """Sleep until just after a multiple of the window (seconds of wall-clock time); with
    after_quiet, also more than a window after the previous test's last request to this Envoy."""
    w = window(envoy)
    earliest = time.time()
    if after_quiet and envoy.name in _last_request:
        earliest = max(earliest, _last_request[envoy.name] + w + 0.2)
    target = (int(earliest // w) + 1) * w + 0.05
    time.sleep(max(0.0, target - time.time()))


def done(envoy) -> None:
    _last_request[envoy.name] = time.time()


def cc(envoy, client: Client, *, session: requests.Session | None = None,
       headers: dict[str, str] | None = None) -> requests.Response:
    return token_request(envoy, client, scope="read", session=session, headers=headers)


def assert_limited(envoy, r: requests.Response) -> int:
    """A 429 rate_limit_exceeded answer; returns its Retry-After (seconds)."""
    assert_oauth_error(r, 429, "rate_limit_exceeded")
    retry_after = r.headers.get("Retry-After", "")
    assert retry_after.isdigit(), f"Retry-After {retry_after!r} (RFC 9110 §10.2.3: delay-seconds)"
    assert 1 <= int(retry_after) <= window(envoy), retry_after
    assert "no-store" in r.headers.get("Cache-Control", "").lower()
    return int(retry_after)


def assert_ok(envoy, r: requests.Response, scope: str = "read") -> None:
    assert_token_response(r, scope=scope, lifetime=ACCESS_TOKEN_LIFETIME)


def threaded_burst(n: int, send) -> list[requests.Response]:
    """n requests at the same moment, each on its own new connection (spread over Envoy's
    workers, so a count kept per worker would show)."""
    barrier = threading.Barrier(n)

    def one(i: int) -> requests.Response:
        with requests.Session() as s:
            barrier.wait(timeout=20)
            return send(i, s)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def no_5xx(responses: list[requests.Response]) -> None:
    bad = [(r.status_code, r.text[:120]) for r in responses if r.status_code >= 500]
    assert not bad, bad


# --------------------------------------------------------------------------- per client
def test_rfc6585_4_rate_limit_per_client_sequential_burst_then_served_again(envoy_rate_client):
    """BURST requests of one client in one window: exactly RATE_CLIENT_REQUESTS tokens, the rest
    429 with Retry-After; another client is served meanwhile; after Retry-After the first client
    is served again."""
    e = envoy_rate_client
    a, b = RATE_CLIENTS[0], RATE_CLIENTS[1]
    start_of_window(e)
    out = []
    with requests.Session() as s:
        for i in range(BURST):
            out.append(cc(e, a, session=s))
            if i == BURST // 2:
                assert_ok(e, cc(e, b, session=s))  # another client, meanwhile
    no_5xx(out)
    assert [r.status_code for r in out] == [200] * RATE_CLIENT_REQUESTS + [429] * (BURST - RATE_CLIENT_REQUESTS), \
        [(r.status_code, r.text[:80]) for r in out]
    for r in out[:RATE_CLIENT_REQUESTS]:
        assert_ok(e, r)
    retry_after = max(assert_limited(e, r) for r in out[RATE_CLIENT_REQUESTS:])
    assert_ok(e, cc(e, b))
    time.sleep(retry_after + 0.1)
    assert_ok(e, cc(e, a))
    done(e)


def test_rfc6585_4_rate_limit_per_client_threaded_burst_exactly_the_limit(envoy_rate_client):
    """BURST concurrent requests of one client on new connections (both workers): exactly
    RATE_CLIENT_REQUESTS tokens, the others 429 (the count is shared, not per worker)."""
    e = envoy_rate_client
    c, other = RATE_CLIENTS[2], RATE_CLIENTS[3]
    start_of_window(e)
    out = threaded_burst(BURST, lambda i, s: cc(e, c, session=s))
    no_5xx(out)
    tally = Counter(r.status_code for r in out)
    assert tally == {200: RATE_CLIENT_REQUESTS, 429: BURST - RATE_CLIENT_REQUESTS}, \
        (dict(tally), [r.text[:80] for r in out if r.status_code not in (200, 429)])
    retry_after = max(assert_limited(e, r) for r in out if r.status_code == 429)
    assert_ok(e, cc(e, other))
    time.sleep(retry_after + 0.1)
    assert_ok(e, cc(e, c))
    done(e)


def test_rfc6585_4_rate_limit_per_client_counts_only_authenticated_requests(envoy_rate_client):
    """Requests that fail client authentication are not the client's: BURST of them with a
    wrong secret are all 401 (none 429), and the client still has its whole allowance."""
    e = envoy_rate_client
    c = RATE_CLIENTS[4]
    start_of_window(e)
    with requests.Session() as s:
        wrong = [cc(e, Client(c.client_id, "not-the-secret", scope="read"), session=s) for _ in range(BURST)]
        for r in wrong:
            assert_oauth_error(r, 401, "invalid_client")
        out = [cc(e, c, session=s) for _ in range(RATE_CLIENT_REQUESTS + 2)]
    assert [r.status_code for r in out] == [200] * RATE_CLIENT_REQUESTS + [429, 429], \
        [(r.status_code, r.text[:80]) for r in out]
    for r in out[RATE_CLIENT_REQUESTS:]:
        assert_limited(e, r)
    assert_ok(e, cc(e, RATE_CLIENTS[5]))  # (recovery after the window: the two tests above)
    done(e)


def test_rfc6585_4_rate_limit_per_client_counts_par_and_token_requests_together(envoy_rate_client):
    """PAR and token requests of one client share its count."""
    e = envoy_rate_client
    c = RATE_PAR_CLIENT

    def par(s: requests.Session) -> requests.Response:
        form = {"response_type": "code", "redirect_uri": RATE_PAR_REDIRECT, "scope": "read",
                "code_challenge": pkce_pair()[1], "code_challenge_method": "S256"}
        return post_form(e.par_url, form, basic=c, session=s)

    start_of_window(e)
    with requests.Session() as s:
        first = [par(s) for _ in range(3)] + [cc(e, c, session=s) for _ in range(RATE_CLIENT_REQUESTS - 3)]
        over = [par(s), cc(e, c, session=s), par(s)]
    assert [r.status_code for r in first] == [201, 201, 201] + [200] * (RATE_CLIENT_REQUESTS - 3), \
        [(r.status_code, r.text[:80]) for r in first]
    for r in over:
        assert_limited(e, r)
    assert_ok(e, cc(e, RATE_CLIENTS[6]))
    done(e)


# --------------------------------------------------------------------------- per address
def _mixed_clients(i: int) -> Client:
    pool = [DEMO_CLIENT, POST_CLIENT, *RATE_CLIENTS]
    return pool[i % len(pool)]


def _address_request(e, i: int, s: requests.Session, headers: dict[str, str] | None = None) -> requests.Response:
    """Requests of several clients from 127.0.0.1; every 7th with a wrong secret (a POST to the
    token endpoint all the same)."""
    c = _mixed_clients(i)
    if i % 7 == 6:
        c = Client(c.client_id, "wrong-secret", scope="read")
    scope = "read" if c.client_id != DEMO_CLIENT.client_id else "read write"
    return token_request(e, c, scope=scope, session=s, headers=headers,
                         use="client_secret_post" if c.client_id == POST_CLIENT.client_id else None)


def _expected_unlimited(i: int) -> int:
    return 401 if i % 7 == 6 else 200


def test_rfc6585_4_rate_limit_per_address_sequential_burst_across_clients(envoy_rate_address):
    """BURST token requests from one address, several clients (and some failing
    authentication): the first RATE_ADDRESS_REQUESTS are answered as usual, the rest 429.
    Meanwhile GET endpoints and paths the filter does not own are not limited. After
    Retry-After, served again."""
    e = envoy_rate_address
    start_of_window(e, after_quiet=True)
    with requests.Session() as s:
        out = [_address_request(e, i, s) for i in range(BURST)]
        no_5xx(out)
        head, tail = out[:RATE_ADDRESS_REQUESTS], out[RATE_ADDRESS_REQUESTS:]
        assert [r.status_code for r in head] == [_expected_unlimited(i) for i in range(RATE_ADDRESS_REQUESTS)], \
            [(r.status_code, r.text[:80]) for r in head]
        retry_after = max(assert_limited(e, r) for r in tail)
        # Still limited: the PAR endpoint too (a POST endpoint of the filter).
        par = post_form(e.par_url, {"response_type": "code"}, basic=DEMO_CLIENT, session=s)
        assert_limited(e, par)
        # Not limited: GET endpoints and everything that is not the filter's.
        assert s.get(e.jwks_url, timeout=5).status_code == 200
        assert s.get(e.base_url + "/.well-known/oauth-authorization-server", timeout=5).status_code == 200
        passthrough = s.post(e.base_url + "/api/orders", data=b"{}", timeout=5)
        assert passthrough.status_code == 200 and passthrough.text.startswith("direct response"), passthrough.text
    time.sleep(retry_after + 0.1)
    assert_ok(e, cc(e, RATE_CLIENTS[5]))
    done(e)


def test_rfc6585_4_rate_limit_per_address_threaded_burst_exactly_the_limit(envoy_rate_address):
    """BURST concurrent requests from one address on new connections, several clients: exactly
    RATE_ADDRESS_REQUESTS are not 429."""
    e = envoy_rate_address
    start_of_window(e, after_quiet=True)
    out = threaded_burst(BURST, lambda i, s: _address_request(e, i, s))
    no_5xx(out)
    limited = [r for r in out if r.status_code == 429]
    assert len(out) - len(limited) == RATE_ADDRESS_REQUESTS, Counter(r.status_code for r in out)
    assert all(r.status_code in (200, 401) for r in out if r.status_code != 429), \
        [(r.status_code, r.text[:80]) for r in out]
    retry_after = max(assert_limited(e, r) for r in limited)
    time.sleep(retry_after + 0.1)
    assert_ok(e, cc(e, RATE_CLIENTS[6]))
    done(e)


def test_rfc6585_4_rate_limit_per_address_ignores_forwarding_headers(envoy_rate_address):
    """The address is the downstream address Envoy saw, never a header: requests claiming other
    client addresses in X-Forwarded-For, X-Real-IP, Forwarded or True-Client-IP, each a new one,
    all count for 127.0.0.1. (With Envoy's default use_remote_address false, Envoy itself takes
    the downstream address from X-Forwarded-For: the filter must not count by that.)"""
    e = envoy_rate_address
    start_of_window(e, after_quiet=True)
    with requests.Session() as s:
        out = []
        for i in range(BURST):
            ip = f"198.51.100.{i + 1}"
            spoof = {"X-Forwarded-For": ip, "X-Real-IP": ip, "Forwarded": f"for={ip}", "True-Client-IP": ip,
                     "X-Envoy-External-Address": ip}
            out.append(_address_request(e, i, s, headers=spoof))
    no_5xx(out)
    assert [r.status_code for r in out[:RATE_ADDRESS_REQUESTS]] == \
        [_expected_unlimited(i) for i in range(RATE_ADDRESS_REQUESTS)], [(r.status_code, r.text[:80]) for r in out]
    retry_after = max(assert_limited(e, r) for r in out[RATE_ADDRESS_REQUESTS:])
    time.sleep(retry_after + 0.1)
    assert_ok(e, cc(e, RATE_CLIENTS[7]))
    done(e)


@pytest.mark.parametrize("which", ["client", "address"])
def test_rfc6585_4_rate_limit_envoys_stay_healthy(request, which):
    """After the bursts: no wasm failure, panic or trap, and still serving."""
    e = request.getfixturevalue(f"envoy_rate_{which}")
    assert e.health_problems() == []
    failures = {k: v for k, v in e.stats(r"^wasm\.").items() if "fail" in k or "crash" in k}
    assert not any(failures.values()), failures
    if which == "address":
        start_of_window(e, after_quiet=True)
    assert_ok(e, cc(e, RATE_CLIENTS[0]))
    done(e)


def _post_from(envoy, source_ip: str, form: dict[str, str]) -> int:
    """A token request from another loopback address (the listener is on 127.0.0.1; the
    connection's source is `source_ip`, which is what Envoy's source.address says)."""
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10,
                                      source_address=(source_ip, 0))
    try:
        conn.request("POST", "/oauth/token", urllib.parse.urlencode(form),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def test_public_client_budget_is_per_source_address(envoy_rate_client):
    """A public client authenticates by naming its id, so anyone can spend its budget: garbage
    refresh requests from an attacker's address exhaust only that address's share, and the
    client's users elsewhere are not answered 429."""
    e = envoy_rate_client
    start_of_window(e, after_quiet=True)
    garbage = {"grant_type": "refresh_token", "refresh_token": "garbage",
               "client_id": RATE_PUBLIC_CLIENT.client_id}
    attacker = [_post_from(e, "127.0.0.2", garbage) for _ in range(RATE_CLIENT_REQUESTS + 3)]
    victim = _post_from(e, "127.0.0.1", garbage)
    done(e)
    assert attacker == [400] * RATE_CLIENT_REQUESTS + [429] * 3, attacker
    assert victim == 400, "the client's users on another address must not be limited"
