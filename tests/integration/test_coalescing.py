"""One registry call per client id in flight per worker: requests that need the same lookup while
it is out wait for it, instead of each opening its own upstream connection (issue: 500 concurrent
requests for one unknown id made 408 registry calls)."""
from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor


from support.forms import basic_auth, post_form
from helpers import Client, client_metadata

CONCURRENT = 200
WORKERS = 2  # support/envoy.py starts Envoy with --concurrency 2


def _burst(envoy, client_id: str, secret: str) -> list[int]:
    def one(_: int) -> int:
        r = post_form(envoy.token_url, {"grant_type": "client_credentials"},
                      headers={"Authorization": basic_auth(client_id, secret)}, timeout=30)
        return r.status_code

    with ThreadPoolExecutor(CONCURRENT) as pool:
        return list(pool.map(one, range(CONCURRENT)))


def test_concurrent_lookups_of_one_unknown_client_make_one_call_per_worker(envoy_main, registry):
    client_id = "ghost-" + secrets.token_hex(4)
    registry.set_mode("slow", 0.3)  # under the 500 ms registry timeout
    coalesced_before = envoy_main.custom_stat("oauth_edge.lookups.coalesced")
    statuses = _burst(envoy_main, client_id, "whatever")
    assert statuses == [401] * CONCURRENT
    assert 1 <= registry.count(client_id) <= WORKERS, registry.count(client_id)
    assert envoy_main.custom_stat("oauth_edge.lookups.coalesced") - coalesced_before > 0


def test_concurrent_lookups_of_one_registered_client_make_one_call_per_worker(envoy_main, registry):
    c = Client("burst-" + secrets.token_hex(4), secrets.token_urlsafe(16))
    registry.add_client(client_metadata(c))
    registry.set_mode("slow", 0.3)  # under the 500 ms registry timeout
    statuses = _burst(envoy_main, c.client_id, c.secret)
    assert statuses == [200] * CONCURRENT
    # The first answer is shared between workers through shared data, so often just one call.
    assert 1 <= registry.count(c.client_id) <= WORKERS, registry.count(c.client_id)


def test_registry_failure_reaches_every_waiter_then_service_resumes(envoy_main, registry):
    c = Client("burst-down-" + secrets.token_hex(4), secrets.token_urlsafe(16))
    registry.add_client(client_metadata(c))
    registry.set_mode("reset", 0.5)
    statuses = _burst(envoy_main, c.client_id, c.secret)
    assert set(statuses) == {500}, statuses
    assert registry.count(c.client_id) <= WORKERS * 2
    registry.set_mode("ok")
    r = post_form(envoy_main.token_url, {"grant_type": "client_credentials"}, basic=c)
    assert r.status_code == 200
