"""Hostile function: each path attempts one escape and reports what it saw (tests check outside)."""

import asyncio
import ctypes
import mmap
import os
import random
import socket
import struct
import threading

from edgefn import Response

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS = {
    "kill": 62, "rt_sigqueueinfo": 129, "setpriority": 141, "prlimit64": 302,
    "process_vm_readv": 310, "memfd_create": 319, "io_uring_setup": 425, "pidfd_open": 434,
    "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 101, "unshare": 272, "mount": 165,
    "bpf": 321, "userfaultfd": 323, "perf_event_open": 298, "keyctl": 250, "setns": 308,
    "execve": 59, "fork": 57, "chroot": 161, "pivot_root": 155, "finit_module": 313,
}  # fmt: skip


def sys_(name, *args):
    rc = libc.syscall(SYS[name], *args)
    return f"{name}={rc} errno={ctypes.get_errno()}"


def attempt(fn):
    try:
        return f"ok: {fn()!r}"
    except Exception as err:
        return f"failed: {type(err).__name__}: {err}"


def write_marker(path):
    with open(path, "w") as f:
        f.write("pwned")
    return path


def read_file(path):
    with open(path, "rb") as f:
        return f.read(65536).decode(errors="replace")


def tcp_connect(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(("127.0.0.1", port))
    s.sendall(b"pwned")
    return "connected"


def unix_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(path)
    s.sendall(b"pwned")
    return "connected"


def io_uring(port):
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(SYS["io_uring_setup"], 8, params)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup refused")
    return f"io_uring fd {fd} (a connect to {port} would follow)"


def pidfd_kill(pid):
    fd = libc.syscall(SYS["pidfd_open"], pid, 0)
    out = [f"pidfd_open={fd} errno={ctypes.get_errno()}"]
    out.append(sys_("pidfd_send_signal", fd, 9, None, 0))
    out.append(sys_("pidfd_getfd", fd, 3, 0))
    return out


def sigqueue(pid):
    info = ctypes.create_string_buffer(128)
    struct.pack_into("iii", info, 0, 9, 0, -1)  # si_signo, si_errno, si_code = SI_QUEUE
    return sys_("rt_sigqueueinfo", pid, 9, info)


def int80_kill(pid):
    # i386 ABI: eax=37 (kill), ebx=pid, ecx=9; int 0x80; ret. The filter kills the whole process.
    code = (
        b"\xb8\x25\x00\x00\x00\xbb" + struct.pack("<i", pid) + b"\xb9\x09\x00\x00\x00\xcd\x80\xc3"
    )
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return ctypes.CFUNCTYPE(ctypes.c_int)(addr)()


def vm_read(pid, addr, length):
    buf = ctypes.create_string_buffer(length)
    local = struct.pack("QQ", ctypes.addressof(buf), length)
    remote = struct.pack("QQ", addr, length)
    lb, rb = ctypes.create_string_buffer(local), ctypes.create_string_buffer(remote)
    rc = libc.syscall(SYS["process_vm_readv"], pid, lb, 1, rb, 1, 0)
    if rc <= 0:
        raise OSError(ctypes.get_errno(), "process_vm_readv refused")
    return buf.raw[:rc].decode(errors="replace")


def proc_mem(pid):
    with open(f"/proc/{pid}/maps") as maps:
        regions = [line.split()[0] for line in maps if "rw-p" in line]
    found = []
    with open(f"/proc/{pid}/mem", "rb") as mem:
        for region in regions:
            start, end = (int(x, 16) for x in region.split("-"))
            try:
                mem.seek(start)
                found.append(mem.read(min(end - start, 1 << 22)))
            except OSError:
                continue
    return b"".join(found).decode("latin-1")


def fill_disk():
    written = 0
    chunk = b"x" * (1 << 20)
    try:
        with open("/tmp/fill", "wb") as f:
            for _ in range(2048):
                f.write(chunk)
                f.flush()
                written += len(chunk)
    except OSError:
        pass
    return written


def thread_bomb():
    started = []
    stop = threading.Event()
    try:
        for _ in range(2048):
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()
            started.append(t)
    except Exception:
        pass
    stop.set()
    return len(started)


def memfd_hog():
    # Many memfds just under RLIMIT_FSIZE each, written (not mapped, so RLIMIT_AS never sees them).
    chunk = b"x" * (1 << 20)
    fds = []
    for _ in range(170):
        fd = libc.syscall(SYS["memfd_create"], b"hog", 0)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "memfd_create refused")
        fds.append(fd)
        for _ in range(3):
            os.write(fd, chunk)
    return f"wrote {3 * len(fds)} MiB into memfds"


def tmp_hog():
    chunk = b"x" * (1 << 20)
    n = 0
    try:
        with open("/tmp/hog", "wb") as f:
            for _ in range(512):
                f.write(chunk)
                n += 1
    except OSError:
        pass
    return n


def burn():
    x = 0
    while True:
        x += 1


async def fetch(request, env, ctx):
    q = request.query
    path = request.path
    arg = q.get("arg", "")
    n = int(q.get("n", "0") or 0)
    if path == "/write":
        return Response(attempt(lambda: write_marker(arg)))
    if path == "/read":
        return Response(attempt(lambda: read_file(arg)))
    if path == "/listdir":
        return Response(attempt(lambda: sorted(os.listdir(arg))))
    if path == "/tcp":
        return Response(attempt(lambda: tcp_connect(n)))
    if path == "/uring":
        return Response(attempt(lambda: io_uring(n)))
    if path == "/unix":
        return Response(attempt(lambda: unix_connect(arg)))
    if path == "/kill":
        return Response(attempt(lambda: (os.kill(n, 9), sys_("kill", n, 9), sys_("kill", -1, 9))))
    if path == "/pidfd":
        return Response(attempt(lambda: pidfd_kill(n)))
    if path == "/sigqueue":
        return Response(attempt(lambda: sigqueue(n)))
    if path == "/int80":
        return Response(attempt(lambda: int80_kill(n)))
    if path == "/prlimit":
        new = struct.pack("QQ", 1, 1)
        nb = ctypes.create_string_buffer(new)
        return Response(
            attempt(lambda: (sys_("prlimit64", n, 7, nb, None), sys_("setpriority", 0, n, 19)))
        )
    if path == "/vmread":
        return Response(attempt(lambda: vm_read(n, int(arg, 16), 4096)))
    if path == "/procmem":
        return Response(attempt(lambda: proc_mem(n)))
    if path == "/syscalls":
        return Response(
            "\n".join(
                sys_(name, 0, 0, 0, 0)
                for name in (
                    "ptrace",
                    "unshare",
                    "mount",
                    "bpf",
                    "userfaultfd",
                    "perf_event_open",
                    "keyctl",
                    "setns",
                    "chroot",
                    "pivot_root",
                    "finit_module",
                    "fork",
                )
            )
        )
    if path == "/fill":
        return Response(str(fill_disk()))
    if path == "/threads":
        return Response(str(thread_bomb()))
    if path == "/memfd":
        return Response(attempt(memfd_hog))
    if path == "/tmphog":
        return Response(str(tmp_hog()))
    if path == "/waituntil":
        ctx.wait_until(asyncio.get_running_loop().run_in_executor(None, burn))
        return Response("burning in the background")
    if path == "/log":
        os.write(1, b"FORGED-LOG-LINE stdout\n")
        os.write(2, b'{"kind":"access","status":200,"FORGED-LOG-LINE":1}\n')
        return Response("wrote to fds 1 and 2")
    if path == "/random":
        import numpy  # preloaded by the test's zygote: its global RandomState is inherited

        return Response(repr((random.random(), float(numpy.random.random()))))
    if path == "/whoami":
        return Response(f"uid={os.getuid()} gid={os.getgid()} pid={os.getpid()} cwd={os.getcwd()}")
    return Response("hostile ok")
