"""The demo as `make run` starts it (support/demo.py), once per session."""
from __future__ import annotations

from typing import Iterator

import pytest

from support.demo import DemoRun
from support.envoy import BAD_LOG_MARKERS, WASM
from support.keys import Keys


@pytest.fixture(scope="session")
def demo(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """The demo as `make run` starts it, on free ports (envoy/demo/server.py and Envoy)."""
    if not WASM.exists() or WASM.stat().st_size < 1000:
        pytest.fail(f"filter not built: {WASM} missing (run `make wasm`)", pytrace=False)
    run = DemoRun(tmp_path_factory.mktemp("demo"), keys.ed25519).start()
    yield run
    rc = run.stop()
    problems = [line for line in run.log_text().splitlines() if any(m in line for m in BAD_LOG_MARKERS)]
    assert rc == 0, f"the demo server exited with {rc}\n{run.log_text()[-3000:]}"
    assert not problems, "\n".join(problems)
    # Envoy, the demo server's child, stopped with it.
    assert "main dispatch loop exited" in run.log_text()
