"""Helpers for the oauth-edge integration tests: clients, requests, and independent checks.

Token verification here uses PyJWT (and joserfc in one test) against the JWKS the filter publishes:
never the filter's own code.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import jwt
import requests

import support  # noqa: F401  (puts tests/fixtures and envoy/ on sys.path)
from support.forms import FORM, basic_auth, post_form  # noqa: F401  (the one form poster; re-exported)

# The test Envoys' plugin configuration (support/fixtures_envoy.py base_plugin_config)
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
def token_request(envoy: Any, client: Client | None = DEMO_CLIENT, *, use: str | None = None,
                  data: dict[str, str] | list[tuple[str, str]] | str | bytes | None = None,
                  scope: str | None = None, headers: dict[str, str] | None = None,
                  session: requests.Session | None = None, timeout: float = 10) -> requests.Response:
    """POST the token endpoint (through post_form). `use` = client_secret_basic |
    client_secret_post | none. `data`: the form (pairs, a dict, or a str/bytes body as it is)
    instead of client_credentials; then the client, if any, goes in as Basic unless `use` says
    otherwise or `headers` have an Authorization."""
    hdrs = dict(headers or {})
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
        body: Any = form
    else:
        body = data
        if client is not None and "Authorization" not in hdrs and (use or "client_secret_basic") == "client_secret_basic":
            hdrs["Authorization"] = basic_auth(client.client_id, client.secret or "")
    return post_form(envoy.token_url, body, headers=hdrs, session=session, timeout=timeout)


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
                        alg: str | None = None, kid: str | None = None,
                        sub: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify an RFC 9068 JWT access token with PyJWT against the published JWKS. `sub` is the
    resource owner (the client itself, the default, for client_credentials)."""
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
    assert claims["sub"] == (client_id if sub is None else sub), claims
    assert claims["client_id"] == client_id, claims
    assert sorted(claims.get("scope", "").split()) == sorted(scope.split()), claims
    assert claims["exp"] - claims["iat"] == lifetime, claims
    assert abs(claims["iat"] - time.time()) < 30, claims
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16, claims
    return header, claims


# --------------------------------------------------------------------------- authorization code flow
# The login service the gateway trusts: Envoy's jwt_authn filter (before the wasm filter) verifies
# its JWTs on GET /oauth/authorize and puts the verified payload into dynamic metadata, where the
# plugin's `user` setting reads the end user (`sub`) and the authentication time (`iat`).
LOGIN_ISSUER = "https://login.example.test"
LOGIN_AUDIENCE = "oauth-edge-login"
LOGIN_URL = "https://login.example.test/login"
LOGIN_METADATA_NAMESPACE = "envoy.filters.http.jwt_authn"
LOGIN_METADATA_KEY = "login_user"  # jwt_authn payload_in_metadata
# Replicas of one authorization server share one issuer (and signing keys): the Envoys of the
# authorization code tests use this fixed https issuer, not their loopback address, so two of them
# can run the very same plugin configuration.
AC_ISSUER = "https://as.example.test"
ID_TOKEN_LIFETIME = 300  # lifetimes.id_token default
REFRESH_COOKIE = "oauth_edge_rt"  # refresh_cookie.name default
RP_REDIRECT = "https://rp.example.test/cb"
SPA_ORIGIN = "https://spa.example.test"
SPA_REDIRECT = SPA_ORIGIN + "/cb"
# A confidential relying party; no grace for a rotated refresh token (reuse always revokes).
RP_CLIENT = Client("rp", "rp-secret", grant_types=("authorization_code", "refresh_token"),
                   scope="openid profile read",
                   extra={"redirect_uris": [RP_REDIRECT], "refresh_token_reuse_interval": 0})
# A browser app: public client, refresh token only in the HttpOnly cookie for /oauth/refresh.
SPA_CLIENT = Client("spa", None, auth_method="none", grant_types=("authorization_code", "refresh_token"),
                    scope="openid read",
                    extra={"redirect_uris": [SPA_REDIRECT], "refresh_token_cookie": True})


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636 §4.1-4.2."""
    verifier = b64url(os.urandom(32))
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


class LoginService:
    """The test's login service: an RSA key made per session, its public JWKS (inlined into
    jwt_authn's local_jwks), and login JWTs signed with PyJWT."""

    def __init__(self, kid: str = "login-rs256") -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return {"keys": [jwk]}

    def sign(self, sub: str | None, *, iat: int | None = None, lifetime: int = 300, key: Any = None,
             alg: str = "RS256", kid: str | None = None, **claims: Any) -> str:
        """A login JWT for `sub` (None: no sub claim), by default valid and signed by this service."""
        now = int(time.time())
        iat = now - 5 if iat is None else iat
        payload: dict[str, Any] = {"iss": LOGIN_ISSUER, "aud": LOGIN_AUDIENCE, "iat": iat, "exp": now + lifetime}
        if sub is not None:
            payload["sub"] = sub
        payload.update(claims)
        return jwt.encode(payload, self.key if key is None else key, algorithm=alg,
                          headers={"kid": kid or self.kid})

    def jwt_authn_filter(self, authorize_path: str = "/oauth/authorize",
                         extra_paths: Iterable[str] = ()) -> dict[str, Any]:
        """Envoy's jwt_authn as a production gateway would put it before the plugin: on the
        authorize endpoint a login JWT is optional (no JWT: the plugin sends the browser to the
        login page), but one that is present must verify (allow_missing, not
        allow_missing_or_failed: a forged token is refused with 401, not quietly ignored).
        forward: false keeps the login JWT from going any further. `extra_paths` get the same
        rule (e.g. the device flow's verification endpoint, RFC 8628 §3.3)."""
        return {
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {
                    "login": {
                        "issuer": LOGIN_ISSUER,
                        "audiences": [LOGIN_AUDIENCE],
                        "local_jwks": {"inline_string": json.dumps(self.jwks())},
                        "forward": False,
                        "payload_in_metadata": LOGIN_METADATA_KEY,
                    },
                },
                "rules": [{
                    "match": {"path": path},
                    "requires": {"requires_any": {"requirements": [
                        {"provider_name": "login"}, {"allow_missing": {}}]}},
                } for path in (authorize_path, *extra_paths)],
            },
        }

    @staticmethod
    def user_config() -> dict[str, Any]:
        """The plugin's `user` setting that reads what jwt_authn_filter() verified."""
        return {"metadata_namespace": LOGIN_METADATA_NAMESPACE, "metadata_key": LOGIN_METADATA_KEY,
                "subject_claim": "sub", "auth_time_claim": "iat"}


def bearer(login_jwt: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {login_jwt}"}


def par_request(envoy: Any, client: Client = RP_CLIENT, *, session: requests.Session | None = None,
                **params: str) -> requests.Response:
    """POST /oauth/pushed-authorization (form body, client_secret_basic; client_id in the form for
    a public client)."""
    form = {"response_type": "code", "redirect_uri": client.extra["redirect_uris"][0], **params}
    if client.secret is None:
        form.setdefault("client_id", client.client_id)
    form = {k: v for k, v in form.items() if v is not None}
    return post_form(envoy.par_url, form, basic=client if client.secret is not None else None, session=session)


def authorize_request(envoy: Any, params: dict[str, str], *, login_jwt: str | None = None,
                      headers: dict[str, str] | None = None,
                      session: requests.Session | None = None) -> requests.Response:
    """GET /oauth/authorize without following the redirect."""
    hdrs = dict(headers or {})
    if login_jwt is not None:
        hdrs.update(bearer(login_jwt))
    return (session or requests).get(envoy.authorize_url, params=params, headers=hdrs,
                                     allow_redirects=False, timeout=10)


def redirect_params(r: requests.Response, base: str) -> dict[str, str]:
    """The query of a 303 to `base` (one value per name)."""
    assert r.status_code == 303, f"expected a 303 redirect, got {r.status_code}: {r.text[:300]}"
    loc = r.headers["Location"]
    got_base, _, query = loc.partition("?")
    assert got_base == base, loc
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    assert len({k for k, _ in pairs}) == len(pairs), f"a parameter repeated: {loc}"
    return dict(pairs)


def issue_code(envoy: Any, login_jwt: str, client: Client = RP_CLIENT, *, scope: str = "openid read",
               session: requests.Session | None = None, **params: str) -> tuple[str, str]:
    """PAR (PKCE S256) then authorize as the login JWT's user: (code, code_verifier)."""
    verifier, challenge = pkce_pair()
    r = par_request(envoy, client, session=session, scope=scope, code_challenge=challenge,
                    code_challenge_method="S256", state="st", **params)
    assert r.status_code == 201, f"PAR failed: {r.status_code} {r.text[:300]}"
    q = authorize_request(envoy, {"client_id": client.client_id, "request_uri": r.json()["request_uri"]},
                          login_jwt=login_jwt, session=session)
    p = redirect_params(q, client.extra["redirect_uris"][0])
    assert "code" in p and p.get("state") == "st" and p.get("iss") == envoy.issuer, p
    return p["code"], verifier


def redeem_code(envoy: Any, code: str, verifier: str | None, client: Client = RP_CLIENT, *,
                redirect_uri: str | None = None, session: requests.Session | None = None,
                auth: Client | None = None) -> requests.Response:
    """POST /oauth/token grant_type=authorization_code (authenticated as `auth`, default `client`)."""
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": client.extra["redirect_uris"][0] if redirect_uri is None else redirect_uri}
    if verifier is not None:
        form["code_verifier"] = verifier
    who = auth or client
    headers = {}
    if who.secret is not None:
        headers["Authorization"] = basic_auth(who.client_id, who.secret)
    else:
        form["client_id"] = who.client_id
    return token_request(envoy, None, data=form, headers=headers, session=session)


def refresh_request(envoy: Any, refresh_token: str, client: Client = RP_CLIENT, *,
                    session: requests.Session | None = None, **extra: str) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return token_request(envoy, None, data=form, session=session,
                         headers={"Authorization": basic_auth(client.client_id, client.secret or "")})


def seal_refresh_token(signing_key: dict[str, Any], claims: dict[str, Any]) -> str:
    """A refresh token as the filter seals one (src/sealed.rs, keys.rs `sealing_key`):
    "rt1." + base64url(nonce ‖ ChaCha20-Poly1305(key, JSON claims, aad)), the key being
    SHA-256("oauth-edge/refresh-token-sealing/v1\\0" ‖ d) of a configured private key. For tests
    that need families the filter has not seen (a restart, another Envoy: it records them at
    their first refresh), or families shorter-lived than `lifetimes.refresh_token` allows."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    d = base64.urlsafe_b64decode(signing_key["d"] + "=" * (-len(signing_key["d"]) % 4))
    key = hashlib.sha256(b"oauth-edge/refresh-token-sealing/v1\0" + d).digest()
    nonce = os.urandom(12)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, json.dumps(claims).encode(), b"oauth-edge refresh token v1")
    return "rt1." + b64url(nonce + sealed)


def left_half_hash(alg: str, token: str) -> str:
    """OIDC Core §3.1.3.6 at_hash: the left half of the hash of the JWS alg's hash function
    (SHA-256 for ES256; SHA-512 for EdDSA over Ed25519, as OpenID's EdDSA registration says)."""
    h = {"ES256": hashlib.sha256, "EdDSA": hashlib.sha512}[alg](token.encode()).digest()
    return b64url(h[: len(h) // 2])


def verify_id_token(id_token: str, access_token: str, envoy: Any, *, client_id: str, sub: str,
                    nonce: str | None, auth_time: int | None) -> dict[str, Any]:
    """Verify an OIDC ID token with PyJWT against the published JWKS (OIDC Core §3.1.3.7)."""
    header = jwt.get_unverified_header(id_token)
    assert header.get("alg") == envoy.active_alg and header.get("kid") == envoy.active_kid, header
    jwks = jwt.PyJWKSet.from_dict(fetch_jwks(envoy))
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(id_token, key.key, algorithms=[envoy.active_alg], audience=client_id,
                        issuer=envoy.issuer, leeway=5,
                        options={"require": ["iss", "sub", "aud", "exp", "iat"]})
    assert claims["sub"] == sub, claims
    assert claims.get("azp", client_id) == client_id, claims
    assert claims["exp"] - claims["iat"] == ID_TOKEN_LIFETIME, claims
    assert abs(claims["iat"] - time.time()) < 30, claims
    assert claims.get("nonce") == nonce, claims
    assert claims.get("auth_time") == auth_time, claims
    assert claims["at_hash"] == left_half_hash(envoy.active_alg, access_token), claims
    return claims


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


# --------------------------------------------------------------------------- private_key_jwt and DPoP
# Client assertions (RFC 7523 §2.2/§3) and DPoP proofs (RFC 9449 §4) are signed with joserfc (and
# Authlib, which signs with joserfc too); thumbprints (RFC 7638) are computed here from the JWK's
# JSON, independently of both libraries and of the filter.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
VERIFY_ALGS = ("EdDSA", "ES256", "PS256", "RS256")  # assertions and proofs, default profile
FAPI2_ALGS = ("EdDSA", "ES256", "PS256")  # profile fapi2: no RS256
# The metadata also lists RFC 9864's fully-specified name for the same Ed25519 signatures.
ADVERTISED_ALGS = VERIFY_ALGS + ("Ed25519",)
FAPI2_ADVERTISED_ALGS = FAPI2_ALGS + ("Ed25519",)

# RFC 7638 §3.2: the required members of each key type, the only ones a thumbprint hashes.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace,
    base64url without padding."""
    names = _THUMBPRINT_MEMBERS[jwk["kty"]]
    assert list(names) == sorted(names)
    canonical = "{" + ",".join(f"{json.dumps(n)}:{json.dumps(jwk[n], ensure_ascii=False)}" for n in names) + "}"
    assert " " not in canonical
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


class ClientKey:
    """A client's key pair (joserfc) with the kid and, optionally, the "alg" its published JWK
    carries. The joserfc key object itself has no alg, so it can sign with any algorithm of its
    type (to try what the registered alg forbids)."""

    def __init__(self, alg: str, kid: str | None, *, jwk_alg: bool = False) -> None:
        from joserfc.jwk import ECKey, OKPKey, RSAKey

        params = {"kid": kid} if kid else {}
        if alg == "ES256":
            self.key: Any = ECKey.generate_key("P-256", parameters=params, private=True)
        elif alg == "EdDSA":
            self.key = OKPKey.generate_key("Ed25519", parameters=params, private=True)
        elif alg in ("PS256", "RS256"):
            self.key = RSAKey.generate_key(2048, parameters=params, private=True)
        else:
            raise ValueError(alg)
        self.alg = alg
        self.kid = kid
        self.jwk_alg = jwk_alg

    @property
    def kty(self) -> str:
        return self.public_jwk()["kty"]

    def public_jwk(self) -> dict[str, Any]:
        jwk = dict(self.key.as_dict(private=False))
        assert "d" not in jwk
        if self.jwk_alg:
            jwk["alg"] = self.alg
        jwk.setdefault("use", "sig")
        return jwk

    def private_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=True))

    def thumbprint(self) -> str:
        return jwk_thumbprint(self.public_jwk())

    def pem_public(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.key.public_key.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)


def jwks_of(*keys: ClientKey) -> dict[str, Any]:
    return {"keys": [k.public_jwk() for k in keys]}


def sign_jws(header: dict[str, Any], claims: dict[str, Any], key: Any, alg: str, *,
             typ: str | None = None, registry: Any = None) -> str:
    """A compact JWS by joserfc (jwt.encode): `header` as given plus alg (and typ if given; no
    typ at all if None and header has none). `key` a joserfc key (or OctKey for HS256; None for
    alg none)."""
    from joserfc import jwt as jose_jwt

    h = dict(header, alg=alg)
    if typ is not None:
        h["typ"] = typ
    return jose_jwt.encode(h, claims, key, algorithms=[alg], default_type=None, registry=registry)


def crit_registry(alg: str, name: str) -> Any:
    """A joserfc JWS registry that knows the extension header `name`, so a token can list it in
    `crit` (RFC 7515 §4.1.11): a receiver that does not understand it must refuse the JWS."""
    from joserfc.jws import JWSRegistry
    from joserfc.registry import HeaderParameter

    return JWSRegistry(header_registry={name: HeaderParameter("test extension", "str")}, algorithms=[alg])


def lax_registry(alg: str, *names: str) -> Any:
    """A joserfc JWS registry that signs whatever value the header parameters `names` hold (e.g.
    a `jwk` that is not an object): the token is properly signed, its header is what is wrong."""
    from joserfc.jws import JWSRegistry
    from joserfc.registry import HeaderParameter

    return JWSRegistry(header_registry={n: HeaderParameter("anything", lambda v: None) for n in names},
                       algorithms=[alg])


def new_jti() -> str:
    return b64url(os.urandom(18))


def client_assertion(key: ClientKey, client_id: str, aud: Any, *, alg: str | None = None,
                     kid: Any = "key", iss: Any = "client", sub: Any = "client", lifetime: int = 60,
                     exp: Any = "auto", iat: Any = "auto", jti: Any = "auto", sign_with: Any = None,
                     header: dict[str, Any] | None = None, registry: Any = None, **claims: Any) -> str:
    """An RFC 7523 §3 client assertion signed by `key` (or by `sign_with`, a joserfc key, keeping
    `key`'s kid). Defaults: iss = sub = client_id, iat now, exp now + lifetime, a fresh jti, the
    header kid of `key`. A claim or the kid passed as None is left out."""
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": client_id if iss == "client" else iss,
        "sub": client_id if sub == "client" else sub,
        "aud": aud,
        "iat": now if iat == "auto" else iat,
        "exp": now + lifetime if exp == "auto" else exp,
        "jti": new_jti() if jti == "auto" else jti,
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    h = dict(header or {})
    k = key.kid if kid == "key" else kid
    if k is not None:
        h["kid"] = k
    return sign_jws(h, body, sign_with if sign_with is not None else key.key, alg or key.alg, typ="JWT",
                    registry=registry)


def dpop_proof(key: ClientKey, htu: str, *, htm: str = "POST", alg: str | None = None,
               typ: str | None = "dpop+jwt", jwk: Any = "key", iat: Any = "auto", jti: Any = "auto",
               nonce: str | None = None, sign_with: Any = None, header: dict[str, Any] | None = None,
               registry: Any = None, **claims: Any) -> str:
    """An RFC 9449 §4.2 DPoP proof: header typ dpop+jwt, alg, jwk (the public key); claims jti,
    htm, htu, iat (and nonce if given). A claim passed as None is left out; jwk=None leaves the
    jwk out; sign_with signs with another joserfc key while the header shows `key`."""
    body: dict[str, Any] = {
        "jti": new_jti() if jti == "auto" else jti,
        "htm": htm,
        "htu": htu,
        "iat": int(time.time()) if iat == "auto" else iat,
        **claims,
    }
    if nonce is not None:
        body["nonce"] = nonce
    body = {k: v for k, v in body.items() if v is not None}
    h: dict[str, Any] = dict(header or {})
    j = key.public_jwk() if jwk == "key" else jwk
    if j is not None:
        h["jwk"] = j
    return sign_jws(h, body, sign_with if sign_with is not None else key.key, alg or key.alg, typ=typ,
                    registry=registry)


def unsigned_jws(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWS with alg none (nothing is signed: there is no signing to leave to a library)."""
    head = b64url(json.dumps(dict(header, alg="none")).encode())
    return f"{head}.{b64url(json.dumps(claims).encode())}.{b64url(signature)}"


def hmac_jws(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """HS256 by joserfc with an arbitrary byte string as the HMAC key: the key confusion attack
    uses the public key's PEM, which joserfc's OctKey.import_key refuses to take, so the OctKey is
    built directly."""
    from joserfc.jwk import OctKey

    return sign_jws(header, claims, OctKey(secret, secret), "HS256")


def jws_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a compact JWS, unverified (for building variants in tests)."""
    def part(s: str) -> dict[str, Any]:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))

    h, c, _ = token.split(".")
    return part(h), part(c)


def metadata(envoy: Any) -> dict[str, Any]:
    r = requests.get(envoy.base_url + "/.well-known/oauth-authorization-server", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def endpoint_urls(envoy: Any) -> dict[str, str]:
    """The endpoint URLs as the metadata names them (what `htu` and an assertion `aud` use; for
    the https issuer of the authorization code Envoys they are not where the test connects)."""
    m = metadata(envoy)
    return {"issuer": m["issuer"], "token": m["token_endpoint"],
            "par": m["pushed_authorization_request_endpoint"]}


def assertion_form(assertion: str, client_id: str | None = None) -> dict[str, str]:
    form = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    if client_id is not None:
        form["client_id"] = client_id
    return form


def raw_post(envoy: Any, path: str, form: dict[str, str], header_lines: list[tuple[str, str]]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST with http.client, where a header name may repeat (e.g. two DPoP lines): (status,
    lower-case headers, JSON body)."""
    import http.client

    body = urllib.parse.urlencode(form).encode()
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", FORM)
        conn.putheader("Content-Length", str(len(body)))
        for name, value in header_lines:
            conn.putheader(name, value)
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(data or b"null")
    finally:
        conn.close()


def assert_dpop_token_response(r: requests.Response, envoy: Any, key: ClientKey, *, client_id: str,
                               scope: str, sub: str | None = None, alg: str | None = None) -> dict[str, Any]:
    """RFC 9449 §5: token_type DPoP, dpop_access_token_bound, dpop_signing_alg; the access
    token (verified with PyJWT against the JWKS) carries cnf.jkt = the RFC 7638 thumbprint of
    the proof's key, computed here. Returns the access token's claims."""
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert_no_store_json(r)
    body = r.json()
    assert body.get("token_type") == "DPoP", body
    assert body.get("dpop_access_token_bound") is True, body
    assert body.get("dpop_signing_alg") == (alg or key.alg), body
    _, claims = verify_access_token(body["access_token"], envoy, client_id=client_id, scope=scope,
                                    lifetime=ACCESS_TOKEN_LIFETIME, sub=sub)
    assert claims.get("cnf") == {"jkt": key.thumbprint()}, claims
    return claims


def assert_bearer_token_response(r: requests.Response, envoy: Any, *, client_id: str, scope: str,
                                 sub: str | None = None) -> dict[str, Any]:
    """No DPoP proof: a plain Bearer token, no cnf, no dpop_* members."""
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert_no_store_json(r)
    body = r.json()
    assert body.get("token_type") == "Bearer", body
    assert not [k for k in body if k.startswith("dpop")], body
    _, claims = verify_access_token(body["access_token"], envoy, client_id=client_id, scope=scope,
                                    lifetime=ACCESS_TOKEN_LIFETIME, sub=sub)
    assert "cnf" not in claims, claims
    return claims


class ClientKeys:
    """The keys of the static private_key_jwt clients, made once per session (the public halves
    go into the test Envoys' plugin configuration)."""

    def __init__(self) -> None:
        # pk-client: two EC keys (so an ES256 assertion must name its kid), one Ed25519 key (the
        # only OKP key: EdDSA without kid is fine), an RSA key without alg (RS256 and PS256) and
        # an RSA key whose JWK says PS256 (RS256 refused).
        self.pk_es = ClientKey("ES256", "pk-es-1", jwk_alg=True)
        self.pk_es2 = ClientKey("ES256", "pk-es-2")
        self.pk_ed = ClientKey("EdDSA", "pk-ed-1")
        self.pk_rsa = ClientKey("RS256", "pk-rsa-1")
        self.pk_rsa_ps = ClientKey("PS256", "pk-rsa-ps", jwk_alg=True)
        # pk-pinned: token_endpoint_auth_signing_alg PS256, RSA key without alg.
        self.pinned_rsa = ClientKey("PS256", "pinned-rsa")
        # fapi-client (profile fapi2): EC and RSA.
        self.fapi_es = ClientKey("ES256", "fapi-es-1")
        self.fapi_rsa = ClientKey("PS256", "fapi-rsa-1")

    def pk_client_jwks(self) -> dict[str, Any]:
        return jwks_of(self.pk_es, self.pk_es2, self.pk_ed, self.pk_rsa, self.pk_rsa_ps)


# Static clients of the private_key_jwt / DPoP Envoys (conftest adds their jwks).
PK_REDIRECT = "https://pk.example.test/cb"
PK_CLIENT = Client("pk-client", None, auth_method="private_key_jwt",
                   grant_types=("client_credentials", "authorization_code", "refresh_token"),
                   scope="openid read write", extra={"redirect_uris": [PK_REDIRECT]})
PK_PINNED_CLIENT = Client("pk-pinned", None, auth_method="private_key_jwt", scope="read",
                          extra={"token_endpoint_auth_signing_alg": "PS256"})
# A confidential client whose access tokens must be DPoP-bound (RFC 9449 §5.2).
DPOP_BOUND_CLIENT = Client("dpop-bound", "dpop-bound-secret", scope="read",
                           extra={"dpop_bound_access_tokens": True})
# A public client whose refresh token comes in the token answer (no cookie): bound to the DPoP key.
DPOP_PUBLIC_REDIRECT = "https://dpop-public.example.test/cb"
DPOP_PUBLIC_CLIENT = Client("dpop-public", None, auth_method="none",
                            grant_types=("authorization_code", "refresh_token"), scope="openid read",
                            extra={"redirect_uris": [DPOP_PUBLIC_REDIRECT]})
# profile fapi2
FAPI_REDIRECT = "https://fapi.example.test/cb"
FAPI_CLIENT = Client("fapi-client", None, auth_method="private_key_jwt",
                     grant_types=("authorization_code", "refresh_token"), scope="openid read",
                     extra={"redirect_uris": [FAPI_REDIRECT]})


def pk_metadata(c: Client, jwks: dict[str, Any] | None = None, jwks_uri: str | None = None) -> dict[str, Any]:
    m = client_metadata(c)
    if jwks is not None:
        m["jwks"] = jwks
    if jwks_uri is not None:
        m["jwks_uri"] = jwks_uri
    return m


def pushed_code(envoy: Any, login_jwt: str, client: Client, *, form_auth: Callable[[], dict[str, str]] | None = None,
                dpop: Callable[[], str] | None = None, scope: str = "openid read",
                session: requests.Session | None = None, **params: str) -> tuple[str, str]:
    """PAR (PKCE S256) then authorize as the login JWT's user: (code, code_verifier).
    form_auth() gives the client authentication form fields (e.g. a fresh client assertion);
    without it Basic for a client with a secret, client_id in the form for a public client.
    dpop() gives a DPoP proof for the PAR request."""
    verifier, challenge = pkce_pair()
    redirect_uri = client.extra["redirect_uris"][0]
    form = {"response_type": "code", "redirect_uri": redirect_uri, "scope": scope, "state": "st",
            "code_challenge": challenge, "code_challenge_method": "S256", **params}
    basic = None
    if form_auth is not None:
        form.update(form_auth())
    elif client.secret is not None:
        basic = client
    else:
        form["client_id"] = client.client_id
    r = post_form(envoy.par_url, form, basic=basic, dpop=dpop() if dpop else None, session=session)
    assert r.status_code == 201, f"PAR failed: {r.status_code} {r.text[:300]}"
    q = authorize_request(envoy, {"client_id": client.client_id, "request_uri": r.json()["request_uri"]},
                          login_jwt=login_jwt, session=session)
    p = redirect_params(q, redirect_uri)
    assert "code" in p and p.get("state") == "st" and p.get("iss") == envoy.issuer, p
    return p["code"], verifier


def code_form(client: Client, code: str, verifier: str | None) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": client.extra["redirect_uris"][0]}
    if verifier is not None:
        form["code_verifier"] = verifier
    return form


def authlib_private_key_jwt(aud: str, key: ClientKey, *, alg: str | None = None, lifetime: int = 60) -> Any:
    """Authlib's private_key_jwt client authentication (authlib.oauth2.rfc7523.PrivateKeyJWT,
    registered on an OAuth2Session) with `aud` as the assertion audience (Authlib calls it the
    token endpoint) and the key's kid in the header. Authlib's own signing function builds and
    signs every assertion (iss = sub = client_id, iat, a fresh jti); only its fixed lifetime of
    3600 s, far beyond a 5 minute max_lifetime, is shortened to `lifetime` (the stock class
    cannot be told, see test_rfc7523_s3_authlib_default_one_hour_assertion_is_too_long)."""
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign

    class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
        def sign(self, auth: Any, token_endpoint: str) -> str:
            return private_key_jwt_sign(auth.client_secret, client_id=auth.client_id,
                                        token_endpoint=token_endpoint, alg=self.alg,
                                        header=dict(self.headers or {}), expires_in=lifetime)

    return ShortLivedPrivateKeyJWT(aud, headers={"kid": key.kid} if key.kid else None, alg=alg or key.alg)


def authlib_session(client: Client, key: ClientKey, aud: str, *, alg: str | None = None,
                    scope: str | None = None, **kw: Any) -> Any:
    """An Authlib OAuth2Session authenticating `client` with private_key_jwt (`key`, audience `aud`)."""
    from authlib.integrations.requests_client import OAuth2Session

    s = OAuth2Session(client.client_id, key.key, token_endpoint_auth_method="private_key_jwt",
                      scope=scope if scope is not None else client.scope, **kw)
    s.register_client_auth_method(authlib_private_key_jwt(aud, key, alg=alg))
    return s


# Clients of the rate limit Envoys (client_secret_basic, client_credentials).
RATE_CLIENTS = tuple(Client(f"rl-{n}", f"rl-{n}-secret", scope="read") for n in "abcdefgh")
# A public client under the per-client limit: anyone can name it, so its budget is per address.
RATE_PUBLIC_CLIENT = Client("rl-public", None, auth_method="none",
                            grant_types=("authorization_code", "refresh_token"), scope="read",
                            extra={"redirect_uris": ["https://rl.example.test/pub-cb"]})
# A rate limit client that also pushes authorization requests (PAR and token count together).
RATE_PAR_REDIRECT = "https://rl.example.test/cb"
RATE_PAR_CLIENT = Client("rl-par", "rl-par-secret", grant_types=("client_credentials", "authorization_code"),
                         scope="read", extra={"redirect_uris": [RATE_PAR_REDIRECT]})


# --------------------------------------------------------------------------- more grants
# Revocation (RFC 7009), introspection (RFC 7662), the device authorization grant (RFC 8628),
# token exchange (RFC 8693) and the password grant: the clients of envoy_grants (conftest).
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_REFRESH = "urn:ietf:params:oauth:token-type:refresh_token"
# RFC 8628 §6.1: the user_code alphabet (20 consonants).
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"

# A TV app: public, device flow and refresh tokens (in the answer).
TV_CLIENT = Client("tv", None, auth_method="none", grant_types=(DEVICE_CODE_GRANT, "refresh_token"),
                   scope="openid read write", extra={"client_name": "Living-room TV"})
# A kiosk: confidential (client_secret_post), device flow only: no refresh token.
KIOSK_CLIENT = Client("kiosk", "kiosk-secret", auth_method="client_secret_post", grant_types=(DEVICE_CODE_GRANT,),
                      scope="read", extra={"client_name": "Lobby kiosk"})
# Trusted issuers of token exchange (their JWK Sets served by the registry fixture).
PARTNER_ISSUER = "https://idp.partner.test"
PARTNER2_ISSUER = "https://idp2.partner.test"
PARTNER2_AUDIENCE = "urn:example:oauth-edge"  # trusted_issuers[1].audience (the first: our issuer)
# A gateway that exchanges tokens for narrower ones, for two downstream APIs.
ORDERS_API = "https://orders.example.test"
BILLING_API = "https://billing.example.test"
# Its policy: the targets it may ask for (allowed_resources, the list of every grant; "orders-svc"
# is a logical audience, the client_id of ORDERS_SVC_CLIENT) and the audiences of the subject
# tokens it may exchange (our issuer: the default audience of our tokens and the partners' `aud`).
# client_credentials gives it tokens of its own, to name itself as the actor.
ORDERS_SVC = "orders-svc"
GW_CLIENT = Client("gw", "gw-secret", grant_types=(TOKEN_EXCHANGE_GRANT, "client_credentials"), scope="read write",
                   extra={"allowed_resources": [ORDERS_API, BILLING_API, ORDERS_SVC],
                          "token_exchange_subject_audiences": [AC_ISSUER, PARTNER2_AUDIENCE]})
# Token exchange needs a confidential client: this public one lists the grant all the same. (It and
# BURST_CLIENT keep the older name token_exchange_audiences, which is read into allowed_resources.)
TX_PUBLIC_CLIENT = Client("tx-public", None, auth_method="none", grant_types=(TOKEN_EXCHANGE_GRANT,),
                          scope="read", extra={"token_exchange_audiences": [ORDERS_API]})
# Password grant clients: with refresh tokens, without, and one only the per-client limit uses.
LEGACY_CLIENT = Client("legacy", "legacy-secret", grant_types=("password", "refresh_token"), scope="read write")
LEGACY_NORT_CLIENT = Client("legacy-nort", "legacy-nort-secret", auth_method="client_secret_post",
                            grant_types=("password",), scope="read")
PW_BULK_CLIENT = Client("pw-bulk", "pw-bulk-secret", grant_types=("password",), scope="read")
# A resource server: introspects access tokens for the default audience (envoy_grants' issuer,
# RFC 7662 §4: registered as its resource server), issues nothing of its own worth mentioning.
RS_CLIENT = Client("rs", "rs-secret", grant_types=("client_credentials",), scope="",
                   extra={"resource_server_audiences": [AC_ISSUER]})
# The garbage burst's client: every grant (its password failures count against it alone).
BURST_CLIENT = Client("burst", "burst-secret",
                      grant_types=("client_credentials", "refresh_token", "password", DEVICE_CODE_GRANT,
                                   TOKEN_EXCHANGE_GRANT),
                      scope="read", extra={"token_exchange_audiences": [ORDERS_API]})
# Token policy (test_token_policy.py): resources a client may ask for, in every grant.
POLICY_REDIRECT = "https://policy-rp.example.test/cb"
POLICY_SVC_CLIENT = Client("policy-svc", "policy-svc-secret", scope="read",
                           extra={"allowed_resources": [ORDERS_API]})
POLICY_RP_CLIENT = Client("policy-rp", "policy-rp-secret", grant_types=("authorization_code", "refresh_token"),
                          scope="openid read",
                          extra={"redirect_uris": [POLICY_REDIRECT], "allowed_resources": [ORDERS_API, BILLING_API]})
POLICY_TV_CLIENT = Client("policy-tv", None, auth_method="none", grant_types=(DEVICE_CODE_GRANT,), scope="read",
                          extra={"allowed_resources": [ORDERS_API]})
# The orders service: an audience of the tokens gw makes for ORDERS_SVC (its client_id), which
# it exchanges for BILLING_API.
ORDERS_SVC_CLIENT = Client(ORDERS_SVC, "orders-svc-secret", grant_types=(TOKEN_EXCHANGE_GRANT,), scope="read write",
                           extra={"allowed_resources": [BILLING_API]})
# Registered for token exchange, but no audience of anybody's tokens.
NOSY_CLIENT = Client("nosy", "nosy-secret", grant_types=(TOKEN_EXCHANGE_GRANT,), scope="read write",
                     extra={"allowed_resources": [ORDERS_API]})
GRANTS_CLIENTS = (TV_CLIENT, KIOSK_CLIENT, GW_CLIENT, TX_PUBLIC_CLIENT, LEGACY_CLIENT, LEGACY_NORT_CLIENT,
                  PW_BULK_CLIENT, RS_CLIENT, BURST_CLIENT, POLICY_SVC_CLIENT, POLICY_RP_CLIENT, POLICY_TV_CLIENT,
                  ORDERS_SVC_CLIENT, NOSY_CLIENT)


class PartnerIdp:
    """A trusted issuer of token exchange: its key pair (joserfc), the JWK Set name the registry
    serves it under, and its JWTs (signed with joserfc, helpers.sign_jws)."""

    def __init__(self, issuer: str, jwks_name: str, alg: str, kid: str, audience: str) -> None:
        self.issuer = issuer
        self.jwks_name = jwks_name
        self.audience = audience
        self.key = ClientKey(alg, kid)

    def jwks(self, *extra: ClientKey) -> dict[str, Any]:
        return jwks_of(self.key, *extra)

    def token(self, sub: str | None = "partner-user", *, lifetime: int = 120, aud: Any = "default",
              iss: Any = "default", exp: Any = "auto", key: ClientKey | None = None, kid: Any = "key",
              **claims: Any) -> str:
        """A JWT of this issuer: iss, sub, aud (its configured audience), iat, exp = now + lifetime;
        a claim passed as None is left out; `key` signs instead of the issuer's own key."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer if iss == "default" else iss,
            "sub": sub,
            "aud": self.audience if aud == "default" else aud,
            "iat": now,
            "exp": now + lifetime if exp == "auto" else exp,
            "jti": new_jti(),
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        k = key or self.key
        header: dict[str, Any] = {}
        kid_value = k.kid if kid == "key" else kid
        if kid_value is not None:
            header["kid"] = kid_value
        return sign_jws(header, body, k.key, k.alg, typ="JWT")


def authlib_client(client: Client) -> Any:
    """An Authlib OAuth2Session for `client` (client_secret_basic / client_secret_post / none),
    for its revoke_token and introspect_token (RFC 7009 / RFC 7662 requests built by Authlib)."""
    from authlib.integrations.requests_client import OAuth2Session

    return OAuth2Session(client.client_id, client.secret, token_endpoint_auth_method=client.auth_method,
                         revocation_endpoint_auth_method=client.auth_method)


def introspect(envoy: Any, token: str, client: Client = RS_CLIENT, **kw: Any) -> dict[str, Any]:
    """RFC 7662 §2.1 by Authlib's introspect_token; asserts 200, no-store JSON; the answer."""
    with authlib_client(client) as s:
        r = s.introspect_token(envoy.introspection_url, token=token, **kw)
    assert r.status_code == 200, f"introspection: {r.status_code} {r.text[:300]}"
    assert_no_store_json(r)
    return r.json()


def revoke(envoy: Any, token: str, client: Client, **kw: Any) -> requests.Response:
    """RFC 7009 §2.1 by Authlib's revoke_token (the client's own authentication method)."""
    with authlib_client(client) as s:
        return s.revoke_token(envoy.revocation_url, token=token, **kw)


def assert_revoked_ok(r: requests.Response) -> None:
    """RFC 7009 §2.2: 200 whatever happened (oauth-edge answers {} as JSON, no-store)."""
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert_no_store_json(r)
    assert r.json() == {}, r.text


def device_authorization(envoy: Any, client: Client = TV_CLIENT, scope: str | None = "read",
                         **params: str) -> requests.Response:
    """POST the device authorization endpoint (RFC 8628 §3.1)."""
    form = dict(params)
    if scope is not None:
        form["scope"] = scope
    return post_form(envoy.device_authorization_url, form, client)


def start_device(envoy: Any, client: Client = TV_CLIENT, scope: str | None = "read", **params: str) -> dict[str, Any]:
    r = device_authorization(envoy, client, scope, **params)
    assert r.status_code == 200, f"device authorization: {r.status_code} {r.text[:300]}"
    assert_no_store_json(r)
    return r.json()


def poll_device(envoy: Any, device_code: str, client: Client = TV_CLIENT, *,
                session: requests.Session | None = None, headers: dict[str, str] | None = None) -> requests.Response:
    """The device's poll at the token endpoint (RFC 8628 §3.4)."""
    return post_form(envoy.token_url, {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}, client,
                     session=session, headers=headers)


def normalize_user_code(code: str) -> str:
    return "".join(c for c in code if c.isalnum()).upper()


def device_lookup(envoy: Any, user_code: str, login_jwt: str | None, *,
                  headers: dict[str, str] | None = None) -> requests.Response:
    """GET the verification endpoint as the user of `login_jwt` (RFC 8628 §3.3), no redirects."""
    hdrs = dict(headers or {})
    if login_jwt is not None:
        hdrs.update(bearer(login_jwt))
    return requests.get(envoy.device_verification_url, params={"user_code": user_code}, headers=hdrs,
                        allow_redirects=False, timeout=10)


def device_decide(envoy: Any, user_code: str, action: str, login_jwt: str | None, *,
                  origin: str | None = "issuer", extra: dict[str, str] | None = None) -> requests.Response:
    """POST the user's decision (approve / deny) with an Origin header: the issuer's origin by
    default, None for none, or the given value."""
    hdrs: dict[str, str] = {}
    if origin == "issuer":
        origin = issuer_origin(envoy)
    if origin is not None:
        hdrs["Origin"] = origin
    if login_jwt is not None:
        hdrs.update(bearer(login_jwt))
    form = {"user_code": user_code, "action": action, **(extra or {})}
    return post_form(envoy.device_verification_url, form, headers=hdrs, allow_redirects=False)


def issuer_origin(envoy: Any) -> str:
    u = urllib.parse.urlsplit(envoy.issuer)
    return f"{u.scheme}://{u.netloc}"


def exchange(envoy: Any, subject_token: str, subject_token_type: str = TOKEN_TYPE_ACCESS, *,
             client: Client = GW_CLIENT, dpop: str | None = None,
             extra: list[tuple[str, str]] | dict[str, str] | None = None) -> requests.Response:
    """POST a token exchange request (RFC 8693 §2.1)."""
    form: list[tuple[str, str]] = [("grant_type", TOKEN_EXCHANGE_GRANT), ("subject_token", subject_token),
                                   ("subject_token_type", subject_token_type)]
    form += list(extra.items()) if isinstance(extra, dict) else list(extra or [])
    return post_form(envoy.token_url, form, client, headers={"DPoP": dpop} if dpop else None)


def password_request(envoy: Any, username: str, password: str, client: Client = LEGACY_CLIENT, *,
                     scope: str | None = None, session: requests.Session | None = None) -> requests.Response:
    form = {"grant_type": "password", "username": username, "password": password}
    if scope is not None:
        form["scope"] = scope
    return post_form(envoy.token_url, form, client, session=session)


def verify_our_jwt(token: str, envoy: Any, *, audience: Any = None) -> dict[str, Any]:
    """PyJWT against the published JWKS: signature, iss, typ at+jwt, exp; `aud` if given (else
    not checked). The claims."""
    header = jwt.get_unverified_header(token)
    assert header.get("typ", "").lower() == "at+jwt", header
    assert header.get("alg") == envoy.active_alg and header.get("kid") == envoy.active_kid, header
    jwks = jwt.PyJWKSet.from_dict(fetch_jwks(envoy))
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    return jwt.decode(token, key.key, algorithms=[envoy.active_alg], issuer=envoy.issuer, leeway=5,
                      audience=audience, options={"verify_aud": audience is not None,
                                                  "require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]})


def sleep_past_window_edge(window: float, margin: float) -> None:
    """Fixed rate-limit windows are aligned to the clock (window n covers [n·w, (n+1)·w)): if
    less than `margin` seconds of the current window remain, wait for the next one, so a test's
    counting fits in one window."""
    left = window - (time.time() % window)
    if left < margin:
        time.sleep(left + 0.05)


def approve_device(envoy: Any, user_code: str, login_jwt: str) -> None:
    """The user looks the user_code up and approves it (both must succeed)."""
    r = device_lookup(envoy, user_code, login_jwt)
    assert r.status_code == 200, f"lookup: {r.status_code} {r.text[:300]}"
    r = device_decide(envoy, user_code, "approve", login_jwt)
    assert r.status_code == 200 and r.json() == {"status": "approved"}, f"approve: {r.status_code} {r.text[:300]}"


def device_flow_tokens(envoy: Any, login_jwt: str, client: Client = TV_CLIENT,
                       scope: str = "read") -> dict[str, Any]:
    """A whole device flow (RFC 8628 §3): device authorization, the user's approval, one poll
    (approved: no interval to wait). The token answer."""
    d = start_device(envoy, client, scope)
    approve_device(envoy, d["user_code"], login_jwt)
    r = poll_device(envoy, d["device_code"], client)
    assert r.status_code == 200, f"poll after approval: {r.status_code} {r.text[:300]}"
    return r.json()
