"""Counters cannot be reset by chosen collisions (the password grant's per-username failure
counter, the rate limits).

Before: a counter lived alone in a slot picked by an unkeyed SHA-256 of the name, and a newer
name landing in an occupied slot took it over from zero. A username colliding with the victim's
was found offline in a few thousand hashes, and alternating it with the victim's name gave
unlimited password guesses. Now the placement is keyed (HMAC, key derived from the private
signing key) and a slot holds several counters, none ever taken over by another name.

The test alternates the victim's name with names that collide with it under the old placement
(computed here as an attacker would have) AND under the new one (computed here only because the
test knows the private key the placement key derives from): neither gives one guess more.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import itertools

import pytest

from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from support.fixtures_grants import PASSWORD_AUTHORITY
from helpers import PW_BULK_CLIENT, client_metadata, password_request, sleep_past_window_edge

SLOTS = 16  # store.rate_limit_slots: the smallest ring, where collisions are cheapest
FAILURES = 3  # password_grant.failures.requests (the client may fail 10x as often)
ROUNDS = 7


@pytest.fixture(scope="module")
def envoy_pw_small(keys, registry, backend, tmp_path_factory):
    cfg = base_plugin_config(store={"rate_limit_slots": SLOTS})
    cfg["password_grant"] = {"cluster": "registry", "path": "/verify", "authority": PASSWORD_AUTHORITY,
                             "timeout": "1s", "failures": {"requests": FAILURES, "window": "300s"}}
    cfg["clients"].append(client_metadata(PW_BULK_CLIENT))
    inst = start_envoy("pw-small", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _old_slot(name: str) -> int:
    """The placement before: SHA-256 of the counted string, first 8 bytes mod the ring size."""
    d = hashlib.sha256(f"password-user\0{name}".encode()).digest()
    return int.from_bytes(d[:8], "big") % SLOTS


def _new_slots(name: str, private_d: bytes) -> frozenset[int]:
    """The placement now (src/rate_limit.rs, src/keys.rs): HMAC-SHA256 under a key derived from
    the active signing key's private part; two candidate slots."""
    sealing = hashlib.sha256(b"oauth-edge/refresh-token-sealing/v1\0" + private_d).digest()
    key = hashlib.sha256(b"oauth-edge/counter-placement/v1\0" + sealing).digest()
    d = hmac.new(key, f"password-user\0{name}".encode(), hashlib.sha256).digest()
    a = int.from_bytes(d[16:20], "big") % SLOTS
    b = int.from_bytes(d[20:24], "big") % SLOTS
    if b == a:
        b = (a + 1) % SLOTS
    return frozenset((a, b))


def test_colliding_usernames_never_reset_the_victims_failure_count(envoy_pw_small, registry, keys):
    victim = "victim-alice"
    registry.add_user(victim, "the right password")
    d = _b64d(keys.ed25519["d"])
    old = next(n for n in (f"old-{i}" for i in itertools.count()) if _old_slot(n) == _old_slot(victim))
    new = [n for n in (f"new-{i}" for i in range(20000)) if _new_slots(n, d) == _new_slots(victim, d)][:2]
    assert len(new) == 2
    sleep_past_window_edge(300, 20)  # the 300 s failure window is aligned to the clock
    allowed = 0
    for _ in range(ROUNDS):
        r = password_request(envoy_pw_small, victim, "a guess", PW_BULK_CLIENT, scope="read")
        assert r.status_code in (400, 429), r.text
        if r.status_code == 400:
            assert r.json()["error"] == "invalid_grant"
            allowed += 1
        for name in (old, *new):
            password_request(envoy_pw_small, name, "x", PW_BULK_CLIENT, scope="read")
    assert allowed == FAILURES, f"the victim's password was tried {allowed} times, not {FAILURES}"
    # The right password is refused too while the victim is locked (no oracle), with Retry-After.
    r = password_request(envoy_pw_small, victim, "the right password", PW_BULK_CLIENT, scope="read")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
