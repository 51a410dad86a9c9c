"""The timeline script: a simulated healthy student promotes, a drifting one is rolled back."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

from gateway.rollout.core.spec import RolloutSpec

SCRIPT = pathlib.Path(__file__).resolve().parents[3] / "loadtests" / "rollout_timeline.py"
T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def timeline():
    spec = importlib.util.spec_from_file_location("rollout_timeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run(timeline, tmp_path, drift_at, interval=20.0):
    spec = RolloutSpec(interval_s=interval, min_samples=200, failure_threshold=2, deadline_s=200)
    traffic = timeline.SimulatedTraffic(rps=15, seed=3, drift_at=drift_at)
    return timeline.simulate(spec, traffic, duration_s=400, state_dir=tmp_path, t0=T0)


def test_healthy_student_goes_from_shadow_to_100(timeline, tmp_path):
    checks = run(timeline, tmp_path, drift_at=None)
    weights = [c["weight"] for c in checks]
    assert weights == sorted(weights) and sorted(set(weights)) == [0.0, 5.0, 10.0, 25.0, 50.0]
    assert checks[-1]["decision"].startswith("promoted to 100 %")
    assert {c["verdict"] for c in checks} <= {"passed", "waiting"}   # too few samples waits


def test_drifting_student_is_rolled_back_within_two_intervals(timeline, tmp_path):
    interval, drift_at = 20.0, 50.0
    checks = run(timeline, tmp_path, drift_at=drift_at, interval=interval)
    visible = next(c["at"] - T0 for c in checks if c["verdict"] == "failed")
    rolled_back = checks[-1]
    assert rolled_back["decision"].startswith("rolled back")
    assert visible - drift_at <= interval and rolled_back["at"] - T0 - visible <= 2 * interval
    failed = {g["name"] for g in rolled_back["gates"] if g["status"] == "failed"}
    assert {"agreement", "input_drift"} <= failed
    # The evidence bundle the reconciler wrote prints the same timeline.
    bundle = next((tmp_path / "evidence").iterdir())
    text = timeline.format_timeline(timeline.load_evidence(bundle), t0=T0)
    assert text.splitlines()[-1] == timeline.format_timeline(checks, t0=T0).splitlines()[-1]


def test_main_prints_both_scenarios(timeline, capsys):
    assert timeline.main(["--interval", "20", "--rps", "15", "--drift-at", "50", "--duration", "300"]) == 0
    out = capsys.readouterr().out
    assert "== healthy student" in out and "-> promoted to 100 % at t=" in out
    assert "-> rolled back from" in out
