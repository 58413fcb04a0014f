"""Free TCP ports on loopback, picked by binding to port 0.

The port is free when this returns but nothing reserves it, so a caller that spawns a server on it
retries with a new port when the bind fails (another process may have taken it meanwhile).
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
