"""Issue 16 items 1-3 through a real Envoy: mutual TLS client authentication and
certificate-bound access tokens (RFC 8705).

Every certificate is made here with `cryptography`: a server CA and the listener's certificate,
a client PKI (a CA and two clients' certificates), and a self-signed client certificate. Two
Envoys render a TLS listener with render.py's tls options:

  envoy_pki   client_ca = the client PKI's CA, chains verified by Envoy (a certificate that does
              not chain never completes the handshake): plugin mtls.chain_verified true;
  envoy_self  the same, with trust_chain_verification ACCEPT_UNTRUSTED (self-signed client
              certificates complete the handshake): mtls.chain_verified false, so tls_client_auth
              is never accepted there.

Authlib (an OAuth2Session over the client certificate) gets a certificate-bound token; the
protected route takes it only over a connection with that certificate."""
from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Iterator

import pytest
import requests

from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from support.tls import Pki
from support.forms import post_form

API = "https://api.example.test"


def _clients(pki: Pki) -> list[dict[str, Any]]:
    return [
        {"client_id": "mtls-a", "token_endpoint_auth_method": "tls_client_auth",
         "tls_client_auth_subject_dn": pki.subject["client-a"], "tls_client_certificate_bound_access_tokens": True,
         "grant_types": ["client_credentials"], "scope": "read", "allowed_resources": [API],
         "resource_server_audiences": [API]},
        {"client_id": "mtls-dns", "token_endpoint_auth_method": "tls_client_auth",
         "tls_client_auth_san_dns": "a.clients.example", "grant_types": ["client_credentials"], "scope": "read"},
        {"client_id": "mtls-self", "token_endpoint_auth_method": "self_signed_tls_client_auth",
         "tls_client_certificate_bound_access_tokens": True,
         "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "use": "sig",
                            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
                            "x5c": [base64.b64encode(pki.der["self"]).decode()]}]},
         "grant_types": ["client_credentials"], "scope": "read", "allowed_resources": [API]},
    ]


def _envoy(name: str, pki: Pki, keys, registry, backend, tmp_path_factory, *, chain_verified: bool) -> Any:
    cfg = base_plugin_config()
    cfg["clients"] += _clients(pki)
    cfg["mtls"] = {"chain_verified": chain_verified, "endpoint_aliases_origin": "https://mtls.as.example.test"}
    cfg["resource_protection"] = {"routes": [{"prefix": "/api", "resource": API, "scopes": {"all": ["read"]}}]}
    tls = {"cert": pki.path("server"), "key": str(pki.dir / "server.key"), "client_ca": pki.path("client-ca"),
           "accept_untrusted": not chain_verified, "server_ca": pki.path("server-ca")}
    return start_envoy(name, tmp_path_factory, route_mode="direct", plugin_config=cfg, signing_keys=[keys.ed25519],
                        registry_port=registry.port, backend_port=backend.port, tls=tls)


@pytest.fixture(scope="module")
def envoy_pki(pki, keys, registry, backend, tmp_path_factory) -> Iterator[Any]:
    inst = _envoy("mtls-pki", pki, keys, registry, backend, tmp_path_factory, chain_verified=True)
    yield inst
    finish_envoy(inst)


@pytest.fixture(scope="module")
def envoy_self(pki, keys, registry, backend, tmp_path_factory) -> Iterator[Any]:
    inst = _envoy("mtls-self", pki, keys, registry, backend, tmp_path_factory, chain_verified=False)
    yield inst
    finish_envoy(inst)


def _token(envoy, client_id: str, cert: tuple[str, str] | None, **form: str) -> requests.Response:
    return post_form(envoy.token_url, {"grant_type": "client_credentials", "client_id": client_id, **form},
                     cert=cert, verify=envoy.verify)


def _api(envoy, token: str, cert: tuple[str, str] | None) -> requests.Response:
    return requests.get(envoy.base_url + "/api/orders", headers={"Authorization": f"Bearer {token}"},
                        cert=cert, verify=envoy.verify, timeout=10)


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_authlib_gets_a_certificate_bound_token_that_only_its_certificate_can_use(envoy_pki, pki):
    from authlib.integrations.requests_client import OAuth2Session

    # tls_client_auth sends client_id and no secret: Authlib's "none" method does exactly that.
    sess = OAuth2Session("mtls-a", token_endpoint_auth_method="none", scope="read")
    sess.cert, sess.verify = pki.pair("client-a"), envoy_pki.verify
    sess.trust_env = False  # else REQUESTS_CA_BUNDLE, where set, wins over the session's verify
    token = sess.fetch_token(envoy_pki.token_url, grant_type="client_credentials", resource=API)
    assert token["token_type"] == "Bearer"
    claims = _claims(token["access_token"])
    assert claims["cnf"] == {"x5t#S256": pki.x5t("client-a")}, claims
    # The holder of the certificate calls the API; a second client without it cannot.
    r = sess.get(envoy_pki.base_url + "/api/orders")
    assert r.status_code == 200, r.text
    r = _api(envoy_pki, token["access_token"], pki.pair("client-b"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_token", r.text
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    r = _api(envoy_pki, token["access_token"], None)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token", r.text
    # Introspection (the same client, authenticated by its certificate) shows the binding.
    r = post_form(envoy_pki.base_url + "/oauth/introspect", {"token": token["access_token"], "client_id": "mtls-a"},
                  cert=pki.pair("client-a"), verify=envoy_pki.verify)
    body = r.json()
    assert body["active"] is True and body["token_type"] == "Bearer", body
    assert body["cnf"] == {"x5t#S256": pki.x5t("client-a")}


def test_tls_client_auth_refusals(envoy_pki, pki):
    # No certificate, another client's certificate, a wrong SAN.
    for client_id, cert in (("mtls-a", None), ("mtls-a", pki.pair("client-b")), ("mtls-dns", pki.pair("client-b"))):
        r = _token(envoy_pki, client_id, cert)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", (client_id, r.text)
    # The matching SAN authenticates.
    assert _token(envoy_pki, "mtls-dns", pki.pair("client-a")).status_code == 200
    # A self-signed certificate never completes the handshake where Envoy verifies chains.
    with pytest.raises(requests.exceptions.SSLError):
        _token(envoy_pki, "mtls-self", pki.pair("self"))
    # Garbage, then a valid request.
    for junk in (b"\xff\xfe", b"client_id=mtls-a&client_id=mtls-a", b"grant_type=client_credentials"):
        r = requests.post(envoy_pki.token_url, data=junk, cert=pki.pair("client-a"), verify=envoy_pki.verify,
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
        assert 400 <= r.status_code < 500, r.text
    assert _token(envoy_pki, "mtls-a", pki.pair("client-a")).status_code == 200


def test_metadata_offers_the_mtls_methods(envoy_pki, envoy_self):
    pki_meta = requests.get(envoy_pki.base_url + "/.well-known/oauth-authorization-server",
                            verify=envoy_pki.verify, timeout=10).json()
    assert {"tls_client_auth", "self_signed_tls_client_auth"} <= set(pki_meta["token_endpoint_auth_methods_supported"])
    assert pki_meta["tls_client_certificate_bound_access_tokens"] is True
    assert pki_meta["mtls_endpoint_aliases"]["token_endpoint"].startswith("https://mtls.as.example.test/")
    self_meta = requests.get(envoy_self.base_url + "/.well-known/oauth-authorization-server",
                             verify=envoy_self.verify, timeout=10).json()
    assert "tls_client_auth" not in self_meta["token_endpoint_auth_methods_supported"]
    assert "self_signed_tls_client_auth" in self_meta["token_endpoint_auth_methods_supported"]


def test_self_signed_client_authenticates_with_its_registered_certificate(envoy_self, pki):
    r = _token(envoy_self, "mtls-self", pki.pair("self"), resource=API)
    assert r.status_code == 200, r.text
    at = r.json()["access_token"]
    assert _claims(at)["cnf"] == {"x5t#S256": pki.x5t("self")}
    assert _api(envoy_self, at, pki.pair("self")).status_code == 200
    assert _api(envoy_self, at, pki.pair("client-a")).status_code == 401
    # A PKI certificate is not the registered one; and where chains are not verified,
    # tls_client_auth takes no certificate at all.
    r = _token(envoy_self, "mtls-self", pki.pair("client-a"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    r = _token(envoy_self, "mtls-a", pki.pair("client-a"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    r = _token(envoy_self, "mtls-self", None)
    assert r.status_code == 401, r.text


@pytest.fixture(scope="module")
def envoy_fapi_mtls(pki, keys, registry, backend, tmp_path_factory) -> Iterator[Any]:
    cfg = base_plugin_config(profile="fapi2")
    cfg["clients"] = [c for c in cfg["clients"] if c.get("token_endpoint_auth_method") == "private_key_jwt"]
    cfg["clients"] += _clients(pki)
    cfg.pop("password_grant", None)
    cfg["mtls"] = {"chain_verified": True}
    tls = {"cert": pki.path("server"), "key": str(pki.dir / "server.key"), "client_ca": pki.path("client-ca"),
           "server_ca": pki.path("server-ca")}
    inst = start_envoy("mtls-fapi", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port, tls=tls)
    yield inst
    finish_envoy(inst)


def test_fapi2_offers_mtls_authentication_and_the_mtls_sender_constraint(envoy_fapi_mtls, pki):
    meta = requests.get(envoy_fapi_mtls.base_url + "/.well-known/oauth-authorization-server",
                        verify=envoy_fapi_mtls.verify, timeout=10).json()
    assert set(meta["token_endpoint_auth_methods_supported"]) == {
        "private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"}
    # Certificate authentication and certificate-bound tokens: no DPoP proof needed.
    r = _token(envoy_fapi_mtls, "mtls-a", pki.pair("client-a"))
    assert r.status_code == 200, r.text
    assert _claims(r.json()["access_token"])["cnf"] == {"x5t#S256": pki.x5t("client-a")}
    # Certificate authentication without certificate-bound tokens: DPoP is still required.
    r = _token(envoy_fapi_mtls, "mtls-dns", pki.pair("client-a"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof", r.text


@pytest.fixture(scope="module")
def envoy_xfcc(pki, keys, registry, backend, tmp_path_factory) -> Iterator[Any]:
    """The PKI listener, with Envoy putting the client certificate itself into
    x-forwarded-client-cert (forward_client_cert_details SANITIZE_SET: any client-sent copy is
    replaced) and the plugin reading it there (mtls.source xfcc): IP and email SANs then work."""
    cfg = base_plugin_config()
    cfg["clients"] += _clients(pki) + [
        {"client_id": "mtls-ip", "token_endpoint_auth_method": "tls_client_auth",
         "tls_client_auth_san_ip": "192.0.2.9", "grant_types": ["client_credentials"], "scope": "read"},
        {"client_id": "mtls-mail", "token_endpoint_auth_method": "tls_client_auth",
         "tls_client_auth_san_email": "device@clients.example", "grant_types": ["client_credentials"],
         "scope": "read"}]
    cfg["mtls"] = {"chain_verified": True, "source": "xfcc"}

    def xfcc(doc: dict[str, Any]) -> None:
        hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["forward_client_cert_details"] = "SANITIZE_SET"
        hcm["set_current_client_cert_details"] = {"subject": True, "cert": True, "uri": True, "dns": True}

    tls = {"cert": pki.path("server"), "key": str(pki.dir / "server.key"), "client_ca": pki.path("client-ca"),
           "server_ca": pki.path("server-ca")}
    inst = start_envoy("mtls-xfcc", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                        tls=tls, edit_config=xfcc)
    yield inst
    finish_envoy(inst)


def test_ip_and_email_sans_through_envoys_own_xfcc(envoy_xfcc, pki):
    for client_id in ("mtls-ip", "mtls-mail"):
        r = _token(envoy_xfcc, client_id, pki.pair("client-ip"))
        assert r.status_code == 200, (client_id, r.text)
        r = _token(envoy_xfcc, client_id, pki.pair("client-a"))
        assert r.status_code == 401, (client_id, r.text)
    # The PKI client by its subject, and its bound token, as over the connection.
    r = _token(envoy_xfcc, "mtls-a", pki.pair("client-a"))
    assert r.status_code == 200, r.text
    assert _claims(r.json()["access_token"])["cnf"] == {"x5t#S256": pki.x5t("client-a")}
    # A client's own XFCC naming another certificate is replaced by Envoy's (SANITIZE_SET).
    forged = f"Hash={hashlib.sha256(pki.der['client-a']).hexdigest()};Subject=\"{pki.subject['client-a']}\""
    r = post_form(envoy_xfcc.token_url, {"grant_type": "client_credentials", "client_id": "mtls-a"},
                  headers={"x-forwarded-client-cert": forged}, cert=pki.pair("client-b"), verify=envoy_xfcc.verify)
    assert r.status_code == 401, r.text
    r = post_form(envoy_xfcc.token_url, {"grant_type": "client_credentials", "client_id": "mtls-a"},
                  headers={"x-forwarded-client-cert": forged}, verify=envoy_xfcc.verify)
    assert r.status_code == 401, r.text
