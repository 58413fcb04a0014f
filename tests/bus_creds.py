"""Test helper: the creds directory `edgefn up` writes (users, passwords, CA, certs, core key)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgefn.bundle import load_or_create_signing_key
from edgefn.bus.credentials import write_planet_credentials
from edgefn.bus.nats_config import TlsFiles
from edgefn.bus.tls import write_planet_tls


@dataclass(frozen=True)
class BusFiles:
    dir: Path
    files: dict[str, Path]
    tls: dict[str, TlsFiles]
    core_key: Path
    core_pub: Path

    def __getitem__(self, name: str) -> Path:
        return self.files[name]

    def tls_args(self, name: str) -> list[str]:
        if name not in self.tls:
            return []
        t = self.tls[name]
        return [
            "--tls-cert",
            str(t.cert_file),
            "--tls-key",
            str(t.key_file),
            "--tls-ca",
            str(t.ca_file),
        ]


def bus_files(
    root: Path, *, regions: list[str], locations: list[tuple[str, str]], tls: bool = True
) -> BusFiles:
    creds = root / "creds"
    server_tls = write_planet_tls(creds, regions=regions) if tls else {}
    files = write_planet_credentials(
        creds, regions=regions, locations=locations, ca_file=creds / "ca.pem" if tls else None
    )
    key = load_or_create_signing_key(creds / "core-key.pem")
    pub = root / "core-key.pub"
    pub.write_text(key.public_key_pem())
    return BusFiles(creds, files, server_tls, creds / "core-key.pem", pub)
