#!/usr/bin/env python3
"""Render the oauth-edge Envoy bootstrap (envoy/envoy.yaml.in) into DIR/envoy.yaml.

Standard library only (Python 3.11). Usable as a script:

    python3 envoy/render.py --out .run --key .run/signing-key.json

and as a module (the integration tests use this same code path):

    from render import render
    render("/tmp/x", listen_port=..., key=jwk_dict, plugin_config=cfg_dict, ...)

What it does:
  * loads the demo plugin configuration (envoy/oauth-edge.json, or --plugin-config FILE);
  * replaces its `signing_keys` with the JWK(s) in --key FILE (one private JWK or a JSON list)
    and points `active_signing_key` at the first key that has a private part; or, with
    --key-from-env NAME, with a reference to Envoy's environment variable NAME ({"env": NAME},
    holding a JWK or a JWK Set; the first private key in it signs), so the rendered file holds
    no key;
  * lets the wasm VM read every environment variable the plugin configuration names as a
    secret (`signing_keys` entries and `store.etcd.password` of the form {"env": NAME}):
    vm_config.environment_variables.host_env_keys;
  * if the issuer is a plain-http loopback URL (http://127.0.0.1:PORT, http://localhost:PORT),
    sets its port to the listen port so the issuer is the address Envoy really answers on
    (--issuer URL sets it explicitly);
  * fills the template: ports, route mode, wasm path (default `oauth_edge.wasm`, relative to
    Envoy's working directory, so the rendered directory can be mounted into a container),
    and the plugin configuration as a JSON string literal (a valid YAML double-quoted scalar).

Route modes: cluster (every other path to cluster `backend`), direct (a direct_response 200),
none (no route: Envoy answers 404). OAuth endpoints are answered by the filter in all three.

Body modes, how the token endpoint reads a POST body before it answers:
  pause   (default) the wasm filter has `allow_on_headers_stop_iteration: true` and the plugin
          pauses on request headers (plugin `pause_on_request_headers`: true, its default);
  buffer  for hosts that cannot set that knob (Istio's WasmPlugin): the wasm filter without it,
          Envoy's buffer filter (max_request_bytes 1 MiB) between the wasm filter and the router,
          and the plugin's `pause_on_request_headers` set to false. The buffer filter then holds
          every request through the listener until its body is in (non-OAuth paths included),
          and answers 413 to a body over 1 MiB.
A plugin configuration whose `pause_on_request_headers` contradicts the body mode is refused.

Extra HTTP filters (--extra-http-filters FILE, a JSON list of Envoy HTTP filter objects, each
`{"name": ..., "typed_config": {...}}`): inserted in order BEFORE the wasm filter, e.g.
envoy.filters.http.jwt_authn with `payload_in_metadata`, whose verified JWT payload the plugin's
`user` setting then reads as the authenticated end user. None by default.

Hardening (issue 11; see the template's comments and docs/deploying.md, "Hardening"):
  --max-heap-bytes N    the overload manager's fixed_heap monitor (default 1 GiB): Envoy sheds
                        load from 90 % of it and answers 503 from 98 %. Set it below the
                        container's memory limit.
  --escaped-slashes A   the HTTP connection manager's path_with_escaped_slashes_action (default
                        UNESCAPE_AND_REDIRECT, Envoy's edge recommendation); KEEP_UNCHANGED for
                        applications behind the gateway that use %2F in their paths.
  The local reply mappers (Envoy's own 400/408/413/503 as flat OAuth JSON) are restricted to the
  filter's endpoint paths, which this script takes from the plugin configuration it renders
  (oauth_paths), so custom `endpoints` and an issuer with a path are covered.

Benchmark additions (bench/bench.py; none by default, nothing changes without them):
  --ceiling-route BYTES     a `/ceiling` route first in the virtual host: Envoy's direct_response
                            of BYTES bytes (`x`), with the token answer's Content-Type,
                            Cache-Control and Pragma, and Envoy's buffer filter before the router
                            (max_request_bytes 1 MiB) so the POST body is read before the answer.
                            The filter passes /ceiling on; its own endpoints never reach the buffer
                            filter. Body mode `pause` only (body mode `buffer` has that filter).
  --static-cluster NAME=PORT  (repeatable) a STATIC cluster NAME of one endpoint 127.0.0.1:PORT
                            (connect_timeout 1s), first in static_resources.clusters: e.g. the
                            `etcd` cluster of a one-member etcd for store.backend etcd.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "envoy.yaml.in"
DEFAULT_PLUGIN_CONFIG = HERE / "oauth-edge.json"
DEFAULT_WASM = "oauth_edge.wasm"
ROUTE_MODES = ("cluster", "direct", "none")
BODY_MODES = ("pause", "buffer")
# Body mode `buffer`: the buffer filter's limit, far above the plugin's limits.max_body_bytes
# (16 KiB by default, 1 MiB at most), so the filter's own JSON 413 comes first.
BUFFER_MAX_REQUEST_BYTES = 1048576
DIRECT_RESPONSE_BODY = "direct response from envoy\n"
CEILING_PATH = "/ceiling"

DEFAULTS = {
    "listen_port": 10000,
    "admin_port": 9901,
    "backend_port": 8081,
    "registry_port": 8082,
    "route_mode": "direct",
    "body_mode": "pause",
    "max_heap_bytes": 1 << 30,
    "escaped_slashes": "UNESCAPE_AND_REDIRECT",
}
# The HTTP connection manager's path_with_escaped_slashes_action values (Envoy 1.40).
ESCAPED_SLASHES_ACTIONS = ("UNESCAPE_AND_REDIRECT", "REJECT_REQUEST", "UNESCAPE_AND_FORWARD", "KEEP_UNCHANGED")
# The plugin's endpoint paths by default (src/config.rs RawEndpoints); the device endpoints
# exist only when the plugin configuration has `device`.
ENDPOINT_DEFAULTS = {
    "token": "/oauth/token",
    "jwks": "/oauth/jwks",
    "pushed_authorization": "/oauth/pushed-authorization",
    "authorize": "/oauth/authorize",
    "refresh": "/oauth/refresh",
    "revocation": "/oauth/revoke",
    "introspection": "/oauth/introspect",
    "device_authorization": "/oauth/device_authorization",
    "device_verification": "/oauth/device",
}
DEVICE_ENDPOINTS = ("device_authorization", "device_verification")

_PLACEHOLDER = re.compile(r"@@[A-Z_]+@@")
# Any placeholder, or one standing alone on its line (with its indentation and newline): a line
# placeholder (body_mode_lines) must stand alone and becomes zero or more whole lines at that
# indentation (zero: the line disappears).
_TOKEN = re.compile(r"^(?P<indent>[ ]*)(?P<alone>@@[A-Z_]+@@)[ ]*\n|@@[A-Z_]+@@", re.MULTILINE)
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


class RenderError(ValueError):
    """The inputs cannot make a valid configuration."""


# What the filter accepts as an environment variable name in a secret reference (src/secret.rs).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def secret_env_names(plugin_config: dict[str, Any]) -> list[str]:
    """The environment variables the plugin configuration's secret references name, in order:
    {"env": NAME} entries of `signing_keys` and `store.etcd.password` (the places the filter
    reads references). The VM needs each in vm_config.environment_variables.host_env_keys."""
    found = list(plugin_config.get("signing_keys") or [])
    store = plugin_config.get("store")
    if isinstance(store, dict) and isinstance(store.get("etcd"), dict):
        found.append(store["etcd"].get("password"))
    names = [v["env"] for v in found if isinstance(v, dict) and isinstance(v.get("env"), str)]
    for n in names:
        if not _ENV_NAME.fullmatch(n):
            raise RenderError(f"{n!r} is not an environment variable name")
    return list(dict.fromkeys(names))


def vm_environment_lines(plugin_config: dict[str, Any]) -> list[str]:
    """The @@VM_ENVIRONMENT@@ lines: vm_config.environment_variables, or none."""
    names = secret_env_names(plugin_config)
    if not names:
        return []
    return ["environment_variables: " + json.dumps({"host_env_keys": names})]


def transport_socket_lines(tls: dict[str, Any] | None) -> list[str]:
    """The @@TRANSPORT_SOCKET@@ lines: none (plain HTTP), or TLS with client certificates for
    RFC 8705 mutual TLS. tls: {"cert", "key"} (the server's PEM files), "client_ca" (PEM of the
    CAs client certificates chain to; Envoy then asks every client for a certificate, without
    requiring one), "accept_untrusted" (Envoy completes the handshake with a certificate that does
    not chain to client_ca: needed for self_signed_tls_client_auth; the plugin must then not
    declare mtls.chain_verified, since tls_client_auth would take any certificate)."""
    if not tls:
        return []
    unknown = set(tls) - {"cert", "key", "client_ca", "accept_untrusted"}
    if unknown or not tls.get("cert") or not tls.get("key"):
        raise RenderError("tls needs cert and key (and optionally client_ca, accept_untrusted), "
                          f"not {sorted(tls)}")
    if tls.get("accept_untrusted") and not tls.get("client_ca"):
        raise RenderError("tls accept_untrusted needs client_ca: without a validation context Envoy "
                          "asks for no client certificate")
    common: dict[str, Any] = {"tls_certificates": [{"certificate_chain": {"filename": str(tls["cert"])},
                                                   "private_key": {"filename": str(tls["key"])}}]}
    if tls.get("client_ca"):
        validation: dict[str, Any] = {"trusted_ca": {"filename": str(tls["client_ca"])}}
        if tls.get("accept_untrusted"):
            validation["trust_chain_verification"] = "ACCEPT_UNTRUSTED"
        common["validation_context"] = validation
    socket = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": False,
        "common_tls_context": common}}
    return ["transport_socket: " + json.dumps(socket)]


def routes_for(mode: str) -> list[dict[str, Any]]:
    """The virtual host's routes for one route mode."""
    if mode == "cluster":
        return [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "15s"}}]
    if mode == "direct":
        return [
            {
                "match": {"prefix": "/"},
                "direct_response": {"status": 200, "body": {"inline_string": DIRECT_RESPONSE_BODY}},
            }
        ]
    if mode == "none":
        return []
    raise RenderError(f"route mode must be one of {', '.join(ROUTE_MODES)}, not {mode!r}")


def ceiling_route(body_bytes: int) -> dict[str, Any]:
    """--ceiling-route: Envoy's own direct_response at CEILING_PATH, as long as a token answer."""
    if isinstance(body_bytes, bool) or not isinstance(body_bytes, int) or body_bytes < 0:
        raise RenderError(f"ceiling route body bytes must be a non-negative integer, not {body_bytes!r}")
    return {
        "match": {"path": CEILING_PATH},
        "direct_response": {"status": 200, "body": {"inline_string": "x" * body_bytes}},
        "response_headers_to_add": [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in (("content-type", "application/json"), ("cache-control", "no-store"),
                         ("pragma", "no-cache"))
        ],
    }


def static_cluster_lines(clusters: dict[str, int] | None) -> list[str]:
    """--static-cluster: one flow-YAML list item per cluster (STATIC, one loopback endpoint)."""
    out = []
    for name, port in (clusters or {}).items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise RenderError(f"static cluster name must be letters, digits, _ . -, not {name!r}")
        if name in ("backend", "registry"):
            raise RenderError(f"static cluster {name!r} is already in the template")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise RenderError(f"static cluster {name}: port must be 1..65535, not {port!r}")
        cluster = {
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
        }
        out.append("- " + json.dumps(cluster))
    return out


def _check_body_mode(mode: str) -> None:
    if mode not in BODY_MODES:
        raise RenderError(f"body mode must be one of {', '.join(BODY_MODES)}, not {mode!r}")


def body_mode_lines(mode: str) -> dict[str, list[str]]:
    """The line placeholders' lines for one body mode (flow YAML, like the routes)."""
    _check_body_mode(mode)
    if mode == "pause":
        return {
            "@@WASM_BODY_OPTIONS@@": ["allow_on_headers_stop_iteration: true"],
            "@@BODY_BUFFER_FILTER@@": [],
        }
    buffer_filter = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": BUFFER_MAX_REQUEST_BYTES,
        },
    }
    return {
        "@@WASM_BODY_OPTIONS@@": [],
        "@@BODY_BUFFER_FILTER@@": ["- " + json.dumps(buffer_filter)],
    }


def issuer_path(issuer: str) -> str:
    """The issuer's path without a trailing slash, as the filter computes it (src/config.rs
    split_issuer): https://as.example/tenant1/ -> /tenant1; https://as.example -> ''."""
    rest = issuer.split("://", 1)[1] if "://" in issuer else issuer
    i = rest.find("/")
    return rest[i:].rstrip("/") if i >= 0 else ""


def oauth_paths(plugin_config: dict[str, Any]) -> list[str]:
    """The exact paths the filter answers, as it computes them from its configuration: the
    endpoints (defaults where not set; the device endpoints only with `device`) and the two
    metadata documents under the issuer's path (RFC 8414 §3, OpenID Connect Discovery §4)."""
    endpoints = plugin_config.get("endpoints") or {}
    if not isinstance(endpoints, dict):
        raise RenderError("the plugin configuration's endpoints must be an object")
    paths = []
    for name, default in ENDPOINT_DEFAULTS.items():
        if name in DEVICE_ENDPOINTS and plugin_config.get("device") is None:
            continue
        path = endpoints.get(name, default)
        if not isinstance(path, str) or not path.startswith("/"):
            raise RenderError(f"endpoints.{name} must be an absolute path, not {path!r}")
        paths.append(path)
    issuer = plugin_config.get("issuer")
    base = issuer_path(issuer) if isinstance(issuer, str) else ""
    paths += [f"/.well-known/oauth-authorization-server{base}", f"{base}/.well-known/openid-configuration"]
    return list(dict.fromkeys(paths))


def cel_string_list(items: list[str]) -> str:
    """A CEL list literal of single-quoted strings, escaped for a YAML double-quoted scalar
    (the template writes it inside one): ['/oauth/token', '/oauth/jwks']."""
    cel = "[" + ", ".join("'" + i.replace("\\", "\\\\").replace("'", "\\'") + "'" for i in items) + "]"
    return json.dumps(cel, ensure_ascii=True)[1:-1]


def _load_json(source: Any, what: str) -> Any:
    if isinstance(source, (str, os.PathLike)):
        try:
            return json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RenderError(f"cannot read {what} {source}: {exc}") from exc
    return copy.deepcopy(source)


# Filters the template places itself: an extra filter may not repeat them.
_TEMPLATE_FILTERS = ("envoy.filters.http.wasm", "envoy.filters.http.buffer", "envoy.filters.http.router")


def extra_filter_lines(filters: Any = None) -> list[str]:
    """The @@EXTRA_HTTP_FILTERS@@ lines: one flow-YAML list item per filter, in order.

    filters: None, a list of HTTP filter objects, or a path to a JSON file holding that list.
    """
    if filters is None:
        return []
    items = _load_json(filters, "extra HTTP filters file")
    if not isinstance(items, list):
        raise RenderError("extra HTTP filters must be a JSON list of filter objects")
    seen: set[str] = set()
    for i, f in enumerate(items):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise RenderError(f"extra HTTP filter {i} must be an object with a name")
        if not isinstance(f.get("typed_config"), dict) or "@type" not in f["typed_config"]:
            raise RenderError(f"extra HTTP filter {f['name']!r} needs a typed_config with an @type")
        if f["name"] in _TEMPLATE_FILTERS or f["name"] in seen:
            raise RenderError(f"extra HTTP filter {f['name']!r} is already in the filter chain")
        seen.add(f["name"])
    # JSON is YAML flow syntax: each filter is one list item on one line.
    return ["- " + json.dumps(f, ensure_ascii=True) for f in items]


def load_keys(key: Any) -> list[dict[str, Any]]:
    """One JWK (dict), a list of JWKs, or a path to a JSON file holding either."""
    keys = _load_json(key, "key file")
    if isinstance(keys, dict) and "keys" in keys and isinstance(keys["keys"], list):
        keys = keys["keys"]  # a JWK Set is accepted too
    if isinstance(keys, dict):
        keys = [keys]
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
        raise RenderError("the key file must hold a JWK object or a non-empty list of JWKs")
    for k in keys:
        if "kty" not in k:
            raise RenderError("every JWK needs a kty")
    return keys


def loopback_issuer(issuer: str, listen_port: int) -> str:
    """http://127.0.0.1:ANY -> http://127.0.0.1:<listen_port>; anything else unchanged."""
    parts = urllib.parse.urlsplit(issuer)
    if parts.scheme != "http" or parts.hostname is None:
        return issuer
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    if shown not in _LOOPBACK_HOSTS and host not in _LOOPBACK_HOSTS:
        return issuer
    return urllib.parse.urlunsplit(
        (parts.scheme, f"{shown}:{listen_port}", parts.path, parts.query, parts.fragment)
    )


def build_plugin_config(
    plugin_config: Any = None,
    *,
    key: Any = None,
    listen_port: int = DEFAULTS["listen_port"],
    issuer: str | None = None,
    body_mode: str = DEFAULTS["body_mode"],
    key_from_env: str | None = None,
) -> dict[str, Any]:
    """The plugin configuration dict that goes into the wasm filter's `configuration`.

    Body mode `buffer` sets `pause_on_request_headers: false`; `pause` leaves the key as given
    (absent means true). A value that contradicts the body mode is refused.
    key_from_env: the signing keys are in this environment variable of Envoy (a JWK or a JWK
    Set): `signing_keys` becomes [{"env": NAME}] and `active_signing_key` is dropped (the first
    private key in the variable signs). Not together with `key`.
    """
    _check_body_mode(body_mode)
    cfg = _load_json(plugin_config if plugin_config is not None else DEFAULT_PLUGIN_CONFIG,
                     "plugin config")
    if not isinstance(cfg, dict):
        raise RenderError("the plugin configuration must be a JSON object")
    if key_from_env is not None:
        if key is not None:
            raise RenderError("give the signing keys either as a file (--key) or through the environment "
                              "(--key-from-env), not both")
        if not _ENV_NAME.fullmatch(key_from_env):
            raise RenderError(f"--key-from-env {key_from_env!r} is not an environment variable name "
                              "(letters, digits, _; not starting with a digit)")
        cfg["signing_keys"] = [{"env": key_from_env}]
        cfg.pop("active_signing_key", None)
    elif key is not None:
        keys = load_keys(key)
        cfg["signing_keys"] = keys
        private = [k for k in keys if "d" in k and "kid" in k]
        if private:
            cfg["active_signing_key"] = private[0]["kid"]
        else:
            cfg.pop("active_signing_key", None)
    if not cfg.get("signing_keys"):
        raise RenderError("no signing key: pass --key FILE (e.g. from oauth-edge-keygen) or --key-from-env NAME")
    if issuer is not None:
        cfg["issuer"] = issuer
    elif isinstance(cfg.get("issuer"), str):
        cfg["issuer"] = loopback_issuer(cfg["issuer"], listen_port)
    pause = cfg.get("pause_on_request_headers", True)
    if body_mode == "buffer":
        if pause is not False:
            if "pause_on_request_headers" in cfg:
                raise RenderError("body mode buffer needs pause_on_request_headers false (or absent) in "
                                  "the plugin configuration: without allow_on_headers_stop_iteration a "
                                  "pause on headers never sees the body")
            cfg["pause_on_request_headers"] = False
    elif pause is not True:
        raise RenderError("pause_on_request_headers false in the plugin configuration needs --body-mode "
                          "buffer: without the buffer filter the router acts on the headers before the "
                          "filter has read the body")
    return cfg


def render_text(
    *,
    plugin_config: dict[str, Any],
    listen_port: int = DEFAULTS["listen_port"],
    admin_port: int = DEFAULTS["admin_port"],
    backend_port: int = DEFAULTS["backend_port"],
    registry_port: int = DEFAULTS["registry_port"],
    route_mode: str = DEFAULTS["route_mode"],
    body_mode: str = DEFAULTS["body_mode"],
    wasm_path: str = DEFAULT_WASM,
    template: Path = TEMPLATE,
    extra_http_filters: Any = None,
    max_heap_bytes: int = DEFAULTS["max_heap_bytes"],
    escaped_slashes: str = DEFAULTS["escaped_slashes"],
    tls: dict[str, Any] | None = None,
    ceiling_bytes: int | None = None,
    static_clusters: dict[str, int] | None = None,
) -> str:
    """The rendered envoy.yaml text.

    plugin_config is used as given: build it with build_plugin_config(..., body_mode=) so that its
    pause_on_request_headers matches body_mode (checked here too). extra_http_filters: see
    extra_filter_lines (they go before the wasm filter). max_heap_bytes: the overload manager's
    fixed_heap limit; escaped_slashes: one of ESCAPED_SLASHES_ACTIONS. ceiling_bytes (None: no
    ceiling) and static_clusters (name -> loopback port): the benchmark's additions, see the
    module's doc (--ceiling-route, --static-cluster).
    """
    for name, port in (("listen", listen_port), ("admin", admin_port),
                       ("backend", backend_port), ("registry", registry_port)):
        if not isinstance(port, int) or not 0 < port < 65536:
            raise RenderError(f"{name} port must be 1..65535, not {port!r}")
    if isinstance(max_heap_bytes, bool) or not isinstance(max_heap_bytes, int) or max_heap_bytes <= 0:
        raise RenderError(f"max heap bytes must be a positive integer, not {max_heap_bytes!r}")
    if escaped_slashes not in ESCAPED_SLASHES_ACTIONS:
        raise RenderError(f"escaped slashes action must be one of {', '.join(ESCAPED_SLASHES_ACTIONS)}, "
                          f"not {escaped_slashes!r}")
    values = {
        "@@ADMIN_PORT@@": str(admin_port),
        "@@LISTEN_PORT@@": str(listen_port),
        "@@BACKEND_PORT@@": str(backend_port),
        "@@REGISTRY_PORT@@": str(registry_port),
        # JSON is a subset of YAML flow syntax: a JSON string literal is a valid YAML
        # double-quoted scalar (ensure_ascii keeps it to plain \uXXXX escapes).
        "@@WASM_PATH@@": json.dumps(str(wasm_path)),
        "@@PLUGIN_CONFIG@@": json.dumps(json.dumps(plugin_config, separators=(",", ":"))),
        "@@ROUTES@@": json.dumps(([ceiling_route(ceiling_bytes)] if ceiling_bytes is not None else [])
                                 + routes_for(route_mode)),
        "@@MAX_HEAP_BYTES@@": str(max_heap_bytes),
        "@@ESCAPED_SLASHES@@": escaped_slashes,
        "@@OAUTH_PATHS@@": cel_string_list(oauth_paths(plugin_config)),
    }
    lines = body_mode_lines(body_mode)
    lines["@@EXTRA_HTTP_FILTERS@@"] = extra_filter_lines(extra_http_filters)
    lines["@@VM_ENVIRONMENT@@"] = vm_environment_lines(plugin_config)
    lines["@@TRANSPORT_SOCKET@@"] = transport_socket_lines(tls)
    if ceiling_bytes is not None:
        if body_mode != "pause":
            raise RenderError("the ceiling route needs body mode pause (body mode buffer already has "
                              "a buffer filter before the router)")
        # The ceiling's buffer filter takes the body-mode buffer filter's place, before the router.
        lines["@@BODY_BUFFER_FILTER@@"] = body_mode_lines("buffer")["@@BODY_BUFFER_FILTER@@"]
    cluster_lines = static_cluster_lines(static_clusters)
    if plugin_config.get("pause_on_request_headers", True) is not (body_mode == "pause"):
        raise RenderError(f"body mode {body_mode} with pause_on_request_headers "
                          f"{json.dumps(plugin_config.get('pause_on_request_headers'))} in the plugin "
                          "configuration: build it with build_plugin_config(body_mode=...)")
    text = Path(template).read_text(encoding="utf-8")
    found = set(_PLACEHOLDER.findall(text))
    if found != set(values) | set(lines):
        raise RenderError(f"template {template}: placeholders {sorted(found)} != "
                          f"{sorted(set(values) | set(lines))}")

    def fill(m: re.Match[str]) -> str:
        name = m.group("alone") or m.group(0)
        if name in lines:
            if not m.group("alone"):
                raise RenderError(f"template {template}: {name} must stand alone on its line")
            return "".join(f"{m.group('indent')}{line}\n" for line in lines[name])
        if m.group("alone"):
            return f"{m.group('indent')}{values[name]}\n"
        return values[name]

    if cluster_lines:
        # The template has no placeholder in its cluster list: the clusters go first in it, right
        # after its one `clusters:` key (two spaces in, under static_resources).
        heads = list(re.finditer(r"^  clusters:[ ]*\n", text, re.MULTILINE))
        if len(heads) != 1:
            raise RenderError(f"template {template}: expected one `  clusters:` line, found {len(heads)}")
        at = heads[0].end()
        text = text[:at] + "".join(f"  {line}\n" for line in cluster_lines) + text[at:]

    # One pass over the template only: values are never rescanned for placeholders.
    return _TOKEN.sub(fill, text)


def render(
    out_dir: str | os.PathLike,
    *,
    listen_port: int = DEFAULTS["listen_port"],
    admin_port: int = DEFAULTS["admin_port"],
    backend_port: int = DEFAULTS["backend_port"],
    registry_port: int = DEFAULTS["registry_port"],
    route_mode: str = DEFAULTS["route_mode"],
    body_mode: str = DEFAULTS["body_mode"],
    plugin_config: Any = None,
    key: Any = None,
    wasm_path: str = DEFAULT_WASM,
    issuer: str | None = None,
    extra_http_filters: Any = None,
    max_heap_bytes: int = DEFAULTS["max_heap_bytes"],
    escaped_slashes: str = DEFAULTS["escaped_slashes"],
    key_from_env: str | None = None,
    tls: dict[str, Any] | None = None,
    ceiling_bytes: int | None = None,
    static_clusters: dict[str, int] | None = None,
) -> Path:
    """Write OUT_DIR/envoy.yaml (mode 0600: it may hold the private key); return its path.

    plugin_config and key are dicts/lists or paths to JSON files; extra_http_filters a list of
    HTTP filter objects (or a path to a JSON file holding one) to put before the wasm filter;
    max_heap_bytes, escaped_slashes, ceiling_bytes and static_clusters: see render_text;
    key_from_env: see build_plugin_config.
    """
    cfg = build_plugin_config(plugin_config, key=key, listen_port=listen_port, issuer=issuer,
                              body_mode=body_mode, key_from_env=key_from_env)
    text = render_text(
        plugin_config=cfg,
        listen_port=listen_port,
        admin_port=admin_port,
        backend_port=backend_port,
        registry_port=registry_port,
        route_mode=route_mode,
        body_mode=body_mode,
        wasm_path=wasm_path,
        extra_http_filters=extra_http_filters,
        max_heap_bytes=max_heap_bytes,
        escaped_slashes=escaped_slashes,
        tls=tls,
        ceiling_bytes=ceiling_bytes,
        static_clusters=static_clusters,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "envoy.yaml"
    tmp = out / ".envoy.yaml.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)  # it holds the private signing key
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory to write envoy.yaml into")
    p.add_argument("--listen-port", type=int, default=DEFAULTS["listen_port"])
    p.add_argument("--admin-port", type=int, default=DEFAULTS["admin_port"])
    p.add_argument("--backend-port", type=int, default=DEFAULTS["backend_port"])
    p.add_argument("--registry-port", type=int, default=DEFAULTS["registry_port"])
    p.add_argument("--route-mode", choices=ROUTE_MODES, default=DEFAULTS["route_mode"])
    p.add_argument("--body-mode", choices=BODY_MODES, default=DEFAULTS["body_mode"],
                   help="how the token endpoint reads a POST body: pause (allow_on_headers_stop_iteration, "
                        "the default) or buffer (Envoy's buffer filter after the wasm filter, plugin "
                        "pause_on_request_headers false: for hosts without that knob, e.g. Istio)")
    p.add_argument("--plugin-config", default=str(DEFAULT_PLUGIN_CONFIG),
                   help="plugin configuration JSON (default: envoy/oauth-edge.json)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--key", help="JSON file: one private JWK or a list of JWKs (signing_keys)")
    keys.add_argument("--key-from-env", metavar="NAME",
                      help="the signing keys are in Envoy's environment variable NAME (a JWK or a JWK Set; "
                           "the first private key signs): the rendered file holds no key, the plugin "
                           "configuration says {\"env\": NAME} and the VM gets NAME through "
                           "vm_config.environment_variables.host_env_keys")
    p.add_argument("--wasm", default=DEFAULT_WASM,
                   help="wasm path as Envoy sees it (default: oauth_edge.wasm, relative to its cwd)")
    p.add_argument("--issuer", help="issuer URL (default: from the plugin config, loopback port = listen port)")
    p.add_argument("--extra-http-filters", metavar="FILE",
                   help="JSON file: a list of Envoy HTTP filter objects to insert before the wasm filter "
                        "(e.g. envoy.filters.http.jwt_authn with payload_in_metadata for the plugin's `user`)")
    p.add_argument("--max-heap-bytes", type=int, default=DEFAULTS["max_heap_bytes"],
                   help="the overload manager's heap limit in bytes (default 1 GiB; load shedding from 90 %%, "
                        "503 from 98 %%): set it below the container's memory limit")
    p.add_argument("--escaped-slashes", choices=ESCAPED_SLASHES_ACTIONS, default=DEFAULTS["escaped_slashes"],
                   help="path_with_escaped_slashes_action for %%2F/%%5C in paths (default UNESCAPE_AND_REDIRECT; "
                        "KEEP_UNCHANGED for applications that use %%2F in their paths)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve the listener over TLS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="... and this private key")
    p.add_argument("--tls-client-ca", metavar="PEM",
                   help="ask clients for certificates chaining to these CAs (RFC 8705 mutual TLS; not required)")
    p.add_argument("--tls-accept-untrusted", action="store_true",
                   help="complete the handshake with client certificates that do not chain to --tls-client-ca "
                        "(self_signed_tls_client_auth; never with mtls.chain_verified)")
    p.add_argument("--ceiling-route", type=int, metavar="BYTES", dest="ceiling_bytes",
                   help="(benchmark) a /ceiling route first: Envoy's direct_response of BYTES bytes with a "
                        "token answer's headers, and Envoy's buffer filter before the router so the POST "
                        "body is read first; body mode pause only (default: none)")
    p.add_argument("--static-cluster", action="append", default=[], metavar="NAME=PORT",
                   help="(benchmark; repeatable) a STATIC cluster NAME of one endpoint 127.0.0.1:PORT, "
                        "first in the cluster list, e.g. etcd=2379 for store.backend etcd (default: none)")
    args = p.parse_args(argv)
    static_clusters: dict[str, int] = {}
    for item in args.static_cluster:
        name, sep, port = item.partition("=")
        if not sep or not port.isdigit():
            p.error(f"--static-cluster wants NAME=PORT, not {item!r}")
        static_clusters[name] = int(port)
    tls = None
    if args.tls_cert or args.tls_key:
        tls = {"cert": args.tls_cert, "key": args.tls_key, "client_ca": args.tls_client_ca,
               "accept_untrusted": args.tls_accept_untrusted}
    try:
        path = render(
            args.out,
            listen_port=args.listen_port,
            admin_port=args.admin_port,
            backend_port=args.backend_port,
            registry_port=args.registry_port,
            route_mode=args.route_mode,
            body_mode=args.body_mode,
            plugin_config=args.plugin_config,
            key=args.key,
            wasm_path=args.wasm,
            issuer=args.issuer,
            extra_http_filters=args.extra_http_filters,
            max_heap_bytes=args.max_heap_bytes,
            escaped_slashes=args.escaped_slashes,
            key_from_env=args.key_from_env,
            tls=tls,
            ceiling_bytes=args.ceiling_bytes,
            static_clusters=static_clusters or None,
        )
    except RenderError as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
