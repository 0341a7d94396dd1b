#!/usr/bin/env python3
"""Runs the micro-benchmark (bench/micro, the same module `make micro` runs in Node) inside
Envoy's own V8, and prints the same table.

    python3 bench/micro/envoy.py [--envoy PATH] path.wasm [rounds] [ms] [filter]

Envoy starts with a bootstrap that has no listener, no cluster and no admin, only the module as
an `envoy.bootstrap.wasm` singleton service (main thread, runtime V8). Its root context runs the
benchmark in proxy_on_configure with the plugin configuration "rounds ms filter" as arguments
(bench/micro/src/envoy.rs) and writes the table through WASI fd_write, which Envoy logs at info;
this script takes those lines out of Envoy's log, and stops Envoy once the module says it is done.
Standard library only.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DONE = "oauth-edge-micro: done"  # bench/micro/src/envoy.rs
# With --log-format '%l|%n|%v': level, logger, message. fd_write(1) lines come as
# "wasm log <plugin> <root_id> <vm_id>: <line>" from the wasm logger.
WASM_LINE = re.compile(r"^(\w+)\|wasm\|wasm log[^:]*: ?(.*)$")


def bootstrap(wasm: str, args: str) -> dict:
    return {
        "node": {"id": "micro", "cluster": "micro"},
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
                "singleton": True,
                "config": {
                    "name": "micro",
                    "root_id": "micro",
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": args,
                    },
                    "vm_config": {
                        "vm_id": "micro",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": os.path.abspath(wasm)}},
                    },
                },
            },
        }],
    }


def envoy_version(envoy: str) -> str:
    try:
        out = subprocess.run([envoy, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    m = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return m.group(1) if m else out.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", default=os.path.join(ROOT, ".venv", "bin", "envoy"))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before giving up (default 3600)")
    ap.add_argument("wasm")
    ap.add_argument("args", nargs="*", help="rounds, ms per primitive and round, name filter")
    a = ap.parse_args()
    if not os.path.isfile(a.wasm):
        sys.exit(f"no module at {a.wasm}: build it with `make micro-envoy`")
    args = " ".join(a.args)
    print(f"Envoy {envoy_version(a.envoy)} (proxy-wasm V8, TurboFan only), {a.wasm}", flush=True)
    with tempfile.TemporaryDirectory(prefix="micro-envoy-") as tmp:
        cfg = os.path.join(tmp, "micro.json")
        with open(cfg, "w") as f:
            json.dump(bootstrap(a.wasm, args), f)
        cmd = [a.envoy, "-c", cfg, "--use-dynamic-base-id", "--concurrency", "1", "-l", "info",
               "--log-format", "%l|%n|%v"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True)
        done, tail, start = False, [], time.monotonic()

        def stop(*_):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

        signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(143)))
        try:
            for raw in proc.stderr:
                line = raw.rstrip("\n")
                tail = (tail + [line])[-30:]
                m = WASM_LINE.match(line)
                if m:
                    level, text = m.groups()
                    if text == DONE:
                        done = True
                        break
                    print(text if level == "info" else f"[{level}] {text}", flush=True)
                elif line.startswith(("critical|", "error|")):
                    print(f"[envoy] {line}", flush=True)
                if time.monotonic() - start > a.timeout:
                    print(f"timed out after {a.timeout:.0f} s", file=sys.stderr)
                    break
        except KeyboardInterrupt:
            pass
        finally:
            stop()
        if not done:
            print("Envoy stopped before the benchmark ended; its last log lines:", file=sys.stderr)
            for line in tail:
                print("  " + line, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
