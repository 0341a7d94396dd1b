"""RFC 7523 with keys at a jwks_uri fetched through a dynamic forward proxy cluster: the
production setup docs/deploying.md recommends (`jwks_fetch.cluster` pointing at
`envoy.clusters.dynamic_forward_proxy`, which resolves any host on demand), checked to work with
dispatch_http_call alone — no forward-proxy HTTP filter — in a real Envoy. The jwks_uri names the
registry fixture by host name (`localhost`), so the DNS cache really resolves it."""
from __future__ import annotations

from typing import Any, Iterator

import pytest
import requests

from support.envoy import EnvoyInstance
from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from helpers import ClientKey, client_assertion, jwks_of, post_form

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _add_dfp_cluster(doc: dict[str, Any]) -> None:
    doc["static_resources"]["clusters"].append({
        "name": "jwks_dfp",
        "connect_timeout": "2s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.dynamic_forward_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
                "dns_cache_config": {"name": "jwks_dns", "dns_lookup_family": "V4_ONLY"},
            },
        },
    })


@pytest.fixture(scope="module")
def dfp(keys, registry, backend, tmp_path_factory) -> Iterator[tuple[EnvoyInstance, ClientKey]]:
    key = ClientKey("ES256", "dfp-1")
    registry.set_jwks("dfp-client", jwks_of(key))
    uri = registry.jwks_url("dfp-client").replace("127.0.0.1", "localhost")
    client = {"client_id": "dfp-client", "token_endpoint_auth_method": "private_key_jwt",
              "jwks_uri": uri, "grant_types": ["client_credentials"], "scope": "read"}
    cfg = base_plugin_config(jwks_fetch={"cluster": "jwks_dfp", "require_https": False})
    cfg["clients"].append(client)
    inst = start_envoy("jwks-dfp", tmp_path_factory, route_mode="direct", plugin_config=cfg,
                        signing_keys=[keys.ed25519], registry_port=registry.port, backend_port=backend.port,
                        edit_config=_add_dfp_cluster)
    try:
        yield inst, key
    finally:
        finish_envoy(inst)


def test_rfc7523_jwks_uri_through_a_dynamic_forward_proxy_cluster(dfp, registry):
    envoy, key = dfp
    issuer = requests.get(envoy.base_url + "/.well-known/oauth-authorization-server", timeout=5).json()["issuer"]
    before = registry.jwks_count("dfp-client")
    for _ in range(3):
        a = client_assertion(key, "dfp-client", issuer)
        r = post_form(envoy.token_url, {"grant_type": "client_credentials",
                                        "client_assertion_type": ASSERTION_TYPE, "client_assertion": a})
        assert r.status_code == 200, r.text
    # Fetched once per worker (the test Envoys run two), then cached.
    assert 1 <= registry.jwks_count("dfp-client") - before <= 2
    # The forward proxy resolved the URL's host and kept it as the Host header.
    assert registry.jwks_headers("dfp-client").get("host", "").startswith("localhost:")
