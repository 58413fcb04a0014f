"""The edge node: HTTP ingress, function table, outbound subrequests."""

from __future__ import annotations

from edgefn.edge.functions import ActiveFunction, ActiveVersion, FunctionTable
from edgefn.edge.node import EdgeNode
from edgefn.edge.outbound import Outbound, SubrequestRules, host_allowed

__all__ = [
    "ActiveFunction",
    "ActiveVersion",
    "EdgeNode",
    "FunctionTable",
    "Outbound",
    "SubrequestRules",
    "host_allowed",
]
