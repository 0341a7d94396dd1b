"""Signing keys from Envoy's environment, never in the Envoy configuration (docs/deploying.md "Keys from
the environment").

render.py --key-from-env NAME writes `"signing_keys": [{"env": NAME}]` into the plugin
configuration and lists NAME in the wasm VM's vm_config.environment_variables.host_env_keys; the
key (a JWK, or a JWK Set) is set on the Envoy process only. Checked on a real Envoy:
  * tokens are signed by the key in the variable (verified with that key, not the JWKS), and the
    rendered envoy.yaml holds no part of it;
  * a JWK Set in the variable: every member published, the first private one signs (rotation);
  * a variable that is missing from Envoy's environment, or set but not listed in host_env_keys,
    makes Envoy refuse the configuration with an error naming the entry and the variable;
  * a `{"file": ...}` reference is refused even though the file exists and is readable: Envoy
    gives wasm VMs no file system (the error says so and names the way that works).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

import render  # noqa: E402  (envoy/render.py, on the path via the support package)
from support.envoy import WASM, EnvoyInstance, envoy_binary, free_port
from support.fixtures_envoy import base_plugin_config, finish_envoy, start_envoy
from support.keys import _keygen_cargo, _keygen_python
from helpers import ACCESS_TOKEN_LIFETIME, DEMO_CLIENT, assert_token_response, fetch_jwks, token_request

VAR = "OAUTH_EDGE_IT_SIGNING_KEYS"


def _key(alg: str, kid: str) -> dict[str, Any]:
    return _keygen_cargo(alg, kid) or _keygen_python(alg, kid)


def _public(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k != "d"}


def _start(name: str, tmp_path_factory: pytest.TempPathFactory, registry: Any, backend: Any,
           value: str, signing_keys: list[dict[str, Any]]) -> EnvoyInstance:
    return start_envoy(name, tmp_path_factory, route_mode="direct", plugin_config=base_plugin_config(),
                        signing_keys=signing_keys, key_from_env=VAR, env={VAR: value},
                        registry_port=registry.port, backend_port=backend.port)


def _verify_with(token: str, jwk: dict[str, Any], inst: EnvoyInstance) -> dict[str, Any]:
    """Verify a token with the given key itself (not the JWKS the filter publishes)."""
    header = jwt.get_unverified_header(token)
    assert (header["kid"], header["alg"], header["typ"]) == (jwk["kid"], jwk["alg"], "at+jwt"), header
    key = jwt.PyJWK.from_dict(_public(jwk))
    return jwt.decode(token, key.key, algorithms=[jwk["alg"]], audience=inst.audience, issuer=inst.issuer)


def test_key_only_in_the_environment_signs(registry, backend, tmp_path_factory):
    key = _key("EdDSA", "env-ed25519")
    inst = _start("key-env", tmp_path_factory, registry, backend, json.dumps(key), [key])
    try:
        rendered = (inst.workdir / "envoy.yaml").read_text()
        assert key["d"] not in rendered and key["x"] not in rendered, "the key must stay out of envoy.yaml"
        assert inst.plugin_config["signing_keys"] == [{"env": VAR}]
        wasm = yaml.safe_load(rendered)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
            "typed_config"]["http_filters"][0]["typed_config"]["config"]
        assert wasm["vm_config"]["environment_variables"] == {"host_env_keys": [VAR]}

        body = assert_token_response(token_request(inst, DEMO_CLIENT, use="client_secret_basic"),
                                     scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)
        claims = _verify_with(body["access_token"], key, inst)
        assert claims["client_id"] == DEMO_CLIENT.client_id
        assert fetch_jwks(inst)["keys"] == [dict(_public(key), use="sig")]
    finally:
        finish_envoy(inst)


def test_a_jwk_set_in_the_environment_rotates(registry, backend, tmp_path_factory):
    """Rotation in the variable alone: [new private, old public] publishes both, the new one
    signs (the first private key when active_signing_key is not set)."""
    old, new = _key("EdDSA", "env-old"), _key("ES256", "env-new")
    value = json.dumps({"keys": [new, _public(old)]})
    inst = _start("key-env-set", tmp_path_factory, registry, backend, value, [new, _public(old)])
    try:
        body = assert_token_response(token_request(inst, DEMO_CLIENT, use="client_secret_basic"),
                                     scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)
        _verify_with(body["access_token"], new, inst)
        assert sorted(k["kid"] for k in fetch_jwks(inst)["keys"]) == ["env-new", "env-old"]
    finally:
        finish_envoy(inst)


def _refused(tmp_path: Path, plugin_config: dict[str, Any], env: dict[str, str], *,
             host_env_keys: bool = True) -> str:
    """Start Envoy (for real, not --mode validate) on this configuration: it must refuse it and
    exit. Returns its log."""
    render.render(tmp_path, plugin_config=plugin_config, route_mode="direct", listen_port=free_port(),
                  admin_port=free_port())
    if not host_env_keys:
        text = (tmp_path / "envoy.yaml").read_text()
        lines = [ln for ln in text.splitlines() if "environment_variables:" not in ln]
        assert len(lines) == len(text.splitlines()) - 1
        (tmp_path / "envoy.yaml").write_text("\n".join(lines) + "\n")
    shutil.copyfile(WASM, tmp_path / render.DEFAULT_WASM)
    base_env = {k: v for k, v in os.environ.items() if k != VAR}
    res = subprocess.run([envoy_binary(), "-c", "envoy.yaml", "--use-dynamic-base-id", "--concurrency", "1",
                          "-l", "info"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**base_env, **env})
    out = res.stdout + res.stderr
    assert res.returncode != 0, "Envoy accepted the configuration:\n" + out[-2000:]
    return out


def _env_config() -> dict[str, Any]:
    return render.build_plugin_config(base_plugin_config(), key_from_env=VAR)


def test_missing_variable_is_refused_with_a_clear_error(tmp_path):
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    out = _refused(tmp_path, _env_config(), {})
    assert f"oauth-edge: configuration refused: signing_keys[0]: environment variable {VAR} is not set" in out, \
        out[-3000:]


def test_variable_not_passed_to_the_vm_is_refused(tmp_path):
    """Set on Envoy but not in host_env_keys: the VM does not see it (Envoy passes only the
    listed variables), and the error says where to list it."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    key = _key("EdDSA", "env-unlisted")
    out = _refused(tmp_path, _env_config(), {VAR: json.dumps(key)}, host_env_keys=False)
    assert f"signing_keys[0]: environment variable {VAR} is not set" in out, out[-3000:]
    assert "host_env_keys" in out
    assert key["d"] not in out


def test_bad_key_in_the_variable_is_refused_without_quoting_it(tmp_path):
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    key = _key("EdDSA", "env-bad")
    key["x"] = _key("EdDSA", "other")["x"]  # the public half of another key
    out = _refused(tmp_path, _env_config(), {VAR: json.dumps(key)})
    assert f'signing_keys[0] (environment variable {VAR}): key "env-bad": x does not match d' in out, out[-3000:]
    assert key["d"] not in out


def test_file_reference_is_refused_the_vm_has_no_file_system(tmp_path):
    """The file exists and Envoy could read it, the wasm VM cannot: Envoy's WASI has no
    preopened directories. Refused, saying so and naming the environment instead."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: build the filter first")
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(_key("EdDSA", "file-key")))
    cfg = _env_config()
    cfg["signing_keys"] = [{"file": str(key_file)}]
    out = _refused(tmp_path / "run", cfg, {})
    assert f"signing_keys[0]: file {key_file} cannot be read" in out, out[-3000:]
    assert "Envoy gives wasm filters no file system" in out
