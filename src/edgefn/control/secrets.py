"""The control plane's secret store: encrypted records in the ``edgefn-secrets`` KV bucket.

Layout (one bucket, keys built here)::

    gen.<function>          {"generation": N}   bumped by every put and delete of the function
    val.<function>.<NAME>   SecretRecord        value encrypted under the core's master key

A record's ``revision`` is the function's generation when it was written and is part of the
AES-GCM associated data (with the function and the name), so a record copied under another key
does not decrypt. ``put`` writes the record before the generation; after a crash in between,
``load`` takes the generation as at least the largest record revision, so generations never go
back. Plaintext is only produced on demand (``values``) to seal it for a node; the store keeps
ciphertext in memory, never clear values.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

import msgspec
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from edgefn.secrets.crypto import MasterKey

__all__ = ["SecretInfo", "SecretRecord", "SecretStore"]

_GEN: Final = "gen."
_VAL: Final = "val."


class SecretRecord(msgspec.Struct, frozen=True):
    function: str
    name: str
    revision: int
    updated_ms: int
    ciphertext: str  # base64 of nonce ‖ ciphertext ‖ tag


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown about a secret: never its value."""

    name: str
    updated_ms: int


class SecretStore:
    """Secrets of every function over one KV bucket. ``await load()`` once, then use."""

    def __init__(self, kv: KeyValue, key: MasterKey) -> None:
        self._kv = kv
        self._key = key
        self._records: dict[str, dict[str, SecretRecord]] = {}
        self._generation: dict[str, int] = {}

    async def load(self) -> None:
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            keys = []
        for key in sorted(keys):
            entry = await self._kv.get(key)
            if not entry.value:
                continue
            if key.startswith(_GEN):
                gen = msgspec.json.decode(entry.value, type=dict[str, int])["generation"]
                fn = key[len(_GEN) :]
                self._generation[fn] = max(self._generation.get(fn, 0), gen)
            elif key.startswith(_VAL):
                record = msgspec.json.decode(entry.value, type=SecretRecord)
                self._records.setdefault(record.function, {})[record.name] = record
                gen = max(self._generation.get(record.function, 0), record.revision)
                self._generation[record.function] = gen

    def generation(self, function: str) -> int:
        return self._generation.get(function, 0)

    def names(self, function: str) -> tuple[SecretInfo, ...]:
        records = self._records.get(function, {})
        return tuple(SecretInfo(r.name, r.updated_ms) for _, r in sorted(records.items()))

    def has(self, function: str, name: str) -> bool:
        return name in self._records.get(function, {})

    def values(self, function: str) -> dict[str, str]:
        """Decrypted values of ``function`` (raises ``SecretsError`` if a record is bad)."""
        out: dict[str, str] = {}
        for name, r in sorted(self._records.get(function, {}).items()):
            blob = base64.b64decode(r.ciphertext)
            plain = self._key.decrypt(blob, function=function, name=name, revision=r.revision)
            out[name] = plain.decode("utf-8")
        return out

    async def put(self, function: str, name: str, value: bytes, *, now_ms: int) -> int:
        """Store ``value`` encrypted; returns the function's new generation."""
        gen = self.generation(function) + 1
        blob = self._key.encrypt(value, function=function, name=name, revision=gen)
        record = SecretRecord(function, name, gen, now_ms, base64.b64encode(blob).decode())
        await self._kv.put(f"{_VAL}{function}.{name}", msgspec.json.encode(record))
        await self._set_generation(function, gen)
        self._records.setdefault(function, {})[name] = record
        return gen

    async def delete(self, function: str, name: str) -> int:
        """Remove a secret; returns the function's new generation."""
        assert self.has(function, name)
        gen = self.generation(function) + 1
        await self._kv.purge(f"{_VAL}{function}.{name}")
        await self._set_generation(function, gen)
        del self._records[function][name]
        return gen

    async def _set_generation(self, function: str, gen: int) -> None:
        await self._kv.put(f"{_GEN}{function}", msgspec.json.encode({"generation": gen}))
        self._generation[function] = gen
