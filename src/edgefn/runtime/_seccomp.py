"""A default-deny seccomp-BPF allowlist for sandbox workers (Linux x86_64), installed with ctypes.

The filter is installed in each worker when it is specialised (``Load``), after the worker's namespaces,
mounts and Landlock ruleset are in place and its privileges are dropped, and before the user's module
is imported. It cannot be removed (``PR_SET_NO_NEW_PRIVS``). The program, in order:

1. any system call made through a foreign ABI (``arch != AUDIT_ARCH_X86_64``: the i386 ``int 0x80``
   entry) or with the x32 bit (``nr >= 0x40000000``) kills the whole process
   (``SECCOMP_RET_KILL_PROCESS``): those tables have different numbers, so an x86_64 allowlist says
   nothing about them;
2. calls with argument checks: ``clone`` only with ``CLONE_THREAD`` (threads, not processes),
   ``clone3`` answers ``ENOSYS`` so libc falls back to ``clone`` whose flags can be inspected,
   ``socket``/``socketpair`` only ``AF_UNIX``, ``kill``/``tgkill`` only to the worker itself,
   ``prlimit64`` only on itself (pid 0), ``prctl`` only ``PR_SET_NAME``/``PR_GET_NAME``;
3. the plain allowlist :data:`ALLOWED` (what CPython, asyncio/uvloop, msgspec and numpy were seen to
   call under ``strace -f`` running the test functions, see docs/design/0011-sandbox-isolation.md),
   as a binary search tree over the numbers;
4. everything else answers ``EPERM``.

:func:`evaluate` runs a program on one (nr, arch, args) tuple, so that tests check the verdict table
of the real bytes instead of trusting this docstring.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Sequence

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000
RET_KILL_PROCESS = 0x80000000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_EPERM = RET_ERRNO | errno.EPERM
RET_ENOSYS = RET_ERRNO | errno.ENOSYS
_CLONE_THREAD = 0x00010000
_AF_UNIX = 1

# Classic BPF opcodes used here.
_LD_W_ABS = 0x20
_JA = 0x05
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_OFF_NR = 0
_OFF_ARCH = 4

# x86_64 system call numbers of everything the filter names (allowed or checked).
SYSCALLS: dict[str, int] = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7,
    "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13,
    "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16, "pread64": 17, "pwrite64": 18,
    "readv": 19, "writev": 20, "access": 21, "pipe": 22, "select": 23, "sched_yield": 24,
    "mremap": 25, "msync": 26, "mincore": 27, "madvise": 28, "dup": 32, "dup2": 33, "pause": 34,
    "nanosleep": 35, "getitimer": 36, "alarm": 37, "setitimer": 38, "getpid": 39, "sendfile": 40,
    "socket": 41, "connect": 42, "accept": 43, "sendto": 44, "recvfrom": 45, "sendmsg": 46,
    "recvmsg": 47, "shutdown": 48, "bind": 49, "listen": 50, "getsockname": 51, "getpeername": 52,
    "socketpair": 53, "setsockopt": 54, "getsockopt": 55, "clone": 56, "fork": 57, "vfork": 58,
    "execve": 59, "exit": 60, "wait4": 61, "kill": 62, "uname": 63, "fcntl": 72, "flock": 73,
    "fsync": 74, "fdatasync": 75, "truncate": 76, "ftruncate": 77, "getdents": 78, "getcwd": 79,
    "chdir": 80, "fchdir": 81, "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86,
    "unlink": 87, "symlink": 88, "readlink": 89, "chmod": 90, "fchmod": 91, "umask": 95,
    "gettimeofday": 96, "getrlimit": 97, "getrusage": 98, "sysinfo": 99, "times": 100,
    "ptrace": 101, "getuid": 102, "getgid": 104, "geteuid": 107, "getegid": 108, "getppid": 110,
    "getpgrp": 111, "getgroups": 115, "getresuid": 118, "getresgid": 120, "getpgid": 121,
    "getsid": 124, "rt_sigpending": 127, "rt_sigtimedwait": 128, "rt_sigqueueinfo": 129,
    "rt_sigsuspend": 130, "sigaltstack": 131, "statfs": 137, "fstatfs": 138, "getpriority": 140,
    "setpriority": 141, "sched_getparam": 143, "sched_getscheduler": 145,
    "sched_get_priority_max": 146, "sched_get_priority_min": 147, "pivot_root": 155, "prctl": 157,
    "chroot": 161, "mount": 165, "umount2": 166, "reboot": 169, "init_module": 175,
    "delete_module": 176, "gettid": 186, "tkill": 200, "futex": 202, "sched_getaffinity": 204,
    "getdents64": 217, "set_tid_address": 218, "restart_syscall": 219, "fadvise64": 221,
    "timer_create": 222, "timer_settime": 223, "timer_gettime": 224, "timer_getoverrun": 225,
    "timer_delete": 226, "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230,
    "exit_group": 231, "epoll_wait": 232, "epoll_ctl": 233, "tgkill": 234, "utimes": 235,
    "kexec_load": 246, "waitid": 247, "add_key": 248, "request_key": 249, "keyctl": 250,
    "openat": 257, "mkdirat": 258, "newfstatat": 262, "unlinkat": 263, "renameat": 264,
    "readlinkat": 267, "fchmodat": 268, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "unshare": 272, "set_robust_list": 273, "utimensat": 280, "epoll_pwait": 281,
    "timerfd_create": 283, "eventfd": 284, "fallocate": 285, "timerfd_settime": 286,
    "timerfd_gettime": 287, "accept4": 288, "eventfd2": 290, "epoll_create1": 291, "dup3": 292,
    "pipe2": 293, "preadv": 295, "pwritev": 296, "rt_tgsigqueueinfo": 297, "perf_event_open": 298,
    "prlimit64": 302, "setns": 308, "getcpu": 309, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "renameat2": 316, "getrandom": 318,
    "memfd_create": 319, "kexec_file_load": 320, "bpf": 321, "execveat": 322,
    "userfaultfd": 323, "membarrier": 324, "copy_file_range": 326, "preadv2": 327,
    "pwritev2": 328, "statx": 332, "rseq": 334, "pidfd_send_signal": 424, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434,
    "clone3": 435, "close_range": 436, "openat2": 437, "pidfd_getfd": 438, "faccessat2": 439,
    "epoll_pwait2": 441,
    # Only what Load itself calls between the pre-fork stage and the Load lock (LOADER_ONLY).
    "setgroups": 116, "setresuid": 117, "setresgid": 119, "seccomp": 317,
    "landlock_add_rule": 445, "landlock_restrict_self": 446,
}  # fmt: skip

# Allowed without argument checks, most frequent first (the program is a linear scan).
ALLOWED: tuple[str, ...] = (
    "epoll_wait", "epoll_pwait", "read", "write", "recvfrom", "sendto", "recvmsg", "sendmsg",
    "futex", "mmap", "munmap", "brk", "mremap", "madvise", "mprotect", "clock_gettime",
    "clock_nanosleep", "nanosleep", "getpid", "gettid", "epoll_ctl", "close", "fstat", "newfstatat",
    "statx", "stat", "lstat", "openat", "open", "lseek", "getdents64", "getdents", "ioctl", "fcntl",
    "readlink", "readlinkat", "access", "faccessat", "faccessat2", "getcwd", "pread64", "pwrite64",
    "readv", "writev", "preadv", "pwritev", "preadv2", "pwritev2", "poll", "ppoll", "select",
    "pselect6", "epoll_pwait2", "epoll_create1", "eventfd", "eventfd2", "pipe", "pipe2", "dup",
    "dup2", "dup3", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigsuspend", "sigaltstack", "restart_syscall", "sched_yield",
    "sched_getaffinity", "sched_getparam", "sched_getscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "getcpu", "getrandom", "uname", "sysinfo", "getrlimit", "getrusage",
    "times", "getuid", "getgid", "geteuid", "getegid", "getppid", "getpgrp", "getpgid", "getsid",
    "getgroups", "getresuid", "getresgid", "getpriority", "set_robust_list", "set_tid_address",
    "rseq", "membarrier", "exit", "exit_group", "wait4", "waitid", "mincore", "msync",
    "getitimer", "setitimer", "alarm", "pause", "gettimeofday", "timer_create", "timer_settime",
    "timer_gettime", "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime",
    "timerfd_gettime", "clock_getres", "connect", "accept", "accept4", "bind", "listen",
    "shutdown", "getsockname", "getpeername", "setsockopt", "getsockopt", "sendfile",
    "copy_file_range", "fsync", "fdatasync", "flock", "truncate", "ftruncate", "fallocate",
    "fadvise64", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename",
    "renameat", "renameat2", "link", "symlink", "creat", "chmod", "fchmod", "fchmodat", "umask",
    "utimes", "utimensat", "statfs", "fstatfs", "memfd_create", "close_range",
    "openat2",
)  # fmt: skip

# Denied on purpose (documentation and tests; anything not allowed is denied anyway).
DENIED: tuple[str, ...] = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "process_vm_readv", "process_vm_writev", "ptrace", "perf_event_open",
    "bpf", "keyctl", "add_key", "request_key", "userfaultfd", "mount", "umount2", "pivot_root",
    "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "unshare",
    "setns", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "setpriority", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "fork", "vfork", "execve",
    "execveat", "reboot", "tkill",
)  # fmt: skip

_PR_SET_NAME = 15
_PR_GET_NAME = 16
_PR_SET_DUMPABLE = 4
_PR_SET_SECCOMP_OPT = 22
_PR_SET_NO_NEW_PRIVS_OPT = 38

# The cold path installs the filter in two stacked parts (the kernel answers with the most
# restrictive of all filters): at pre-fork, off the cold path, the full allowlist plus what Load
# still has to do (mounts, Landlock, the uid drop, no_new_privs, not-dumpable, seccomp itself);
# at Load, once those are done, a few-instruction lock that refuses exactly those again. Together
# they decide every call as the single full filter does (tests/unit/runtime/test_seccomp_filter
# checks it call by call); the 570-instruction filter's install (~0.5 ms) leaves the cold path.
LOADER_ONLY: tuple[str, ...] = (
    "mount", "setgroups", "setresuid", "setresgid", "seccomp", "landlock_add_rule",
    "landlock_restrict_self",
)  # fmt: skip
_LOADER_PRCTL = (_PR_SET_DUMPABLE, _PR_SET_SECCOMP_OPT, _PR_SET_NO_NEW_PRIVS_OPT)


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _arg_lo(n: int) -> int:
    return 16 + 8 * n


def _arg_hi(n: int) -> int:
    return 16 + 8 * n + 4


def _only_if_arg_equals(name: str, arg: int, values: Sequence[int]) -> list[bytes]:
    """``name`` is allowed when the 64-bit argument ``arg`` is one of ``values``, else EPERM."""
    body: list[bytes] = [
        _ins(_LD_W_ABS, 0, 0, _arg_hi(arg)),
        _ins(_JEQ_K, 0, 2 * len(values) + 1, 0),
    ]
    body.append(_ins(_LD_W_ABS, 0, 0, _arg_lo(arg)))
    for v in values:
        body += [_ins(_JEQ_K, 0, 1, v), _ins(_RET_K, 0, 0, RET_ALLOW)]
    body.append(_ins(_RET_K, 0, 0, RET_EPERM))
    return _guarded(name, body)


def _only_if_int_arg_equals(name: str, arg: int, value: int) -> list[bytes]:
    """Like :func:`_only_if_arg_equals` for an ``int`` argument (the kernel reads 32 bits)."""
    body = [
        _ins(_LD_W_ABS, 0, 0, _arg_lo(arg)),
        _ins(_JEQ_K, 0, 1, value),
        _ins(_RET_K, 0, 0, RET_ALLOW),
        _ins(_RET_K, 0, 0, RET_EPERM),
    ]
    return _guarded(name, body)


def _guarded(name: str, body: list[bytes]) -> list[bytes]:
    """``if nr == name: body`` (the body ends in returns); reloads nr for the next check."""
    assert len(body) < 250
    return [_ins(_JEQ_K, 0, len(body), SYSCALLS[name]), *body]


def _tree(nrs: Sequence[int]) -> list[bytes]:
    """Binary search over sorted ``nrs`` (acc holds nr): ALLOW on a match, else EPERM.

    A tree instead of a linear scan keeps both the per-call cost (~8 compares) and the kernel's
    work at install time small: the kernel emulates the filter for every syscall number to build
    its allow cache, which for a ~400-instruction linear program cost 1.2 ms on every cold start.
    """
    if len(nrs) <= 4:
        out: list[bytes] = []
        for nr in nrs:
            out += [_ins(_JEQ_K, 0, 1, nr), _ins(_RET_K, 0, 0, RET_ALLOW)]
        return [*out, _ins(_RET_K, 0, 0, RET_EPERM)]
    mid = len(nrs) // 2
    left, right = _tree(nrs[:mid]), _tree(nrs[mid:])
    # acc >= nrs[mid]: take the `ja` over the left half into the right half.
    return [_ins(_JGE_K, 0, 1, nrs[mid]), _ins(_JA, 0, 0, len(left)), *left, *right]


def build_filter(own_pid: int, *, loader: bool = False) -> bytes:
    """The BPF program as bytes; ``own_pid`` is the worker's pid as the kernel sees it there.
    ``loader``: the pre-fork stage, which also allows LOADER_ONLY and the loader's prctl options
    until :func:`build_loader_lock` is stacked on it."""
    prog = [
        _ins(_LD_W_ABS, 0, 0, _OFF_ARCH),
        _ins(_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        _ins(_RET_K, 0, 0, RET_KILL_PROCESS),
        _ins(_LD_W_ABS, 0, 0, _OFF_NR),
        _ins(_JGE_K, 0, 1, X32_SYSCALL_BIT),
        _ins(_RET_K, 0, 0, RET_KILL_PROCESS),
    ]
    prog += [_ins(_JEQ_K, 0, 1, SYSCALLS["clone3"]), _ins(_RET_K, 0, 0, RET_ENOSYS)]
    clone = [
        _ins(_LD_W_ABS, 0, 0, _arg_lo(0)),
        _ins(_JSET_K, 0, 1, _CLONE_THREAD),
        _ins(_RET_K, 0, 0, RET_ALLOW),
        _ins(_RET_K, 0, 0, RET_EPERM),
    ]
    prog += _guarded("clone", clone)
    prog += [_ins(_LD_W_ABS, 0, 0, _OFF_NR)]
    for name, arg, values in (
        ("socket", 0, (_AF_UNIX,)),
        ("socketpair", 0, (_AF_UNIX,)),
        ("prctl", 0, (_PR_SET_NAME, _PR_GET_NAME, *(_LOADER_PRCTL if loader else ()))),
    ):
        prog += _only_if_arg_equals(name, arg, values)
        prog += [_ins(_LD_W_ABS, 0, 0, _OFF_NR)]
    for name, value in (("kill", own_pid), ("tgkill", own_pid), ("prlimit64", 0)):
        prog += _only_if_int_arg_equals(name, 0, value)
        prog += [_ins(_LD_W_ABS, 0, 0, _OFF_NR)]
    allowed = (*ALLOWED, *LOADER_ONLY) if loader else ALLOWED
    prog += _tree(sorted(SYSCALLS[name] for name in allowed))
    return b"".join(prog)


def build_loader_lock() -> bytes:
    """The Load stage, stacked on ``build_filter(pid, loader=True)``: LOADER_ONLY and the
    loader's prctl options are refused (EPERM, as the full filter refuses them); everything else
    is left to the filter below."""
    prog = [_ins(_LD_W_ABS, 0, 0, _OFF_NR)]
    for name in LOADER_ONLY:
        prog += [_ins(_JEQ_K, 0, 1, SYSCALLS[name]), _ins(_RET_K, 0, 0, RET_EPERM)]
    prctl = [_ins(_LD_W_ABS, 0, 0, _arg_hi(0)), _ins(_JEQ_K, 0, 2 * len(_LOADER_PRCTL) + 1, 0)]
    prctl.append(_ins(_LD_W_ABS, 0, 0, _arg_lo(0)))
    for option in _LOADER_PRCTL:
        prctl += [_ins(_JEQ_K, 0, 1, option), _ins(_RET_K, 0, 0, RET_EPERM)]
    prctl.append(_ins(_RET_K, 0, 0, RET_ALLOW))
    prog += _guarded("prctl", prctl)
    prog.append(_ins(_RET_K, 0, 0, RET_ALLOW))
    return b"".join(prog)


def build_io_uring_block() -> bytes:
    """A first, tiny filter for the zygote (inherited by every worker): io_uring_* are ENOSYS.

    libuv (under uvloop) sets up an io_uring for batched epoll_ctl when a loop starts, which in a
    worker is before Load installs the allowlist; the allowlist then refuses io_uring_enter and
    libuv abort()s on its next batch. Answering ENOSYS from the start makes libuv use plain
    epoll, and the stacked allowlist keeps refusing io_uring either way.
    """
    prog = [_ins(_LD_W_ABS, 0, 0, _OFF_ARCH), _ins(_JEQ_K, 1, 0, AUDIT_ARCH_X86_64)]
    prog += [_ins(_RET_K, 0, 0, RET_ALLOW), _ins(_LD_W_ABS, 0, 0, _OFF_NR)]
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        prog += [_ins(_JEQ_K, 0, 1, SYSCALLS[name]), _ins(_RET_K, 0, 0, RET_ENOSYS)]
    prog.append(_ins(_RET_K, 0, 0, RET_ALLOW))
    return b"".join(prog)


def evaluate(
    program: bytes, nr: int, *, arch: int = AUDIT_ARCH_X86_64, args: Sequence[int] = ()
) -> int:
    """Run ``program`` on one system call (a tiny classic-BPF interpreter for the opcodes above)."""
    full = [*args, *([0] * (6 - len(args)))]
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(a & 0xFFFFFFFFFFFFFFFF for a in full))
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    for _ in range(len(insns) + 1):  # no backward jumps in classic BPF: bounded
        code, jt, jf, k = insns[pc]
        if code == _LD_W_ABS:
            (acc,) = struct.unpack_from("=I", data, k)
            pc += 1
        elif code == _RET_K:
            return int(k)
        elif code == _JA:
            pc += 1 + k
        elif code in (_JEQ_K, _JGE_K, _JSET_K):
            taken = {_JEQ_K: acc == k, _JGE_K: acc >= k, _JSET_K: bool(acc & k)}[code]
            pc += 1 + (jt if taken else jf)
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x} at {pc}")
    raise AssertionError("the program did not return")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# Resolved at import (in the zygote), not on the cold path.
_PLATFORM = f"{platform.system()} {platform.machine()}"
_libc = ctypes.CDLL(None, use_errno=True)


def install(program: bytes | None = None) -> str:
    """Install ``program`` (default: built for this pid) here; "on", or "off: <reason>"."""
    if _PLATFORM != "Linux x86_64":
        return f"off: the filter targets Linux x86_64, not {_PLATFORM}"
    if program is None:
        program = build_filter(os.getpid())
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = _libc
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"off: PR_SET_NO_NEW_PRIVS failed: {os.strerror(ctypes.get_errno())}"
    rc = libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0)
    if rc != 0:
        return f"off: PR_SET_SECCOMP failed: {os.strerror(ctypes.get_errno())}"
    return "on"


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux only)."""
    if platform.system() != "Linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signum, 0, 0, 0)  # PR_SET_PDEATHSIG


def set_not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: no core dumps, and the kernel refuses ptrace and /proc/<pid>/mem to others."""
    if _PLATFORM.startswith("Linux"):
        _libc.prctl(4, 0, 0, 0, 0)  # the module's handle: a CDLL per call cost ~0.3 ms cold
