"""Fuzz extract_bundle: hostile archives give a clear edgefn error and write nothing outside dest.

Checked from outside: after every example the whole scratch directory is walked; a file or link
anywhere but under ``dest`` (for instance the ``marker`` a traversal aims at) fails the test.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.bundle import extract_bundle, sha256_hex
from edgefn.errors import BundleError, EdgefnError

MANIFEST = b'name = "fz"\n'
MAIN = b"async def fetch(request, env, ctx):\n    return None\n"
NAMES = [
    "edgefn.toml", "main.py", "lib/util.py", "lib", "lib/util.py/x", "../marker", "../../marker",
    "/tmp/marker", "a/../../marker", ".", "./main.py", "a//b", "a\\..\\marker", "", "x" * 300,
    "main.py/", "lib/",
]  # fmt: skip
TYPES = [
    tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
    tarfile.BLKTYPE, tarfile.FIFOTYPE,
]  # fmt: skip


def _gz(raw: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw)
    return out.getvalue()


def _tar(members: list[tuple[str, bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.linkname = "../../marker" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                tar.addfile(info)
    return buf.getvalue()


def _valid() -> list[tuple[str, bytes, bytes]]:
    return [("edgefn.toml", tarfile.REGTYPE, MANIFEST), ("main.py", tarfile.REGTYPE, MAIN)]


def _extract(data: bytes) -> None:
    """Extract into scratch/dest; assert a clear error or success, and nothing outside dest."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        dest = root / "a" / "b" / "dest"
        error: EdgefnError | None = None
        try:
            extract_bundle(data, dest, expected_sha256=sha256_hex(data), max_bytes=256 * 1024)
        except EdgefnError as caught:
            error = caught
        assert error is None or error.message
        for path, dirs, files in os.walk(root):
            for name in dirs + files:
                full = Path(path) / name
                inside = full == dest or dest in full.parents
                assert inside or full in (root / "a", root / "a" / "b"), f"wrote {full}"
                assert not full.is_symlink(), f"extracted a link {full}"
                assert not (full.exists() and not (full.is_file() or full.is_dir())), full
        assert not (root / "marker").exists()
        assert not (root / "a" / "marker").exists()


@settings(max_examples=150)
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    _extract(data)


@settings(max_examples=150)
@given(st.data())
def test_truncated_and_garbled_gzip(data: st.DataObject) -> None:
    good = _gz(_tar(_valid()))
    cut = data.draw(st.integers(0, len(good)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)), max_size=4)
    )
    mutated = bytearray(good[:cut] if data.draw(st.booleans()) else good)
    for pos, xor in flips:
        if pos < len(mutated):
            mutated[pos] ^= xor
    _extract(bytes(mutated) + data.draw(st.binary(max_size=8)))


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.sampled_from(NAMES), st.sampled_from(TYPES), st.binary(max_size=64)),
        max_size=6,
    ),
    st.booleans(),
)
def test_hostile_tar_members(extra: list[tuple[str, bytes, bytes]], valid_first: bool) -> None:
    members = _valid() + extra if valid_first else extra + _valid()
    _extract(_gz(_tar(members)))


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ([("main.py", tarfile.REGTYPE, b"x")], "duplicate"),
        ([("lib", tarfile.REGTYPE, b"x"), ("lib/util.py", tarfile.REGTYPE, b"y")], "both a file"),
        ([("lib/util.py", tarfile.REGTYPE, b"x"), ("lib", tarfile.REGTYPE, b"y")], "both a file"),
        ([(".", tarfile.REGTYPE, b"x")], "unsafe bundle member"),
        ([("../marker", tarfile.REGTYPE, b"x")], "escapes"),
        ([("evil", tarfile.SYMTYPE, b"")], "link"),
        ([("dev", tarfile.CHRTYPE, b"")], "special file"),
    ],
)
def test_regressions_give_clear_bundle_errors(
    members: list[tuple[str, bytes, bytes]], needle: str
) -> None:
    data = _gz(_tar(_valid() + members))
    with tempfile.TemporaryDirectory() as scratch, pytest.raises(BundleError) as info:
        extract_bundle(data, Path(scratch) / "dest", expected_sha256=sha256_hex(data))
    assert needle in str(info.value)


def test_too_many_members_is_refused_before_writing(tmp_path: Path) -> None:
    members = _valid() + [(f"f{i}", tarfile.REGTYPE, b"") for i in range(10_001)]
    data = _gz(_tar(members))
    with pytest.raises(BundleError, match="more than 10000 members"):
        extract_bundle(data, tmp_path / "dest", expected_sha256=sha256_hex(data))
    assert not (tmp_path / "dest").exists()


def test_gzip_bomb_is_refused(tmp_path: Path) -> None:
    data = _gz(_tar([*_valid(), ("big", tarfile.REGTYPE, bytes(2 * 1024 * 1024))]))
    with pytest.raises(BundleError, match="inflates to more than"):
        extract_bundle(
            data, tmp_path / "dest", expected_sha256=sha256_hex(data), max_bytes=1024 * 1024
        )
    assert not (tmp_path / "dest").exists()
