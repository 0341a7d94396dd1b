"""The certificates of the mutual TLS tests, made with `cryptography`: a server CA and the
listener's certificate, a client PKI (a CA and clients' certificates), and a self-signed client
certificate, as PEM files in one directory."""
from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from pathlib import Path
from typing import Any


class Pki:
    """PEM files of every certificate the tests use, in one directory."""

    def __init__(self, d: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.dir = d
        now = datetime.datetime.now(datetime.timezone.utc)

        def name(cn: str, org: str | None = None) -> Any:
            attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
            if org:
                attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
            return x509.Name(attrs)

        def issue(subject: Any, key: Any, issuer: Any, issuer_key: Any, *, ca: bool = False,
                  sans: list[Any] | None = None) -> Any:
            b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                 .public_key(key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(minutes=5))
                 .not_valid_after(now + datetime.timedelta(days=1))
                 .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
            if sans:
                b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            return b.sign(issuer_key, hashes.SHA256())

        def write(stem: str, cert: Any, key: Any | None = None) -> None:
            (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            if key is not None:
                (d / f"{stem}.key").write_bytes(key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption()))
            self.der[stem] = cert.public_bytes(serialization.Encoding.DER)
            self.subject[stem] = cert.subject.rfc4514_string()

        self.der: dict[str, bytes] = {}
        # RFC 4514 strings, as RFC 8705 §2.1.2 registers them: the last RDN first ("O=Example,CN=client-a").
        self.subject: dict[str, str] = {}
        new_key = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
        server_ca_key, client_ca_key = new_key(), new_key()
        server_ca = issue(name("test server CA"), server_ca_key, name("test server CA"), server_ca_key, ca=True)
        client_ca = issue(name("test client CA"), client_ca_key, name("test client CA"), client_ca_key, ca=True)
        write("server-ca", server_ca)
        write("client-ca", client_ca)
        k = new_key()
        write("server", issue(name("127.0.0.1"), k, server_ca.subject, server_ca_key,
                              sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), k)
        for stem, cn, dns in (("client-a", "client-a", "a.clients.example"), ("client-b", "client-b", "b.clients.example")):
            k = new_key()
            write(stem, issue(name(cn, "Example"), k, client_ca.subject, client_ca_key, sans=[x509.DNSName(dns)]), k)
        k = new_key()
        write("client-ip", issue(name("client-ip", "Example"), k, client_ca.subject, client_ca_key,
                                 sans=[x509.DNSName("ip.clients.example"),
                                       x509.IPAddress(ipaddress.ip_address("192.0.2.9")),
                                       x509.RFC822Name("device@clients.example")]), k)
        k = new_key()
        write("self", issue(name("self-signed client"), k, name("self-signed client"), k), k)

    def pair(self, stem: str) -> tuple[str, str]:
        return str(self.dir / f"{stem}.crt"), str(self.dir / f"{stem}.key")

    def path(self, stem: str) -> str:
        return str(self.dir / f"{stem}.crt")

    def x5t(self, stem: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(self.der[stem]).digest()).rstrip(b"=").decode()
