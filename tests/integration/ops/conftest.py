"""The ops integration tests reuse the gateway tests' helpers and the load-test runner."""
from __future__ import annotations

import pathlib
import sys

_ROOT = pathlib.Path(__file__).resolve().parents[3]
for _path in (_ROOT / "tests" / "integration" / "gateway", _ROOT / "loadtests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
