"""The deployment files: render.py, the rendered directory, docker-compose.yml, the Istio and Envoy
Gateway examples."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import render
from support import ROOT
from support.envoy import envoy_binary, WASM

COMPOSE = ROOT / "envoy" / "docker-compose.yml"
EXTENSION_POLICY = ROOT / "envoy" / "envoy-gateway" / "extension-policy.yaml"


def _test_key():
    from support.keys import _keygen_python

    return _keygen_python("EdDSA", "deploy-test")


def _wasm_config(doc):
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm, hcm["http_filters"][0]["typed_config"]["config"]


@pytest.mark.parametrize("mode", render.ROUTE_MODES)
def test_render_cli_writes_valid_yaml_for_each_route_mode(tmp_path, mode):
    key = tmp_path / "key.json"
    key.write_text(json.dumps(_test_key()))
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, str(ROOT / "envoy" / "render.py"), "--out", str(out), "--key", str(key),
                          "--route-mode", mode, "--listen-port", "10555", "--admin-port", "10556",
                          "--backend-port", "10557", "--registry-port", "10558"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load((out / "envoy.yaml").read_text())
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 10556}
    listener = doc["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 10555
    hcm, cfg = _wasm_config(doc)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.wasm", "envoy.filters.http.router"]
    assert cfg["name"] == "oauth-edge" and cfg["root_id"] == "oauth_edge"
    assert cfg["allow_on_headers_stop_iteration"] is True
    assert cfg["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert cfg["vm_config"]["vm_id"] == "oauth_edge"
    assert cfg["vm_config"]["code"]["local"]["filename"] == "oauth_edge.wasm"
    plugin = json.loads(cfg["configuration"]["value"])
    assert plugin["issuer"] == "http://127.0.0.1:10555"
    assert plugin["signing_keys"][0]["kid"] == "deploy-test"
    assert plugin["active_signing_key"] == "deploy-test"
    assert plugin["registry"]["cluster"] == "registry"
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    if mode == "cluster":
        assert routes[0]["route"]["cluster"] == "backend"
    elif mode == "direct":
        assert routes[0]["direct_response"]["status"] == 200
    else:
        assert routes == []
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    assert set(clusters) == {"backend", "registry"}
    ports = {n: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"]
             for n, c in clusters.items()}
    assert ports == {"backend": 10557, "registry": 10558}
    assert all(c["type"] == "STATIC" and c["connect_timeout"] == "1s" for c in clusters.values())


def test_render_plugin_config_survives_yaml_escaping(tmp_path):
    """Quotes, backslashes, newlines and non-ASCII in the plugin JSON come out byte-identical."""
    cfg = json.loads((ROOT / "envoy" / "oauth-edge.json").read_text())
    cfg["clients"][0]["client_name"] = 'quote " back\\slash \n newline é ✓ 🔑 @@X@@ #: - {}'
    path = render.render(tmp_path, plugin_config=cfg, key=_test_key())
    _, wcfg = _wasm_config(yaml.safe_load(path.read_text()))
    plugin = json.loads(wcfg["configuration"]["value"])
    assert plugin["clients"][0]["client_name"] == cfg["clients"][0]["client_name"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def _filter(name):
    return {"name": name, "typed_config": {"@type": "type.googleapis.com/x.y.z", "n": name}}


@pytest.mark.parametrize("body_mode, after", [("pause", []), ("buffer", ["envoy.filters.http.buffer"])])
def test_render_cli_extra_http_filters_go_before_the_wasm_filter(tmp_path, body_mode, after):
    """--extra-http-filters FILE (e.g. jwt_authn for the plugin's `user`): in order, before the
    wasm filter, whatever the body mode; without it the chain is unchanged (other tests)."""
    from helpers import LoginService

    jwt_authn = LoginService().jwt_authn_filter()
    extra = tmp_path / "filters.json"
    extra.write_text(json.dumps([jwt_authn, _filter("envoy.filters.http.header_mutation")]))
    key = tmp_path / "key.json"
    key.write_text(json.dumps(_test_key()))
    res = subprocess.run([sys.executable, str(ROOT / "envoy" / "render.py"), "--out", str(tmp_path / "run"),
                          "--key", str(key), "--body-mode", body_mode, "--extra-http-filters", str(extra)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load((tmp_path / "run" / "envoy.yaml").read_text())
    filters = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.jwt_authn", "envoy.filters.http.header_mutation",
                                            "envoy.filters.http.wasm", *after, "envoy.filters.http.router"]
    assert filters[0] == jwt_authn  # byte for byte through YAML, inline JWKS included


@pytest.mark.parametrize("filters, needle", [
    ({"name": "x"}, "list"),
    ([{"typed_config": {"@type": "t"}}], "name"),
    ([{"name": "a"}], "typed_config"),
    ([_filter("envoy.filters.http.wasm")], "already"),
    ([_filter("envoy.filters.http.router")], "already"),
    ([_filter("a"), _filter("a")], "already"),
], ids=["not-a-list", "no-name", "no-typed-config", "wasm", "router", "twice"])
def test_render_refuses_bad_extra_http_filters(filters, needle):
    cfg = render.build_plugin_config(key=_test_key())
    with pytest.raises(render.RenderError, match=needle):
        render.render_text(plugin_config=cfg, extra_http_filters=filters)


def test_render_refuses_missing_key(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "envoy" / "render.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "signing key" in res.stderr


def test_render_accepts_key_list_and_public_only_keys(tmp_path):
    k1, k2 = _test_key(), _test_key()
    k2["kid"] = "old"
    del k2["d"]
    cfg = render.build_plugin_config(key=[k2, k1], listen_port=1234)
    assert [k["kid"] for k in cfg["signing_keys"]] == ["old", "deploy-test"]
    assert cfg["active_signing_key"] == "deploy-test"
    assert cfg["issuer"] == "http://127.0.0.1:1234"
    assert render.build_plugin_config(key=k1, issuer="https://as.example")["issuer"] == "https://as.example"


def test_render_cli_key_from_env_keeps_the_key_out_and_lets_the_vm_read_it(tmp_path):
    """--key-from-env NAME: the plugin configuration names the variable, the VM may read it
    (host_env_keys), no active_signing_key (the first private key in the variable signs).
    test_secrets_env.py runs it on a real Envoy."""
    res = subprocess.run([sys.executable, str(ROOT / "envoy" / "render.py"), "--out", str(tmp_path),
                          "--key-from-env", "OAUTH_EDGE_SIGNING_KEYS"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    _, cfg = _wasm_config(yaml.safe_load((tmp_path / "envoy.yaml").read_text()))
    plugin = json.loads(cfg["configuration"]["value"])
    assert plugin["signing_keys"] == [{"env": "OAUTH_EDGE_SIGNING_KEYS"}]
    assert "active_signing_key" not in plugin
    assert cfg["vm_config"]["environment_variables"] == {"host_env_keys": ["OAUTH_EDGE_SIGNING_KEYS"]}


def test_render_passes_every_secret_variable_to_the_vm_and_only_those():
    """Every {"env": NAME} where the filter reads secrets (signing_keys entries, the etcd
    password) goes into host_env_keys, once; a configuration without one has no
    environment_variables at all (nothing of Envoy's environment reaches the VM)."""
    cfg = render.build_plugin_config(key=_test_key())
    assert render.vm_environment_lines(cfg) == []
    cfg["signing_keys"] = [{"env": "KEYS_A"}, _test_key(), {"env": "KEYS_B"}, {"env": "KEYS_A"}]
    cfg["store"] = {"backend": "etcd", "etcd": {"cluster": "etcd", "username": "u",
                                                  "password": {"env": "ETCD_PASSWORD"}}}
    assert render.secret_env_names(cfg) == ["KEYS_A", "KEYS_B", "ETCD_PASSWORD"]
    doc = yaml.safe_load(render.render_text(plugin_config=cfg))
    _, wcfg = _wasm_config(doc)
    assert wcfg["vm_config"]["environment_variables"]["host_env_keys"] == ["KEYS_A", "KEYS_B", "ETCD_PASSWORD"]
    cfg["signing_keys"] = [{"env": "NOT A NAME"}]
    with pytest.raises(render.RenderError, match="not an environment variable name"):
        render.render_text(plugin_config=cfg)


@pytest.mark.parametrize("args, needle", [
    (["--key-from-env", "1KEY"], "not an environment variable name"),
    (["--key-from-env", "K", "--key", "k.json"], "not allowed with"),
], ids=["bad-name", "both"])
def test_render_cli_refuses_bad_key_from_env(tmp_path, args, needle):
    res = subprocess.run([sys.executable, str(ROOT / "envoy" / "render.py"), "--out", str(tmp_path), *args],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert needle in res.stderr


def test_rendered_directory_is_self_contained_envoy_validates(tmp_path):
    """The directory `make run` renders (envoy.yaml + oauth_edge.wasm, wasm path relative) is what
    the container mounts: Envoy accepts it with that directory as its working directory."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    run = tmp_path / ".run"
    render.render(run, key=_test_key(), route_mode="direct")
    shutil.copyfile(WASM, run / "oauth_edge.wasm")
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy.yaml", "-l", "warn"],
                         cwd=run, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "OK" in res.stdout + res.stderr


def test_envoy_refuses_plugin_config_with_unknown_key(tmp_path):
    """Contract: unknown keys anywhere are refused, so Envoy refuses the whole config."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    cfg = json.loads((ROOT / "envoy" / "oauth-edge.json").read_text())
    cfg["clients"][0]["no_such_field"] = True
    render.render(tmp_path, key=_test_key(), plugin_config=cfg)
    shutil.copyfile(WASM, tmp_path / "oauth_edge.wasm")
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy.yaml", "-l", "info"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0, "Envoy accepted a plugin config with an unknown key"
    assert "no_such_field" in res.stdout + res.stderr


def _set(cfg, path, value):
    node = cfg
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


@pytest.mark.parametrize("path, value, needle", [
    (("issuer",), "http://auth.example.com", "issuer"),
    (("registry", "timeout"), "0s", "timeout"),
    (("clients", 0, "client_secret"), "demo-secret", "client_secret"),
    (("lifetimes", "access_token"), "forever", "access_token"),
    (("active_signing_key",), "no-such-kid", "no-such-kid"),
], ids=["http-issuer-not-loopback", "zero-registry-timeout", "plaintext-secret", "bad-duration", "unknown-active-kid"])
def test_envoy_refuses_invalid_plugin_config(tmp_path, path, value, needle):
    """Contract: on_configure returns false on a bad config, so Envoy refuses it (with a log line)."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    cfg = render.build_plugin_config(key=_test_key())
    _set(cfg, path, value)
    render.render(tmp_path, key=None, plugin_config=cfg)
    shutil.copyfile(WASM, tmp_path / "oauth_edge.wasm")
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy.yaml", "-l", "info"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"Envoy accepted {path}={value!r}"
    assert needle in out, out[-2000:]


def test_docker_compose_mounts_the_make_run_directory():
    doc = yaml.safe_load(COMPOSE.read_text())
    svc = doc["services"]["envoy"]
    assert re.fullmatch(r"envoyproxy/envoy:v1\.40[.\w-]*", svc["image"]), svc["image"]
    assert svc["network_mode"] == "host"
    assert svc["working_dir"] == "/etc/oauth-edge"
    mounts = [v.split(":") for v in svc["volumes"]]
    assert ["../.run", "/etc/oauth-edge", "ro"] in mounts
    # ../.run relative to envoy/ is <repo>/.run, the directory `make run` renders
    assert (COMPOSE.parent / "../.run").resolve() == (ROOT / ".run").resolve()
    cmd = svc["command"] if isinstance(svc["command"], list) else svc["command"].split()
    assert cmd[:3] == ["envoy", "-c", "/etc/oauth-edge/envoy.yaml"]


def test_makefile_run_renders_dot_run_with_envoy_yaml_and_wasm():
    makefile = ROOT / "Makefile"
    if not makefile.exists():
        pytest.skip("no Makefile yet")
    res = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    text = res.stdout + makefile.read_text()
    assert res.returncode == 0, res.stderr
    assert ".run" in text
    assert "render.py" in text
    assert "oauth_edge.wasm" in text


def test_istio_wasmplugin_example_has_the_plugin_config_keys():
    docs = list(yaml.safe_load_all((ROOT / "envoy" / "istio" / "wasmplugin.yaml").read_text()))
    wp = next(d for d in docs if d["kind"] == "WasmPlugin")
    assert wp["apiVersion"] == "extensions.istio.io/v1alpha1"
    assert wp["spec"]["phase"] == "AUTHN"
    demo = json.loads((ROOT / "envoy" / "oauth-edge.json").read_text())
    pc = wp["spec"]["pluginConfig"]
    optional = {"active_signing_key", "pause_on_request_headers"}
    # The demo's own login (envoy/demo/server.py behind Envoy's jwt_authn): no end users in the
    # Istio example.
    demo_login = {"user", "login_url", "userinfo", "end_session"}
    assert set(pc) - optional <= set(demo)
    assert set(demo) - demo_login <= set(pc)
    # WasmPlugin cannot set allow_on_headers_stop_iteration: the example must use approach (b),
    # continuing on headers with Envoy's buffer filter after the plugin.
    assert pc["pause_on_request_headers"] is False
    assert any(d["kind"] == "EnvoyFilter" and "buffer" in json.dumps(d) for d in docs)
    assert pc["registry"]["cluster"].startswith("outbound|")
    # The module by image digest; no `sha256` (for an oci:// URL it is the image digest again,
    # never the module's sha256: the comment explains it).
    assert wp["spec"]["url"].startswith("oci://") and "@sha256:" in wp["spec"]["url"]
    assert "sha256" not in wp["spec"]
    # The key from the gateway's environment: every variable the config names is given to the VM.
    names = [k["env"] for k in pc["signing_keys"]]
    assert names and {"name": names[0], "valueFrom": "HOST"} in wp["spec"]["vmConfig"]["env"]
    assert set(names) <= {e["name"] for e in wp["spec"]["vmConfig"]["env"] if e["valueFrom"] == "HOST"}


def _example_configs():
    wp = next(d for d in yaml.safe_load_all((ROOT / "envoy" / "istio" / "wasmplugin.yaml").read_text())
              if d["kind"] == "WasmPlugin")
    eep = next(d for d in yaml.safe_load_all(EXTENSION_POLICY.read_text()) if d["kind"] == "EnvoyExtensionPolicy")
    return {"istio": wp["spec"]["pluginConfig"], "envoy-gateway": eep["spec"]["wasm"][0]["config"]}


def test_envoy_gateway_extension_policy_example():
    docs = {d["kind"]: d for d in yaml.safe_load_all(EXTENSION_POLICY.read_text())}
    eep = docs["EnvoyExtensionPolicy"]
    assert eep["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    w = eep["spec"]["wasm"][0]
    assert w["code"]["type"] == "Image"
    assert w["code"]["image"]["url"].startswith("oci://") and "@sha256:" in w["code"]["image"]["url"]
    assert "sha256" not in w["code"]["image"] and w["failOpen"] is False
    names = [k["env"] for k in w["config"]["signing_keys"]]
    assert names and set(names) <= set(w["env"]["hostKeys"])
    # The Envoy container gets each variable from a Secret, and the buffer filter goes after the wasm filter.
    proxy = docs["EnvoyProxy"]["spec"]
    env = proxy["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"]
    assert set(names) <= {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"name": "envoy.filters.http.buffer", "after": "envoy.filters.http.wasm"} in proxy["filterOrder"]
    assert w["config"]["pause_on_request_headers"] is False and "requestBuffer" in docs["BackendTrafficPolicy"]["spec"]


@pytest.mark.parametrize("example", ["istio", "envoy-gateway"])
def test_example_plugin_configs_load_with_the_key_from_the_environment(tmp_path, example):
    """The examples' plugin configurations, as they are, on a real Envoy (buffer body mode, as
    their pause_on_request_headers false asks), with the key only in Envoy's environment: the
    filter accepts them; without the variable it refuses them, naming it."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    cfg = _example_configs()[example]
    render.render(tmp_path, plugin_config=cfg, body_mode="buffer", route_mode="direct")
    shutil.copyfile(WASM, tmp_path / "oauth_edge.wasm")
    (var,) = render.secret_env_names(cfg)
    base_env = {k: v for k, v in os.environ.items() if k != var}

    def validate(env):
        return subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy.yaml", "-l", "info"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, env={**base_env, **env})

    res = validate({var: json.dumps(_test_key())})
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    res = validate({})
    assert res.returncode != 0
    assert f"signing_keys[0]: environment variable {var} is not set" in res.stdout + res.stderr


def test_render_cli_benchmark_options_ceiling_route_and_static_clusters(tmp_path):
    """bench/bench.py's additions are render.py options: --ceiling-route puts Envoy's own
    direct_response at /ceiling first, behind the buffer filter just before the router;
    --static-cluster adds loopback clusters first. Envoy accepts the result."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    key = tmp_path / "key.json"
    key.write_text(json.dumps(_test_key()))
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, str(ROOT / "envoy" / "render.py"), "--out", str(run), "--key", str(key),
                          "--ceiling-route", "64", "--static-cluster", "etcd=2379", "--static-cluster", "other=2380"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load((run / "envoy.yaml").read_text())
    hcm, _ = _wasm_config(doc)
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"] == {"path": "/ceiling"}
    assert routes[0]["direct_response"] == {"status": 200, "body": {"inline_string": "x" * 64}}
    assert routes[1:] == render.routes_for("direct")
    names = [f["name"] for f in hcm["http_filters"]]
    assert names[-2:] == ["envoy.filters.http.buffer", "envoy.filters.http.router"], names
    clusters = doc["static_resources"]["clusters"]
    assert [c["name"] for c in clusters[:2]] == ["etcd", "other"]
    assert clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 2379}}
    shutil.copyfile(WASM, run / "oauth_edge.wasm")
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy.yaml", "-l", "warn"],
                         cwd=run, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # Without them the rendering is the default one; the ceiling needs body mode pause.
    plain, _ = _wasm_config(yaml.safe_load(render.render_text(plugin_config=render.build_plugin_config(key=_test_key()))))
    assert plain["route_config"]["virtual_hosts"][0]["routes"] == render.routes_for("direct")
    assert "envoy.filters.http.buffer" not in [f["name"] for f in plain["http_filters"]]
    with pytest.raises(render.RenderError, match="body mode pause"):
        cfg = render.build_plugin_config(key=_test_key(), body_mode="buffer")
        render.render_text(plugin_config=cfg, body_mode="buffer", ceiling_bytes=64)
    for bad in ({"backend": 1}, {"x y": 1}, {"etcd": 0}):
        with pytest.raises(render.RenderError):
            render.render_text(plugin_config=render.build_plugin_config(key=_test_key()), static_clusters=bad)


def test_readme_protected_api_example_loads_in_envoy(tmp_path):
    """README "Protecting an API behind the gateway": its Envoy http_filters excerpt, put in a
    listener with one client in place of its `[...]`, is accepted by the pinned Envoy and the
    filter (routes validated at start, the key from the environment)."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Protecting an API behind the gateway", 1)[1].split("\n## ", 1)[0]
    (excerpt,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    client = {"client_id": "orders-client", "client_secret": "sha256:" + "ab" * 32,
              "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"],
              "scope": "orders:read", "allowed_resources": ["https://api.example.com/orders"]}
    assert '"clients": [...]' in excerpt
    excerpt = excerpt.replace('"clients": [...]', '"clients": [' + json.dumps(client) + "]")
    shutil.copyfile(WASM, tmp_path / "oauth_edge.wasm")
    excerpt = excerpt.replace("/etc/oauth-edge/oauth_edge.wasm", str(tmp_path / "oauth_edge.wasm"))
    filters = yaml.safe_load(excerpt)["http_filters"]
    plugin = json.loads(filters[0]["typed_config"]["config"]["configuration"]["value"])
    assert plugin["resource_protection"]["routes"][0]["claim_headers"]
    doc = {"static_resources": {"listeners": [{
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                     ".HttpConnectionManager",
            "stat_prefix": "readme",
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
            "http_filters": filters}}]}]}]}}
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, "OAUTH_EDGE_SIGNING_KEYS": json.dumps(_test_key())}
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy.yaml", "-l", "info"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "configured issuer https://auth.example.com" in out, out[-3000:]
