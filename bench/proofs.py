#!/usr/bin/env python3
"""DPoP proofs (RFC 9449 §4.2) for `make bench`, one a line, each with its own `jti`.

    .venv/bin/python bench/proofs.py --htu URL --count N --out FILE [--alg ES256|EdDSA] [--key FILE]
                                     [--htm GET] [--ath HASH]
                                     [--client-jwk FILE --client-id ID --aud AUD]

One key signs them all (a client keeps its key; the filter's replay cache is per key and jti):
header {"typ":"dpop+jwt","alg":ALG,"jwk":<public key>}, claims {"jti","htm":"POST","htu","iat"}.
`iat` is the time of generation, so the proofs must be used within the filter's
`dpop.proof_lifetime` (+ `clock_skew`). With --key the private key is kept in (or read from) a
PEM file, so successive pools share one key. Run with the project's virtualenv
(`cryptography`); bench.py itself stays standard-library only.

With --client-jwk (a private ES256 JWK, as oauth-edge-keygen makes it), each line is
`ASSERTION PROOF`: a private_key_jwt client assertion (RFC 7523: iss = sub = ID, aud = AUD, its own
jti, exp 4 minutes after iat) signed by that key, then the DPoP proof (the FAPI path of the bench).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def load_or_make_key(alg: str, path: Path | None):
    if path is not None and path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        key = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else ed25519.Ed25519PrivateKey.generate()
        if path is not None:
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            os.chmod(path, 0o600)
    if alg == "ES256" and not isinstance(key, ec.EllipticCurvePrivateKey):
        sys.exit(f"{path}: not an EC key")
    if alg == "EdDSA" and not isinstance(key, ed25519.Ed25519PrivateKey):
        sys.exit(f"{path}: not an Ed25519 key")
    return key


def public_jwk(alg: str, key) -> dict:
    if alg == "ES256":
        n = key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--htu", required=True, help="the token endpoint URL, as the metadata's token_endpoint")
    ap.add_argument("--htm", default="POST")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--alg", choices=("ES256", "EdDSA"), default="ES256")
    ap.add_argument("--key", help="PEM file of the private key (made if missing)")
    ap.add_argument("--ath", help="the access token's hash (RFC 9449 §4.2), for proofs sent to a resource")
    ap.add_argument("--client-jwk", help="private ES256 JWK of a client: each line starts with its assertion")
    ap.add_argument("--client-id", help="the assertion's iss and sub")
    ap.add_argument("--aud", help="the assertion's aud")
    a = ap.parse_args()

    client_key, assertion_header = None, None
    if a.client_jwk:
        jwk = json.loads(Path(a.client_jwk).read_text())
        d = int.from_bytes(base64.urlsafe_b64decode(jwk["d"] + "=" * (-len(jwk["d"]) % 4)), "big")
        client_key = ec.derive_private_key(d, ec.SECP256R1())
        assertion_header = b64(json.dumps({"alg": "ES256", "kid": jwk["kid"]}, separators=(",", ":")).encode())

    key = load_or_make_key(a.alg, Path(a.key) if a.key else None)
    header = b64(json.dumps({"typ": "dpop+jwt", "alg": a.alg, "jwk": public_jwk(a.alg, key)},
                            separators=(",", ":")).encode())
    ecdsa = ec.ECDSA(hashes.SHA256())
    iat = int(time.time())
    # Unique across pools too: a random prefix per run, then a counter.
    prefix = b64(os.urandom(9))
    ath = (',"ath":' + json.dumps(a.ath)) if a.ath else ""
    claims_fmt = ('{"jti":"%s-%d","htm":' + json.dumps(a.htm) + ',"htu":' + json.dumps(a.htu)
                  + ath.replace("%", "%%") + ',"iat":%d}')
    t0 = time.time()
    with open(a.out, "w") as f:
        for i in range(a.count):
            signing_input = header + "." + b64((claims_fmt % (prefix, i, iat)).encode())
            data = signing_input.encode()
            if a.alg == "ES256":
                r, s = decode_dss_signature(key.sign(data, ecdsa))
                sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
            else:
                sig = key.sign(data)
            line = signing_input + "." + b64(sig)
            if client_key is not None:
                claims = json.dumps({"iss": a.client_id, "sub": a.client_id, "aud": a.aud,
                                     "jti": f"a-{prefix}-{i}", "iat": iat, "exp": iat + 240}, separators=(",", ":"))
                assertion_input = assertion_header + "." + b64(claims.encode())
                r, s_ = decode_dss_signature(client_key.sign(assertion_input.encode(), ecdsa))
                line = assertion_input + "." + b64(r.to_bytes(32, "big") + s_.to_bytes(32, "big")) + " " + line
            f.write(line + "\n")
    print(json.dumps({"count": a.count, "iat": iat, "alg": a.alg, "elapsed_s": time.time() - t0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
