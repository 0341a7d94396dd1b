"""Issue 15: the gateway enforces its tokens on the APIs behind it (RFC 6750, RFC 9449 §7,
RFC 9728). A real Envoy with protected routes in front of the echo backend; tokens from the
same filter's token endpoint; DPoP proofs and forged tokens built with joserfc; a discovery
run with Authlib.

The API's external origin is https://api.example.test and the issuer https://as.example.test:
a transport adapter sends both to the Envoy on loopback, as DNS and a TLS terminator would."""
from __future__ import annotations

import base64
import hashlib
import time
import urllib.parse
from typing import Any

import pytest
import requests
from joserfc.jwk import JWKRegistry

from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from support.fixtures_pop import POP_DPOP
from support.forms import post_form
from helpers import (Client, ClientKey, basic_auth, client_metadata, dpop_proof, endpoint_urls, raw_http,
                     revoke, sign_jws)

API = "https://api.example.test"
ORDERS = API + "/orders"
PAYMENTS = API + "/payments"
ADMIN = API + "/admin"
ISSUER = "https://as.example.test"
API_CLIENT = Client("api-client", "api-secret", scope="orders:read orders:write payments:write read",
                    extra={"allowed_resources": [ORDERS, PAYMENTS, ADMIN]})
API_DPOP_CLIENT = Client("api-dpop", "api-dpop-secret", scope="orders:read payments:write",
                         extra={"allowed_resources": [ORDERS, PAYMENTS, ADMIN], "dpop_bound_access_tokens": True})
ROUTES = [
    # Bearer or DPoP; every listed scope.
    # The claims it asks for go upstream as headers (none unless asked for).
    {"prefix": "/orders", "resource": ORDERS, "resource_name": "Orders API", "scopes": {"all": ["orders:read"]},
     "claim_headers": {"sub": "x-oauth-sub", "client_id": "x-oauth-client-id", "scope": "x-oauth-scope"}},
    # DPoP-bound tokens only, on one host; one of the scopes; credentials not forwarded; own headers.
    {"prefix": "/payments", "host": "api.example.test", "resource": PAYMENTS, "dpop": "required",
     "scopes": {"any": ["payments:write", "payments:admin"]}, "forward_credentials": False,
     "claim_headers": {"sub": "x-user", "cnf.jkt": "x-dpop-jkt", "client_id": "x-client",
                       "auth_time": "x-auth-time"}},
    # Any valid token; Envoy's RBAC filter after this one decides by the verified client_id.
    {"prefix": "/admin", "resource": ADMIN, "filter_state": True, "claim_headers": {"client_id": "x-oauth-client-id"}},
]
# RBAC after the wasm filter: /admin only for api-client, read from the filter state the filter
# sets (wasm filters cannot set dynamic metadata in Envoy; RBAC's filter_state matcher reads this).
RBAC_FILTER = {
    "name": "envoy.filters.http.rbac",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": {
            "everything-else": {"permissions": [{"not_rule": {"url_path": {"path": {"prefix": "/admin"}}}}],
                                "principals": [{"any": True}]},
            "admin-for-api-client": {
                "permissions": [{"url_path": {"path": {"prefix": "/admin"}}}],
                "principals": [{"filter_state": {"key": "wasm.oauth_edge.client_id",
                                                 "string_match": {"exact": "api-client"}}}]},
        }},
    },
}


def _rbac_after_wasm(doc: dict[str, Any]) -> None:
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = hcm["http_filters"]
    at = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.wasm")
    filters.insert(at + 1, RBAC_FILTER)


def _plugin_config(**dpop: Any) -> dict[str, Any]:
    cfg = base_plugin_config(issuer=ISSUER, dpop=dict(POP_DPOP, **dpop),
                             resource_protection={"clock_skew": "5s", "routes": ROUTES})
    cfg["clients"] += [client_metadata(API_CLIENT), client_metadata(API_DPOP_CLIENT)]
    return cfg


@pytest.fixture(scope="module")
def envoy_api(keys, registry, backend, tmp_path_factory):
    inst = start_envoy("protected", tmp_path_factory, route_mode="cluster", plugin_config=_plugin_config(),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                        edit_config=_rbac_after_wasm)
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="module")
def envoy_api_nonce(keys, registry, backend, tmp_path_factory):
    inst = start_envoy("protected-nonce", tmp_path_factory, route_mode="cluster",
                        plugin_config=_plugin_config(require_nonce=True),
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port)
    yield inst
    finish_envoy(inst)


class _ToEnvoy(requests.adapters.HTTPAdapter):
    """Sends https://api.example.test and https://as.example.test to the Envoy on loopback
    (keeping the Host header), as DNS and a TLS terminator would."""

    def __init__(self, envoy) -> None:
        super().__init__()
        self.envoy = envoy

    def send(self, request, **kw):
        u = urllib.parse.urlsplit(request.url)
        request.headers.setdefault("Host", u.netloc)
        request.url = urllib.parse.urlunsplit(("http", f"127.0.0.1:{self.envoy.listen_port}", u.path, u.query, ""))
        return super().send(request, **kw)


def _session(envoy) -> requests.Session:
    s = requests.Session()
    for origin in (API, ISSUER):
        s.mount(origin + "/", _ToEnvoy(envoy))
    return s


def _token(envoy, client: Client, resource: str, scope: str, key: ClientKey | None = None) -> str:
    headers = {"Authorization": basic_auth(client.client_id, client.secret or "")}
    if key is not None:
        headers["DPoP"] = dpop_proof(key, endpoint_urls(envoy)["token"])
    r = post_form(envoy.token_url, {"grant_type": "client_credentials", "scope": scope, "resource": resource},
                  headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == ("DPoP" if key is not None else "Bearer")
    return r.json()["access_token"]


def _ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def _call(envoy, method: str, url: str, token: str | None = None, *, scheme: str = "Bearer",
          proof: str | None = None, headers: dict[str, str] | None = None) -> requests.Response:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"{scheme} {token}"
    if proof is not None:
        h["DPoP"] = proof
    with _session(envoy) as s:
        return s.request(method, url, headers=h, timeout=10)


def _challenges(r: requests.Response) -> dict[str, dict[str, str]]:
    """The WWW-Authenticate challenges by scheme, their parameters parsed."""
    out: dict[str, dict[str, str]] = {}
    for raw in r.raw.headers.getlist("www-authenticate"):
        scheme, _, rest = raw.partition(" ")
        params: dict[str, str] = {}
        for part in _split_params(rest):
            k, _, v = part.strip().partition("=")
            params[k] = v.strip('"')
        out[scheme] = params
    return out


def _split_params(s: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in s:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def _assert_refused(r: requests.Response, status: int, error: str, scheme: str | None) -> dict[str, dict[str, str]]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["error"] == error, r.json()
    assert "backend" not in r.json()
    ch = _challenges(r)
    if scheme is not None:
        assert ch[scheme].get("error") == error, ch
    return ch


def _forged(keys, **claims: Any) -> str:
    """A token signed with the server's own key, claims as given over sane defaults."""
    now = int(time.time())
    body = {"iss": ISSUER, "sub": "forged", "aud": ORDERS, "client_id": API_CLIENT.client_id,
            "scope": "orders:read", "iat": now, "exp": now + 60, "jti": f"forged-{now}-{time.monotonic_ns()}"}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    key = JWKRegistry.import_key(keys.ed25519)
    return sign_jws({"kid": keys.ed25519["kid"]}, body, key, "EdDSA", typ="at+jwt")


# --------------------------------------------------------------------------- Bearer
def test_rfc6750_3_no_token_is_a_challenge_without_error(envoy_api):
    r = _call(envoy_api, "GET", ORDERS + "/1")
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    ch = _challenges(r)
    assert set(ch) == {"Bearer", "DPoP"}
    assert "error" not in ch["Bearer"] and "error" not in ch["DPoP"]
    assert ch["Bearer"]["resource_metadata"] == API + "/.well-known/oauth-protected-resource/orders"
    assert set(ch["DPoP"]["algs"].split()) >= {"ES256", "EdDSA"}
    # Another scheme is no credential for this resource either.
    r = _call(envoy_api, "GET", ORDERS + "/1", "dXNlcjpwYXNz", scheme="Basic")
    assert r.status_code == 401 and "error" not in _challenges(r)["Bearer"]


def test_rfc6750_2_1_valid_bearer_token_reaches_the_api_with_its_claims(envoy_api, backend):
    token = _token(envoy_api, API_CLIENT, ORDERS, "orders:read")
    # Claim headers a client sends are removed before the verified ones are set.
    r = _call(envoy_api, "GET", ORDERS + "/42?x=1", token,
              headers={"X-OAuth-Sub": "admin", "x-oauth-client-id": "admin-app", "X-OAuth-Scope": "god"})
    assert r.status_code == 200 and r.json()["backend"] is True, r.text
    seen = r.json()["headers"]
    assert seen["x-oauth-sub"] == API_CLIENT.client_id
    assert seen["x-oauth-client-id"] == API_CLIENT.client_id
    assert seen["x-oauth-scope"] == "orders:read"
    assert seen["authorization"] == f"Bearer {token}"  # forwarded on this route
    # The exact path also counts, and a path the routes do not list passes untouched.
    assert _call(envoy_api, "GET", ORDERS, token).status_code == 200
    r = _call(envoy_api, "GET", API + "/ordersx", headers={"x-oauth-sub": "spoof"})
    assert r.status_code == 200 and r.json()["headers"]["x-oauth-sub"] == "spoof"


def test_spoofed_claim_headers_never_reach_the_api(envoy_api, backend):
    before = len(backend.seen())
    r = _call(envoy_api, "GET", ORDERS + "/1", "not.a.token", headers={"x-oauth-sub": "admin"})
    assert r.status_code == 401
    r = _call(envoy_api, "POST", ORDERS + "/1", headers={"x-oauth-sub": "admin"})
    assert r.status_code == 401
    assert all(s["headers"].get("x-oauth-sub") != "admin" for s in backend.seen()[before:])


@pytest.mark.parametrize("variant", ["/ORDERS/1", "/./orders/1", "/orders//1", "/x/../orders/1", "/%6Frders/1"])
def test_path_variants_of_a_protected_route_are_protected(envoy_api, variant):
    r = _call(envoy_api, "GET", API + variant)
    assert r.status_code in (401, 301, 307, 404), (variant, r.status_code, r.text[:200])
    assert "backend" not in (r.json() if r.headers.get("content-type") == "application/json" else {})


def test_rfc6750_3_1_expired_token(envoy_api, keys):
    now = int(time.time())
    token = _forged(keys, iat=now - 120, exp=now - 30)  # past the 5 s skew
    ch = _assert_refused(_call(envoy_api, "GET", ORDERS + "/1", token), 401, "invalid_token", "Bearer")
    assert "expired" in ch["Bearer"]["error_description"]
    # Within the skew it is still good.
    assert _call(envoy_api, "GET", ORDERS + "/1", _forged(keys, exp=now - 2)).status_code == 200


def test_rfc6750_3_1_not_yet_valid_token(envoy_api, keys):
    token = _forged(keys, nbf=int(time.time()) + 120)
    _assert_refused(_call(envoy_api, "GET", ORDERS + "/1", token), 401, "invalid_token", "Bearer")


def test_rfc6750_3_1_wrong_audience(envoy_api):
    token = _token(envoy_api, API_CLIENT, PAYMENTS, "orders:read")
    ch = _assert_refused(_call(envoy_api, "GET", ORDERS + "/1", token), 401, "invalid_token", "Bearer")
    assert "not meant for this resource" in ch["Bearer"]["error_description"]


def test_rfc6750_3_1_missing_scope_is_403_insufficient_scope(envoy_api):
    token = _token(envoy_api, API_CLIENT, ORDERS, "orders:write")
    r = _call(envoy_api, "GET", ORDERS + "/1", token)
    ch = _assert_refused(r, 403, "insufficient_scope", "Bearer")
    assert ch["Bearer"]["scope"] == "orders:read"


def test_rfc6750_3_1_bad_signature_and_foreign_tokens(envoy_api, keys):
    token = _token(envoy_api, API_CLIENT, ORDERS, "orders:read")
    head, body, sig = token.split(".")
    flipped = sig[:-2] + ("AA" if not sig.endswith("AA") else "BA")
    for bad in (f"{head}.{body}.{flipped}", _forged(keys, iss="https://evil.example"),
                "a.b.c", "x" * 5000):
        _assert_refused(_call(envoy_api, "GET", ORDERS + "/1", bad), 401, "invalid_token", "Bearer")
    # A JWT that is not an access token (typ) is refused too.
    key = JWKRegistry.import_key(keys.ed25519)
    id_like = sign_jws({"kid": keys.ed25519["kid"]}, {"iss": ISSUER, "sub": "s", "aud": ORDERS,
                                                        "exp": int(time.time()) + 60}, key, "EdDSA", typ="JWT")
    _assert_refused(_call(envoy_api, "GET", ORDERS + "/1", id_like), 401, "invalid_token", "Bearer")


def test_rfc6750_3_1_malformed_presentations_are_400(envoy_api):
    token = _token(envoy_api, API_CLIENT, ORDERS, "orders:read")
    r = _call(envoy_api, "GET", ORDERS + f"/1?access_token={token}", token)
    _assert_refused(r, 400, "invalid_request", None)


def test_rfc7009_a_revoked_token_is_refused_on_the_very_next_call(envoy_api):
    token = _token(envoy_api, API_CLIENT, ORDERS, "orders:read")
    assert _call(envoy_api, "GET", ORDERS + "/1", token).status_code == 200
    assert revoke(envoy_api, token, API_CLIENT).status_code == 200
    ch = _assert_refused(_call(envoy_api, "GET", ORDERS + "/1", token), 401, "invalid_token", "Bearer")
    assert "revoked" in ch["Bearer"]["error_description"]


def test_a_revocation_is_seen_by_every_worker_on_its_next_call(envoy_api):
    """Each worker skips the deny-list for a token it found clean while the revocation epoch (a
    shared-data key's version) stays: a revocation must move it for all of them. Two tokens are
    used on many connections first (so both workers have checked them), then the revoked one is
    refused on every new connection, and the other still goes on."""
    token = _token(envoy_api, API_CLIENT, ORDERS, "orders:read")
    other = _token(envoy_api, API_CLIENT, ORDERS, "orders:read")
    for _ in range(12):
        for t in (token, other):
            assert _call(envoy_api, "GET", ORDERS + "/1", t).status_code == 200
    assert revoke(envoy_api, token, API_CLIENT).status_code == 200
    assert [_call(envoy_api, "GET", ORDERS + "/1", token).status_code for _ in range(12)] == [401] * 12
    assert [_call(envoy_api, "GET", ORDERS + "/1", other).status_code for _ in range(12)] == [200] * 12


# --------------------------------------------------------------------------- DPoP
def _dpop_call(envoy, method: str, url: str, token: str, key: ClientKey, **proof_kw: Any) -> requests.Response:
    htu = proof_kw.pop("htu", url)
    proof = dpop_proof(key, htu, htm=proof_kw.pop("htm", method), ath=proof_kw.pop("ath", _ath(token)), **proof_kw)
    return _call(envoy, method, url, token, scheme="DPoP", proof=proof)


def test_rfc9449_7_dpop_bound_token_with_its_proof(envoy_api):
    key = ClientKey("ES256", None)
    token = _token(envoy_api, API_DPOP_CLIENT, ORDERS, "orders:read", key)
    r = _dpop_call(envoy_api, "GET", ORDERS + "/7?q=1", token, key, htu=ORDERS + "/7")
    assert r.status_code == 200 and r.json()["backend"] is True, r.text
    assert r.json()["headers"]["x-oauth-client-id"] == API_DPOP_CLIENT.client_id
    # Case of the scheme name does not matter (RFC 9110 §11.1).
    proof = dpop_proof(key, ORDERS + "/7", htm="GET", ath=_ath(token))
    assert _call(envoy_api, "GET", ORDERS + "/7", token, scheme="dpop", proof=proof).status_code == 200


def test_rfc9449_7_2_bearer_use_of_a_bound_token_is_refused(envoy_api):
    key = ClientKey("ES256", None)
    token = _token(envoy_api, API_DPOP_CLIENT, ORDERS, "orders:read", key)
    _assert_refused(_call(envoy_api, "GET", ORDERS + "/1", token), 401, "invalid_token", "Bearer")


def test_rfc9449_7_1_an_unbound_token_is_not_dpop(envoy_api):
    token = _token(envoy_api, API_CLIENT, ORDERS, "orders:read")
    key = ClientKey("ES256", None)
    _assert_refused(_dpop_call(envoy_api, "GET", ORDERS + "/1", token, key), 401, "invalid_token", "DPoP")


@pytest.mark.parametrize("case", ["ath", "htu", "htm", "key", "missing", "old", "typ"])
def test_rfc9449_4_3_bad_proofs(envoy_api, case):
    key = ClientKey("ES256", None)
    token = _token(envoy_api, API_DPOP_CLIENT, ORDERS, "orders:read", key)
    url = ORDERS + "/1"
    if case == "ath":
        r = _dpop_call(envoy_api, "GET", url, token, key, ath=_ath(token + "x"))
    elif case == "htu":
        r = _dpop_call(envoy_api, "GET", url, token, key, htu=ORDERS + "/2")
    elif case == "htm":
        r = _dpop_call(envoy_api, "GET", url, token, key, htm="POST")
    elif case == "key":
        r = _dpop_call(envoy_api, "GET", url, token, ClientKey("ES256", None))
    elif case == "missing":
        r = _call(envoy_api, "GET", url, token, scheme="DPoP")
    elif case == "old":
        r = _dpop_call(envoy_api, "GET", url, token, key, iat=int(time.time()) - 3600)
    else:
        r = _dpop_call(envoy_api, "GET", url, token, key, typ="jwt")
    _assert_refused(r, 401, "invalid_dpop_proof", "DPoP")


def test_rfc9449_11_1_a_replayed_proof_is_refused(envoy_api):
    key = ClientKey("EdDSA", None)
    token = _token(envoy_api, API_DPOP_CLIENT, ORDERS, "orders:read", key)
    proof = dpop_proof(key, ORDERS + "/1", htm="GET", ath=_ath(token))
    assert _call(envoy_api, "GET", ORDERS + "/1", token, scheme="DPoP", proof=proof).status_code == 200
    r = _call(envoy_api, "GET", ORDERS + "/1", token, scheme="DPoP", proof=proof)
    ch = _assert_refused(r, 401, "invalid_dpop_proof", "DPoP")
    assert "used before" in ch["DPoP"]["error_description"]


def test_dpop_required_route(envoy_api, backend):
    key = ClientKey("ES256", None)
    token = _token(envoy_api, API_DPOP_CLIENT, PAYMENTS, "payments:write", key)
    before = len(backend.seen())
    proof = dpop_proof(key, PAYMENTS + "/p1", htm="POST", ath=_ath(token))
    # A client_credentials token has no auth_time: the client's own x-auth-time must not pass.
    r = _call(envoy_api, "POST", PAYMENTS + "/p1", token, scheme="DPoP", proof=proof,
              headers={"x-auth-time": "1"})
    assert r.status_code == 200, r.text
    assert "x-auth-time" not in r.json()["headers"]
    seen = r.json()["headers"]
    assert seen["x-user"] == API_DPOP_CLIENT.client_id and seen["x-client"] == API_DPOP_CLIENT.client_id
    assert seen["x-dpop-jkt"] == key.thumbprint()
    assert "authorization" not in seen and "dpop" not in seen  # forward_credentials: false
    assert "x-oauth-sub" not in seen
    # A Bearer token there: only the DPoP challenge, with the error.
    bearer = _token(envoy_api, API_CLIENT, PAYMENTS, "payments:write")
    ch = _assert_refused(_call(envoy_api, "POST", PAYMENTS + "/p1", bearer), 401, "invalid_token", "DPoP")
    assert set(ch) == {"DPoP"}
    # The route is for one host: another host's /payments passes untouched.
    r = _call(envoy_api, "GET", "http://127.0.0.1:%d/payments/p1" % envoy_api.listen_port)
    assert r.status_code == 200 and r.json()["backend"] is True
    assert len(backend.seen()) == before + 2


def test_rfc9449_8_nonce_at_the_resource(envoy_api_nonce):
    e = envoy_api_nonce
    key = ClientKey("ES256", None)
    # The token endpoint asks for its nonce first.
    h = {"Authorization": basic_auth(API_DPOP_CLIENT.client_id, API_DPOP_CLIENT.secret)}
    form = {"grant_type": "client_credentials", "scope": "orders:read", "resource": ORDERS}
    r = post_form(e.token_url, form, headers=dict(h, DPoP=dpop_proof(key, endpoint_urls(e)["token"])))
    assert r.status_code == 400 and r.json()["error"] == "use_dpop_nonce"
    nonce = r.headers["DPoP-Nonce"]
    r = post_form(e.token_url, form, headers=dict(h, DPoP=dpop_proof(key, endpoint_urls(e)["token"], nonce=nonce)))
    token = r.json()["access_token"]
    r = _dpop_call(e, "GET", ORDERS + "/1", token, key)
    ch = _assert_refused(r, 401, "use_dpop_nonce", "DPoP")
    assert r.headers["DPoP-Nonce"]
    r = _dpop_call(e, "GET", ORDERS + "/1", token, key, nonce=r.headers["DPoP-Nonce"])
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- RFC 9728 and a client library
def test_rfc9728_metadata_is_discovered_and_drives_a_client(envoy_api):
    """A client knows only the API URL: the challenge names the resource metadata, which names
    the authorization server, whose metadata names the token endpoint; Authlib gets a token
    there for the resource and calls the API with it."""
    from authlib.integrations.requests_client import OAuth2Session

    with _session(envoy_api) as s:
        r = s.get(ORDERS + "/1", timeout=10)
        assert r.status_code == 401
        prm_url = _challenges(r)["Bearer"]["resource_metadata"]
        prm = s.get(prm_url, timeout=10)
        assert prm.status_code == 200 and prm.headers["content-type"] == "application/json"
        doc = prm.json()
        assert doc["resource"] == ORDERS and doc["resource_name"] == "Orders API"
        assert doc["authorization_servers"] == [ISSUER]
        assert doc["scopes_supported"] == ["orders:read"] and doc["bearer_methods_supported"] == ["header"]
        assert doc["dpop_bound_access_tokens_required"] is False
        as_meta = s.get(doc["authorization_servers"][0] + "/.well-known/oauth-authorization-server", timeout=10).json()
        payments = s.get(API + "/.well-known/oauth-protected-resource/payments", timeout=10).json()
        assert payments["dpop_bound_access_tokens_required"] is True
    client = OAuth2Session(API_CLIENT.client_id, API_CLIENT.secret, scope=" ".join(doc["scopes_supported"]))
    for origin in (API, ISSUER):
        client.mount(origin + "/", _ToEnvoy(envoy_api))
    client.fetch_token(as_meta["token_endpoint"], grant_type="client_credentials", resource=doc["resource"])
    r = client.get(ORDERS + "/99", timeout=10)
    assert r.status_code == 200 and r.json()["headers"]["x-oauth-sub"] == API_CLIENT.client_id


def test_garbage_at_a_protected_route_then_a_valid_call(envoy_api):
    token = _token(envoy_api, API_CLIENT, ORDERS, "orders:read")
    junk = ["", "Bearer", "Bearer ", "Bearer \x7f", "DPoP ", "Bearer a b", "Bearer " + "A" * 20000,
            "Bearer ..", "Bearer e30.e30.", "DPoP e30.e30.e30", "Bearer eyJhbGciOiJub25lIn0.e30."]
    statuses = []
    for j in junk:
        try:
            r = _call(envoy_api, "GET", ORDERS + "/1", headers={"Authorization": j, "DPoP": "x.y.z"})
            statuses.append(r.status_code)
        except (requests.exceptions.InvalidHeader, ValueError):
            continue
    assert all(s in (400, 401, 431) for s in statuses), statuses
    assert _call(envoy_api, "GET", ORDERS + "/1", token).status_code == 200


def test_envoy_rbac_decides_on_the_verified_claims(envoy_api):
    token = _token(envoy_api, API_CLIENT, ADMIN, "read")
    r = _call(envoy_api, "GET", ADMIN + "/users", token, headers={"x-oauth-client-id": "api-client"})
    assert r.status_code == 200 and r.json()["backend"] is True, r.text
    key = ClientKey("ES256", None)
    other = _token(envoy_api, API_DPOP_CLIENT, ADMIN, "orders:read", key)
    r = _dpop_call(envoy_api, "GET", ADMIN + "/users", other, key)
    assert r.status_code == 403 and "RBAC" in r.text, r.text
    # A client's own header claiming to be api-client changes nothing.
    r = _call(envoy_api, "GET", ADMIN + "/users", headers={"x-oauth-client-id": "api-client"})
    assert r.status_code == 401


def test_repeated_spoofed_claim_headers_are_all_replaced(envoy_api, backend):
    """Two copies of a claim header and one of a claim the token lacks (act.sub on a route that
    asks for it is not set up here: x-oauth-scope with a scope-less token is the absent claim)."""
    token = _token(envoy_api, API_CLIENT, ORDERS, "orders:read")
    req = (f"GET /orders/5 HTTP/1.1\r\nHost: api.example.test\r\nAuthorization: Bearer {token}\r\n"
           "X-OAuth-Sub: admin\r\nx-oauth-sub: root\r\nX-OAuth-Client-Id: a\r\nx-oauth-client-id: b\r\n"
           "Connection: close\r\n\r\n").encode()
    status, _, _ = raw_http(envoy_api.listen_port, req)
    assert status == 200
    seen = next(s for s in reversed(backend.seen()) if s["path"] == "/orders/5")
    subs = [v for k, v in seen["lines"] if k == "x-oauth-sub"]
    cids = [v for k, v in seen["lines"] if k == "x-oauth-client-id"]
    assert subs == [API_CLIENT.client_id] and cids == [API_CLIENT.client_id], seen["lines"]
