"""Errors raised by the NATS backbone and the link emulator.

They extend :class:`edgefn.errors.PlanetError`, because each of them is about a process or a link of
a running deployment (a planet, or the servers of ``edgefn core``/``edgefn region``)::

    PlanetError
    └── BusError                 base of this package's errors
        ├── NatsServerNotFound   no nats-server binary (env var, next to Python, PATH)
        ├── NatsServerStartError the server exited or never became healthy; carries its log tail
        ├── BusConnectError      a NATS client could not connect within its deadline
        ├── BusSetupError        a JetStream bucket or object store could not be created or opened
        └── LinkTableError       an unknown endpoint or link, a duplicate link, a bad delay
"""

from __future__ import annotations

from edgefn.errors import PlanetError

__all__ = [
    "BusConnectError",
    "BusError",
    "BusSetupError",
    "LinkTableError",
    "NatsServerNotFound",
    "NatsServerStartError",
]


class BusError(PlanetError):
    """Base class of the backbone's errors."""


class NatsServerNotFound(BusError):
    """No nats-server binary was found."""


class NatsServerStartError(BusError):
    """A nats-server process exited early or did not become healthy before its deadline."""

    def __init__(self, message: str, *, log_tail: str = "", hint: str = "") -> None:
        self.log_tail = log_tail
        text = (
            f"{message}\n--- nats-server log (last lines) ---\n{log_tail}" if log_tail else message
        )
        super().__init__(text, hint=hint)


class BusConnectError(BusError):
    """A NATS client could not connect to any of its servers before its deadline."""


class BusSetupError(BusError):
    """A JetStream key-value bucket or object store could not be created or opened."""


class LinkTableError(BusError):
    """A link-table operation named an unknown endpoint or link, or had a bad argument."""
