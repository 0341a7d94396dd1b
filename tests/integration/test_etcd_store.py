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
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from conftest import EnvoyInstance, _finish_envoy, _start_envoy, ac_plugin_config, free_port
from test_protected_routes import API_CLIENT, ORDERS, ROUTES
import render  # noqa: E402  (envoy/render.py, on the path via conftest)
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
    basic_auth,
    dpop_proof,
    issue_code,
    post_form,
    redeem_code,
    refresh_request,
)

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
pytestmark = pytest.mark.skipif(ETCD is None or ETCDCTL is None,
                                reason="etcd-server is not installed (make test installs it)")

PREFIX = "/oauth-edge/"
USER, PASSWORD = "oauth-edge", "etcd-test-password"


class Member:
    def __init__(self, name: str, workdir: Path, client_port: int, peer_port: int, cluster: str) -> None:
        self.name, self.workdir = name, workdir
        self.client_port, self.peer_port, self.cluster = client_port, peer_port, cluster
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, state: str = "new") -> None:
        log = open(self.workdir / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen([
            ETCD, "--name", self.name, "--data-dir", str(self.workdir / self.name),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster", self.cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", "oauth-edge-test",
        ], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class EtcdCluster:
    def __init__(self, workdir: Path) -> None:
        ports = [(free_port(), free_port()) for _ in range(3)]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
        self.members = [Member(f"m{i}", workdir, c, p, cluster) for i, (c, p) in enumerate(ports)]

    def etcdctl(self, *args: str, user: str | None = None) -> str:
        cmd = [ETCDCTL, "--endpoints", ",".join(m.url for m in self.members if m.proc), *args]
        if user:
            cmd += ["--user", user]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "ETCDCTL_API": "3"}).stdout

    def start(self) -> "EtcdCluster":
        for m in self.members:
            m.start()
        deadline = time.time() + 30
        while True:
            try:
                self.etcdctl("endpoint", "health")
                break
            except subprocess.CalledProcessError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        # etcd authentication: a user whose role may only read and write under the prefix.
        self.etcdctl("user", "add", "root:root-test-password")
        self.etcdctl("user", "add", f"{USER}:{PASSWORD}")
        self.etcdctl("role", "add", "oauth-edge")
        self.etcdctl("role", "grant-permission", "oauth-edge", "--prefix=true", "readwrite", PREFIX)
        self.etcdctl("user", "grant-role", USER, "oauth-edge")
        self.etcdctl("auth", "enable")
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def wait_healthy(self, n: int, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            up = sum(1 for m in self.members if m.proc and _healthy(m.url))
            if up >= n:
                return
            time.sleep(0.3)
        raise RuntimeError(f"etcd: fewer than {n} healthy members")

    def keys(self) -> list[str]:
        out = self.etcdctl("get", PREFIX, "--prefix", "--keys-only", user="root:root-test-password")
        return [line for line in out.splitlines() if line]


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=1).json().get("health") == "true"
    except (requests.RequestException, ValueError):
        return False


def _add_etcd_cluster(members: list[Member]) -> Any:
    """The Envoy cluster the filter reaches etcd through: every member, health-checked each
    second so a dead member leaves the rotation at once."""
    def edit(doc: dict[str, Any]) -> None:
        doc["static_resources"]["clusters"].append({
            "name": "etcd",
            "type": "STATIC",
            "connect_timeout": "0.25s",
            "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": "etcd", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": m.client_port}}}}
                for m in members]}]},
            "health_checks": [{
                "timeout": "0.5s", "interval": "0.5s", "unhealthy_threshold": 1, "healthy_threshold": 1,
                "http_health_check": {"path": "/health"},
            }],
            "outlier_detection": {"consecutive_local_origin_failure": 1,
                                  "split_external_local_origin_errors": True,
                                  "base_ejection_time": "2s"},
        })
    return edit


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield c
    finally:
        c.stop()


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
            started.append(_start_envoy(name, tmp_path_factory, route_mode="direct", plugin_config=cfg,
                                        signing_keys=[keys.ed25519], registry_port=registry.port,
                                        backend_port=backend.port,
                                        extra_http_filters=[login_service.jwt_authn_filter(
                                            extra_paths=["/oauth/device"])],
                                        edit_config=_add_etcd_cluster(etcd_cluster.members)))
        yield started[0], started[1]
    finally:
        for inst in started:
            _finish_envoy(inst)


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
    t = redeem_code(a, code, verifier)
    assert t.status_code == 200, t.text
    # The same code at B: already used, whichever replica sees it.
    assert_oauth_error(redeem_code(b, code, verifier), 400, "invalid_grant")


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
            r = requests.post(envoy.par_url, data={"response_type": "code", "redirect_uri": RP_CLIENT.extra["redirect_uris"][0],
                                                    "scope": "read", "code_challenge": "x" * 43,
                                                    "code_challenge_method": "S256"},
                              headers={"Authorization": basic_auth(RP_CLIENT.client_id, RP_CLIENT.secret)}, timeout=10)
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
    r = requests.post(a.token_url, data={"grant_type": "client_credentials", "scope": "orders:read",
                                          "resource": ORDERS}, auth=(API_CLIENT.client_id, API_CLIENT.secret), timeout=10)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    api = f"http://127.0.0.1:{b.listen_port}/orders/1"
    for _ in range(3):
        r = requests.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200 and r.text == render.DIRECT_RESPONSE_BODY, r.text
    assert revoke(a, token, API_CLIENT).status_code == 200
    r = requests.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401 and "revoked" in r.headers["www-authenticate"], (r.status_code, r.headers)
