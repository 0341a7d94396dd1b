"""The keys the suite signs with come from the project's oauth-edge-keygen; check its JWKs
independently (the public part must match the private part)."""
from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from support import ROOT


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_suite_keys_come_from_oauth_edge_keygen(keys):
    if (ROOT / "src" / "bin" / "oauth-edge-keygen.rs").exists():
        assert set(keys.source.values()) == {"oauth-edge-keygen"}, keys.source


def test_keygen_rfc8037_ed25519_jwk_consistent(keys):
    k = keys.ed25519
    assert (k["kty"], k["crv"], k["alg"], k["kid"]) == ("OKP", "Ed25519", "EdDSA", "it-ed25519")
    priv = ed25519.Ed25519PrivateKey.from_private_bytes(_b64d(k["d"]))
    x = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert x == _b64d(k["x"])
    assert len(_b64d(k["d"])) == 32 and "=" not in k["d"] + k["x"]


def test_keygen_rfc7518_es256_jwk_consistent(keys):
    k = keys.es256
    assert (k["kty"], k["crv"], k["alg"], k["kid"]) == ("EC", "P-256", "ES256", "it-es256")
    priv = ec.derive_private_key(int.from_bytes(_b64d(k["d"]), "big"), ec.SECP256R1())
    pub = priv.public_key().public_numbers()
    assert pub.x.to_bytes(32, "big") == _b64d(k["x"])
    assert pub.y.to_bytes(32, "big") == _b64d(k["y"])
    assert all(len(_b64d(k[m])) == 32 for m in ("x", "y", "d"))


def test_keygen_keys_differ_per_run(keys):
    assert keys.ed25519["d"] != keys.ed25519_retired["d"]
