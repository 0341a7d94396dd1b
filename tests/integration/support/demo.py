"""`make run` on free ports: envoy/demo/server.py setup, render.py with the same arguments as the
Makefile, then `server.py serve ... -- envoy ...` (the demo servers with Envoy as their child), so
the very code path `make run` takes is tested. Envoy is launched by the suite's one launcher
(EnvoyInstance) with the demo server as its command prefix."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from . import ROOT
from .envoy import EnvoyInstance, free_port


def load_demo_server() -> Any:
    """envoy/demo/server.py as the module `demo_server`."""
    if "demo_server" in sys.modules:
        return sys.modules["demo_server"]
    spec = importlib.util.spec_from_file_location("demo_server", ROOT / "envoy" / "demo" / "server.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["demo_server"] = mod
    spec.loader.exec_module(mod)
    return mod


class DemoRun(EnvoyInstance):
    """The demo: listen and admin ports as any EnvoyInstance, plus the single-page app's second
    origin (spa_port) and the demo server's backend and registry ports, all free ones."""

    def __init__(self, workdir: Path, signing_key: dict[str, Any]) -> None:
        super().__init__("demo", workdir, route_mode="cluster", plugin_config=None, signing_keys=[signing_key],
                         log_path=workdir / "demo.log", prepare=DemoRun._setup, ready=DemoRun._app_ready,
                         stop_timeout=20.0)
        self.spa_port = 0

    @property
    def spa_url(self) -> str:
        return f"http://127.0.0.1:{self.spa_port}"

    def _setup(self) -> None:
        """server.py setup (the demo's plugin configuration and jwt_authn filter for these
        ports), and the demo server as the parent of Envoy."""
        self.spa_port, self.backend_port, self.registry_port = (free_port() for _ in range(3))
        paths = load_demo_server().setup(self.workdir, self.listen_port, self.spa_port)
        self._plugin_config_in = paths["plugin_config"]
        self.extra_http_filters = paths["filters"]
        self.command_prefix = [
            sys.executable, str(ROOT / "envoy" / "demo" / "server.py"), "serve", "--dir", ".",
            "--issuer", self.base_url, "--backend-port", str(self.backend_port),
            "--spa-port", str(self.spa_port), "--registry-port", str(self.registry_port), "--"]

    def _app_ready(self) -> bool:
        import requests

        try:
            ready = requests.get(self.admin_url + "/ready", timeout=1)
            app = requests.get(self.base_url + "/app/", timeout=1)
            spa = requests.get(self.spa_url + "/app/", timeout=1)
            return ready.text.strip() == "LIVE" and app.status_code == 200 and spa.status_code == 200
        except requests.RequestException:
            return False
