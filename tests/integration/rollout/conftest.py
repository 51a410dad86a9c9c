"""The rollout integration tests reuse the gateway tests' helpers (deploys, traffic, the admin API)."""
from __future__ import annotations

import pathlib
import sys

_GATEWAY_TESTS = str(pathlib.Path(__file__).resolve().parents[1] / "gateway")
if _GATEWAY_TESTS not in sys.path:
    sys.path.insert(0, _GATEWAY_TESTS)
