"""Issue #13 item 6, at a compressed time scale through a real Envoy: the refresh families ring
at the load of the default configuration (20 logins/s for 24 h on 65,536 slots: 26.4 live
families per slot) for more than two family lifetimes, with zero failures.

The ring is shrunk to SLOTS slots and the families' lifetime to LIFETIME seconds, keeping live
families per slot as in the default: RATE new families per second. `lifetimes.refresh_token`
cannot be shorter than 60 s, so these families are made the way a restarted Envoy meets
families it never saw: refresh tokens sealed with the configured key (helpers.seal_refresh_token)
whose family expires LIFETIME s after it starts; their first refresh records the family in the
ring, exactly where a login's would go. Each family then rotates twice more (one in 25 has its
previous token replayed instead, which must be caught as reuse). Real password-grant logins
(families of the minimum 60 s) run alongside, each refreshed once, and add a little load on top.
More families are made than the ring holds at once (SLOTS × 48): they fit only because expired
entries are dropped and their room reused.

Envoy: its own (SLOTS refresh family slots, password grant checked by the registry fixture).
"""
from __future__ import annotations

import heapq
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest
import requests

from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from support.fixtures_grants import PASSWORD_GRANT
from helpers import LEGACY_CLIENT, client_metadata, password_request, refresh_request, seal_refresh_token

SLOTS = 16  # store.refresh_family_slots here (the minimum)
BUCKET = 48  # families per slot at most (src/families.rs)
LOAD = 20 * 86_400 / 65_536  # live families per slot at 20 logins/s for 24 h, default sizing
LIFETIME = 16  # s: a family's lifetime here (24 h in the default)
RATE = LOAD * SLOTS / LIFETIME  # new families per second: 26.4
RUN = 40  # s of logins: 2.5 lifetimes
ROTATE_AFTER = (5, 10)  # s after a family starts: its two rotations
REPLAY_EVERY = 25  # one family in this many replays a rotated token (reuse detection)
PASSWORD_EVERY = 2.0  # s between real password-grant logins (60 s families)


@pytest.fixture(scope="module")
def envoy_capacity(keys, registry, backend, tmp_path_factory):
    cfg = base_plugin_config(password_grant=dict(PASSWORD_GRANT))
    cfg["clients"].append(client_metadata(LEGACY_CLIENT))
    cfg["lifetimes"]["refresh_token"] = "60s"
    cfg["store"] = {**cfg.get("store", {}), "refresh_family_slots": SLOTS}
    inst = start_envoy("capacity", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


class Schedule:
    """Calls due at given times, run on a thread pool; a call may schedule more."""

    def __init__(self, workers: int = 12) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._running = 0
        self.errors: list[BaseException] = []

    def at(self, when: float, call: Callable[[], None]) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, call))

    def _run(self, call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            with self._lock:
                self._running -= 1

    def run_until_idle(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with self._lock:
                due = []
                while self._heap and self._heap[0][0] <= time.monotonic():
                    due.append(heapq.heappop(self._heap)[2])
                idle = not self._heap and self._running == 0 and not due
                self._running += len(due)
            if idle:
                break
            for call in due:
                self._pool.submit(self._run, call)
            time.sleep(0.005)
        self._pool.shutdown(wait=True)


def test_the_default_load_for_two_and_a_half_lifetimes_with_zero_failures(envoy_capacity, registry, keys):
    envoy = envoy_capacity
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "s"):
            local.s = requests.Session()
        return local.s

    lock = threading.Lock()
    statuses: dict[str, dict[int, int]] = {}
    unexpected: list[str] = []

    def record(what: str, r: requests.Response, want: int) -> None:
        with lock:
            by = statuses.setdefault(what, {})
            by[r.status_code] = by.get(r.status_code, 0) + 1
            if r.status_code != want:
                unexpected.append(f"{what}: {r.status_code} {r.text[:200]}")

    sched = Schedule()
    t0 = time.monotonic()

    def rotate(i: int, rt: str, step: int) -> None:
        r = refresh_request(envoy, rt, LEGACY_CLIENT, session=session())
        record("rotation", r, 200)
        if r.status_code != 200:
            return
        new_rt = r.json()["refresh_token"]
        if step == 1 and i % REPLAY_EVERY == 0:
            # The rotated token again: reuse, the family is revoked.
            r = refresh_request(envoy, rt, LEGACY_CLIENT, session=session())
            record("replay", r, 400)
            return
        if step < len(ROTATE_AFTER):
            sched.at(starts[i] + ROTATE_AFTER[step], lambda: rotate(i, new_rt, step + 1))

    def start(i: int) -> None:
        # A family the filter has not seen, expiring LIFETIME s from now: its first refresh
        # records it in the ring.
        rt = seal_refresh_token(keys.ed25519, {
            "fam": f"cap-{i}-{time.time_ns()}", "gen": 0, "cid": LEGACY_CLIENT.client_id,
            "sub": f"user-{i}", "scope": "read", "exp": int(time.time()) + LIFETIME})
        r = refresh_request(envoy, rt, LEGACY_CLIENT, session=session())
        record("first refresh", r, 200)
        if r.status_code == 200:
            new_rt = r.json()["refresh_token"]
            sched.at(starts[i] + ROTATE_AFTER[0], lambda: rotate(i, new_rt, 1))

    def login(j: int) -> None:
        name = f"cap-user-{j}-{time.time_ns()}"
        registry.add_user(name, "pw")
        r = password_request(envoy, name, "pw", LEGACY_CLIENT, scope="read", session=session())
        record("password login", r, 200)
        if r.status_code == 200:
            rt = r.json()["refresh_token"]

            def again() -> None:
                record("login refresh", refresh_request(envoy, rt, LEGACY_CLIENT, session=session()), 200)

            sched.at(time.monotonic() + ROTATE_AFTER[0], again)

    families = int(RATE * RUN)
    starts: dict[int, float] = {i: t0 + i / RATE for i in range(families)}
    for i, when in starts.items():
        sched.at(when, lambda i=i: start(i))
    for j in range(int(RUN / PASSWORD_EVERY)):
        sched.at(t0 + j * PASSWORD_EVERY, lambda j=j: login(j))
    gauge: list[int] = []
    # Read in the steady state (the gauge is refreshed every 10 s), before the ring drains.
    sched.at(t0 + RUN - 0.5, lambda: gauge.append(
        envoy.custom_stat("oauth_edge.ring_fill_percent.refresh_families")))
    sched.run_until_idle(t0 + RUN + max(ROTATE_AFTER) + 15)
    took = time.monotonic() - t0

    print(f"\n{took:.1f} s, {statuses}, refresh_families gauge {gauge}")
    assert not sched.errors, sched.errors[:3]
    assert not unexpected, f"{len(unexpected)} unexpected answers, e.g. {unexpected[:5]}; all: {statuses}"
    made = statuses["first refresh"].get(200, 0) + statuses["password login"].get(200, 0)
    # Every family was made, on time (a slow client would have lowered the load) ...
    assert statuses["first refresh"] == {200: families}, statuses
    assert took < RUN + max(ROTATE_AFTER) + 5, f"took {took:.1f} s"
    # ... more of them than the ring holds at once: expired entries made room for the rest.
    assert made > SLOTS * BUCKET, statuses
    assert statuses["replay"] == {400: len([i for i in range(families) if i % REPLAY_EVERY == 0])}
    # The ring's gauge reads the buckets: about LOAD (and the logins') over 40 per slot: 66-70 %.
    assert gauge and 55 <= gauge[0] <= 80, gauge
