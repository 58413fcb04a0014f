"""A seccomp-BPF filter for sandbox workers (Linux x86_64), installed with ctypes.

The filter is applied in each worker right after it is forked from the zygote, before any user code
is imported, and it cannot be removed (``PR_SET_NO_NEW_PRIVS``). It denies with ``EPERM``:
process creation (fork, vfork, execve, execveat, and clone unless it creates a thread), sockets other
than AF_UNIX (so function code has no network: outbound HTTP goes through ``edgefn.fetch`` and the node),
signals to any process but the worker itself, and the administrative calls a root process could
misuse (mount, ptrace, module loading, namespaces, reboot). ``clone3`` answers ``ENOSYS`` so that libc
falls back to ``clone``, whose flags the filter can inspect.

On another architecture, or where the kernel refuses the filter, :func:`install` returns False and the
worker runs with rlimits only; the node reports that in its statistics.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_CLONE_THREAD = 0x00010000
_AF_UNIX = 1

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JSET_K = 0x45
_RET_K = 0x06
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0 = 16

# x86_64 syscall numbers.
_SYS = {
    "socket": 41,
    "clone": 56,
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "kill": 62,
    "ptrace": 101,
    "pivot_root": 155,
    "chroot": 161,
    "mount": 165,
    "umount2": 166,
    "reboot": 169,
    "init_module": 175,
    "delete_module": 176,
    "tkill": 200,
    "tgkill": 234,
    "kexec_load": 246,
    "unshare": 272,
    "setns": 308,
    "process_vm_writev": 311,
    "finit_module": 313,
    "execveat": 322,
    "clone3": 435,
}
_DENY = [
    "fork",
    "vfork",
    "execve",
    "execveat",
    "ptrace",
    "pivot_root",
    "chroot",
    "mount",
    "umount2",
    "reboot",
    "init_module",
    "delete_module",
    "kexec_load",
    "unshare",
    "setns",
    "process_vm_writev",
    "finit_module",
    "tkill",
]


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build_filter(own_pid: int) -> bytes:
    """The BPF program as bytes (exposed for tests)."""
    eperm = _RET_ERRNO | errno.EPERM
    prog = [
        _ins(_LD_W_ABS, 0, 0, _OFF_ARCH),
        _ins(_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        _ins(_RET_K, 0, 0, _RET_ALLOW),
        _ins(_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    for name in _DENY:
        prog += [_ins(_JEQ_K, 0, 1, _SYS[name]), _ins(_RET_K, 0, 0, eperm)]
    prog += [_ins(_JEQ_K, 0, 1, _SYS["clone3"]), _ins(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    # clone: allowed only for threads (CLONE_THREAD in flags).
    prog += [
        _ins(_JEQ_K, 0, 4, _SYS["clone"]),
        _ins(_LD_W_ABS, 0, 0, _OFF_ARG0),
        _ins(_JSET_K, 0, 1, _CLONE_THREAD),
        _ins(_RET_K, 0, 0, _RET_ALLOW),
        _ins(_RET_K, 0, 0, eperm),
    ]
    # socket: AF_UNIX only.
    prog += [
        _ins(_JEQ_K, 0, 4, _SYS["socket"]),
        _ins(_LD_W_ABS, 0, 0, _OFF_ARG0),
        _ins(_JEQ_K, 0, 1, _AF_UNIX),
        _ins(_RET_K, 0, 0, _RET_ALLOW),
        _ins(_RET_K, 0, 0, eperm),
    ]
    # kill / tgkill: only towards the worker itself.
    for name in ("kill", "tgkill"):
        prog += [
            _ins(_JEQ_K, 0, 4, _SYS[name]),
            _ins(_LD_W_ABS, 0, 0, _OFF_ARG0),
            _ins(_JEQ_K, 0, 1, own_pid),
            _ins(_RET_K, 0, 0, _RET_ALLOW),
            _ins(_RET_K, 0, 0, eperm),
        ]
    prog.append(_ins(_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> bool:
    """Install the filter in the calling process; False where unsupported."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    program = build_filter(os.getpid())
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    rc = libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0)
    return bool(rc == 0)


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux only)."""
    if platform.system() != "Linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signum, 0, 0, 0)  # PR_SET_PDEATHSIG
