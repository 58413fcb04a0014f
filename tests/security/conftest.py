"""The attacker's view of the control API reuses the real-core fixtures of tests/integration/control."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "control"))

from _control_fixtures import control, core, nc, signing_key

__all__ = ["control", "core", "nc", "signing_key"]
