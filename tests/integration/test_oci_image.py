"""`make oci`: the module as an OCI image, pushed to a real registry and pulled back by digest.

A local registry (Debian's `docker-registry`, the CNCF distribution registry, on loopback over
plain http, storage in a temporary directory) and `skopeo`, both installed by `make oci-tools`
(part of `make integration`); without them this module is skipped with the reason.

What is checked:
  * `make oci` prints the image digest and the module's sha256, and builds the same image
    (same digest) from the same module twice;
  * skopeo pushes the layout to the registry with its digest unchanged, and the registry serves
    that digest for the tag and for `@sha256:<digest>`;
  * the image, fetched over the registry API the way Istio's fetcher does (manifest by digest,
    then blobs), passes Istio's rules for the "compat" variant (istio/istio
    pkg/wasm/imagefetcher.go: an OCI manifest whose last layer is
    application/vnd.oci.image.layer.v1.tar+gzip holding plugin.wasm, which starts with the wasm
    magic), and the plugin.wasm in it is the built module byte for byte;
  * skopeo pulls it back by digest into an OCI layout holding the same manifest and module;
  * the same rules refuse an image with the raw module as its only layer, what `oras push
    plugin.wasm` makes, as Istio does ("number of layers must be 2 but got 1").
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from support import ROOT
from support.envoy import free_port, WASM

DOCKER_REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
# Only the tests that push and pull need them; building and the format rules are checked anyway.
needs_tools = pytest.mark.skipif(
    DOCKER_REGISTRY is None or SKOPEO is None,
    reason="docker-registry and skopeo are not installed (`make oci-tools` installs them with apt)")

REPO = "oauth-edge"
TAG = "it-test"

# Media types, as go-containerregistry names them (pkg/v1/types) and Istio's fetcher compares them.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST])


class Refused(Exception):
    """Istio's fetcher would refuse the image."""


def _plugin_from_tar_gz(blob: bytes) -> bytes:
    """extractWasmPluginBinary: gunzip, walk the tar, the first entry whose base name is
    plugin.wasm."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:")
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise Refused(f"failed to parse layer as tar.gz: {exc}") from exc
    for member in tar:
        if os.path.basename(member.name) == "plugin.wasm":
            f = tar.extractfile(member)
            if f is None:
                raise Refused("plugin.wasm is not a regular file")
            return f.read()
    raise Refused("plugin.wasm not found in the archive")


def istio_extract(manifest: dict[str, Any], blob: Callable[[str], bytes]) -> tuple[str, bytes]:
    """The module Istio's fetcher (PrepareFetch's binaryFetcher) takes from this image, and which
    variant it matched; Refused with Istio's reasons otherwise. `blob(digest)` fetches a blob."""
    layers = manifest.get("layers") or []
    if manifest.get("mediaType") == DOCKER_MANIFEST:
        if not layers:
            raise Refused("number of layers must be greater than zero")
        if layers[-1].get("mediaType") != DOCKER_LAYER:
            raise Refused(f"invalid media type {layers[-1].get('mediaType')} (expect {DOCKER_LAYER})")
        return "docker", _plugin_from_tar_gz(blob(layers[-1]["digest"]))
    errors = []
    try:  # extractOCIStandardImage: the compat variant
        if not layers:
            raise Refused("number of layers must be greater than zero")
        if layers[-1].get("mediaType") != OCI_LAYER:
            raise Refused(f"invalid media type {layers[-1].get('mediaType')} (expect {OCI_LAYER})")
        return "compat", _plugin_from_tar_gz(blob(layers[-1]["digest"]))
    except Refused as exc:
        errors.append(f"could not parse as compat variant: {exc}")
    try:  # extractOCIArtifactImage: the oci variant
        if len(layers) != 2:
            raise Refused(f"number of layers must be 2 but got {len(layers)}")
        wasm = [ly for ly in layers if ly.get("mediaType") == WASM_LAYER]
        if not wasm:
            raise Refused(f"could not find the layer of type {WASM_LAYER}")
        return "oci", blob(wasm[0]["digest"])
    except Refused as exc:
        errors.append(f"could not parse as oci variant: {exc}")
    raise Refused("; ".join(errors))


def is_valid_wasm_binary(b: bytes) -> bool:
    """cache.go isValidWasmBinary: what Istio checks of the extracted module."""
    return len(b) >= 8 and b[:4] == b"\0asm"


class Registry:
    """docker-registry on a free loopback port, plain http, storage under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = workdir / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Registry":
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            config = self.workdir / "config.yml"
            # JSON is YAML: the registry reads this as its configuration file.
            config.write_text(json.dumps({
                "version": 0.1,
                "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}},
                "http": {"addr": self.host},
            }))
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(f"http://{self.host}/v2/", timeout=1).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"docker-registry did not start:\n{self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def manifest(self, ref: str) -> tuple[bytes, requests.Response]:
        r = requests.get(f"http://{self.host}/v2/{REPO}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=10)
        assert r.status_code == 200, (ref, r.status_code, r.text[:500])
        return r.content, r

    def blob(self, digest: str) -> bytes:
        r = requests.get(f"http://{self.host}/v2/{REPO}/blobs/{digest}", timeout=30)
        assert r.status_code == 200, (digest, r.status_code)
        # go-containerregistry verifies every blob against its digest; so do we.
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == digest
        return r.content


@pytest.fixture(scope="module")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("oci-registry")).start()
    yield reg
    reg.stop()


def skopeo(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    # --insecure-policy: no signature policy for a throwaway loopback registry (a fresh machine
    # may have no /etc/containers/policy.json); HOME: skopeo's auth and cache files stay here.
    env = dict(os.environ, HOME=str(tmp), XDG_RUNTIME_DIR=str(tmp))
    res = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, f"skopeo {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res


def make_oci(out: Path) -> dict[str, str]:
    """`make oci` into `out` (without rebuilding the module: -o wasm takes the built one as
    current); returns what it printed, by label."""
    if not WASM.exists():
        pytest.fail(f"{WASM} missing: run `make wasm` first", pytrace=False)
    res = subprocess.run(["make", "--no-print-directory", "-s", "-o", "wasm", "oci", f"OCI_DIR={out}",
                          f"OCI_TAG={TAG}", f"WASM={WASM}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    printed = {}
    for line in res.stdout.splitlines():
        label, sep, value = line.partition(":")
        if sep and label in ("image layout", "skopeo source", "image digest", "module sha256"):
            printed[label] = value.strip()
    assert set(printed) == {"image layout", "skopeo source", "image digest", "module sha256"}, res.stdout
    return printed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_oci(tmp_path_factory.mktemp("oci-out"))


def layout_of(printed: dict[str, str]) -> Path:
    """The layout directory of the printed `oci:DIR:TAG` (DIR relative to the repository root,
    where `make` ran, unless absolute)."""
    layout = Path(printed["skopeo source"].removeprefix("oci:").rsplit(":", 1)[0])
    return layout if layout.is_absolute() else ROOT / layout


def push(built: dict[str, str], registry: Registry, tmp: Path) -> None:
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout_of(built)}:{TAG}",
           f"docker://{registry.host}/{REPO}:{TAG}", tmp=tmp)


def test_make_oci_prints_digest_and_module_sha256_and_is_reproducible(built, tmp_path):
    module = WASM.read_bytes()
    assert built["module sha256"] == hashlib.sha256(module).hexdigest()
    assert built["image digest"].startswith("sha256:") and len(built["image digest"]) == 71
    assert built["skopeo source"].startswith("oci:") and built["skopeo source"].endswith(f":{TAG}")
    again = make_oci(tmp_path)
    assert again["image digest"] == built["image digest"], "the same module must give the same image"
    # The layout's index names the printed digest under the tag.
    layout = layout_of(built)
    index = json.loads((layout / "index.json").read_text())
    assert [(m["digest"], m["annotations"]["org.opencontainers.image.ref.name"]) for m in index["manifests"]] \
        == [(built["image digest"], TAG)]
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}


@needs_tools
def test_push_then_fetch_by_digest_as_istio_does(built, oci_registry, tmp_path):
    registry = oci_registry
    push(built, oci_registry, tmp_path)
    digest = built["image digest"]

    # The registry serves the printed digest, for the tag and by digest.
    raw, resp = registry.manifest(TAG)
    assert resp.headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    raw_by_digest, resp = registry.manifest(digest)
    assert raw_by_digest == raw
    inspected = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{REPO}@{digest}",
                       tmp=tmp_path).stdout.encode()
    assert "sha256:" + hashlib.sha256(inspected).hexdigest() == digest

    # Istio's rules on what it fetched: an OCI manifest with a config, compat variant.
    manifest = json.loads(raw_by_digest)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(registry.blob(manifest["config"]["digest"]))
    assert config["rootfs"]["type"] == "layers" and len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])
    variant, module = istio_extract(manifest, registry.blob)
    assert variant == "compat"
    assert is_valid_wasm_binary(module)
    assert module == WASM.read_bytes(), "plugin.wasm in the image is not the built module"
    # The module's sha256 is recorded in the image (and is not the image digest).
    assert manifest["annotations"]["io.github.oauth-edge.module.sha256"] == built["module sha256"]
    assert built["module sha256"] != digest.removeprefix("sha256:")


@needs_tools
def test_skopeo_pulls_it_back_by_digest(built, oci_registry, tmp_path):
    registry = oci_registry
    digest = built["image digest"]
    push(built, oci_registry, tmp_path)
    out = tmp_path / "pulled"
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", f"docker://{registry.host}/{REPO}@{digest}",
           f"oci:{out}:pulled", tmp=tmp_path)
    index = json.loads((out / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digest]

    def blob(d: str) -> bytes:
        data = (out / "blobs" / "sha256" / d.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == d
        return data

    manifest = json.loads(blob(digest))
    variant, module = istio_extract(manifest, blob)
    assert (variant, module == WASM.read_bytes()) == ("compat", True)


def test_istio_rules_refuse_a_single_raw_wasm_layer():
    """The checker is Istio's, not a mirror of our own image: the raw module as the only layer
    (`oras push REPO plugin.wasm:application/vnd.module.wasm.content.layer.v1+wasm`) is refused
    with Istio's words, and the two-layer oci variant and a Docker image are accepted."""
    module = WASM.read_bytes() if WASM.exists() else b"\0asm\1\0\0\0"
    blobs = {"sha256:w": module, "sha256:c": b"{}"}
    one = {"mediaType": OCI_MANIFEST, "layers": [{"mediaType": WASM_LAYER, "digest": "sha256:w"}]}
    with pytest.raises(Refused, match="number of layers must be 2 but got 1"):
        istio_extract(one, blobs.__getitem__)
    two = {"mediaType": OCI_MANIFEST, "layers": [{"mediaType": "application/vnd.module.wasm.config.v1+json",
                                                  "digest": "sha256:c"},
                                                 {"mediaType": WASM_LAYER, "digest": "sha256:w"}]}
    assert istio_extract(two, blobs.__getitem__) == ("oci", module)
    from oci import gzip_fixed, layer_tar  # envoy/oci.py, on the path via the support package

    blobs["sha256:t"] = gzip_fixed(layer_tar(module))
    docker = {"mediaType": DOCKER_MANIFEST, "layers": [{"mediaType": DOCKER_LAYER, "digest": "sha256:t"}]}
    assert istio_extract(docker, blobs.__getitem__) == ("docker", module)
    wrong = {"mediaType": DOCKER_MANIFEST, "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:t"}]}
    with pytest.raises(Refused, match="invalid media type"):
        istio_extract(wrong, blobs.__getitem__)
