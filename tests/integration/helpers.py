"""Helpers for the oauth-edge integration tests: clients, requests, and independent checks.

Token verification here uses PyJWT (and joserfc in one test) against the JWKS the filter publishes:
never the filter's own code.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterable

import jwt
import requests

FORM = "application/x-www-form-urlencoded"

# The test Envoys' plugin configuration (conftest.base_plugin_config)
ACCESS_TOKEN_LIFETIME = 120
MAIN_AUDIENCE = "https://api.example.test"
MAX_BODY = 16384

# error_description of Envoy's own 413 as mapped by local_reply_config in envoy/envoy.yaml.in
ENVOY_413_DESCRIPTION = "request body exceeds the proxy buffer limit"


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str | None
    auth_method: str = "client_secret_basic"
    grant_types: tuple[str, ...] = ("client_credentials",)
    scope: str = "read write"
    extra: dict[str, Any] = field(default_factory=dict)


def secret_hash(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def client_metadata(c: Client) -> dict[str, Any]:
    """RFC 7591 client metadata as the filter's config / the registry expects it."""
    m: dict[str, Any] = {
        "client_id": c.client_id,
        "token_endpoint_auth_method": c.auth_method,
        "grant_types": list(c.grant_types),
        "scope": c.scope,
    }
    if c.secret is not None:
        m["client_secret"] = secret_hash(c.secret)
    m.update(c.extra)
    return m


# Static clients: demo-client comes from envoy/oauth-edge.json; conftest adds the others.
DEMO_CLIENT = Client("demo-client", "demo-secret", scope="read write")
POST_CLIENT = Client("post-client", "post-secret", auth_method="client_secret_post", scope="read")
AC_CLIENT = Client("ac-client", "ac-secret", grant_types=("authorization_code",), scope="read",
                   extra={"redirect_uris": ["http://127.0.0.1:9/cb"]})
# RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
WEIRD_CLIENT = Client("weird:client id+1", "s3cr:et p@ss/%", scope="read")


# --------------------------------------------------------------------------- requests
def basic_auth(client_id: str, secret: str) -> str:
    """Authorization header value per RFC 6749 §2.3.1 (form-urlencode, then RFC 7617 Basic)."""
    raw = f"{urllib.parse.quote_plus(client_id, safe='')}:{urllib.parse.quote_plus(secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def token_request(envoy: Any, client: Client | None = DEMO_CLIENT, *, use: str | None = None,
                  data: dict[str, str] | list[tuple[str, str]] | str | bytes | None = None,
                  scope: str | None = None, headers: dict[str, str] | None = None,
                  session: requests.Session | None = None, timeout: float = 10) -> requests.Response:
    """POST the token endpoint. `use` = client_secret_basic | client_secret_post | none."""
    hdrs = {"Content-Type": FORM, "Accept": "application/json"}
    hdrs.update(headers or {})
    if data is None:
        form: list[tuple[str, str]] = [("grant_type", "client_credentials")]
        if scope is not None:
            form.append(("scope", scope))
        method = use or (client.auth_method if client else None)
        if client is not None and method == "client_secret_basic":
            hdrs.setdefault("Authorization", basic_auth(client.client_id, client.secret or ""))
        elif client is not None and method == "client_secret_post":
            form += [("client_id", client.client_id), ("client_secret", client.secret or "")]
        elif client is not None and method == "none":
            form.append(("client_id", client.client_id))
        body: Any = urllib.parse.urlencode(form)
    else:
        body = urllib.parse.urlencode(data) if isinstance(data, (dict, list)) else data
        if client is not None and "Authorization" not in hdrs and (use or "client_secret_basic") == "client_secret_basic":
            hdrs["Authorization"] = basic_auth(client.client_id, client.secret or "")
    http = session or requests
    return http.post(envoy.token_url, data=body, headers=hdrs, timeout=timeout)


def oversized_form(total: int) -> bytes:
    """A valid client_credentials form padded to exactly `total` bytes."""
    head = b"grant_type=client_credentials&pad="
    return head + b"a" * (total - len(head))


def valid_token(envoy: Any, session: requests.Session | None = None, client: Client = DEMO_CLIENT) -> dict[str, Any]:
    r = token_request(envoy, client, session=session)
    assert r.status_code == 200, f"a valid client_credentials request failed: {r.status_code} {r.text}"
    return r.json()


# --------------------------------------------------------------------------- assertions
def assert_no_store_json(r: requests.Response) -> None:
    ctype = r.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip().lower() == "application/json", f"Content-Type {ctype!r}"
    cc = r.headers.get("Cache-Control", "")
    assert "no-store" in cc.lower(), f"Cache-Control {cc!r} (RFC 6749 §5.1 requires no-store)"


def assert_oauth_error(r: requests.Response, status: int, error: str | Iterable[str]) -> dict[str, Any]:
    """RFC 6749 §5.2 error: status, flat JSON {"error","error_description"}, no-store."""
    allowed = {error} if isinstance(error, str) else set(error)
    assert r.status_code == status, f"expected {status} {allowed}, got {r.status_code}: {r.text[:300]}"
    assert_no_store_json(r)
    body = r.json()
    assert isinstance(body, dict), body
    assert body.get("error") in allowed, f"error {body.get('error')!r} not in {allowed}: {body}"
    assert isinstance(body.get("error_description"), str) and body["error_description"], body
    for k, v in body.items():
        assert isinstance(v, str), f"error body must be flat JSON strings; {k} = {v!r}"
    # RFC 6749 §5.2: error and error_description use %x20-21 / %x23-5B / %x5D-7E only.
    assert re.fullmatch(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+", body["error_description"]), body
    return body


def assert_token_response(r: requests.Response, *, scope: str, lifetime: int) -> dict[str, Any]:
    """RFC 6749 §5.1 successful response."""
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert_no_store_json(r)
    assert "no-cache" in r.headers.get("Pragma", "").lower(), r.headers
    body = r.json()
    assert isinstance(body.get("access_token"), str) and body["access_token"].count(".") == 2, body
    assert body.get("token_type", "").lower() == "bearer", body
    assert body.get("expires_in") == lifetime, body
    assert sorted(body.get("scope", "").split()) == sorted(scope.split()), body
    assert "refresh_token" not in body, "RFC 6749 §4.4.3: no refresh token for client_credentials"
    return body


def fetch_jwks(envoy: Any) -> dict[str, Any]:
    r = requests.get(envoy.jwks_url, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def verify_access_token(token: str, envoy: Any, *, client_id: str, scope: str, lifetime: int,
                        alg: str | None = None, kid: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify an RFC 9068 JWT access token with PyJWT against the published JWKS."""
    alg = alg or envoy.active_alg
    kid = kid or envoy.active_kid
    header = jwt.get_unverified_header(token)
    assert header.get("typ", "").lower() == "at+jwt", f"RFC 9068 §2.1 typ: {header}"
    assert header.get("alg") == alg, header
    assert header.get("kid") == kid, header
    jwks = jwt.PyJWKSet.from_dict(fetch_jwks(envoy))
    key = next((k for k in jwks.keys if k.key_id == header["kid"]), None)
    assert key is not None, f"kid {header['kid']} not in JWKS"
    claims = jwt.decode(
        token, key.key, algorithms=[alg], audience=envoy.audience, issuer=envoy.issuer, leeway=5,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]},
    )
    assert claims["sub"] == client_id, claims
    assert claims["client_id"] == client_id, claims
    assert sorted(claims.get("scope", "").split()) == sorted(scope.split()), claims
    assert claims["exp"] - claims["iat"] == lifetime, claims
    assert abs(claims["iat"] - time.time()) < 30, claims
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16, claims
    return header, claims


# --------------------------------------------------------------------------- raw HTTP
def raw_request_head(path: str = "/oauth/token", *, body_length: int | None = None,
                     client: Client | None = DEMO_CLIENT, content_type: str | None = FORM,
                     extra: str = "") -> bytes:
    """An HTTP/1.1 POST head (client_secret_basic for `client`), with Content-Length if given
    (else `extra` should say Transfer-Encoding: chunked)."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if client is not None:
        lines.append(f"Authorization: {basic_auth(client.client_id, client.secret or '')}")
    if body_length is not None:
        lines.append(f"Content-Length: {body_length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def raw_http(port: int, request: bytes, *, timeout: float = 10.0, body_chunks: Iterable[bytes] = ()) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes (ignoring a reset while sending) and parse one HTTP/1.1 response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
            for chunk in body_chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_http_response(s)


def read_http_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length body (or up to close, reset or timeout)
    from `s`, leaving the connection usable for the next request. One request at a time: bytes
    received after this response (a pipelined answer) are dropped."""
    data = b""
    try:
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                hdrs = _parse_headers(head)
                n = int(hdrs.get("content-length", "-1"))
                if n >= 0 and len(rest) >= n:
                    break
    except (ConnectionResetError, socket.timeout):
        pass
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head:
        raise AssertionError("no HTTP response at all")
    status = int(head.split(b" ", 2)[1])
    hdrs = _parse_headers(head)
    n = int(hdrs.get("content-length", str(len(rest))))
    return status, hdrs, rest[:n]


def _parse_headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        out[k.decode("latin-1").strip().lower()] = v.decode("latin-1").strip()
    return out


# --------------------------------------------------------------------------- metrics
def prom_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the Prometheus samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            total += float(m.group(3))
    return total


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
