"""Events into a :class:`~edgefn.state.machine.Replica` and the instructions it returns.

Time arrives as data (``now_ms`` on every event that needs it). Client operations carry an
``op_id`` chosen by the driver; exactly one :class:`Reply` with that id comes back, possibly after
later events (a session read waiting for replication, a strong op waiting for the home).

Drivers must carry out the instructions of one ``handle`` call *in order*: a :class:`Persist`
always precedes the :class:`Broadcast` and :class:`Reply` that depend on it, so nothing is
acknowledged or announced before it is durable.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefn.errors import KVError
from edgefn.state.messages import (
    Announce,
    Digest,
    Message,
    RepairRequest,
    RepairResponse,
    ReplayRequest,
    Replication,
    StrongOp,
    StrongOutcome,
)
from edgefn.state.records import Consistency, Entry, Stamp

__all__ = [
    "AntiEntropyDigest",
    "AntiEntropyRequest",
    "AntiEntropyResponse",
    "AskHome",
    "Broadcast",
    "Delete",
    "Event",
    "Failed",
    "Get",
    "GetDone",
    "Instruction",
    "Item",
    "List",
    "ListDone",
    "PeerAnnounced",
    "Persist",
    "Put",
    "ReplayRequested",
    "ReplicaMeta",
    "ReplicationReceived",
    "Reply",
    "Restarted",
    "Result",
    "ScheduleTick",
    "SendTo",
    "StrongResult",
    "Tick",
    "WriteDone",
    "received",
]


# --- client operations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Get:
    op_id: int
    key: str
    now_ms: int
    consistency: Consistency = Consistency.EVENTUAL
    session: str = ""


@dataclass(frozen=True, slots=True)
class Put:
    op_id: int
    key: str
    value: bytes
    now_ms: int
    consistency: Consistency = Consistency.EVENTUAL
    metadata: bytes = b""
    ttl_ms: int = 0
    if_revision: int | None = None
    session: str = ""


@dataclass(frozen=True, slots=True)
class Delete:
    op_id: int
    key: str
    now_ms: int
    consistency: Consistency = Consistency.EVENTUAL
    if_revision: int | None = None
    session: str = ""


@dataclass(frozen=True, slots=True)
class List:
    op_id: int
    now_ms: int
    consistency: Consistency = Consistency.EVENTUAL
    prefix: str = ""
    limit: int = 1000
    cursor: str = ""
    session: str = ""


# --- from peers, the home, the clock and the store ---------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplicationReceived:
    message: Replication
    now_ms: int


@dataclass(frozen=True, slots=True)
class ReplayRequested:
    message: ReplayRequest
    now_ms: int


@dataclass(frozen=True, slots=True)
class PeerAnnounced:
    message: Announce
    now_ms: int


@dataclass(frozen=True, slots=True)
class AntiEntropyDigest:
    message: Digest
    now_ms: int


@dataclass(frozen=True, slots=True)
class AntiEntropyRequest:
    message: RepairRequest
    now_ms: int


@dataclass(frozen=True, slots=True)
class AntiEntropyResponse:
    message: RepairResponse
    now_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    now_ms: int


@dataclass(frozen=True, slots=True)
class MembersChanged:
    """The driver learned of replicas of the namespace (membership only grows).

    A replica that joins later is added before it can send anything that matters: until a
    replica knows every member, tombstone GC waits for their floors (rule 7), so a wider set only
    makes GC more conservative.
    """

    replicas: tuple[str, ...]
    now_ms: int


@dataclass(frozen=True, slots=True)
class StrongResult:
    op_id: int
    outcome: StrongOutcome
    now_ms: int


@dataclass(frozen=True, slots=True)
class ReplicaMeta:
    """What a replica persists besides entries: its frontier, own write counter and clock."""

    applied: tuple[tuple[str, int], ...]
    own_seq: int
    hlc_last: int


@dataclass(frozen=True, slots=True)
class Restarted:
    """The replica's persisted state, read back from its store after a restart."""

    entries: tuple[Entry, ...]
    meta: ReplicaMeta
    now_ms: int
    log: tuple[Replication, ...] = ()


Event = (
    Get
    | Put
    | Delete
    | List
    | ReplicationReceived
    | ReplayRequested
    | PeerAnnounced
    | AntiEntropyDigest
    | AntiEntropyRequest
    | AntiEntropyResponse
    | Tick
    | StrongResult
    | Restarted
    | MembersChanged
)


def received(message: Message, now_ms: int) -> Event:
    """The event a driver feeds in when ``message`` arrives from a peer."""
    if isinstance(message, Replication):
        return ReplicationReceived(message, now_ms)
    if isinstance(message, ReplayRequest):
        return ReplayRequested(message, now_ms)
    if isinstance(message, Announce):
        return PeerAnnounced(message, now_ms)
    if isinstance(message, Digest):
        return AntiEntropyDigest(message, now_ms)
    if isinstance(message, RepairRequest):
        return AntiEntropyRequest(message, now_ms)
    if isinstance(message, RepairResponse):
        return AntiEntropyResponse(message, now_ms)
    raise TypeError(f"{type(message).__name__} is answered by the driver, not the replica")


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """What a read returns for one key. A missing key: ``value is None`` and ``revision == 0``.

    ``stamp`` identifies the write that produced this state (also for a tombstone) at the
    eventual levels; it is None for strong reads and keys never written.
    """

    key: str
    value: bytes | None
    revision: int
    metadata: bytes = b""
    expires_at_ms: int = 0
    stamp: Stamp | None = None


@dataclass(frozen=True, slots=True)
class GetDone:
    item: Item
    session: str


@dataclass(frozen=True, slots=True)
class WriteDone:
    """A put or delete took effect; ``revision`` is the key's new revision (0 after delete)."""

    key: str
    revision: int
    stamp: Stamp | None
    session: str


@dataclass(frozen=True, slots=True)
class ListDone:
    items: tuple[Item, ...]
    cursor: str
    session: str


@dataclass(frozen=True, slots=True)
class Failed:
    error: KVError


Result = GetDone | WriteDone | ListDone | Failed


# --- instructions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    op_id: int
    result: Result


@dataclass(frozen=True, slots=True)
class Persist:
    """One transaction: upsert ``upserts``, delete the rows of ``removes``, store ``meta``, append
    this replica's own writes to its replay log and drop log rows below ``log_keep_from_seq``."""

    upserts: tuple[Entry, ...]
    removes: tuple[str, ...]
    meta: ReplicaMeta
    log_append: tuple[Replication, ...] = ()
    log_keep_from_seq: int = 0


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: Message


@dataclass(frozen=True, slots=True)
class SendTo:
    replica: str
    message: Message


@dataclass(frozen=True, slots=True)
class AskHome:
    op: StrongOp


@dataclass(frozen=True, slots=True)
class ScheduleTick:
    at_ms: int


Instruction = Reply | Persist | Broadcast | SendTo | AskHome | ScheduleTick
