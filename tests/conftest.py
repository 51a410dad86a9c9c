"""Shared test configuration: unit tests never start Ray."""
from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _forbid_ray_in_unit_tests(request, monkeypatch):
    """tests/unit must stay pure: any attempt to start Ray fails the test."""
    if "tests/unit" not in str(request.node.fspath).replace("\\", "/"):
        return
    try:
        import ray  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return

    def _no_ray(*_a, **_k):
        raise AssertionError("unit tests must not start Ray (move the test to tests/integration)")

    monkeypatch.setattr(ray, "init", _no_ray)
