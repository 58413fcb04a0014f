"""The planet's TLS material: a CA and one certificate per NATS server role, made with ``cryptography``.

``edgefn up`` calls :func:`write_planet_tls` once per state directory: ``<creds>/ca.pem`` (the planet
CA, EC P-256, valid ten years; its key ``ca.key`` stays next to it so more certificates can be
issued), and ``<name>.pem``/``<name>.key`` for ``core`` and each ``hub-<region>``, valid for
``127.0.0.1``, ``localhost`` and any extra hostnames or IP addresses given. Keys are written 0600.
Existing files are kept (a restarted planet keeps its CA, and the certificates that the creds files
point at stay valid). Clients only need ``ca.pem``; they verify the server's name or IP against the
certificate's SANs, so a server reached through a link emulator on 127.0.0.1 verifies as well.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefn.bus.nats_config import TlsFiles

__all__ = ["issue_server_cert", "write_planet_ca", "write_planet_tls"]

_VALID = datetime.timedelta(days=3650)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefn planet"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def write_planet_ca(creds_dir: Path) -> tuple[Path, Path]:
    """Create (or keep) the planet CA; return ``(ca.pem, ca.key)``."""
    creds_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = creds_dir / "ca.pem", creds_dir / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("edgefn planet CA"))
        .issuer_name(_name("edgefn planet CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["127.0.0.1", "localhost", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue_server_cert(creds_dir: Path, name: str, hosts: Iterable[str] = ()) -> TlsFiles:
    """Issue (or keep) ``<name>.pem``/``<name>.key`` signed by the planet CA."""
    ca_path, ca_key_path = write_planet_ca(creds_dir)
    cert_path, key_path = creds_dir / f"{name}.pem", creds_dir / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        return TlsFiles(cert_path, key_path, ca_path)
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(cert_path, key_path, ca_path)


def write_planet_tls(
    creds_dir: Path, *, regions: Iterable[str], hosts: Iterable[str] = ()
) -> dict[str, TlsFiles]:
    """The CA plus a certificate for ``core`` and each ``hub-<region>``; ``name -> files``."""
    extra = tuple(hosts)
    names = ["core", *(f"hub-{r}" for r in regions)]
    return {name: issue_server_cert(creds_dir, name, extra) for name in names}
