"""Deterministic bundles: build, content-address, inspect and safely extract.

A bundle is a gzip-compressed tar of a function directory. Building the same files twice gives
the same bytes, whatever the file mtimes, owners or directory order, so the sha256 of the bytes is
a content address and its first 12 hex digits are the version id. How:

- entries are regular files only (directories are implied by paths), sorted by POSIX path;
- every header has mtime 0, uid/gid 0, empty uname/gname, mode 0755 if the owner could execute
  the file and 0644 otherwise; PAX format so long names stay exact;
- gzip is written with mtime 0 and no file name.

Excluded from the archive: ``__pycache__``, ``.git``, ``.venv``, ``.edgefn``, ``*.pyc`` and the
top-level ``tests/`` (tests are not deployed). A symlink in the source is refused rather than
followed, because following it could pull in files from outside the directory.

Extraction checks the sha256 first, then inflates with a hard size cap (a gzip bomb cannot fill
the disk), then validates every member (regular files only, relative, no ``..``) BEFORE writing
anything, so a refused bundle leaves ``dest`` untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from edgefn.bundle.manifest import MANIFEST_FILENAME, Manifest, load_manifest, parse_manifest
from edgefn.errors import BundleError

__all__ = [
    "DEFAULT_MAX_BUNDLE_BYTES",
    "EXCLUDED_NAMES",
    "MAX_BUNDLE_FILES",
    "Bundle",
    "build_bundle",
    "bundle_files",
    "extract_bundle",
    "read_bundle_manifest",
    "sha256_hex",
    "version_id",
]

DEFAULT_MAX_BUNDLE_BYTES: Final = 10 * 1024 * 1024
MAX_BUNDLE_FILES: Final = 10_000
EXCLUDED_NAMES: Final = frozenset({"__pycache__", ".git", ".venv", ".edgefn"})
_VERSION_ID_LEN: Final = 12
_MAX_NAME_BYTES: Final = 255  # one path component (NAME_MAX on Linux)
_MAX_PATH_CHARS: Final = 1024


@dataclass(frozen=True, slots=True)
class Bundle:
    """Archive bytes, their sha256 (hex) and the manifest inside."""

    data: bytes
    sha256: str
    manifest: Manifest

    @property
    def version_id(self) -> str:
        return version_id(self.sha256)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def version_id(sha256: str) -> str:
    """The short version id of a bundle: the first 12 hex digits of its sha256."""
    assert len(sha256) >= _VERSION_ID_LEN, sha256
    return sha256[:_VERSION_ID_LEN]


def _excluded(rel: PurePosixPath) -> bool:
    if any(part in EXCLUDED_NAMES for part in rel.parts):
        return True
    return rel.suffix == ".pyc" or rel.parts[0] == "tests"


def bundle_files(directory: Path) -> list[tuple[str, Path]]:
    """The (archive name, source path) pairs a bundle of ``directory`` holds, sorted by name."""
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(directory):
        base = Path(root)
        for name in sorted(dirs + files):
            full = base / name
            rel = PurePosixPath(full.relative_to(directory).as_posix())
            if _excluded(rel):
                continue
            if full.is_symlink():
                raise BundleError(
                    f"{full}: symbolic links cannot be bundled",
                    hint="replace the link with a copy of the file, or delete it",
                )
            if full.is_file():
                found.append((rel.as_posix(), full))
        # Prune excluded directories so os.walk does not descend into .venv and friends.
        dirs[:] = [
            d for d in dirs if not _excluded(PurePosixPath((base / d).relative_to(directory)))
        ]
        if len(found) > MAX_BUNDLE_FILES:
            raise BundleError(
                f"{directory}: more than {MAX_BUNDLE_FILES} files to bundle",
                hint="remove generated files or move data out of the function directory",
            )
    return sorted(found)


def _tar_info(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def build_bundle(directory: Path, *, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> Bundle:
    """Validate the manifest in ``directory`` and archive the directory deterministically."""
    manifest = load_manifest(directory)
    files = bundle_files(directory)
    total = 0
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, source in files:
            content = source.read_bytes()
            total += len(content)
            if total > max_bytes:
                raise BundleError(
                    f"{directory}: bundle exceeds {max_bytes} bytes (at {name})",
                    hint="remove large files from the function directory; data belongs in KV",
                )
            executable = bool(source.stat().st_mode & stat.S_IXUSR)
            tar.addfile(_tar_info(name, len(content), executable), io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(tar_buf.getvalue())
    data = out.getvalue()
    return Bundle(data=data, sha256=sha256_hex(data), manifest=manifest)


def _inflate(data: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        raw = inflater.decompress(data, max_bytes + 1)
    except zlib.error as err:
        raise BundleError(f"bundle is not valid gzip: {err}", hint="rebuild the bundle") from None
    if len(raw) > max_bytes or inflater.unconsumed_tail:
        raise BundleError(
            f"bundle inflates to more than {max_bytes} bytes", hint="the bundle is too large"
        )
    if not inflater.eof or inflater.unused_data:
        raise BundleError(
            "bundle is truncated or has trailing bytes", hint="upload or fetch it again"
        )
    return raw


def _members(data: bytes, max_bytes: int) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    # Tar headers and end-of-archive padding count too, hence the +64 KiB allowance.
    raw = _inflate(data, max_bytes + 64 * 1024)
    out: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar.getmembers():
                _check_member(info)
                if len(out) >= MAX_BUNDLE_FILES:
                    raise BundleError(f"bundle has more than {MAX_BUNDLE_FILES} members")
                if info.isdir():
                    continue
                name = PurePosixPath(info.name).as_posix()
                if name in out:
                    raise BundleError(
                        f"duplicate bundle member {name!r}",
                        hint="a bundle names each file once; rebuild it with `edgefn deploy`",
                    )
                extracted = tar.extractfile(info)
                assert extracted is not None
                out[name] = (info, extracted.read())
    except tarfile.TarError as err:
        raise BundleError(f"bundle is not a valid tar archive: {err}", hint="rebuild it") from None
    _check_file_dir_conflicts(out)
    return out


def _check_file_dir_conflicts(members: dict[str, tuple[tarfile.TarInfo, bytes]]) -> None:
    # "lib" and "lib/util.py" cannot both be files; found before writing, not by an OSError.
    for name in members:
        for parent in PurePosixPath(name).parents:
            if parent.as_posix() in members:
                raise BundleError(
                    f"bundle member {parent.as_posix()!r} is both a file and a directory "
                    f"(it also holds {name!r})",
                    hint="rebuild the bundle with `edgefn deploy`",
                )


def _check_member(info: tarfile.TarInfo) -> None:
    name = info.name
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise BundleError(
            f"unsafe bundle member {name!r}: path escapes the bundle",
            hint="refusing to extract; rebuild the bundle with `edgefn deploy`",
        )
    too_long = len(name) > _MAX_PATH_CHARS or any(
        len(part.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES for part in pure.parts
    )
    if not pure.parts or too_long:
        raise BundleError(
            f"unsafe bundle member {name[:80]!r}: empty name, a part over {_MAX_NAME_BYTES} "
            f"bytes or a path over {_MAX_PATH_CHARS} characters",
            hint="shorten the file names; rebuild the bundle with `edgefn deploy`",
        )
    if not (info.isreg() or info.isdir()):
        kind = "link" if info.issym() or info.islnk() else "special file"
        raise BundleError(
            f"unsafe bundle member {name!r}: {kind}",
            hint="bundles may only hold regular files; rebuild the bundle with `edgefn deploy`",
        )


def _manifest_of(members: dict[str, tuple[tarfile.TarInfo, bytes]], where: str) -> Manifest:
    entry = members.get(MANIFEST_FILENAME)
    if entry is None:
        raise BundleError(f"{where}: bundle has no {MANIFEST_FILENAME}", hint="rebuild it")
    try:
        text = entry[1].decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{where}: {MANIFEST_FILENAME} is not UTF-8") from None
    manifest = parse_manifest(text, path=f"{where}/{MANIFEST_FILENAME}")
    if manifest.main not in members:
        raise BundleError(f"{where}: main module {manifest.main!r} missing from bundle")
    return manifest


def _refuse_symlinked_target(dest: Path, name: str) -> None:
    # A symlink already inside dest would redirect a write outside it.
    target = dest
    for part in PurePosixPath(name).parts:
        target = target / part
        if target.is_symlink():
            raise BundleError(
                f"{target}: refusing to write through a symbolic link",
                hint=f"extract into an empty directory instead of {dest}",
            )


def read_bundle_manifest(data: bytes, *, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> Manifest:
    """Validate the archive and return its manifest, without writing anything."""
    return _manifest_of(_members(data, max_bytes), f"bundle {version_id(sha256_hex(data))}")


def extract_bundle(
    data: bytes,
    dest: Path,
    *,
    expected_sha256: str,
    max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
) -> Manifest:
    """Check ``data`` against ``expected_sha256``, validate it, then write it under ``dest``."""
    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise BundleError(
            f"bundle hash mismatch: expected {expected_sha256}, got {actual}",
            hint="the bundle was corrupted or tampered with in transit; fetch it again",
        )
    members = _members(data, max_bytes)
    where = f"bundle {version_id(actual)}"
    _manifest_of(members, where)
    for name in members:
        _refuse_symlinked_target(dest, name)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name, (info, content) in members.items():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(0o755 if info.mode & stat.S_IXUSR else 0o644)
    except OSError as err:
        raise BundleError(
            f"{where}: cannot write to {dest}: {err}", hint="check free space and permissions"
        ) from None
    return load_manifest(dest)
