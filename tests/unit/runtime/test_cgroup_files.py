"""What the pool reads from a worker's cgroup files (a directory shaped like cgroup v1's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefn.runtime import _cgroup


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(_cgroup, "ROOT", tmp_path)
    (tmp_path / "memory" / "w1").mkdir(parents=True)
    return tmp_path


def _write(root: Path, failcnt: int, oom_control: str) -> None:
    (root / "memory" / "w1" / "memory.failcnt").write_text(f"{failcnt}\n")
    (root / "memory" / "w1" / "memory.oom_control").write_text(oom_control)


def test_limit_hit_is_the_failcnt(root: Path) -> None:
    _write(root, 0, "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert not _cgroup.memory_limit_hit("w1")
    assert not _cgroup.oom_killed("w1")
    _write(root, 17, "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert _cgroup.memory_limit_hit("w1")
    assert not _cgroup.oom_killed("w1")
    _write(root, 17, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert _cgroup.oom_killed("w1")


def test_a_missing_or_garbled_group_is_not_a_hit(root: Path) -> None:
    assert not _cgroup.memory_limit_hit("gone")
    (root / "memory" / "w1" / "memory.failcnt").write_text("not a number")
    assert not _cgroup.memory_limit_hit("w1")


def test_a_group_removed_by_another_sweep_meanwhile_is_not_an_error(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes start concurrently and each sweeps orphans: a directory may vanish mid-walk."""
    (root / "memory" / "edgefn" / "999999999-1" / "w").mkdir(parents=True)

    def vanished(self: Path, pattern: str) -> list[Path]:
        raise FileNotFoundError(2, "No such file or directory", str(self))

    monkeypatch.setattr(Path, "rglob", vanished)
    _cgroup.sweep_orphans()  # no exception


def test_removing_a_group_that_is_gone_or_never_made_is_done(root: Path) -> None:
    """A group already removed (or a spawn's never created) counts as removed: the pool's stop
    waited its whole 5 s deadline for such a group before, in every node teardown that had one."""
    assert _cgroup.remove("never-made")
    assert _cgroup.remove("w1")  # an empty group: removed
    assert not (root / "memory" / "w1").exists()
    busy = root / "memory" / "busy"
    (busy / "child").mkdir(parents=True)  # rmdir fails (not empty), as a cgroup with a task does
    assert not _cgroup.remove("busy")
