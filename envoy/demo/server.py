#!/usr/bin/env python3
"""The demo around oauth-edge that `make run` starts beside Envoy (Python standard library only).

    python3 envoy/demo/server.py setup --out .run --listen-port 10000 --spa-port 10001
    python3 envoy/demo/server.py serve --dir .run --issuer http://127.0.0.1:10000 \\
        --backend-port 10002 --spa-port 10001 --registry-port 10003 -- ENVOY ARGS...

`setup` writes into --out:
  demo-login-key.json  the demo login service's Ed25519 signing key (a new one each time)
  demo-filters.json    Envoy's jwt_authn filter (render.py --extra-http-filters): it verifies the
                       login JWT from the `demo_login` cookie on /oauth/authorize with the key's
                       public half (local_jwks) and puts its payload into dynamic metadata
                       (payload_in_metadata `login_user`), where the plugin's `user` reads it
  oauth-edge.json      envoy/oauth-edge.json with the demo SPA's redirect_uris on the given ports

`serve` runs three small HTTP servers on 127.0.0.1, and the command after `--` (Envoy) as a
child; Ctrl-C (or SIGTERM) stops both, and when Envoy exits the servers stop too:
  --backend-port   behind Envoy (route mode `cluster`): the login pages (/login, /login/logout,
                   /login/jwks) and the single-page app (/app/); `/` redirects to /app/
  --spa-port       the same app on a second origin (another loopback port), which calls the
                   authorization server through CORS
  --registry-port  the client registry Envoy's `registry` cluster reaches (GET /clients/<id>,
                   docs/registry.md): it knows demo-registry-client and answers
                   404 for every other id, so a mistyped client id is `401 invalid_client`

The login service is a demo: its users and passwords are printed on its page. It signs a
short-lived login JWT (EdDSA, RFC 8037) with sub, iat, auth_time, sid (random per login), name,
email and email_verified, and sets it as an HttpOnly, SameSite=Lax cookie (not Secure: the demo is
plain http on loopback; a real login service sets Secure).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "app"
DEMO_PLUGIN_CONFIG = HERE.parent / "oauth-edge.json"

# The ports envoy/oauth-edge.json is written for (make run's defaults); `setup` moves them.
DEFAULT_LISTEN_PORT = 10000
DEFAULT_SPA_PORT = 10001

LOGIN_COOKIE = "demo_login"
LOGIN_AUDIENCE = "oauth-edge-demo"
LOGIN_LIFETIME = 600  # seconds: the login JWT and its cookie
LOGIN_METADATA_KEY = "login_user"  # jwt_authn payload_in_metadata (the plugin's user.metadata_key)
LOGIN_KID = "demo-login"
REFRESH_COOKIE = "oauth_edge_rt"  # the plugin's refresh_cookie.name default

# Demo users (shown on the login page).
USERS = {
    "alice": {"password": "alice-demo", "name": "Alice Example", "email": "alice@example.com"},
    "bob": {"password": "bob-demo", "name": "Bob Example", "email": "bob@example.com"},
}

# The demo registry's one client (client_secret_basic, client_credentials).
REGISTRY_CLIENT_ID = "demo-registry-client"
REGISTRY_CLIENT_SECRET = "demo-registry-secret"
REGISTRY_CLIENTS = {
    REGISTRY_CLIENT_ID: {
        "client_id": REGISTRY_CLIENT_ID,
        "client_name": "Demo client from the registry",
        "client_secret": "sha256:" + hashlib.sha256(REGISTRY_CLIENT_SECRET.encode()).hexdigest(),
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["client_credentials"],
        "scope": "read",
    }
}


# --------------------------------------------------------------------------- Ed25519 (RFC 8032 §6)
# The reference implementation of RFC 8032, for signing only: the standard library has no
# Ed25519, and the demo must run without packages. Not constant-time: fine for a demo's
# throwaway key, never for a real login service.
_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _recover_x(y: int, sign: int) -> int:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x & 1) != sign:
        x = _P - x
    return x


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0)
_G = (_GX, _GY, 1, _GX * _GY % _P)


def _add(p: tuple[int, int, int, int], q: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, p: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _compress(p: tuple[int, int, int, int]) -> bytes:
    zinv = pow(p[2], _P - 2, _P)
    x, y = p[0] * zinv % _P, p[1] * zinv % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _expand(seed: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def ed25519_public(seed: bytes) -> bytes:
    a, _ = _expand(seed)
    return _compress(_mul(a, _G))


def ed25519_sign(seed: bytes, msg: bytes) -> bytes:
    a, prefix = _expand(seed)
    public = _compress(_mul(a, _G))
    r = int.from_bytes(hashlib.sha512(prefix + msg).digest(), "little") % _Q
    big_r = _compress(_mul(r, _G))
    h = int.from_bytes(hashlib.sha512(big_r + public + msg).digest(), "little") % _Q
    s = (r + h * a) % _Q
    return big_r + int.to_bytes(s, 32, "little")


# --------------------------------------------------------------------------- JWT
def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def new_login_key() -> dict[str, str]:
    seed = secrets.token_bytes(32)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64u(ed25519_public(seed)), "d": b64u(seed),
            "kid": LOGIN_KID, "alg": "EdDSA", "use": "sig"}


def public_jwk(jwk: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in jwk.items() if k != "d"}


def sign_jwt(jwk: dict[str, str], claims: dict[str, Any]) -> str:
    header = {"alg": "EdDSA", "kid": jwk["kid"], "typ": "JWT"}
    signing_input = (b64u(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64u(json.dumps(claims, separators=(",", ":")).encode()))
    return signing_input + "." + b64u(ed25519_sign(b64u_decode(jwk["d"]), signing_input.encode()))


def login_issuer(issuer: str) -> str:
    return issuer.rstrip("/") + "/login"


def login_claims(issuer: str, username: str, now: int | None = None) -> dict[str, Any]:
    """The login JWT's claims for a demo user: what the lead's userinfo and logout will read."""
    now = int(time.time()) if now is None else now
    user = USERS[username]
    return {"iss": login_issuer(issuer), "aud": LOGIN_AUDIENCE, "sub": username, "iat": now,
            "auth_time": now, "exp": now + LOGIN_LIFETIME, "sid": secrets.token_urlsafe(16),
            "name": user["name"], "email": user["email"], "email_verified": True}


# --------------------------------------------------------------------------- setup
def jwt_authn_filter(jwk: dict[str, str], issuer: str) -> dict[str, Any]:
    """Envoy's jwt_authn before the wasm filter: on /oauth/authorize a login JWT is optional (no
    cookie: the plugin sends the browser to login_url), but one that is present must verify
    (allow_missing, not allow_missing_or_failed). forward: false keeps the login JWT from going
    any further."""
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "demo_login": {
                    "issuer": login_issuer(issuer),
                    "audiences": [LOGIN_AUDIENCE],
                    "local_jwks": {"inline_string": json.dumps({"keys": [public_jwk(jwk)]})},
                    "from_cookies": [LOGIN_COOKIE],
                    "forward": False,
                    "payload_in_metadata": LOGIN_METADATA_KEY,
                },
            },
            # /oauth/logout too: the filter then knows whose login the browser holds (it clears
            # the login cookie only when the ID token hint names that login).
            "rules": [{
                "match": {"path": path},
                "requires": {"requires_any": {"requirements": [
                    {"provider_name": "demo_login"}, {"allow_missing": {}}]}},
            } for path in ("/oauth/authorize", "/oauth/logout")],
        },
    }


def demo_plugin_config(listen_port: int, spa_port: int, base: Path = DEMO_PLUGIN_CONFIG) -> dict[str, Any]:
    """envoy/oauth-edge.json with its loopback origins moved to the given ports (the issuer's
    port is render.py's business)."""
    text = base.read_text(encoding="utf-8")
    moves = {f"http://127.0.0.1:{DEFAULT_LISTEN_PORT}": f"http://127.0.0.1:{listen_port}",
             f"http://127.0.0.1:{DEFAULT_SPA_PORT}": f"http://127.0.0.1:{spa_port}"}
    cfg = json.loads(text)
    for c in cfg.get("clients", []):
        c["redirect_uris"] = [_move(u, moves) for u in c.get("redirect_uris", [])]
        if "post_logout_redirect_uris" in c:
            c["post_logout_redirect_uris"] = [_move(u, moves) for u in c["post_logout_redirect_uris"]]
        if "allowed_origins" in c:
            c["allowed_origins"] = [_move(u, moves) for u in c["allowed_origins"]]
        if "allowed_resources" in c:
            c["allowed_resources"] = [_move(u, moves) for u in c["allowed_resources"]]
    for r in cfg.get("resource_protection", {}).get("routes", []):
        r["resource"] = _move(r["resource"], moves)
    return cfg


def _move(url: str, moves: dict[str, str]) -> str:
    for old, new in moves.items():
        if url == old or url.startswith(old + "/"):
            return new + url[len(old):]
    return url


def setup(out: Path, listen_port: int, spa_port: int, issuer: str | None = None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    issuer = issuer or f"http://127.0.0.1:{listen_port}"
    jwk = new_login_key()
    paths = {"key": out / "demo-login-key.json", "filters": out / "demo-filters.json",
             "plugin_config": out / "oauth-edge.json"}
    _write(paths["key"], jwk, private=True)
    _write(paths["filters"], [jwt_authn_filter(jwk, issuer)])
    _write(paths["plugin_config"], demo_plugin_config(listen_port, spa_port))
    return paths


def _write(path: Path, doc: Any, private: bool = False) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if private:
        os.chmod(tmp, 0o600)
    tmp.replace(path)


# --------------------------------------------------------------------------- HTTP
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/app/app.css"></head>
<body><main class="narrow"><h1>{title}</h1>{body}</main></body></html>
"""


def safe_return_to(value: str | None, default: str = "/app/") -> str:
    """A local path only (never another site: no scheme, no `//host`, no backslash)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value \
            or any(ord(c) < 0x20 for c in value):
        return default
    return value


class DemoState:
    def __init__(self, key: dict[str, str], issuer: str, spa_port: int,
                 refresh_path: str = "/oauth/refresh") -> None:
        self.key = key
        self.issuer = issuer.rstrip("/")
        self.refresh_path = refresh_path
        # Where /login/logout may send the browser back to besides a local path: the app's pages.
        parts = urllib.parse.urlsplit(self.issuer)
        self.app_origins = (f"{parts.scheme}://{parts.netloc}", f"http://127.0.0.1:{spa_port}")

    def logout_return_to(self, value: str | None) -> str:
        for origin in self.app_origins:
            if value and value.startswith(origin + "/app/") and "\\" not in value \
                    and not any(ord(c) < 0x20 for c in value):
                return value
        return safe_return_to(value)

    def app_config(self) -> bytes:
        cfg = {"issuer": self.issuer, "client_id": "demo-spa", "scope": "openid profile email read",
               "refresh_endpoint": self.issuer + self.refresh_path,
               "login_logout": self.issuer + "/login/logout"}
        return ("window.DEMO_CONFIG = " + json.dumps(cfg) + ";\n").encode()


class Handler(BaseHTTPRequestHandler):
    server_version = "oauth-edge-demo"
    state: DemoState
    role = "backend"  # backend | spa | registry

    def log_message(self, fmt: str, *args: Any) -> None:
        sys.stderr.write(f"demo {self.role}: {fmt % args}\n")

    # responses
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if ctype.startswith("text/html"):
            # The callback URL carries the code: never in a Referer.
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy",
                             "default-src 'self'; connect-src *; style-src 'self'; frame-ancestors 'none'")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _page(self, status: int, title: str, body: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, PAGE.format(title=html.escape(title), body=body).encode(), "text/html; charset=utf-8",
                   headers)

    def _redirect(self, location: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(303)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _not_found(self) -> None:
        self._send(404, b'{"error":"not_found"}', "application/json")

    # routing
    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        if self.role == "registry":
            return self._registry(path)
        if path == "/":
            return self._redirect("/app/")
        if path.startswith("/app/"):
            return self._app(path)
        if self.role != "backend":
            return self._not_found()
        if path == "/login":
            return self._login_form(safe_return_to((query.get("return_to") or [None])[0]))
        if path == "/login/logout":
            return self._logout(self.state.logout_return_to((query.get("return_to") or [None])[0]))
        if path == "/login/jwks":
            body = json.dumps({"keys": [public_jwk(self.state.key)]}).encode()
            return self._send(200, body, "application/jwk-set+json")
        if path == "/api" or path.startswith("/api/"):
            return self._api(path)
        return self._not_found()

    def do_POST(self) -> None:  # noqa: N802
        if self.role == "backend" and urllib.parse.urlsplit(self.path).path == "/login":
            return self._login_post()
        self._send(405, b'{"error":"method_not_allowed"}', "application/json", {"Allow": "GET"})

    # the app
    def _app(self, path: str) -> None:
        if path == "/app/config.js":
            return self._send(200, self.state.app_config(), "text/javascript; charset=utf-8")
        name = "index.html" if path in ("/app/", "/app/callback") else path[len("/app/"):]
        types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
        target = (APP_DIR / name).resolve()
        if target.parent != APP_DIR.resolve() or target.suffix not in types or not target.is_file():
            return self._not_found()
        self._send(200, target.read_bytes(), types[target.suffix])

    # the demo API: the filter let the request through only with a valid access token for it
    # (resource_protection in oauth-edge.json) and put the verified claims the route names into
    # these headers, replacing any copy the client sent.
    def _api(self, path: str) -> None:
        claims = {name: self.headers.get(f"x-oauth-{name.replace('_', '-')}")
                  for name in ("sub", "client_id", "scope")}
        body = json.dumps({"path": path, "verified_claims": claims}).encode()
        self._send(200, body, "application/json")

    # the login service
    def _login_form(self, return_to: str, error: str = "", status: int = 200) -> None:
        users = "".join(f"<tr><td><code>{html.escape(u)}</code></td><td><code>{html.escape(v['password'])}"
                        f"</code></td><td>{html.escape(v['name'])}</td></tr>" for u, v in USERS.items())
        err = f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else ""
        body = f"""<p>The demo login service. Envoy's jwt_authn verifies the login token it sets; oauth-edge reads
the user from it at <code>/oauth/authorize</code>.</p>{err}
<form method="post" action="/login">
<input type="hidden" name="return_to" value="{html.escape(return_to)}">
<label>User <input name="username" id="username" autocomplete="username" required></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login-submit">Log in</button>
</form>
<table><thead><tr><th>user</th><th>password</th><th>name</th></tr></thead><tbody>{users}</tbody></table>"""
        self._page(status, "Demo login", body)

    def _login_post(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= 8192:
            return self._send(413, b'{"error":"invalid_request"}', "application/json")
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        username = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        return_to = safe_return_to((form.get("return_to") or [None])[0])
        user = USERS.get(username)
        expected = user["password"] if user else secrets.token_hex(16)
        if not hmac.compare_digest(password.encode(), expected.encode()) or user is None:
            return self._login_form(return_to, "Unknown user or wrong password.", 401)
        token = sign_jwt(self.state.key, login_claims(self.state.issuer, username))
        cookie = f"{LOGIN_COOKIE}={token}; Path=/; Max-Age={LOGIN_LIFETIME - 5}; HttpOnly; SameSite=Lax"
        self._redirect(return_to, {"Set-Cookie": cookie})

    def _logout(self, return_to: str) -> None:
        # Clears the login cookie, and this browser's refresh token cookie of the demo's
        # authorization server (same host): the browser forgets both.
        body = (f'<p id="logged-out">You are logged out.</p><p><a href="{html.escape(return_to)}">Back</a></p>')
        self.send_response(200)
        page = PAGE.format(title="Logged out", body=body).encode()
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Set-Cookie", f"{LOGIN_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
        self.send_header("Set-Cookie", f"{REFRESH_COOKIE}=; Path={self.state.refresh_path}; Max-Age=0; "
                                       "Secure; HttpOnly; SameSite=Strict")
        self.end_headers()
        self.wfile.write(page)

    # the client registry, and the user-info service of the filter's /oauth/userinfo
    def _registry(self, path: str) -> None:
        if path.startswith("/users/"):
            user = USERS.get(urllib.parse.unquote(path[len("/users/"):]))
            if user is None:
                return self._not_found()
            sub = urllib.parse.unquote(path[len("/users/"):])
            claims = {"sub": sub, "name": user["name"], "email": user["email"], "email_verified": True,
                      "preferred_username": sub}
            return self._send(200, json.dumps(claims).encode(), "application/json")
        if not path.startswith("/clients/"):
            return self._not_found()
        client = REGISTRY_CLIENTS.get(urllib.parse.unquote(path[len("/clients/"):]))
        if client is None:
            return self._not_found()
        self._send(200, json.dumps(client).encode(), "application/json")


def _server(port: int, role: str, state: DemoState) -> ThreadingHTTPServer:
    handler = type(f"{role.title()}Handler", (Handler,), {"role": role, "state": state})
    srv = ThreadingHTTPServer(("127.0.0.1", port), handler, bind_and_activate=False)
    srv.daemon_threads = True
    srv.request_queue_size = 64
    srv.allow_reuse_address = True
    try:
        srv.server_bind()
        srv.server_activate()
    except OSError:
        srv.server_close()
        raise
    return srv


def serve(args: argparse.Namespace) -> int:
    key = json.loads((Path(args.dir) / "demo-login-key.json").read_text())
    state = DemoState(key, args.issuer, args.spa_port)
    servers = [_server(args.backend_port, "backend", state), _server(args.spa_port, "spa", state),
               _server(args.registry_port, "registry", state)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    sys.stderr.write(f"demo: login and app on 127.0.0.1:{args.backend_port} (behind Envoy), app on "
                     f"http://127.0.0.1:{args.spa_port}/app/, registry on 127.0.0.1:{args.registry_port}\n")
    command = [c for c in args.command if c != "--"]
    child: subprocess.Popen[bytes] | None = None
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = 0
    try:
        if command:
            child = subprocess.Popen(command)
            while child.poll() is None and not stop.is_set():
                time.sleep(0.2)
            try:
                rc = child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                rc = child.wait()
        else:
            stop.wait()
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
    return 0 if stop.is_set() else rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="oauth-edge's demo: login service, single-page app, client registry")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="write the login key, the jwt_authn filter and the plugin configuration")
    s.add_argument("--out", required=True)
    s.add_argument("--listen-port", type=int, default=DEFAULT_LISTEN_PORT)
    s.add_argument("--spa-port", type=int, default=DEFAULT_SPA_PORT)
    s.add_argument("--issuer", help="default http://127.0.0.1:<listen port>")
    r = sub.add_parser("serve", help="run the demo servers, and the command after -- (Envoy) as a child")
    r.add_argument("--dir", required=True, help="where `setup` wrote its files")
    r.add_argument("--issuer", required=True)
    r.add_argument("--backend-port", type=int, required=True)
    r.add_argument("--spa-port", type=int, default=DEFAULT_SPA_PORT)
    r.add_argument("--registry-port", type=int, required=True)
    r.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.cmd == "setup":
        for path in setup(Path(args.out), args.listen_port, args.spa_port, args.issuer).values():
            print(path)
        return 0
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
