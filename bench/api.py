"""The protected-API rows of `make bench` (issue 15): one Envoy "api" (EdDSA key, one worker)
whose every path answers with Envoy's direct_response, called with the same EdDSA access token:

  * pass     GET /pass/x   — no route protection (the filter reads the headers once, finds no
                             route and hands the request on);
  * jwt      GET /jwt/x    — Envoy's own jwt_authn filter (before the wasm filter) validates the
                             token against our JWKS, inline: what a user would run instead;
  * bearer   GET /api/x    — this filter's protected route, Bearer (validation only, as the
                             jwt_authn row: no claim headers, the default);
  * claims   GET /capi/x   — the same with three claim headers (sub, client_id, scope), what a
                             route that asks for them pays (each is a request-header change);
  * dpop     GET /dapi/x   — a DPoP-required protected route, a DPoP-bound token and a fresh
                             proof (htm, htu, ath, jti) per request.

Interleaved rounds like the token rows (the order reversed every other round); medians and
ratios from the same run. Called by bench.py with itself as `B` (the Envoy, wrk and report
helpers live there).
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

API_ORIGIN = "https://api.bench.example"


def _routes(audience: str) -> dict[str, Any]:
    return {"routes": [
        {"prefix": "/api", "resource": API_ORIGIN + "/api", "audience": audience, "scopes": {"all": ["read"]}},
        {"prefix": "/capi", "resource": API_ORIGIN + "/capi", "audience": audience, "scopes": {"all": ["read"]},
         "claim_headers": {"sub": "x-oauth-sub", "client_id": "x-oauth-client-id", "scope": "x-oauth-scope"}},
        {"prefix": "/dapi", "resource": API_ORIGIN + "/dapi", "audience": audience, "scopes": {"all": ["read"]},
         "dpop": "required"},
    ]}


def _jwt_authn(B, jwks: str, audience: str) -> dict[str, Any]:
    """Envoy's jwt_authn, before the wasm filter (render.py --extra-http-filters): /jwt needs our
    token (issuer, audience, signature by a key of our JWKS), checked by Envoy itself."""
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"oauth_edge": {"issuer": B.ISSUER, "audiences": [audience],
                                         "local_jwks": {"inline_string": jwks}, "forward": True}},
            "rules": [{"match": {"prefix": "/jwt"}, "requires": {"provider_name": "oauth_edge"}}],
        },
    }


def _ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def _check(r: dict) -> None:
    pass


def run(B, a, work: Path, key_file: Path, server_cpu, load_cpu, results: dict) -> None:
    """Starts Envoy "api", probes every path, measures them interleaved; adds results["api"]."""
    # One token serves the whole run: it must outlive it (the default 300 s does not, with
    # --base-wasm or longer runs).
    jwks_cfg = B.plugin_config(jti_slots=B.JTI_SLOTS, dpop={"proof_lifetime": f"{min(600, max(60, 2 * a.duration + 30))}s"},
                               lifetimes={"access_token": "86400s"})
    jwks_cfg["resource_protection"] = _routes(B.AUDIENCE)
    # The public keys of the signing key, as our JWKS endpoint will publish them.
    key = json.loads(key_file.read_text())
    pub = {k: v for k, v in key.items() if k != "d"}
    jwks = json.dumps({"keys": [pub]})
    B.say("starting Envoy api (protected routes, and jwt_authn on /jwt)")
    env = B.Envoy("api", work, key_file, jwks_cfg, None, server_cpu, extra_http_filters=[_jwt_authn(B, jwks, B.AUDIENCE)])
    auth = B.basic(B.CLIENT_ID, B.CLIENT_SECRET)
    st, _, body = B.http("POST", env.url + "/oauth/token", B.TOKEN_BODY.encode(),
                         {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    if st != 200:
        raise B.BenchError(f"api: token {st} {body[:200]!r}")
    token = json.loads(body)["access_token"]
    bearer = f"Bearer {token}"
    probes: dict[str, Any] = {"token_bytes": len(token)}
    for path, want in (("/pass/x", 200), ("/jwt/x", 200), ("/api/x", 200), ("/capi/x", 200), ("/dapi/x", 401)):
        st, _, b = B.http("GET", env.url + path, None, {"Authorization": bearer})
        if st != want:
            raise B.BenchError(f"api probe {path}: {st} (wanted {want}) {b[:200]!r}")
        probes[path] = st
    for path in ("/jwt/x", "/api/x"):
        st, _, _ = B.http("GET", env.url + path, None, {"Authorization": bearer[:-3] + "AAA"})
        if st != 401:
            raise B.BenchError(f"api probe {path} with a bad signature: {st}")
    targets = [
        B.Target("pass", env.url + "/pass/x", env.pid, "fixed.lua", ["GET", "", bearer], env.admin),
        B.Target("jwt_authn", env.url + "/jwt/x", env.pid, "fixed.lua", ["GET", "", bearer], env.admin),
        B.Target("bearer", env.url + "/api/x", env.pid, "fixed.lua", ["GET", "", bearer], env.admin),
        B.Target("claims", env.url + "/capi/x", env.pid, "fixed.lua", ["GET", "", bearer], env.admin),
    ]
    base = None
    if getattr(a, "base_wasm", None):
        # Another build of the filter, same configuration and key (so it takes the same token):
        # its pass-through and Bearer rows run interleaved with the others.
        B.say(f"starting Envoy api-base ({a.base_wasm})")
        base = B.Envoy("api-base", work, key_file, jwks_cfg, None, server_cpu,
                       extra_http_filters=[_jwt_authn(B, jwks, B.AUDIENCE)], wasm=Path(a.base_wasm))
        for path in ("/pass/x", "/api/x"):
            st, _, b = B.http("GET", base.url + path, None, {"Authorization": bearer})
            if st != 200:
                raise B.BenchError(f"api-base probe {path}: {st} {b[:200]!r}")
        probes["base_wasm"] = str(a.base_wasm)
        targets += [
            B.Target("pass-base", base.url + "/pass/x", base.pid, "fixed.lua", ["GET", "", bearer], base.admin),
            B.Target("bearer-base", base.url + "/api/x", base.pid, "fixed.lua", ["GET", "", bearer], base.admin),
        ]
    dpop_t, pools = None, None
    if a.dpop and B.dpop_available() is None:
        st, _, body = B.http("GET", env.url + "/.well-known/oauth-authorization-server")
        token_htu = json.loads(body)["token_endpoint"]
        lifetime = min(600, max(60, 2 * a.duration + 30))
        token_pool = B.ProofPools(work, token_htu, a.dpop_alg, lifetime + 20, B.JTI_SLOTS, load_cpu)
        proof = open(token_pool.make(1)).readline().strip()
        st, _, body = B.http("POST", env.url + "/oauth/token", B.TOKEN_BODY.encode(),
                             {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded",
                              "DPoP": proof})
        if st != 200 or json.loads(body).get("token_type") != "DPoP":
            raise B.BenchError(f"api: DPoP token {st} {body[:200]!r}")
        dtoken = json.loads(body)["access_token"]
        pools = _ApiPools(B, token_pool, API_ORIGIN + "/dapi/x", _ath(dtoken))
        p = open(pools.make(2)).readline().strip()
        st, _, b = B.http("GET", env.url + "/dapi/x", None, {"Authorization": f"DPoP {dtoken}", "DPoP": p})
        st2, _, _ = B.http("GET", env.url + "/dapi/x", None, {"Authorization": f"DPoP {dtoken}", "DPoP": p})
        if st != 200 or st2 != 401:
            raise B.BenchError(f"api probe /dapi/x with a proof: {st}, replayed {st2} {b[:200]!r}")
        probes["dpop"] = {"proof_alg": a.dpop_alg, "replayed_status": st2}
        dpop_t = B.Target("dpop", env.url + "/dapi/x", env.pid, "api_dpop.lua", ["", f"DPoP {dtoken}"], env.admin)
    B.say(f"api probes: {probes}")

    for t in targets:
        B.run_wrk(t.url, t.script, t.args, 32, a.warmup, load_cpu, t.pid)
    runs: list[dict] = []
    dpop_rate = {c: 2000.0 for c in B.CONNS}

    # One step per row; the rounds run them in B.round_order (reversed every other round), the
    # DPoP row last in odd rounds and first in even ones.
    def plain_step(t, conns: int) -> dict:
        r = B.measure(t, conns, a.duration, load_cpu)
        B.say(f"round {rnd} c{conns:<2} api {t.name:9} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
              f"p99 {r['p99_ms']:.3f} ms  {r['cpu_us']:.1f} µs CPU/req")
        return r

    def dpop_step(conns: int) -> dict:
        count = int(dpop_rate[conns] * a.duration * 1.5) + 200
        f = pools.make(count)
        dpop_t.args[0] = str(f)
        r = B.measure(dpop_t, conns, a.duration, load_cpu, check=_dpop_check(B))
        f.unlink(missing_ok=True)
        dpop_rate[conns] = r["rps"]
        B.say(f"round {rnd} c{conns:<2} api dpop      {r['rps']:9.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
              f"p99 {r['p99_ms']:.3f} ms  {r['cpu_us']:.1f} µs CPU/req"
              + (" (pool ran out: run ended early)" if r.get("starved") else ""))
        return r

    steps = [lambda c, t=t: plain_step(t, c) for t in targets] + ([dpop_step] if dpop_t else [])
    for rnd in range(1, a.rounds + 1):
        for conns in B.CONNS:
            for step in B.round_order(steps, rnd):
                r = step(conns)
                r["round"] = rnd
                runs.append(r)
    # The Bearer/pass-through CPU ratio again, from pairs of short windows (B.measure_pair): its
    # target's verdict uses these (a difference of a few µs on 45-65 µs, which the host's noise
    # between rounds swamps).
    pairs: list[dict] = []
    t0 = B.time.time()
    for conns in B.CONNS:
        for k in range(getattr(a, "pairs", 0)):
            p = B.measure_pair(targets[2], targets[0], "cpu_us", conns, a.pair_duration, k, load_cpu)
            pairs.append(p)
            B.say(f"pair {k + 1} c{conns:<2} api {' '.join(p['order'])}: bearer/pass CPU {p['ratio']:.2f}× "
                  f"({p['num_value']:.1f} / {p['den_value']:.1f} µs)")
    results["api"] = {"probes": probes, "runs": runs, "stats": env.stats("oauth_edge"), "pairs": pairs,
                      "pairs_elapsed_s": B.time.time() - t0}
    env.stop()
    if base:
        base.stop()


def _dpop_check(B):
    def check(r: dict) -> None:
        if r["failures"] or r["ok"] != r["requests"]:
            raise B.BenchError(f"api dpop: {r['ok']:.0f} of {r['requests']} answered 200; "
                               f"{r['failures_4xx']:.0f} 4xx, {r['failures_5xx']:.0f} 5xx; wrk errors {r['errors']}")
    return check


class _ApiPools:
    """Proofs for the API (GET, htu of the API URL, ath of the token) by the key the token is
    bound to (the token pool's key file)."""

    def __init__(self, B, token_pool, htu: str, ath: str) -> None:
        self.B, self.key, self.alg, self.cpu = B, token_pool.key, token_pool.alg, token_pool.cpu
        self.work, self.htu, self.ath, self.n = token_pool.work, htu, ath, 0

    def make(self, count: int) -> Path:
        B = self.B
        self.n += 1
        out = self.work / f"api-proofs-{self.n}.txt"
        r = B.subprocess.run(B.taskset(self.cpu) + [str(B.VENV_PY), str(B.PROOFS), "--htu", self.htu, "--htm", "GET",
                                                    f"--ath={self.ath}", "--count", str(count), "--out", str(out),
                                                    "--alg", self.alg, "--key", str(self.key)],
                             capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise B.BenchError(f"proofs.py: {r.stderr[-2000:]}")
        return out


def render(B, res: dict) -> list[str]:
    api = res.get("api")
    if not api:
        return []
    s = B.summarize(api["runs"])
    pairs = api.get("pairs", [])
    names = {"pass": "pass-through (no protection)", "jwt_authn": "Envoy jwt_authn (same EdDSA token)",
             "bearer": "oauth-edge protected route, Bearer",
             "claims": "the same, three claim headers (sub, client_id, scope)", "dpop": "oauth-edge protected route, DPoP-bound + "
             + (api["probes"].get("dpop", {}).get("proof_alg", "-") + " proof"),
             "pass-base": "pass-through, the --base-wasm build", "bearer-base": "Bearer, the --base-wasm build"}
    L = ["Protected APIs (issue 15): GET to an Envoy direct_response behind each kind of check, same Envoy, "
         f"same {api['probes']['token_bytes']}-byte EdDSA access token, interleaved:", "",
         "| path | conns | req/s (median) | min–max | p50 ms | p99 ms | server CPU µs/req |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for conns in B.CONNS:
        for t in ("pass", "jwt_authn", "bearer", "claims", "dpop", "pass-base", "bearer-base"):
            x = s.get((t, conns))
            if x:
                L.append(f"| {names[t]} | {conns} | {x['rps']:,.0f} | {x['rps_min']:,.0f}–{x['rps_max']:,.0f} | "
                         f"{x['p50_ms']:.3f} | {x['p99_ms']:.3f} | {x['cpu_us']:.1f} |")
    L += ["", "| ratio | 1 conn | 32 conns | target |", "| --- | ---: | ---: | --- |"]
    for a_, b_, field, target in (("bearer", "jwt_authn", "rps", "≥ 1.0× (throughput)"),
                                  ("bearer", "pass", "cpu_us", "≤ 1.3× (CPU per request)"),
                                  ("claims", "pass", "cpu_us", "(a route that asks for claim headers)"),
                                  ("dpop", "bearer", "rps", ""),
                                  ("bearer-base", "pass-base", "cpu_us", "the --base-wasm build"),
                                  ("bearer", "bearer-base", "cpu_us", "this build / the base")):
        if not all(any(r["target"] == t for r in api["runs"]) for t in (a_, b_)):
            continue
        cells = []
        for conns in B.CONNS:
            vals = B.per_round(api["runs"], a_, b_, conns, field, lambda x, y: x / y if y else 0.0)
            if vals:
                cells.append(f"{B.statistics.median(vals):.2f}× ({min(vals):.2f}–{max(vals):.2f})")
            else:
                cells.append("-")
        label = f"{a_}/{b_}" + (" CPU" if field == "cpu_us" else "")
        L.append(f"| {label} | {cells[0]} | {cells[1]} | {target} |")
        if any(p["num"] == a_ and p["den"] == b_ for p in pairs):
            cells = [B.fmt_pairs(B.pair_summary(pairs, a_, b_, conns)) for conns in B.CONNS]
            L.append(f"| {label}, paired ABBA windows | {cells[0]} | {cells[1]} | {target}: the verdict's figure |")
    L.append("")
    if pairs:
        prm = res["params"]
        L.append(f"Paired ABBA windows: after the rounds, at each connection count, {prm['pairs']} pair(s) of "
                 f"{prm['pair_duration']}-s windows, measured back to back as pass, bearer, bearer, pass (reversed "
                 f"every other pair); each pair gives one ratio, each side's Envoy CPU over its requests in the pair's "
                 f"two windows; median (min–max; number of pairs). Four adjacent windows see nearly the same host, "
                 f"which rounds of 5-s runs minutes apart do not on a noisy one ({api.get('pairs_elapsed_s', 0):.0f} s "
                 f"of the run).")
        L.append("")
    L += _verdicts(B, api["runs"], pairs)
    return L


def _verdicts(B, runs: list[dict], pairs: list[dict]) -> list[str]:
    """The issue-15 targets at each connection count: Bearer ≥ 1.0× jwt_authn's throughput (median
    of per-round ratios) and Bearer CPU ≤ 1.3× pass-through's (the paired windows' median when
    there are pairs: the figure that the host's noise moves least)."""
    L = ["Protected-API targets (throughput: the median of per-round ratios; CPU: the median of the paired ABBA "
         "windows' ratios when the run has them, the per-round figure beside it):", "",
         "| target | conns | measured | verdict |", "| --- | ---: | --- | --- |"]
    for conns in B.CONNS:
        vals = B.per_round(runs, "bearer", "jwt_authn", conns, "rps", lambda x, y: x / y if y else 0.0)
        if vals:
            r = B.statistics.median(vals)
            L.append(f"| bearer ≥ 1.0× jwt_authn throughput | {conns} | {r:.2f}× per-round | "
                     + ("met" if r >= 1.0 else f"missed (short by {1.0 - r:.2f}×)") + " |")
    for conns in B.CONNS:
        pp = B.pair_summary(pairs, "bearer", "pass", conns)
        vals = B.per_round(runs, "bearer", "pass", conns, "cpu_us", lambda x, y: x / y if y else 0.0)
        if not (pp or vals):
            continue
        rr = B.statistics.median(vals) if vals else float("nan")
        r = pp[0] if pp else rr
        shown = f"{B.fmt_pairs(pp)} paired; per-round {rr:.2f}×" if pp else f"{rr:.2f}× per-round"
        L.append(f"| bearer CPU ≤ 1.3× pass-through's | {conns} | {shown} | "
                 + ("met" if r <= 1.3 else f"missed ({r - 1.3:.2f}× over)") + " |")
    return L + [""]
