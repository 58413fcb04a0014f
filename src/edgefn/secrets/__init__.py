"""Function secrets: names and limits, encryption at rest and per node, log redaction.

See ``docs/design/0013-secrets.md``. The control plane stores values with :mod:`.crypto`'s
master-key helpers and seals them per node; a node opens its own copy and redacts the values
from its logs with :class:`.redact.Redactor`.
"""

from __future__ import annotations

from edgefn.secrets.crypto import (
    MasterKey,
    NodeKey,
    load_or_create_master_key,
    load_or_create_node_key,
    open_for_node,
    seal_for_node,
)
from edgefn.secrets.names import (
    MAX_SECRETS_PER_FUNCTION,
    MAX_VALUE_BYTES,
    validate_secret_name,
    validate_secret_value,
)
from edgefn.secrets.redact import REDACTED, Redactor

__all__ = [
    "MAX_SECRETS_PER_FUNCTION",
    "MAX_VALUE_BYTES",
    "REDACTED",
    "MasterKey",
    "NodeKey",
    "Redactor",
    "load_or_create_master_key",
    "load_or_create_node_key",
    "open_for_node",
    "seal_for_node",
    "validate_secret_name",
    "validate_secret_value",
]
