#!/usr/bin/env python3
"""What refresh families cost in Envoy's memory (issue #13 item 6): a one-off measurement, not a
test and not part of `make bench`.

One Envoy with the default store (65,536 refresh family slots, `lifetimes.refresh_token` 24 h),
one worker. Families are recorded in stages by the first refresh of sealed refresh tokens of
families it has never seen (exactly where a login's family goes; cheaper to make in bulk than
logins), each token used once by wrk (bench/wrk/families.lua). After every stage: admin /memory
(`allocated`, Envoy's heap, where shared data lives) and the RSS. The default run fills the ring
to the load of 20 logins/s for 24 h (1,728,000 live families) in 6 stages.

    .venv/bin/python bench/family_memory.py [--families 1728000] [--stages 6] [--conns 16]

Needs what `make bench` installs (the .wasm, Envoy, wrk) and `cryptography` in .venv (sealing).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench/bench.py: Envoy, wrk and process handling)

MIB = 1024 * 1024


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sealer(jwk: dict):
    """src/sealed.rs: "rt1." + base64url(nonce ‖ ChaCha20-Poly1305(SHA-256(label ‖ d), claims))."""
    d = base64.urlsafe_b64decode(jwk["d"] + "=" * (-len(jwk["d"]) % 4))
    aead = ChaCha20Poly1305(hashlib.sha256(b"oauth-edge/refresh-token-sealing/v1\0" + d).digest())

    def seal(claims: dict) -> str:
        nonce = os.urandom(12)
        return "rt1." + b64u(nonce + aead.encrypt(nonce, json.dumps(claims, separators=(",", ":")).encode(),
                                                  b"oauth-edge refresh token v1"))
    return seal


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", type=int, default=20 * 86_400, help="families in all (default: 20/s × 24 h)")
    ap.add_argument("--stages", type=int, default=6)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--out", default=str(bench.ROOT / "target" / "family-memory"))
    a = ap.parse_args()
    work = Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["cargo", "run", "--release", "--quiet", "--bin", "oauth-edge-keygen", "--",
                        "--alg", "EdDSA", "--kid", "mem-eddsa"], cwd=bench.ROOT, capture_output=True, text=True,
                       check=True)
    key_file = work / "key.json"
    key_file.write_text(r.stdout)
    os.chmod(key_file, 0o600)
    seal = sealer(json.loads(r.stdout))

    cfg = bench.plugin_config()  # the default store and lifetimes.refresh_token (24 h)
    rows = []
    try:
        envoy = bench.Envoy("families", work, key_file, cfg, None, None)
        time.sleep(2)
        rows.append((0, envoy.memory()))
        bench.say(f"started: {rows[0][1]}")
        per_stage = a.families // a.stages
        made = 0
        exp = int(time.time()) + 86_400  # every family stays live through the run
        for stage in range(a.stages):
            tokens = work / "tokens.txt"
            t0 = time.time()
            with tokens.open("w") as f:
                for i in range(per_stage):
                    f.write(seal({"fam": b64u(os.urandom(16)), "gen": 0, "cid": bench.WEB_ID,
                                  "sub": f"user-{made + i}", "scope": "read write", "exp": exp}) + "\n")
            bench.say(f"stage {stage + 1}: {per_stage} tokens sealed in {time.time() - t0:.0f} s")
            res = bench.run_wrk(envoy.url + "/oauth/token", "families.lua",
                                [str(tokens), bench.basic(bench.WEB_ID, bench.WEB_SECRET)],
                                a.conns, 3600, None, envoy.pid, timeout_s="10s")
            if res["failures"] or res["ok"] != per_stage:
                raise bench.BenchError(f"stage {stage + 1}: {res['ok']} ok, {res['failures']} failures")
            made += per_stage
            mem = envoy.memory()
            rows.append((made, mem))
            bench.say(f"stage {stage + 1}: {made} families ({res['ok'] / res['elapsed_s']:.0f}/s), {mem}")
        time.sleep(11)  # one ring-fill estimate (every 10 s)
        gauge = envoy.stats("ring_fill_percent.refresh_families")
    finally:
        bench.PROCS.stop_all()

    base = rows[0][1]
    print("\n| families | allocated | heap_size | RSS | allocated per family since start |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n, m in rows:
        per = f"{(m['allocated'] - base['allocated']) / n:.1f} B" if n else ""
        print(f"| {n:,} | {m['allocated'] / MIB:.1f} MiB | {m['heap_size'] / MIB:.1f} MiB | "
              f"{m['rss'] / MIB:.1f} MiB | {per} |")
    if len(rows) > 2:
        (n1, m1), (n2, m2) = rows[-2], rows[-1]
        print(f"\nlast stage: {(m2['allocated'] - m1['allocated']) / (n2 - n1):.1f} B of heap per family; "
              f"{(m2['rss'] - m1['rss']) / (n2 - n1):.1f} B of RSS")
    print(f"ring fill gauge: {gauge}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
