"""Edge-cache purges on the bus (pure): what one names, and its bounded JSON form.

The control plane publishes one on ``CACHE_PURGE`` per ``edgefn cache purge`` (only ``control``
may: bus/permissions.py); every node and region tier drops what it names
(docs/design/0026-edge-cache.md). A message that is not a well-formed purge is refused by
:func:`decode_purge` with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["MAX_PURGE_ITEMS", "Purge", "decode_purge", "encode_purge"]

MAX_PURGE_ITEMS = 100
MAX_ITEM_CHARS = 8192


@dataclass(frozen=True, slots=True)
class Purge:
    """What to drop for ``function``: responses carrying any of ``tags``, those of ``urls``, or
    every response of the function (``everything``)."""

    function: str
    tags: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    everything: bool = False


def encode_purge(purge: Purge) -> bytes:
    return json.dumps(
        {"function": purge.function, "tags": list(purge.tags), "urls": list(purge.urls),
         "everything": purge.everything}
    ).encode()  # fmt: skip


def decode_purge(data: bytes) -> Purge:
    """A purge from the bus; raises ValueError on anything but a well-formed, bounded one."""
    try:
        raw = json.loads(data)
    except RecursionError:
        raise ValueError("a purge is not nested that deep") from None
    if not isinstance(raw, dict):
        raise ValueError("a purge is a JSON object")
    function, tags, urls = raw.get("function"), raw.get("tags", []), raw.get("urls", [])
    everything = raw.get("everything", False)
    if not isinstance(function, str) or not function:
        raise ValueError("purge.function must be a function name")
    for name, items in (("tags", tags), ("urls", urls)):
        if not isinstance(items, list) or len(items) > MAX_PURGE_ITEMS:
            raise ValueError(f"purge.{name} must be a list of at most {MAX_PURGE_ITEMS}")
        if not all(isinstance(i, str) and 0 < len(i) <= MAX_ITEM_CHARS for i in items):
            raise ValueError(f"purge.{name} must hold non-empty strings")
    if not isinstance(everything, bool):
        raise ValueError("purge.everything must be a boolean")
    if not (tags or urls or everything):
        raise ValueError("a purge names tags, urls or everything")
    return Purge(function, tuple(tags), tuple(urls), everything)
