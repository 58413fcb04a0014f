"""Worker isolation: namespaces, a minimal pivot_root'ed filesystem, identity, Landlock and seccomp.

Everything slow happens when the zygote pre-forks a generic worker (:func:`enter_namespaces` in the
intermediate child, :func:`setup_prefork` in the worker), so a cold start only runs
:func:`setup_load`: a few mounts, one Landlock ruleset, ``setresuid`` and the seccomp filter.

Pre-fork, as root, in a fresh mount, pid, network, IPC and UTS namespace (the worker is pid 1 there):
fds 0–2 become /dev/null and every other fd but the worker's socket is closed; ``setsid``; a tmpfs
root gets read-only, nosuid, nodev bind mounts of exactly what Python needs at the same absolute paths
(:func:`python_roots`), the four harmless device nodes, empty ``/function`` and ``/tmp`` mount points,
and the node's versions directory at a root-only hidden path; then ``pivot_root`` and the old root is
detached. No /proc is mounted.

The Landlock ruleset and the seccomp program are built then too (:class:`Prepared`).

At ``Load``: the function's version directory is bound read-only onto ``/function`` and the hidden
versions mount is covered by an empty read-only tmpfs (the worker can never see another version
again), ``/tmp`` becomes a size-limited tmpfs owned by the tenant, the prepared Landlock ruleset is
enforced, groups, gid and uid change to the tenant's (which clears every capability) and the seccomp
allowlist goes in.

Each step returns "on" or "off: <reason>"; :class:`Layers` collects them. A caller in strict mode
refuses a worker with any layer off.
"""

from __future__ import annotations

import ctypes
import os
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import edgefn
from edgefn.runtime import _landlock, _seccomp

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
_SYS_PIVOT_ROOT = 155

FUNCTION_DIR = "/function"
HIDDEN_VERSIONS = "/.versions"
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
LAYERS = ("identity", "filesystem", "landlock", "pid", "network", "ipc", "seccomp", "cgroup")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]


class IsolationError(OSError):
    """One isolation step failed."""


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise IsolationError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str = "") -> None:
    rc = _libc.mount(
        src.encode() if src else None,
        dst.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    _check(rc, f"mount {src or fstype} on {dst}")


def _bind_ro(src: str, dst: str, *, extra: int = MS_NODEV) -> None:
    _mount(src, dst, None, MS_BIND)
    _mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | extra)


def _umount(path: str) -> None:
    _check(_libc.umount2(path.encode(), MNT_DETACH), f"umount {path}")


def tenant_uid(tenant: str, uid_range: tuple[int, int]) -> int:
    """The unprivileged uid (and gid) of ``tenant``: stable, inside ``uid_range`` (inclusive)."""
    low, high = uid_range
    assert 0 < low <= high
    return low + zlib.crc32(tenant.encode()) % (high - low + 1)


def python_roots() -> list[str]:
    """Directories Python needs, at their host paths: stdlib, lib-dynload, site-packages, edgefn.

    ``edgefn`` is bound as its package directory only: an editable install points into the
    repository, which also holds keys (``.edgefn/signing-key.pem``) the sandbox must not see.
    """
    roots = {os.path.dirname(os.__file__)}
    for entry in sys.path:
        if entry and os.path.isdir(entry) and entry.rstrip("/").endswith("-packages"):
            roots.add(entry)
    dynload = os.path.join(os.path.dirname(os.__file__), "lib-dynload")
    if os.path.isdir(dynload):
        roots.add(dynload)
    roots.add(os.path.dirname(os.path.abspath(edgefn.__file__)))
    for lib in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib"):
        if os.path.isdir(lib) and not os.path.islink(lib):
            roots.add(lib)
    ordered = sorted(roots)
    return [r for r in ordered if not any(r.startswith(o + "/") for o in ordered)]


@dataclass(slots=True)
class Layers:
    """Status of each layer: "on", "on (detail)" or "off: reason"."""

    status: dict[str, str] = field(default_factory=dict)

    def set(self, layer: str, value: str) -> None:
        assert layer in LAYERS, layer
        self.status[layer] = value

    def off(self) -> list[str]:
        return [k for k, v in self.status.items() if not v.startswith("on")]


def enter_namespaces(layers: Layers) -> None:
    """In the intermediate child: new mount/pid/net/IPC/UTS namespaces (pid applies to children)."""
    for layer, flag in (
        ("pid", CLONE_NEWPID),
        ("network", CLONE_NEWNET),
        ("ipc", CLONE_NEWIPC | CLONE_NEWUTS),
        ("filesystem", CLONE_NEWNS),
    ):
        if _libc.unshare(flag) == 0:
            layers.set(layer, "on")
        else:
            layers.set(layer, f"off: unshare: {os.strerror(ctypes.get_errno())}")


def close_inherited_fds(keep: int) -> None:
    """fds 0–2 become /dev/null; every other fd except ``keep`` is closed."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)


@dataclass(slots=True)
class Prepared:
    """What pre-fork set-up leaves for Load: whether the root is private, the ruleset, the filter."""

    private_root: bool = False
    ruleset_fd: int = -1
    landlock: str = "off: no private root to describe"
    seccomp_program: bytes = b""  # what Load installs: the full filter, or the lock when staged
    seccomp_staged: bool = False  # the pre-fork stage is installed (see _seccomp.LOADER_ONLY)


def setup_prefork(layers: Layers, versions_dir: str) -> Prepared:
    """In the worker (pid 1 of its namespace, still root): build and enter the minimal root, and
    build the Landlock ruleset and the seccomp program, so that Load has little left to do."""
    os.setsid()
    prepared = Prepared(seccomp_program=_seccomp.build_filter(os.getpid()))
    if not layers.status.get("filesystem", "").startswith("on"):
        return prepared
    roots = python_roots()
    try:
        _build_root("/tmp", versions_dir, roots)
        layers.set("filesystem", "on")
    except OSError as err:
        layers.set("filesystem", f"off: {err}")
        return prepared
    prepared.private_root = True
    prepared.ruleset_fd, prepared.landlock = _landlock.prepare(
        read_only=[*roots, "/etc"], read_write=[], devices=list(DEVICES)
    )
    return prepared


def stage_seccomp(prepared: Prepared) -> None:
    """Last of pre-fork: install the full filter plus what Load still needs, so that Load only
    stacks the few-instruction lock on it. If the stage cannot be installed, Load installs the
    full filter as before (and reports the layer from that)."""
    if _seccomp.install(_seccomp.build_filter(os.getpid(), loader=True)) == "on":
        prepared.seccomp_program = _seccomp.build_loader_lock()
        prepared.seccomp_staged = True


def _mkdirs(root: str, path: str, mode: int = 0o755) -> str:
    target = root + path
    os.makedirs(target, mode=mode, exist_ok=True)
    return target


def _touch(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _build_root(new: str, versions_dir: str, roots: list[str]) -> None:
    # Every source is opened before the new root's tmpfs is mounted, and bound through its
    # /proc/self/fd link, because that tmpfs may hide a source (the versions directory of a node
    # whose state lives under /tmp).
    sources = [*roots, *DEVICES]
    if os.path.isfile("/etc/ld.so.cache"):
        sources.append("/etc/ld.so.cache")
    if versions_dir:
        sources.append(versions_dir)
    fds = {src: os.open(src, os.O_PATH | os.O_CLOEXEC) for src in sources}
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=256k,mode=0755")
        _populate(new, versions_dir, roots, {k: f"/proc/self/fd/{v}" for k, v in fds.items()})
    finally:
        for fd in fds.values():
            os.close(fd)
    os.chdir(new)
    _check(int(_libc.syscall(_SYS_PIVOT_ROOT, b".", b".")), "pivot_root")
    _umount(".")
    os.chdir("/")
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _populate(new: str, versions_dir: str, roots: list[str], via: dict[str, str]) -> None:
    for root in roots:
        _bind_ro(via[root], _mkdirs(new, root))
    for link in ("/lib", "/lib64"):
        if os.path.islink(link):
            os.symlink(os.readlink(link), new + link)
    if "/etc/ld.so.cache" in via:
        _touch(new + "/etc/ld.so.cache")
        _bind_ro(via["/etc/ld.so.cache"], new + "/etc/ld.so.cache")
    for dev in DEVICES:
        _touch(new + dev)
        _mount(via[dev], new + dev, None, MS_BIND)
        _mount(None, new + dev, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC)
    _mkdirs(new, FUNCTION_DIR)
    _mkdirs(new, "/tmp", 0o1777)
    if versions_dir:
        hidden = _mkdirs(new, HIDDEN_VERSIONS, 0o700)
        _bind_ro(via[versions_dir], hidden, extra=MS_NODEV | MS_NOEXEC)


def setup_load(
    layers: Layers,
    prepared: Prepared,
    *,
    version_rel: str,
    scratch_mb: int,
    uid: int,
    mark: Callable[[str], None] | None = None,
) -> str:
    """At Load: mount the bundle and scratch, Landlock, drop to ``uid``, seccomp. Returns code dir.
    ``mark(phase)`` is called after each step (the cold start's breakdown)."""
    mark = mark or _no_mark
    if prepared.private_root:
        _bind_ro(os.path.join(HIDDEN_VERSIONS, version_rel), FUNCTION_DIR)
        # Covered rather than detached: umount waits for an RCU grace period (1-3 ms measured on
        # the cold path), a mount does not. Under the cover the versions mount is unreachable: the
        # worker is no longer root, seccomp denies umount, and Landlock has no rule for it.
        _mount("tmpfs", HIDDEN_VERSIONS, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k")
        opts = f"size={scratch_mb}m,mode=0700,uid={uid},gid={uid},nr_inodes=4096"
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
        mark("mounts")
        if prepared.ruleset_fd >= 0:
            fd, prepared.ruleset_fd = prepared.ruleset_fd, -1
            status = _landlock.add_rules(fd, read_only=[FUNCTION_DIR], read_write=["/tmp"])
            if status:
                os.close(fd)
            else:
                status = _landlock.restrict_self(fd)
            layers.set("landlock", prepared.landlock if status == "on" else status)
        else:
            layers.set("landlock", prepared.landlock)
        mark("landlock")
        layers.set("identity", _drop_identity(uid))
        mark("identity")
    else:
        layers.set("landlock", prepared.landlock)
        # Without a private root the bundle is read in place from the node's state directory,
        # which a tenant uid may not be able to read: the uid layer needs the private root.
        layers.set("identity", "off: no private root (the bundle is read from the state dir)")
    _seccomp.set_not_dumpable()
    layers.set("seccomp", _seccomp.install(prepared.seccomp_program or None))
    mark("seccomp")
    return FUNCTION_DIR if prepared.private_root else ""


def _no_mark(_phase: str) -> None:
    """No breakdown wanted (the probe worker)."""


def _drop_identity(uid: int) -> str:
    if os.geteuid() != 0:
        return f"off: not root (uid {os.geteuid()}): every tenant shares one uid"
    try:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    except OSError as err:
        return f"off: {err}"
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return f"off: PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}"
    return f"on (uid {uid})"
