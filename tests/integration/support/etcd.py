"""The etcd store's upstream: a three-member etcd cluster (Debian's etcd-server) on loopback, etcd
authentication on (the filter's user may only touch PREFIX), and the Envoy cluster that reaches it."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from .envoy import free_ports

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
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
        flat = free_ports(6)
        ports = [(flat[2 * i], flat[2 * i + 1]) for i in range(3)]
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
