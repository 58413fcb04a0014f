"""Who replicates a namespace, and when a replica may leave it (pure; the machine applies it).

A namespace's replicas are the locations whose functions bind it. The set grows when a function is
activated somewhere (the new replica registers in the members bucket) and shrinks when the last
function binding it leaves a location: that location's replica *leaves*. The machine uses the set
for anti-entropy peers, replay requests, replay-log trimming and tombstone GC (rule 7), so a
member that is gone for good must be dropped, or GC and log trimming wait for it forever.

Rules:

1. **Hand-off before leaving.** A replica leaves only when everything it holds is held by a
   replica that stays: for every origin ``o`` it has applied writes of (itself included, and
   origins that already left), some other member ``p`` whose newest announcement says it is not
   leaving has applied ``o`` at least as far, and either ``p`` is ``o`` itself or ``p``'s
   announcement lists the leaver among the peers it knows to be leaving. That last part makes
   simultaneous leaves safe: a replica that acknowledged our intent counts us as leaving, so it
   never relies on us in turn, and two leavers can never each rely on the other. When every
   member wants to leave, none can (the last one keeps serving until a new member has its data);
   the stream's bounded tail alone is never trusted with it.
2. **Leaving drops the data, keeps the counters.** The leaver removes its entries and replay log
   but keeps its own write counter, clock and frontier entry in its store (``ReplicaMeta`` with
   ``left`` and ``refill_seq``). Its entries would be stale when it re-joins: the others stop
   waiting for it in tombstone GC, so a key deleted meanwhile could come back from its old copy.
   Its counters must survive: a re-joined replica that started again at seq 1 would have its new
   writes dropped as duplicates everywhere.
3. **A re-joined replica refills.** It does not hold its own writes up to ``refill_seq`` (its
   peers do), so it announces its own frontier entry as 0 and does not serve session or causal
   operations whose token names its own writes, until a Merkle round with a peer that applied
   them ends with equal trees (then its state contains them).
4. **The others drop the leaver** on its :class:`Leave` (broadcast, and kept in the members
   bucket for replicas that were away). From then on it is no anti-entropy or replay peer and
   GC no longer waits for its floor; instead GC waits until every member applied the leaver's
   writes up to ``final_seq`` (a write of it still in flight cannot resurrect a collected key).
   A leave is stale, and ignored, if the leaver has announced a newer clock than ``left_hlc`` or
   written past ``final_seq``: it re-joined meanwhile. A member heard of again is added back
   (adding is always safe).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgefn.state.messages import Announce, Leave
from edgefn.state.vclock import VClock

__all__ = ["PeerView", "departed_covered", "leave_blocker", "leave_is_stale", "view_of"]


@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer's newest announcement (by ``floor_hlc``, which grows with each of them)."""

    floor_hlc: int
    applied: VClock
    leaving: bool
    leaving_seen: frozenset[str]


def view_of(message: Announce, current: PeerView | None) -> PeerView | None:
    """The view after ``message``; None if ``message`` is older than ``current`` (reordered)."""
    if current is not None and message.floor_hlc <= current.floor_hlc:
        return None
    return PeerView(
        message.floor_hlc,
        VClock(message.applied),
        message.leaving,
        frozenset(message.leaving_seen),
    )


def leave_blocker(
    me: str,
    members: Iterable[str],
    applied: Mapping[str, int],
    views: Mapping[str, PeerView],
    *,
    holds_entries: bool,
) -> str:
    """Empty if ``me`` may leave now (rule 1), else what it waits for."""
    peers = [p for p in members if p != me]
    if not peers and (holds_entries or any(applied.values())):
        return f"{me} is the only replica of the namespace; leaving would take its data with it"
    for origin, seq in sorted(applied.items()):
        if seq and not any(_holds(views.get(p), p, origin, seq, me) for p in peers):
            return (
                f"the writes of {origin} up to seq {seq} are not yet held by a staying replica "
                f"that knows {me} is leaving"
            )
    return ""


def _holds(view: PeerView | None, peer: str, origin: str, seq: int, me: str) -> bool:
    if view is None or view.leaving or view.applied.get(origin) < seq:
        return False
    return peer == origin or me in view.leaving_seen


def departed_covered(
    departed: Mapping[str, tuple[int, int]],
    members: Iterable[str],
    frontiers: Mapping[str, VClock],
) -> bool:
    """Every member applied every departed replica's writes (rule 4; GC may proceed)."""
    names = tuple(members)
    for origin, (final_seq, _left_hlc) in departed.items():
        for replica in names:
            frontier = frontiers.get(replica)
            if frontier is None or frontier.get(origin) < final_seq:
                return False
    return True


def leave_is_stale(message: Leave, view: PeerView | None, applied_seq: int) -> bool:
    """The leaver announced or wrote after ``message``: it has re-joined (rule 4)."""
    if applied_seq > message.final_seq:
        return True
    return view is not None and view.floor_hlc > message.left_hlc
