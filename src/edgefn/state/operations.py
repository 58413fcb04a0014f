"""A replica's client operations (get, put, delete, list) as events for the ``Replica`` machine.

One definition for every driver of a replica: :class:`~edgefn.state.driver.KVDriver` (NATS) and
:class:`~edgefn.edge.kv_local.LocalKVDriver` (in process, for ``edgefn.testing``). A driver
supplies ``_call`` (feed the event its ``make`` builds for a fresh op id, await the machine's
answer, raise a ``Failed`` answer's error) and ``_now_ms`` (its wall clock).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from edgefn.state.events import (
    Delete,
    Event,
    Get,
    GetDone,
    List,
    ListDone,
    Put,
    Result,
    WriteDone,
)
from edgefn.state.records import Consistency

__all__ = ["ReplicaOperations"]


class ReplicaOperations(ABC):
    """Client operations on one replica, in terms of the driver's ``_call`` and ``_now_ms``."""

    @abstractmethod
    async def _call(self, make: Callable[[int], Event]) -> Result:
        """Feed the event ``make(op_id)`` builds, await the answer, raise a failure's error."""

    @abstractmethod
    def _now_ms(self) -> int:
        """The driver's wall clock, in ms."""

    async def get(
        self, key: str, *, consistency: Consistency = Consistency.EVENTUAL, session: str = ""
    ) -> GetDone:
        result = await self._call(lambda op: Get(op, key, self._now_ms(), consistency, session))
        assert isinstance(result, GetDone)
        return result

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        consistency: Consistency = Consistency.EVENTUAL,
        metadata: bytes = b"",
        ttl_ms: int = 0,
        if_revision: int | None = None,
        session: str = "",
    ) -> WriteDone:
        result = await self._call(
            lambda op: Put(
                op, key, value, self._now_ms(), consistency, metadata, ttl_ms, if_revision, session
            )
        )
        assert isinstance(result, WriteDone)
        return result

    async def delete(
        self,
        key: str,
        *,
        consistency: Consistency = Consistency.EVENTUAL,
        if_revision: int | None = None,
        session: str = "",
    ) -> WriteDone:
        result = await self._call(
            lambda op: Delete(op, key, self._now_ms(), consistency, if_revision, session)
        )
        assert isinstance(result, WriteDone)
        return result

    async def list_keys(
        self,
        *,
        prefix: str = "",
        limit: int = 1000,
        cursor: str = "",
        consistency: Consistency = Consistency.EVENTUAL,
        session: str = "",
    ) -> ListDone:
        result = await self._call(
            lambda op: List(op, self._now_ms(), consistency, prefix, limit, cursor, session)
        )
        assert isinstance(result, ListDone)
        return result
