"""Upstreams that fail mid-answer must never take a worker down (issue 11).

Every dispatched call of the filter (dispatch_http_call: the client registry, clients' jwks_uri,
the password grant's credential check, the etcd store) goes through one adapter path, and an
answer Envoy cannot complete reaches the filter as a call "response" without a response at all.
Issue 11: a registry that sent `HTTP/1.1 200`, Content-Length 500, a few body bytes and then a TCP
RST trapped the wasm VM (`oauth-edge: panic: ... unexpected status: 2`, then
`proxy_on_http_call_response failed: Uncaught RuntimeError: unreachable`); the request hung, and
from then on that worker answered 503 to everything, OAuth or not (FAIL_CLOSED with a dead VM).

Here each upstream kind gets a real Envoy (--concurrency 2, the listener's connections spread
over both workers with exact_balance) whose cluster for that upstream points at a ChaosServer
(tests/fixtures/chaos.py), switched through every way of failing: reset before the headers, reset
after them, a truncated body (clean close), a huge body, a body dripping slower than the call's
timeout, and no answer at all. For each kind and mode:

  1. the request that needs the upstream gets a clean OAuth error (the status the kind promises,
     flat JSON {"error", "error_description"}, Cache-Control no-store) within a bounded time: the
     upstream timeouts here are UPSTREAM_TIMEOUT, so `stall` and `drip` end there too;
  2. the upstream really was asked (the chaos server counted the request);
  3. recovery on EVERY worker: RECOVERY_CONNECTIONS keep-alive connections held open at once
     (the per-worker listener stats prove both workers took some) each get a valid
     client_credentials token (demo-client) and a pass-through GET answered by the echo backend;
  4. nothing in Envoy's log says panic, trap or failed VM call, and the wasm failure stats are 0.

One Envoy per kind serves all of its modes (module-scoped, started and finished with support/fixtures_envoy.py's
start_envoy/finish_envoy, so the teardown health check applies). A test that leaves its Envoy
unhealthy (a trapped VM) has failed already; the next test then gets a fresh Envoy, so each mode
is judged on its own rather than on the wreck the previous one left.
"""
from __future__ import annotations

import copy
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
import requests

from support.envoy import EnvoyInstance
from support.fixtures_envoy import RUNNING, base_plugin_config, finish_envoy, start_envoy
from chaos import FAULT_MODES, ChaosServer
from helpers import (
    AC_CLIENT,
    DEMO_CLIENT,
    PW_BULK_CLIENT,
    Client,
    ClientKey,
    assert_oauth_error,
    assertion_form,
    client_assertion,
    client_metadata,
    endpoint_urls,
    post_form,
    jwks_of,
    pk_metadata,
    pkce_pair,
    token_request,
)

JWKS_COOLDOWN = 1.0  # s: jwks_fetch.refetch_cooldown, also how long a failed fetch is remembered
UPSTREAM_TIMEOUT = 1.0  # s: registry.timeout, jwks_fetch.timeout, password_grant.timeout, store.etcd.timeout
SLACK = 3.0  # s: what a loaded 2-core machine may add to an answer's expected time
MAX_CALLS = 2  # upstream calls one trigger may make (Kind.calls: the etcd store retries once)
# How long the test waits for any answer (a trapped VM never answers): past the latest a clean
# answer may come (MAX_CALLS timeouts and the slack), so a slow answer is reported as slow.
CLIENT_TIMEOUT = MAX_CALLS * UPSTREAM_TIMEOUT + SLACK + 1.0
RECOVERY_CONNECTIONS = 6
PASSTHROUGH_PATH = "/api/after-upstream-fault"
CHAOS_CLUSTER = "chaos"
# Log lines that mean the VM (or a call into it) failed; any of them fails a test.
TRAP_MARKERS = ("panic", "Uncaught RuntimeError", "wasm trap", "Wasm VM failed", "[critical]")

PK_CHAOS = Client("pk-chaos", None, auth_method="private_key_jwt", scope="read")
PK_CHAOS_KEY = ClientKey("ES256", "pk-chaos-1")
PK_CHAOS_JWKS_URI = "http://keys.chaos.test/jwks/pk-chaos"


# --------------------------------------------------------------------------- the kinds
@dataclass
class Kind:
    """One kind of upstream: how its Envoy is configured and which request reaches it."""
    name: str
    configure: Callable[[dict[str, Any]], None]  # the plugin configuration, in place
    trigger: Callable[[EnvoyInstance], requests.Response]
    expected: dict[int, set[str]]  # clean answers allowed: status -> OAuth error codes
    calls: int = 1  # upstream calls one trigger may make (the etcd store retries once)


def _seconds(s: float) -> str:
    return f"{int(s * 1000)}ms"


def _registry_config(cfg: dict[str, Any]) -> None:
    cfg["registry"].update({"cluster": CHAOS_CLUSTER, "timeout": _seconds(UPSTREAM_TIMEOUT)})


def _registry_trigger(envoy: EnvoyInstance) -> requests.Response:
    """client_credentials for a client id no static client has: the filter asks the registry
    (a new id each time; failures are not cached anyway)."""
    ghost = Client(f"ghost-{uuid.uuid4().hex[:12]}", "ghost-secret")
    return token_request(envoy, ghost, timeout=CLIENT_TIMEOUT)


def _jwks_config(cfg: dict[str, Any]) -> None:
    cfg["jwks_fetch"] = {"cluster": CHAOS_CLUSTER, "timeout": _seconds(UPSTREAM_TIMEOUT), "cache_ttl": "10m",
                         "refetch_cooldown": _seconds(JWKS_COOLDOWN), "require_https": False}
    cfg["client_assertion"] = {"max_lifetime": "300s", "clock_skew": "30s"}
    cfg["clients"].append(pk_metadata(PK_CHAOS, jwks_uri=PK_CHAOS_JWKS_URI))


def _jwks_trigger(envoy: EnvoyInstance) -> requests.Response:
    """client_credentials by a static private_key_jwt client whose keys are behind a jwks_uri
    served (badly) by the chaos server. A failed fetch is remembered for refetch_cooldown (1 s
    here): wait that long so this trigger fetches again."""
    time.sleep(JWKS_COOLDOWN + 0.1)
    aud = endpoint_urls(envoy)["token"]
    form = {"grant_type": "client_credentials", "scope": "read",
            **assertion_form(client_assertion(PK_CHAOS_KEY, PK_CHAOS.client_id, aud))}
    return post_form(envoy.token_url, form, timeout=CLIENT_TIMEOUT)


def _password_config(cfg: dict[str, Any]) -> None:
    # A failure limit far away: only 401/403/404 count, but a limit must never be what answers.
    cfg["password_grant"] = {"cluster": CHAOS_CLUSTER, "path": "/verify", "authority": "users.chaos.test",
                             "timeout": _seconds(UPSTREAM_TIMEOUT),
                             "failures": {"requests": 1000, "window": "60s"}}
    cfg["clients"].append(client_metadata(PW_BULK_CLIENT))


def _password_trigger(envoy: EnvoyInstance) -> requests.Response:
    form = {"grant_type": "password", "username": f"u-{uuid.uuid4().hex[:10]}", "password": "pw", "scope": "read"}
    return post_form(envoy.token_url, form, PW_BULK_CLIENT, timeout=CLIENT_TIMEOUT)


def _etcd_config(cfg: dict[str, Any]) -> None:
    # No real etcd: the filter speaks etcd's JSON gateway over plain HTTP to the chaos server.
    cfg["store"] = {"backend": "etcd", "etcd": {"cluster": CHAOS_CLUSTER, "prefix": "/oauth-edge/",
                                                "timeout": _seconds(UPSTREAM_TIMEOUT)}}


def _etcd_trigger(envoy: EnvoyInstance) -> requests.Response:
    """A pushed authorization request: its request_uri is the first thing written to the store."""
    _, challenge = pkce_pair()
    form = {"response_type": "code", "redirect_uri": AC_CLIENT.extra["redirect_uris"][0], "scope": "read",
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"}
    return post_form(envoy.par_url, form, basic=AC_CLIENT, timeout=CLIENT_TIMEOUT)


KINDS = {
    "registry": Kind("registry", _registry_config, _registry_trigger, {500: {"server_error"}}),
    "jwks_uri": Kind("jwks_uri", _jwks_config, _jwks_trigger, {401: {"invalid_client"}, 500: {"server_error"}}),
    "password": Kind("password", _password_config, _password_trigger, {500: {"server_error"}}),
    "etcd": Kind("etcd", _etcd_config, _etcd_trigger, {500: {"server_error"}}, calls=2),
}
assert all(k.calls <= MAX_CALLS for k in KINDS.values())


# --------------------------------------------------------------------------- Envoy per kind
def _edit_config(chaos_port: int) -> Callable[[dict[str, Any]], None]:
    """A cluster `chaos` (a copy of the template's registry cluster, at the chaos server) and
    exact connection balancing on the listener, so connections held open at once spread evenly
    over the workers."""
    def edit(doc: dict[str, Any]) -> None:
        clusters = doc["static_resources"]["clusters"]
        chaos = copy.deepcopy(next(c for c in clusters if c["name"] == "registry"))
        chaos["name"] = chaos["load_assignment"]["cluster_name"] = CHAOS_CLUSTER
        chaos["connect_timeout"] = "0.25s"
        addr = chaos["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        addr["port_value"] = chaos_port
        clusters.append(chaos)
        doc["static_resources"]["listeners"][0]["connection_balance_config"] = {"exact_balance": {}}
    return edit


class Rig:
    """A chaos server and the Envoy whose `kind` upstream is that server."""

    def __init__(self, kind: Kind, start: Callable[[str], EnvoyInstance], chaos: ChaosServer) -> None:
        self.kind = kind
        self._start = start
        self.chaos = chaos
        self.generation = 1
        self.inst = start(f"faults-{kind.name}")

    def ensure_fresh(self) -> None:
        """A previous test left this Envoy unhealthy (and failed for it): start another one, so
        this test is judged on its own."""
        problems = self.inst.health_problems()
        if not problems:
            return
        self.inst.stop()
        RUNNING.remove(self.inst)
        self.generation += 1
        self.chaos.set_mode("ok")
        self.inst = self._start(f"faults-{self.kind.name}-{self.generation}")


@pytest.fixture(scope="module", params=list(KINDS))
def rig(request: pytest.FixtureRequest, keys, registry, backend,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    kind = KINDS[request.param]
    chaos = ChaosServer(bound=60.0, drip_for=30.0).start()

    def start(name: str) -> EnvoyInstance:
        cfg = base_plugin_config()
        kind.configure(cfg)
        return start_envoy(name, tmp_path_factory, route_mode="cluster", plugin_config=cfg,
                            signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                            edit_config=_edit_config(chaos.port))

    try:
        r = Rig(kind, start, chaos)
        yield r
        if r.inst in RUNNING:  # (not if a replacement failed to start)
            finish_envoy(r.inst)
    finally:
        chaos.stop()


# --------------------------------------------------------------------------- checks
def _worker_connections(envoy: EnvoyInstance) -> dict[str, int]:
    """downstream_cx_total of the listener, per worker: {"worker_0": n, "worker_1": m}."""
    out: dict[str, int] = {}
    for name, value in envoy.stats(r"^listener\.127\.0\.0\.1_\d+\.worker_\d+\.downstream_cx_total$").items():
        out[name.split(".")[-2]] = value
    return out


def _answer_problems(kind: Kind, r: requests.Response | None, error: str | None, elapsed: float) -> list[str]:
    if r is None:
        return [f"trigger: no answer within {CLIENT_TIMEOUT:g}s ({error})"]
    problems = []
    if r.status_code not in kind.expected:
        problems.append(f"trigger: status {r.status_code} (expected one of {sorted(kind.expected)}): "
                        f"{r.headers.get('content-type')} {r.text[:200]!r}")
    else:
        try:
            assert_oauth_error(r, r.status_code, kind.expected[r.status_code])
        except AssertionError as exc:
            problems.append(f"trigger: not a clean OAuth error: {exc}")
    bound = kind.calls * UPSTREAM_TIMEOUT + SLACK
    if elapsed > bound:
        problems.append(f"trigger: answered after {elapsed:.1f}s (bound {bound:g}s)")
    return problems


def _recovery_problems(envoy: EnvoyInstance) -> list[str]:
    """RECOVERY_CONNECTIONS keep-alive connections open at once (exact_balance spreads them over
    both workers); on each a valid token request and a pass-through GET."""
    problems: list[str] = []
    before = _worker_connections(envoy)
    sessions = [requests.Session() for _ in range(RECOVERY_CONNECTIONS)]
    try:
        for i, s in enumerate(sessions):
            try:
                r = token_request(envoy, DEMO_CLIENT, session=s, timeout=CLIENT_TIMEOUT)
                if r.status_code != 200 or "access_token" not in r.json():
                    problems.append(f"connection {i}: token request {r.status_code}: {r.text[:120]!r}")
            except (requests.RequestException, ValueError) as exc:
                problems.append(f"connection {i}: token request failed: {exc!r}")
            try:
                g = s.get(envoy.base_url + f"{PASSTHROUGH_PATH}/{i}", timeout=CLIENT_TIMEOUT)
                body = g.json() if g.headers.get("content-type", "").startswith("application/json") else {}
                if g.status_code != 200 or body.get("backend") is not True:
                    problems.append(f"connection {i}: pass-through GET {g.status_code}: {g.text[:120]!r}")
            except (requests.RequestException, ValueError) as exc:
                problems.append(f"connection {i}: pass-through GET failed: {exc!r}")
        after = _worker_connections(envoy)  # all the sessions still open
    finally:
        for s in sessions:
            s.close()
    if len(after) < 2:
        problems.append(f"per-worker listener stats missing: {after}")
    untouched = [w for w in sorted(after) if after[w] - before.get(w, 0) < 1]
    if untouched:
        problems.append(f"the recovery connections did not reach every worker: before {before}, after {after}")
    return problems


def _log_problems(envoy: EnvoyInstance, offset: int) -> list[str]:
    """Log lines written since `offset` that show a panic, a trap or a failed VM call (with the
    lines a message continues on, e.g. a panic's "unexpected status: 2"), and non-zero wasm
    failure stats."""
    out: list[str] = []
    continuing = False
    for line in envoy.log_text()[offset:].splitlines():
        if continuing and line and not line.startswith("["):
            out.append(f"log:   {line.strip()[:300]}")
            continue
        continuing = (any(m.lower() in line.lower() for m in TRAP_MARKERS)
                      or ("Function: proxy_on_" in line and "failed" in line))
        if continuing:
            out.append(f"log: {line.strip()[:300]}")
    return out + [p for p in envoy.health_problems() if not p.startswith("log: ")]


def _filter_warnings(envoy: EnvoyInstance, offset: int) -> list[str]:
    """What the filter said about the failed call (how Envoy reported it), for the report."""
    said = (re.search(r"oauth-edge\[\d+\]: (.*)", line) for line in envoy.log_text()[offset:].splitlines())
    return [m.group(1)[:200] for m in said if m and ("failed" in m.group(1) or "cannot call" in m.group(1))]


def run_fault(rig: Rig, mode: str) -> None:
    rig.ensure_fresh()
    envoy, chaos, kind = rig.inst, rig.chaos, rig.kind
    offset = len(envoy.log_text())
    chaos.set_mode(mode)
    asked = chaos.requests
    r, error = None, None
    t0 = time.monotonic()
    try:
        r = kind.trigger(envoy)
    except requests.RequestException as exc:
        error = repr(exc)
    elapsed = time.monotonic() - t0
    chaos.set_mode("ok")
    problems = _answer_problems(kind, r, error, elapsed)
    if chaos.requests == asked:
        problems.append(f"the trigger never reached the chaos upstream (mode {mode}): the test proves nothing")
    time.sleep(0.2)  # let a trap's log lines land
    problems += _recovery_problems(envoy)
    problems += _log_problems(envoy, offset)
    said = _filter_warnings(envoy, offset)
    seen = f"{r.status_code} {r.text[:160]}" if r is not None else error
    print(f"\n{kind.name}/{mode}: {seen} in {elapsed:.2f}s; upstream asked {chaos.requests - asked}x; "
          f"filter said: {'; '.join(said) or '-'}")
    assert not problems, (f"{kind.name} upstream, mode {mode}: answered {seen!r} in {elapsed:.1f}s\n  "
                          + "\n  ".join(problems) + "\nfilter said: " + "; ".join(said))


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("rig", ["registry"], indirect=True)
def test_reproduction_registry_reset_after_headers_does_not_trap_the_vm(rig):
    """Issue 11 as reported: the registry answers `HTTP/1.1 200`, Content-Length 500, 10 body
    bytes, then RST; one client_credentials request for an unknown client_id. Expected: a clean
    500 server_error within the registry timeout, and afterwards every worker still issues
    tokens and passes other traffic through (today: the request hangs, the VM traps with
    `unexpected status: 2`, and that worker answers 503 to everything)."""
    run_fault(rig, "reset-after-headers")


@pytest.mark.parametrize("mode", FAULT_MODES)
def test_a_failing_upstream_gets_a_clean_error_and_every_worker_recovers(rig, mode):
    run_fault(rig, mode)


@pytest.mark.parametrize("rig", ["jwks_uri"], indirect=True)
def test_a_failed_jwks_uri_fetch_is_remembered_for_the_cooldown(rig):
    """A client's key server that is down costs one call per worker per refetch_cooldown, not one
    per request: a burst of assertions meanwhile gets the same clean error at once."""
    rig.ensure_fresh()
    envoy, chaos = rig.inst, rig.chaos
    time.sleep(JWKS_COOLDOWN + 0.1)
    chaos.set_mode("reset-before-headers")
    asked = chaos.requests
    try:
        aud = endpoint_urls(envoy)["token"]
        t0 = time.monotonic()
        statuses = []
        for _ in range(12):
            form = {"grant_type": "client_credentials", "scope": "read",
                    **assertion_form(client_assertion(PK_CHAOS_KEY, PK_CHAOS.client_id, aud))}
            statuses.append(post_form(envoy.token_url, form, timeout=CLIENT_TIMEOUT).status_code)
        elapsed = time.monotonic() - t0
    finally:
        chaos.set_mode("ok")
    assert set(statuses) <= {401, 500}, statuses
    calls = chaos.requests - asked
    # Two workers, each remembering its failure; a burst longer than the cooldown may ask again.
    assert 1 <= calls <= 2 * (1 + int(elapsed / JWKS_COOLDOWN)), (calls, elapsed)
    # After the cooldown, with the key server back, the client authenticates again.
    chaos.set_mode("ok", body=json.dumps(jwks_of(PK_CHAOS_KEY)).encode())
    try:
        time.sleep(JWKS_COOLDOWN + 0.1)
        for _ in range(4):
            form = {"grant_type": "client_credentials", "scope": "read",
                    **assertion_form(client_assertion(PK_CHAOS_KEY, PK_CHAOS.client_id, aud))}
            r = post_form(envoy.token_url, form, timeout=CLIENT_TIMEOUT)
            assert r.status_code == 200, r.text[:200]
    finally:
        chaos.set_mode("ok", body=b"{}")
