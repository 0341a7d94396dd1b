#!/usr/bin/env python3
"""Package oauth_edge.wasm as an OCI image that Istio's and Envoy Gateway's wasm fetchers accept.

Standard library only (Python 3.11); no Docker, no registry needed to build. `make oci` runs:

    python3 envoy/oci.py --wasm target/wasm32-wasip1/release/oauth_edge.wasm --out target/oci

and writes an OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md):

    target/oci/oauth-edge/oci-layout
    target/oci/oauth-edge/index.json          the manifest, tagged (org.opencontainers.image.ref.name)
    target/oci/oauth-edge/blobs/sha256/...    manifest, image config, one tar.gz layer

The image is the "compat" variant of the Wasm image specification that Istio's fetcher
(istio/istio pkg/wasm/imagefetcher.go, extractOCIStandardImage; Envoy Gateway uses the same code)
reads: an ordinary OCI image manifest whose last layer has media type
application/vnd.oci.image.layer.v1.tar+gzip and is a tar.gz holding `plugin.wasm`. A single-layer
image with the raw module as its layer (what `oras push file.wasm` makes) is refused by that
fetcher ("number of layers must be 2 but got 1"): the raw-module "oci" variant needs exactly two
layers.

Reproducible: the tar entry has fixed mtime 0, uid/gid 0, no user names, mode 0644; the gzip
header has mtime 0 and no file name; the config has no creation date, version or tag. The same
module gives the same image digest, whatever the tag, on machines with the same zlib (another
deflate implementation, e.g. zlib-ng, may compress differently: another digest for the same
module, whose sha256 is the same).

It prints the layout, the reference `skopeo copy` takes (oci:DIR:TAG), the image (manifest)
digest and the module's sha256, and writes them to DIR.json beside the layout.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
# The file name Istio's compat-variant fetcher looks for (filepath.Base of each tar entry).
PLUGIN_FILE = "plugin.wasm"
WASM_MAGIC = b"\0asm"
# Our own annotation: the module's checksum, which is not any digest the registry knows.
MODULE_SHA256_ANNOTATION = "io.github.oauth-edge.module.sha256"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


class OciError(ValueError):
    """The inputs cannot make an image."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def crate_version() -> str:
    """The package version in Cargo.toml: the default tag."""
    import tomllib

    with open(ROOT / "Cargo.toml", "rb") as f:
        return str(tomllib.load(f)["package"]["version"])


def layer_tar(module: bytes) -> bytes:
    """An uncompressed tar with one entry, plugin.wasm, and nothing that varies between builds."""
    buf = io.BytesIO()
    info = tarfile.TarInfo(PLUGIN_FILE)
    info.size = len(module)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    # USTAR: no PAX headers (PAX would add records such as atime on some Python versions).
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def gzip_fixed(data: bytes) -> bytes:
    """gzip with mtime 0 and no file name in the header, so equal input gives equal bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _json_bytes(doc: dict[str, Any]) -> bytes:
    # Sorted keys, no spaces: the bytes (and so the digests) depend only on the content.
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def build_image(module: bytes) -> dict[str, Any]:
    """The blobs of the image: {"layer", "config", "manifest": bytes, "module_sha256",
    "digest" (of the manifest, "sha256:..."), "diff_id"}."""
    if len(module) < 8 or module[:4] != WASM_MAGIC:
        raise OciError("the module is not a WebAssembly binary (no \\0asm header)")
    module_sha256 = sha256_hex(module)
    tar = layer_tar(module)
    layer = gzip_fixed(tar)
    diff_id = "sha256:" + sha256_hex(tar)
    # Nothing but the module goes into the digest: no version, date or tag (the tag lives only
    # in the layout's index and the registry), so one module is one image digest.
    labels = {
        "org.opencontainers.image.title": "oauth-edge",
        MODULE_SHA256_ANNOTATION: module_sha256,
    }
    # An ordinary image config (the compat variant is a normal image). No `created`: a date
    # would change the digest on every build. os/architecture are the wasm ones; Istio and
    # Envoy Gateway pull a single manifest by tag or digest and do not match platforms.
    config = _json_bytes({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    manifest = _json_bytes({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + sha256_hex(config), "size": len(config)},
        "layers": [{
            "mediaType": OCI_LAYER_TGZ,
            "digest": "sha256:" + sha256_hex(layer),
            "size": len(layer),
            "annotations": {"org.opencontainers.image.title": PLUGIN_FILE},
        }],
        "annotations": labels,
    })
    return {"layer": layer, "config": config, "manifest": manifest, "module_sha256": module_sha256,
            "digest": "sha256:" + sha256_hex(manifest), "diff_id": diff_id}


def write_layout(layout: Path, image: dict[str, Any], tag: str) -> None:
    """Write the OCI image layout directory (replacing an old one: one image, one tag)."""
    if layout.exists():
        if not (layout / "oci-layout").exists():
            raise OciError(f"{layout} exists and is not an OCI image layout: not replacing it")
        shutil.rmtree(layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for name in ("layer", "config", "manifest"):
        data = image[name]
        (blobs / sha256_hex(data)).write_bytes(data)
    (layout / "oci-layout").write_bytes(_json_bytes({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": image["digest"],
            "size": len(image["manifest"]),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    (layout / "index.json").write_bytes(_json_bytes(index))


def package(wasm: Path, out: Path, *, name: str = "oauth-edge", tag: str | None = None) -> dict[str, str]:
    """Build the image of `wasm` into OUT/NAME and return what `make oci` prints."""
    tag = tag or crate_version()
    if not _TAG.fullmatch(tag):
        raise OciError(f"{tag!r} is not a valid image tag")
    if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", name):
        raise OciError(f"{name!r} is not a valid repository name")
    try:
        module = Path(wasm).read_bytes()
    except OSError as exc:
        raise OciError(f"cannot read the module {wasm}: {exc} (run `make wasm`)") from exc
    image = build_image(module)
    layout = Path(out) / name
    write_layout(layout, image, tag)
    summary = {
        "layout": str(layout),
        "reference": f"oci:{layout}:{tag}",
        "tag": tag,
        "digest": image["digest"],
        "module_sha256": image["module_sha256"],
    }
    tmp = layout.with_name(layout.name + ".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(layout.with_name(layout.name + ".json"))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wasm", default=str(ROOT / "target" / "wasm32-wasip1" / "release" / "oauth_edge.wasm"))
    p.add_argument("--out", default=str(ROOT / "target" / "oci"), help="directory for the image layout")
    p.add_argument("--name", default="oauth-edge", help="the layout's directory name (default oauth-edge)")
    p.add_argument("--tag", help="the image tag (default: the version in Cargo.toml)")
    args = p.parse_args(argv)
    try:
        s = package(Path(args.wasm), Path(args.out), name=args.name, tag=args.tag)
    except OciError as exc:
        print(f"oci.py: {exc}", file=sys.stderr)
        return 2
    # Relative to the working directory when inside it (`make oci` prints oci:target/oci/...).
    rel = os.path.relpath(s["layout"])
    if rel.startswith(".."):
        rel = s["layout"]
    print(f"image layout:  {rel} (tag {s['tag']})")
    print(f"skopeo source: oci:{rel}:{s['tag']}")
    print(f"image digest:  {s['digest']}")
    print(f"module sha256: {s['module_sha256']}")
    print()
    print("Push it (skopeo keeps the digest; --preserve-digests fails rather than change it):")
    print(f"  skopeo copy --preserve-digests oci:{rel}:{s['tag']} docker://REGISTRY/oauth-edge:{s['tag']}")
    print("and reference it by digest:")
    print(f"  oci://REGISTRY/oauth-edge@{s['digest']}")
    print("An OCI URL's `sha256` (Istio WasmPlugin, Envoy Gateway code.image.sha256) is checked against")
    print(f"the image digest ({s['digest'].removeprefix('sha256:')}), not the module sha256.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
