"""Every exception edgefn raises on purpose, in one place.

Operating errors (bad input, unreachable peers, crashed sandboxes) are expected and are modelled here;
``assert`` is kept for programmer errors. Each error says what went wrong, where (file, field,
location, request id) and what to do next, so the CLI can print it as is::

    EdgefnError                      base: .message, .hint (what to do), str() joins them
    ├── UsageError                   bad command-line arguments
    ├── ConfigError                  a user file is wrong: .path, .key
    │   ├── ManifestError            edgefn.toml: unknown key, wrong type, bad value, missing fetch
    │   ├── ScenarioError            simulator scenario TOML
    │   └── PlanInputError           planner inputs (OR-Library files, demand/functions/topology files)
    ├── BundleError                  a bundle is malformed, its hash or its signature does not match
    ├── ProtocolError                a malformed IPC or wire frame (length, msgpack, unknown type)
    ├── SandboxError                 a worker could not be started or died
    ├── FetchError                   an outbound edgefn.fetch() from function code failed
    │   ├── InvalidURLError          the URL cannot be fetched at all (raised at once)
    │   ├── SubrequestLimitError     more subrequests than [limits] subrequests
    │   ├── EgressDeniedError        host not in [egress] allow
    │   ├── FetchTimeoutError        the subrequest took longer than timeout_ms
    │   └── ResponseTooLargeError    the subrequest's body exceeded the size limit
    ├── KVError                      key-value binding errors
    │   ├── KVConflict               if_revision did not match
    │   ├── KVUnavailable            strong consistency cannot reach the home: nothing was done
    │   ├── KVOutcomeUnknown         a strong write's answer was lost: it may have applied
    │   └── KVLimitError             key or value too large, bad argument
    ├── PlanetError                  the local planet: not running, already running, unknown location
    └── IncidentError                an incident id that is unknown (.not_found), or a state change
                                     its state forbids (acknowledging a resolved incident)
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConfigError",
    "EdgefnError",
    "EgressDeniedError",
    "FetchError",
    "FetchTimeoutError",
    "IncidentError",
    "InvalidURLError",
    "KVConflict",
    "KVError",
    "KVLimitError",
    "KVOutcomeUnknown",
    "KVUnavailable",
    "ManifestError",
    "PlanInputError",
    "PlanetError",
    "ProtocolError",
    "QueueError",
    "ResponseTooLargeError",
    "SandboxError",
    "ScenarioError",
    "SubrequestLimitError",
    "UsageError",
]


class EdgefnError(Exception):
    """Base class. ``message`` says what and where; ``hint`` says what to do."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)


class UsageError(EdgefnError):
    """Bad command-line arguments."""


class ConfigError(EdgefnError):
    """A user-supplied file is wrong. ``path`` and ``key`` locate the problem."""

    def __init__(self, message: str, *, path: str = "", key: str = "", hint: str = "") -> None:
        self.path = path
        self.key = key
        where = path + (f": {key}" if key else "") if path else key
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class ManifestError(ConfigError):
    """edgefn.toml is invalid, or its main module does not define ``fetch``."""


class ScenarioError(ConfigError):
    """A simulator scenario file is invalid."""


class PlanInputError(ConfigError):
    """A planner input (OR-Library instance, topology, demand, functions) is invalid."""


class BundleError(EdgefnError):
    """A bundle is malformed, or its content hash or signature does not match."""


class ProtocolError(EdgefnError):
    """A malformed frame arrived on an IPC or wire channel."""


class SandboxError(EdgefnError):
    """A sandbox worker could not be started, or died."""


class FetchError(EdgefnError):
    """An outbound ``edgefn.fetch()`` made on behalf of function code failed."""


class InvalidURLError(FetchError):
    """The URL given to ``edgefn.fetch()`` is not an absolute http(s) URL with a valid host."""


class SubrequestLimitError(FetchError):
    """The request made more subrequests than ``[limits] subrequests`` allows."""


class EgressDeniedError(FetchError):
    """The target host is not in the manifest's ``[egress] allow`` list."""


class FetchTimeoutError(FetchError):
    """The subrequest did not complete within its ``timeout_ms``."""


class ResponseTooLargeError(FetchError):
    """The subrequest's response body exceeded the size limit."""


class KVError(EdgefnError):
    """Base class of key-value binding errors."""


class KVConflict(KVError):
    """A conditional write's ``if_revision`` no longer matches the key's revision."""

    def __init__(self, message: str, *, key: str = "", revision: int = 0, hint: str = "") -> None:
        self.key = key
        self.revision = revision
        super().__init__(message, hint=hint or "read the key again and retry with its new revision")


class KVUnavailable(KVError):
    """A strong operation cannot reach the namespace's home (for example during a partition).

    Nothing was done: the operation never reached the home, so retrying a write is safe."""


class KVSessionBehind(KVUnavailable):
    """A session or causal operation's token names writes this replica has not received in time.

    ``missing`` maps each origin replica to the newest of its writes the token needs; a location
    that has applied them (the writer's) can serve the read instead."""

    def __init__(self, message: str, *, missing: dict[str, int], hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.missing = dict(missing)


class KVOutcomeUnknown(KVError):
    """A strong write reached (or may have reached) the home but its answer was lost.

    It may or may not have applied: read the key (strongly) to find out before retrying, or retry
    with ``if_revision`` so a write that did apply is not applied twice."""


class KVLimitError(KVError):
    """A key or value exceeds its size limit, or an argument is invalid."""


class QueueError(EdgefnError):
    """A queue send was refused: a bad message, the queue full, or no way to the bus."""


class PlanetError(EdgefnError):
    """The local planet is not running, already running, or was asked about an unknown location."""


class IncidentError(EdgefnError):
    """An incident id is unknown (``not_found``) or its state forbids the change asked for."""

    def __init__(self, message: str, *, hint: str = "", not_found: bool = False) -> None:
        self.not_found = not_found
        super().__init__(message, hint=hint)
