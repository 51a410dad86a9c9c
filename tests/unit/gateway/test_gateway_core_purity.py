"""The pure cores stay pure: importing gateway.core.* or gateway.rollout.core.* loads no Ray, HTTP or metrics library."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]

FORBIDDEN = ["ray", "prometheus_client", "httpx", "requests", "fastapi", "starlette", "tritonclient"]

_PROBE = """
import importlib, json, pkgutil, sys
import gateway.core, gateway.rollout.core
for pkg in (gateway.core, gateway.rollout.core):
    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(pkg.__name__ + "." + mod.name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)))
"""


def test_core_imports_no_adapter_libraries():
    # A fresh interpreter: this test process may already have loaded ray for other tests.
    probe = f"FORBIDDEN = {FORBIDDEN!r}\n{_PROBE}"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
