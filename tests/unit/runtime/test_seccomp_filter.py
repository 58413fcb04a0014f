"""The seccomp allowlist's verdicts, read from the real BPF bytes by a small interpreter."""

from __future__ import annotations

import pytest

from edgefn.runtime import _seccomp as s

OWN_PID = 1  # a worker is pid 1 in its pid namespace
PROG = s.build_filter(OWN_PID)
NR = s.SYSCALLS
ALLOW, EPERM, ENOSYS, KILL = s.RET_ALLOW, s.RET_EPERM, s.RET_ENOSYS, s.RET_KILL_PROCESS
CLONE_THREAD_FLAGS = 0x3D0F00  # what glibc passes for pthread_create
FORK_FLAGS = 0x01200011  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD


@pytest.mark.parametrize(
    ("name", "args", "verdict"),
    [
        ("read", (), ALLOW),
        ("epoll_wait", (), ALLOW),
        ("mmap", (), ALLOW),
        ("futex", (), ALLOW),
        ("clone", (CLONE_THREAD_FLAGS,), ALLOW),
        ("clone", (FORK_FLAGS,), EPERM),
        ("clone3", (), ENOSYS),
        ("socket", (1, 1, 0), ALLOW),  # AF_UNIX
        ("socket", (2, 1, 0), EPERM),  # AF_INET
        ("socket", (10, 1, 0), EPERM),  # AF_INET6
        ("socket", (16, 3, 0), EPERM),  # AF_NETLINK
        ("socket", (1 | (1 << 32), 1, 0), EPERM),  # high bits set: not AF_UNIX to this filter
        ("socketpair", (1, 1, 0), ALLOW),
        ("socketpair", (2, 1, 0), EPERM),
        ("kill", (OWN_PID, 9), ALLOW),
        ("kill", (1234, 9), EPERM),
        ("kill", (0, 9), EPERM),
        ("kill", (-1, 9), EPERM),
        ("tgkill", (OWN_PID, 5, 10), ALLOW),
        ("tgkill", (77, 77, 9), EPERM),
        ("tkill", (77, 9), EPERM),
        ("prlimit64", (0, 7, 0, 0), ALLOW),
        ("prlimit64", (1234, 7, 0, 0), EPERM),
        ("prctl", (15,), ALLOW),  # PR_SET_NAME
        ("prctl", (4, 1), EPERM),  # PR_SET_DUMPABLE
        ("prctl", (22, 2), EPERM),  # PR_SET_SECCOMP: no second filter juggling
        *((name, (), EPERM) for name in s.DENIED),
    ],
)
def test_x86_64_verdicts(name: str, args: tuple[int, ...], verdict: int) -> None:
    assert s.evaluate(PROG, NR[name], args=args) == verdict


def test_unknown_and_unlisted_calls_are_denied() -> None:
    assert s.evaluate(PROG, 1000) == EPERM
    assert s.evaluate(PROG, NR["setpriority"], args=(0, 0, -20)) == EPERM


@pytest.mark.parametrize("nr", [1, 2, 11, 37, 120, 190, 425])  # i386: exit, fork, execve, kill, ...
def test_any_i386_call_kills_the_process(nr: int) -> None:
    assert s.evaluate(PROG, nr, arch=s.AUDIT_ARCH_I386) == KILL


@pytest.mark.parametrize("nr", [0, 41, 56, 59])
def test_x32_calls_kill_the_process(nr: int) -> None:
    assert s.evaluate(PROG, nr | s.X32_SYSCALL_BIT) == KILL


def test_allowed_and_denied_lists_do_not_overlap_and_are_all_numbered() -> None:
    assert not set(s.ALLOWED) & set(s.DENIED)
    assert all(name in NR for name in (*s.ALLOWED, *s.DENIED))
    assert len(PROG) % 8 == 0
    assert len(PROG) // 8 < 4096  # BPF_MAXINSNS


def test_every_number_gets_the_verdict_of_its_list() -> None:
    """Exhaustive over 0..511: the tree says ALLOW exactly for ALLOWED (argument-free calls)."""
    allowed = {NR[name] for name in s.ALLOWED}
    checked = {
        NR[n] for n in ("clone", "clone3", "socket", "socketpair", "prctl", "kill", "tgkill")
    }
    checked.add(NR["prlimit64"])
    for nr in range(512):
        if nr in checked:
            continue
        expected = ALLOW if nr in allowed else EPERM
        assert s.evaluate(PROG, nr, args=(12345, 0, 0)) == expected, nr


def test_the_zygote_pre_filter_answers_io_uring_enosys_and_allows_the_rest() -> None:
    """libuv must see io_uring as absent before any loop starts (it aborted on EPERM later)."""
    prog = s.build_io_uring_block()
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert s.evaluate(prog, s.SYSCALLS[name]) == s.RET_ENOSYS
    for name in ("read", "epoll_ctl", "clone", "mount"):
        assert s.evaluate(prog, s.SYSCALLS[name]) == s.RET_ALLOW
