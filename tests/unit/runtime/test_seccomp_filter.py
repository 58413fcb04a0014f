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


def _action_rank(ret: int) -> int:
    # The kernel's precedence between stacked filters: KILL_PROCESS > KILL_THREAD > TRAP >
    # ERRNO > USER_NOTIF > TRACE > LOG > ALLOW; ties take the most recently installed filter's.
    action = ret & 0xFFFF0000
    order = [0x80000000, 0x00000000, 0x00030000, 0x00050000, 0x7FC00000, 0x7FF00000,
             0x7FFC0000, 0x7FFF0000]  # fmt: skip
    return order.index(action)


def _stacked(first: bytes, then: bytes, nr: int, **kw: object) -> int:
    a, b = s.evaluate(first, nr, **kw), s.evaluate(then, nr, **kw)  # type: ignore[arg-type]
    return b if _action_rank(b) <= _action_rank(a) else a


def test_the_staged_filter_and_its_lock_decide_every_call_as_the_full_filter() -> None:
    """Pre-fork stage + Load lock == the single full filter, for every number and the argument
    checks (prctl options, kill/tgkill pids, socket families, clone flags, prlimit64 pids)."""
    pid = 1
    full = s.build_filter(pid)
    stage, lock = s.build_filter(pid, loader=True), s.build_loader_lock()
    arg_cases = [(), (0,), (1,), (2,), (4,), (15,), (16,), (22,), (38,), (1 << 32 | 15,),
                 (0x10000,), (1 << 40,), (pid,), (pid + 1,)]  # fmt: skip
    for nr in [*range(0, 460), *(s.X32_SYSCALL_BIT + n for n in (0, 1, 157))]:
        for args in arg_cases:
            assert _stacked(stage, lock, nr, args=args) == s.evaluate(full, nr, args=args), (
                nr,
                args,
            )
    for nr in (0, 157, 165):
        kw: dict[str, object] = {"arch": 0x40000003, "args": ()}  # i386
        assert _stacked(stage, lock, nr, **kw) == s.evaluate(full, nr, **kw)  # type: ignore[arg-type]


def test_the_stage_alone_allows_only_what_load_needs_more() -> None:
    stage = s.build_filter(1, loader=True)
    for name in s.LOADER_ONLY:
        assert s.evaluate(stage, s.SYSCALLS[name]) == s.RET_ALLOW, name
    for option in (4, 22, 38):  # dumpable, seccomp, no_new_privs
        assert s.evaluate(stage, s.SYSCALLS["prctl"], args=(option,)) == s.RET_ALLOW
    for name in ("ptrace", "execve", "unshare", "umount2", "pivot_root", "bpf"):
        assert s.evaluate(stage, s.SYSCALLS[name]) == s.RET_EPERM, name
    assert s.evaluate(stage, s.SYSCALLS["prctl"], args=(8,)) == s.RET_EPERM  # PR_SET_KEEPCAPS
