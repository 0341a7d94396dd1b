"""Many gateways, one authorization server: the short-lived state in a real etcd cluster.

A three-member etcd cluster (Debian's etcd-server, on loopback, etcd authentication on: the
filter logs in as a user whose role may only touch its key prefix) and two Envoy processes with
the very same plugin configuration (`store.backend: "etcd"`), reaching etcd through an Envoy
cluster of the three members with active health checks. A code issued by one replica is
redeemed at the other, once; a refresh rotated at one and replayed at the other revokes the
family; a DPoP proof's jti used at one is refused at the other. One member killed: flows keep
succeeding. All killed: clean 500 server_error answers, no other 5xx; back: service resumes
without restarting Envoy.
"""
from __future__ import annotations

import base64
import time
from collections import Counter
from typing import Any, Iterator

import pytest
import requests

from support.envoy import EnvoyInstance
from support.etcd import ETCD, ETCDCTL, PASSWORD, PREFIX, USER, EtcdCluster, _add_etcd_cluster
from support.fixtures_ac import ac_plugin_config
from support.fixtures_envoy import finish_envoy, start_envoy
from test_protected_routes import API_CLIENT, ORDERS, ROUTES
import render  # noqa: E402  (envoy/render.py, on the path via the support package)
from helpers import (
    revoke,
    RP_CLIENT,
    TV_CLIENT,
    client_metadata,
    device_decide,
    device_lookup,
    poll_device,
    start_device,
    ClientKey,
    assert_oauth_error,
    dpop_proof,
    issue_code,
    post_form,
    redeem_code,
    refresh_request,
)

pytestmark = pytest.mark.skipif(ETCD is None or ETCDCTL is None,
                                reason="etcd-server is not installed (make test installs it)")


@pytest.fixture(scope="module")
def etcd_replicas(etcd_cluster: EtcdCluster, keys, login_service, registry, backend,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EnvoyInstance, EnvoyInstance]]:
    store = {"backend": "etcd", "etcd": {"cluster": "etcd", "prefix": PREFIX, "timeout": "1s",
                                         "username": USER, "password": PASSWORD}}
    cfg = ac_plugin_config(login_service, store=store, device={"interval": "1s"},
                           resource_protection={"routes": [PROTECTED_ROUTE]})
    cfg["clients"] += [client_metadata(TV_CLIENT), client_metadata(API_CLIENT)]
    started: list[EnvoyInstance] = []
    try:
        for name in ("etcd-replica-a", "etcd-replica-b"):
            started.append(start_envoy(name, tmp_path_factory, route_mode="direct", plugin_config=cfg,
                                        signing_keys=[keys.ed25519], registry_port=registry.port,
                                        backend_port=backend.port,
                                        extra_http_filters=[login_service.jwt_authn_filter(
                                            extra_paths=["/oauth/device"])],
                                        edit_config=_add_etcd_cluster(etcd_cluster.members)))
        yield started[0], started[1]
    finally:
        for inst in started:
            finish_envoy(inst)


def _tokens(envoy: EnvoyInstance, login_service, sub: str) -> dict[str, Any]:
    code, verifier = issue_code(envoy, login_service.sign(sub), scope="read")
    r = redeem_code(envoy, code, verifier)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_code_pushed_at_a_is_authorized_at_b_and_redeemed_at_a_once(etcd_replicas, login_service):
    a, b = etcd_replicas
    from helpers import authorize_request, par_request, pkce_pair, redirect_params

    verifier, challenge = pkce_pair()
    r = par_request(a, RP_CLIENT, scope="read", code_challenge=challenge, code_challenge_method="S256", state="s")
    assert r.status_code == 201, r.text
    q = authorize_request(b, {"client_id": RP_CLIENT.client_id, "request_uri": r.json()["request_uri"]},
                          login_jwt=login_service.sign("erin"))
    code = redirect_params(q, RP_CLIENT.extra["redirect_uris"][0])["code"]
    # With etcd a code is sealed: the record itself, not a handle to one.
    assert code.startswith("ac1."), code
    t = redeem_code(a, code, verifier)
    assert t.status_code == 200, t.text
    # The same code at B: already used, whichever replica sees it.
    assert_oauth_error(redeem_code(b, code, verifier), 400, "invalid_grant")


def _kv_calls(cluster: EtcdCluster) -> Counter[str]:
    """The key-value calls (Range, Txn, ...) every member has handled, from etcd's own metrics:
    what a redemption costs, without the lease grants and logins (per worker, about once a
    minute) that Envoy's count of requests to the cluster also has."""
    calls: Counter[str] = Counter()
    for m in cluster.members:
        if not m.proc:
            continue
        for line in requests.get(m.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith("grpc_server_handled_total{") and 'grpc_service="etcdserverpb.KV"' in line:
                method = line.split('grpc_method="', 1)[1].split('"', 1)[0]
                calls[method] += int(float(line.rsplit(" ", 1)[1]))
    return calls


def test_a_redemption_is_one_etcd_request_and_a_failed_one_writes_nothing(etcd_replicas, etcd_cluster,
                                                                          login_service):
    """Issue 18: the code's used mark is its refresh family, created in one round trip; a
    forged code costs no request, a wrong verifier only reads, and the code still works."""
    a, _ = etcd_replicas
    code, verifier = issue_code(a, login_service.sign("gina"), scope="read")
    before = _kv_calls(etcd_cluster)
    assert_oauth_error(redeem_code(a, code[:-2] + ("AA" if code[-2:] != "AA" else "BB"), verifier),
                       400, "invalid_grant")
    assert_oauth_error(redeem_code(a, "ac1." + "A" * 600, verifier), 400, "invalid_grant")
    assert _kv_calls(etcd_cluster) == before, "nothing asked of etcd for a forged code"
    assert_oauth_error(redeem_code(a, code, "x" * 43), 400, "invalid_grant")
    after = _kv_calls(etcd_cluster)
    assert after - before == Counter(Range=2), "a wrong verifier only reads whether the code was used"
    r = redeem_code(a, code, verifier)
    assert r.status_code == 200, r.text
    assert _kv_calls(etcd_cluster) - after == Counter(Txn=1), "one round trip: the family, create-only"


def test_a_refresh_rotated_at_a_and_replayed_at_b_revokes_the_family(etcd_replicas, login_service):
    a, b = etcd_replicas
    rt1 = _tokens(a, login_service, "frank")["refresh_token"]
    r = refresh_request(a, rt1)
    assert r.status_code == 200, r.text
    rt2 = r.json()["refresh_token"]
    assert_oauth_error(refresh_request(b, rt1), 400, "invalid_grant")
    # The family is revoked for everyone: the newest token no longer works at either replica.
    assert_oauth_error(refresh_request(a, rt2), 400, "invalid_grant")
    assert_oauth_error(refresh_request(b, rt2), 400, "invalid_grant")


def test_a_dpop_proof_used_at_a_is_refused_at_b(etcd_replicas):
    from helpers import DEMO_CLIENT

    a, b = etcd_replicas
    assert a.plugin_config["issuer"] == b.plugin_config["issuer"]
    # htu is the token endpoint as the metadata names it (the replicas' shared issuer).
    htu = requests.get(a.base_url + "/.well-known/oauth-authorization-server", timeout=5).json()["token_endpoint"]
    proof = dpop_proof(ClientKey("ES256", None), htu)
    form = {"grant_type": "client_credentials"}
    r = post_form(a.token_url, form, dpop=proof, basic=DEMO_CLIENT)
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
    r = post_form(b.token_url, form, dpop=proof, basic=DEMO_CLIENT)
    assert_oauth_error(r, 400, "invalid_dpop_proof")
    assert "used before" in r.json()["error_description"]


def test_a_device_code_made_at_a_is_approved_at_b_and_polled_at_a_rfc8628(etcd_replicas, login_service):
    a, b = etcd_replicas
    d = start_device(a, TV_CLIENT, "read")
    assert_oauth_error(poll_device(b, d["device_code"], TV_CLIENT), 400, "authorization_pending")
    login = login_service.sign("ivan")
    r = device_lookup(b, d["user_code"], login)
    assert r.status_code == 200 and r.json()["client_id"] == TV_CLIENT.client_id, r.text
    r = device_decide(b, d["user_code"], "approve", login)
    assert r.status_code == 200 and r.json() == {"status": "approved"}, r.text
    time.sleep(1.1)
    r = poll_device(a, d["device_code"], TV_CLIENT)
    assert r.status_code == 200, r.text
    # Tokens once: the second poll, at the other replica, is refused.
    assert_oauth_error(poll_device(b, d["device_code"], TV_CLIENT), 400, "invalid_grant")


def test_records_live_under_the_prefix_and_expire_with_leases(etcd_replicas, etcd_cluster, login_service):
    a, _ = etcd_replicas
    _tokens(a, login_service, "gina")
    keys = etcd_cluster.keys()
    assert keys and all(k.startswith(PREFIX) for k in keys), keys[:5]
    leases = etcd_cluster.etcdctl("lease", "list", user="root:root-test-password")
    assert "found" in leases and not leases.strip().endswith("found 0 leases"), leases


def test_the_filter_can_touch_nothing_outside_its_prefix(etcd_cluster):
    """The role limits the filter's user to the prefix (etcd refuses the rest)."""
    r = requests.post(etcd_cluster.members[0].url + "/v3/auth/authenticate",
                      json={"name": USER, "password": PASSWORD}, timeout=5)
    token = r.json()["token"]
    other = base64.b64encode(b"/elsewhere/x").decode()
    r = requests.post(etcd_cluster.members[0].url + "/v3/kv/range", json={"key": other},
                      headers={"Authorization": token}, timeout=5)
    assert r.status_code == 403 and "permission denied" in r.text, r.text
    r = requests.post(etcd_cluster.members[0].url + "/v3/kv/range",
                      json={"key": base64.b64encode(b"/oauth-edge/x").decode()}, timeout=5)
    assert r.status_code in (400, 401) and "user name is empty" in r.text, ("no token, no access", r.text)


def test_one_member_killed_flows_keep_succeeding_all_killed_clean_errors_then_recovery(
        etcd_replicas, etcd_cluster, login_service):
    a, b = etcd_replicas
    victim = etcd_cluster.members[2]
    victim.stop()
    try:
        time.sleep(1.5)  # health checks notice
        for i in range(10):
            envoy = (a, b)[i % 2]
            code, verifier = issue_code(envoy, login_service.sign(f"k{i}"), scope="read")
            t = redeem_code((b, a)[i % 2], code, verifier)
            assert t.status_code == 200, (i, t.text)

        for m in etcd_cluster.members[:2]:
            m.stop()
        statuses: Counter[int] = Counter()
        for i in range(20):
            envoy = (a, b)[i % 2]
            r = post_form(envoy.par_url, {"response_type": "code", "redirect_uri": RP_CLIENT.extra["redirect_uris"][0],
                                          "scope": "read", "code_challenge": "x" * 43, "code_challenge_method": "S256"},
                          basic=RP_CLIENT)
            statuses[r.status_code] += 1
            if r.status_code == 500:
                assert_oauth_error(r, 500, "server_error")
        assert set(statuses) == {500}, statuses
        # Stateless grants still work without etcd.
        from helpers import DEMO_CLIENT, token_request
        r = token_request(a, DEMO_CLIENT, data={"grant_type": "client_credentials"})
        assert r.status_code == 200, r.text
    finally:
        for m in etcd_cluster.members:
            if m.proc is None:
                m.start(state="existing")
    etcd_cluster.wait_healthy(3)
    time.sleep(1.5)
    # Back without restarting Envoy: the filter logs in again and serves.
    deadline = time.time() + 20
    while True:
        try:
            code, verifier = issue_code(a, login_service.sign("back"), scope="read")
            t = redeem_code(b, code, verifier)
            if t.status_code == 200:
                break
        except AssertionError:
            pass
        assert time.time() < deadline, "service did not resume"
        time.sleep(0.5)
    assert a.health_problems() == [] and b.health_problems() == []


PROTECTED_ROUTE = ROUTES[0]


def test_a_token_revoked_at_a_is_refused_at_b_s_protected_route(etcd_replicas):
    """Route protection reads the deny-list in etcd (an asynchronous store: the request waits
    for etcd's answer, then goes on or is refused)."""
    a, b = etcd_replicas
    r = post_form(a.token_url, {"grant_type": "client_credentials", "scope": "orders:read", "resource": ORDERS},
                  basic=API_CLIENT)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    api = f"http://127.0.0.1:{b.listen_port}/orders/1"
    for _ in range(3):
        r = requests.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200 and r.text == render.DIRECT_RESPONSE_BODY, r.text
    assert revoke(a, token, API_CLIENT).status_code == 200
    r = requests.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401 and "revoked" in r.headers["www-authenticate"], (r.status_code, r.headers)
