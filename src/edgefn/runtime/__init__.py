"""The sandbox runtime: zygote, workers, IPC protocol, pool policy (pure) and pool driver."""

from __future__ import annotations

from edgefn.runtime.pool_policy import PoolConfig, PoolPolicy
from edgefn.runtime.sandbox import InvokeFailed, LoadSpec, SandboxPool

__all__ = ["InvokeFailed", "LoadSpec", "PoolConfig", "PoolPolicy", "SandboxPool"]
