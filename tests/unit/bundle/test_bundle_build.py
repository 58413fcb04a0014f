"""Bundle build, extraction, signing: determinism, exclusions, tamper and unsafe-member refusal."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from edgefn.bundle import (
    SigningKey,
    build_bundle,
    extract_bundle,
    key_id,
    load_or_create_signing_key,
    read_bundle_manifest,
    sha256_hex,
    verify_signature,
    version_id,
)
from edgefn.errors import BundleError, ManifestError

FILES = {
    "edgefn.toml": 'name = "hello"\n',
    "main.py": "from lib.util import x\nasync def fetch(request, env, ctx): ...\n",
    "lib/util.py": "x = 1\n",
    "lib/__init__.py": "",
    "static/a/b/c.txt": "deep\n",
}


def _write_fn(root: Path, order: list[str], mtime: int) -> Path:
    root.mkdir(parents=True)
    for name in order:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(FILES[name], encoding="utf-8")
        os.utime(target, (mtime, mtime))
    return root


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, content in members:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
    return gzip.compress(buf.getvalue(), mtime=0)


def _member(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    return info


GOOD = [(_member("edgefn.toml"), b'name = "x"\n'), (_member("main.py"), b"")]


def test_same_files_in_different_order_and_mtimes_give_same_bytes(tmp_path: Path) -> None:
    a = _write_fn(tmp_path / "a", list(FILES), mtime=1_000_000)
    b = _write_fn(tmp_path / "b", list(reversed(FILES)), mtime=2_000_000)
    (b / "main.py").chmod(0o600)
    first, second = build_bundle(a), build_bundle(b)
    assert first.data == second.data
    assert first.sha256 == second.sha256 == sha256_hex(first.data)
    assert first.version_id == version_id(first.sha256) == first.sha256[:12]
    assert build_bundle(a).data == first.data


def test_content_change_changes_hash(tmp_path: Path) -> None:
    fn = _write_fn(tmp_path / "a", list(FILES), mtime=0)
    before = build_bundle(fn).sha256
    (fn / "lib/util.py").write_text("x = 2\n", encoding="utf-8")
    assert build_bundle(fn).sha256 != before


def test_headers_are_normalised_and_junk_excluded(tmp_path: Path) -> None:
    fn = _write_fn(tmp_path / "a", list(FILES), mtime=12345)
    (fn / "run.sh").write_text("#!/bin/sh\n", encoding="utf-8")
    (fn / "run.sh").chmod(0o700)
    for junk in ["__pycache__/m.cpython-311.pyc", ".git/HEAD", ".venv/x.py", ".edgefn/key.pem",
                 "tests/test_main.py", "lib/stale.pyc", "lib/__pycache__/u.pyc"]:  # fmt: skip
        (fn / junk).parent.mkdir(parents=True, exist_ok=True)
        (fn / junk).write_text("junk", encoding="utf-8")
    (fn / "lib/tests").mkdir()
    (fn / "lib/tests/keep.py").write_text("", encoding="utf-8")
    bundle = build_bundle(fn)
    with tarfile.open(fileobj=io.BytesIO(bundle.data)) as tar:
        infos = tar.getmembers()
    names = [i.name for i in infos]
    assert names == sorted([*FILES, "run.sh", "lib/tests/keep.py"])
    for info in infos:
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        assert info.mode == (0o755 if info.name == "run.sh" else 0o644)
    assert bundle.data[4:8] == b"\0\0\0\0"  # gzip header mtime


def test_build_refuses_oversize_symlinks_and_bad_manifest(tmp_path: Path) -> None:
    fn = _write_fn(tmp_path / "a", list(FILES), mtime=0)
    (fn / "big.bin").write_bytes(b"x" * 2000)
    with pytest.raises(BundleError, match="exceeds 1000 bytes") as info:
        build_bundle(fn, max_bytes=1000)
    assert "data belongs in KV" in info.value.hint
    (fn / "big.bin").unlink()
    (fn / "link.py").symlink_to(fn / "main.py")
    with pytest.raises(BundleError, match="symbolic links cannot be bundled"):
        build_bundle(fn)
    (fn / "link.py").unlink()
    (fn / "edgefn.toml").write_text("name = 1\n", encoding="utf-8")
    with pytest.raises(ManifestError):
        build_bundle(fn)


def test_extract_round_trip_restores_files_and_modes(tmp_path: Path) -> None:
    fn = _write_fn(tmp_path / "a", list(FILES), mtime=0)
    (fn / "main.py").chmod(0o755)
    bundle = build_bundle(fn)
    dest = tmp_path / "out"
    manifest = extract_bundle(bundle.data, dest, expected_sha256=bundle.sha256)
    assert manifest.name == "hello"
    assert manifest.path == str(dest / "edgefn.toml")
    for name, text in FILES.items():
        assert (dest / name).read_text(encoding="utf-8") == text
    assert stat.S_IMODE((dest / "main.py").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "lib/util.py").stat().st_mode) == 0o644
    in_memory = read_bundle_manifest(bundle.data)
    assert in_memory == dataclasses.replace(
        manifest, path=f"bundle {bundle.version_id}/edgefn.toml"
    )


def test_tampered_bundle_is_refused_before_writing(tmp_path: Path) -> None:
    bundle = build_bundle(_write_fn(tmp_path / "a", list(FILES), mtime=0))
    tampered = bytearray(bundle.data)
    tampered[-12] ^= 0xFF
    dest = tmp_path / "out"
    with pytest.raises(BundleError, match="hash mismatch") as info:
        extract_bundle(bytes(tampered), dest, expected_sha256=bundle.sha256)
    assert "tampered" in info.value.hint
    assert not dest.exists()


@pytest.mark.parametrize(
    ("member", "needle"),
    [
        (_member("/etc/cron.d/x"), "path escapes"),
        (_member("../evil.py"), "path escapes"),
        (_member("lib/../../evil.py"), "path escapes"),
        (_member("link.py", tarfile.SYMTYPE), "link"),
        (_member("hard.py", tarfile.LNKTYPE), "link"),
        (_member("dev", tarfile.CHRTYPE), "special file"),
        (_member("fifo", tarfile.FIFOTYPE), "special file"),
    ],
)
def test_unsafe_members_are_refused_before_writing(
    tmp_path: Path, member: tarfile.TarInfo, needle: str
) -> None:
    data = _tar_gz([*GOOD, (member, b"")])
    dest = tmp_path / "out"
    with pytest.raises(BundleError, match="unsafe bundle member") as info:
        extract_bundle(data, dest, expected_sha256=sha256_hex(data))
    assert needle in info.value.message
    assert not dest.exists()
    with pytest.raises(BundleError, match="unsafe bundle member"):
        read_bundle_manifest(data)


def test_existing_symlink_in_dest_is_not_written_through(tmp_path: Path) -> None:
    data = _tar_gz([*GOOD, (_member("lib/x.py"), b"x")])
    dest = tmp_path / "out"
    dest.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (dest / "lib").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BundleError, match="symbolic link"):
        extract_bundle(data, dest, expected_sha256=sha256_hex(data))
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(b"not a tar" * 100, mtime=0), "not a valid tar"),
        (_tar_gz([(_member("main.py"), b"")]), "has no edgefn.toml"),
        (_tar_gz([(_member("edgefn.toml"), b'name = "x"\n')]), "main module 'main.py' missing"),
        (_tar_gz([(_member("edgefn.toml"), b"\xff"), (_member("main.py"), b"")]), "not UTF-8"),
        (gzip.compress(b"\0" * 200_000, mtime=0), "inflates to more than"),
        (_tar_gz(GOOD)[:-10], "truncated"),
        (_tar_gz(GOOD) + b"extra", "trailing bytes"),
    ],
)
def test_malformed_bundles_are_refused(data: bytes, needle: str) -> None:
    with pytest.raises(BundleError, match=needle):
        read_bundle_manifest(data, max_bytes=100_000)


def test_signature_round_trip_and_mismatch() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    sha = sha256_hex(b"bundle")
    sig = key.sign(sha)
    verify_signature(key.public_key_pem(), sha, sig)
    with pytest.raises(BundleError, match="signature mismatch") as info:
        verify_signature(key.public_key_pem(), sha256_hex(b"other"), sig)
    assert key.key_id() in info.value.message
    with pytest.raises(BundleError, match="signature mismatch"):
        verify_signature(other.public_key_pem(), sha, sig)
    with pytest.raises(BundleError, match="signature mismatch"):
        verify_signature(key.public_key_pem(), sha, "!!not base64!!")
    with pytest.raises(BundleError, match="not a valid PEM public key"):
        verify_signature("garbage", sha, sig)
    assert key_id(key.public_key_pem()) == key.key_id() != other.key_id()


def test_signing_key_file_is_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / ".edgefn" / "signing.pem"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_signing_key(path)
    assert again.public_key_pem() == key.public_key_pem()
    path.write_text("not a key", encoding="utf-8")
    with pytest.raises(BundleError, match="not a valid PEM private key") as info:
        load_or_create_signing_key(path)
    assert str(path) in str(info.value)


def test_non_ed25519_key_file_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "k.pem").write_bytes(pem)
    with pytest.raises(BundleError, match="not an Ed25519 key"):
        load_or_create_signing_key(tmp_path / "k.pem")
