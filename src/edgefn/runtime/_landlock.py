"""Landlock (Linux ≥ 5.13) for sandbox workers: the second filesystem layer, installed with ctypes.

The mount namespace already shows a worker only what it may see; Landlock restricts what it may do
there even if a mount were wrong: read (and map) under the read-only roots, read and write under the
scratch directory and the listed device nodes, nothing else. The ruleset handles every filesystem
right the running kernel's ABI knows, all TCP bind/connect (ABI ≥ 4: no rule allows any port), and
with ABI ≥ 6 also scopes signals and abstract Unix sockets to the worker's own domain.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_TRUNCATE = 1 << 14
_IOCTL_DEV = 1 << 15
_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX = 1 << 0
_SCOPE_SIGNAL = 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is unavailable."""
    rc = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(0, int(rc))


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def prepare(
    *, read_only: Sequence[str], read_write: Sequence[str], devices: Sequence[str]
) -> tuple[int, str]:
    """Build a ruleset (at pre-fork); (fd, "on (ABI n)") or (-1, "off: <reason>").

    Rules name directories by inode, and Landlock skips a mountpoint's hidden directory when it walks
    up from a file, so paths mounted later (``/function``, ``/tmp``) get their rules from
    :func:`add_rules` once they are mounted.
    """
    abi = abi_version()
    if abi < 1:
        return -1, "off: Landlock is not available in this kernel"
    handled = _fs_rights(abi)
    attr = _RulesetAttr(handled, 0, 0)
    size = 16
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
        size = 24
    fd = int(_libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if fd < 0:
        return -1, f"off: landlock_create_ruleset: {os.strerror(ctypes.get_errno())}"
    ro = _EXECUTE | _READ_FILE | _READ_DIR
    file_rw = (_WRITE_FILE | _READ_FILE | (_TRUNCATE if abi >= 3 else 0)) & handled
    for paths, rights in ((read_only, ro), (read_write, handled), (devices, file_rw)):
        for path in paths:
            error = _add_rule(fd, path, rights)
            if error:
                os.close(fd)
                return -1, f"off: landlock rule for {path}: {error}"
    return fd, f"on (ABI {abi})"


def add_rules(ruleset_fd: int, *, read_only: Sequence[str], read_write: Sequence[str]) -> str:
    """Add directory rules to a prepared ruleset; "" or the first error."""
    handled = _fs_rights(abi_version())
    for paths, rights in ((read_only, _EXECUTE | _READ_FILE | _READ_DIR), (read_write, handled)):
        for path in paths:
            error = _add_rule(ruleset_fd, path, rights)
            if error:
                return f"off: landlock rule for {path}: {error}"
    return ""


def restrict_self(ruleset_fd: int) -> str:
    """Enforce a prepared ruleset on the calling process (irrevocably) and close it."""
    try:
        if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS, required by restrict_self
            return f"off: PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}"
        if _libc.syscall(_SYS_RESTRICT_SELF, ruleset_fd, 0) != 0:
            return f"off: landlock_restrict_self: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(ruleset_fd)
    return "on"


def _add_rule(ruleset_fd: int, path: str, rights: int) -> str:
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as err:
        return err.strerror or str(err)
    try:
        rule = _PathBeneath(rights, pfd)
        rc = _libc.syscall(_SYS_ADD_RULE, ruleset_fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
        return "" if rc == 0 else os.strerror(ctypes.get_errno())
    finally:
        os.close(pfd)
