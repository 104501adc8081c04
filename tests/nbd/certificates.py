"""X.509 certificates for the TLS tests, made with the ``cryptography`` package: a CA and a
server certificate for 127.0.0.1 in nbdkit's folder layout, and a client's folder holding only
a CA (the right one, or a stranger's)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _certificate(subject: str, key, issuer: str, issuer_key, is_ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if is_ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(server folder, client folder with the CA, client folder with another CA)."""
    pem = serialization.Encoding.PEM
    folders = []
    for name in ("server", "client", "stranger"):
        (folder / name).mkdir(mode=0o700)
        folders.append(folder / name)
    server, client, stranger = folders
    ca_key, server_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("diskvault test CA", ca_key, "diskvault test CA", ca_key, True)
    other_ca = _certificate("another CA", other_key, "another CA", other_key, True)
    for target in (server, client):
        _write(target / "ca-cert.pem", ca.public_bytes(pem))
    _write(stranger / "ca-cert.pem", other_ca.public_bytes(pem))
    _write(server / "server-cert.pem",
           _certificate("127.0.0.1", server_key, "diskvault test CA", ca_key, False)
           .public_bytes(pem))
    _write(server / "server-key.pem", server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return server, client, stranger
