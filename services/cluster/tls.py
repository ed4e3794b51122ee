"""`bankctl up --tls`: a certificate authority of the cluster and a server certificate per DC
(its address as the subject alternative name), made with the `cryptography` library and kept
under `<home>/credentials/tls/` (keys owner-only). Gateways and bank-nodes then serve TLS only,
and every client (bankclient, gateways, relays, status) verifies them against the CA."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.cluster.credentials import credentials_dir
from services.cluster.topology import ClusterSpec

VALID_DAYS = 30  # a simulator's cluster lives for hours; a short life limits a leaked key


def tls_dir(home: Path) -> Path:
    return credentials_dir(home) / "tls"


def ca_file(home: Path) -> Path:
    return tls_dir(home) / "ca.pem"


def dc_files(home: Path, dc: str) -> tuple[Path, Path]:
    """(certificate, private key) of a DC's servers."""
    return tls_dir(home) / f"{dc}.pem", tls_dir(home) / f"{dc}.key"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bank-sim"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes, private: bool) -> None:
    path.touch(mode=0o600 if private else 0o644)
    path.write_bytes(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_certificates(spec: ClusterSpec, home: Path) -> Path:
    """The CA and one certificate per DC; returns the CA file."""
    folder = tls_dir(home)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"bank-sim CA {spec.name}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    _write(ca_file(home), ca.public_bytes(serialization.Encoding.PEM), private=False)
    for dc in spec.dc_names:
        key = ec.generate_private_key(ec.SECP256R1())
        address = spec.address(dc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{dc} {address}"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = dc_files(home, dc)
        _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM), private=False)
        _write(key_path, _key_pem(key), private=True)
    return ca_file(home)
