"""The sandbox runtime: zygote, workers, IPC protocol, pool policy (pure) and pool driver.

Only the pure policies are re-exported here, so that importing them (as the simulator does) does not
pull in the asyncio driver; the driver lives in :mod:`edgefn.runtime.sandbox`.
"""

from __future__ import annotations

from edgefn.runtime.keepalive import FixedKeepAlive, HybridHistogramPolicy, KeepAlivePolicy
from edgefn.runtime.pool_policy import PoolConfig, PoolPolicy

__all__ = ["FixedKeepAlive", "HybridHistogramPolicy", "KeepAlivePolicy", "PoolConfig", "PoolPolicy"]
