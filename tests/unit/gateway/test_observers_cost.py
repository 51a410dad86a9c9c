"""The cost gauges: every model call (a replaced version's too) counts; published once per window."""
from __future__ import annotations

import pytest

from gateway.core.config import load_gateway_config
from gateway.observers import COST_WINDOW_S, Observers


class Gauges:
    def __init__(self):
        self.costs: list[tuple] = []

    def set_cost(self, variant, *, provisioned, busy):
        self.costs.append((variant, provisioned, busy))

    def set_weights(self, weights):
        pass

    def export_counts(self, read):
        pass

    def observe_request(self, *args, **kwargs):
        pass


def test_cost_per_inference_over_one_window_counts_failed_and_replaced_calls(tmp_path):
    now = [1000.0]
    gauges = Gauges()
    observers = Observers(metrics=gauges, clock=lambda: now[0])
    observers.config_applied(load_gateway_config({
        "model_name": "m", "audit_log": str(tmp_path / "audit.jsonl"), "capture": {"enabled": False},
        "routing": {"weights": {"teacher": 100, "student": 0}},
        "variants": [{"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": "t.onnx",
                      "usd_per_hour": 3.6},
                     {"name": "student", "role": "student", "backend": "onnx", "model_path": "s.onnx",
                      "usd_per_hour": 0.36}]}))
    for _ in range(3):
        observers.request("student", "primary", 0.01, ok=True, rows=1)
    observers.request("student", "primary", 0.5, ok=False, rows=1)          # failed: not answered
    observers.request("teacher", "shadow", 0.02, ok=True, rows=1, windowed=False)   # a replaced version's call
    assert gauges.costs == []
    now[0] += COST_WINDOW_S
    observers.request("teacher", "primary", 0.02, ok=True, rows=1)           # closes the window
    costs = {variant: (provisioned, busy) for variant, provisioned, busy in gauges.costs}
    hours = COST_WINDOW_S / 3600
    assert costs["student"] == pytest.approx((0.36 * hours / 3, 0.03 * 0.36 / 3600 / 3))
    assert costs["teacher"] == pytest.approx((3.6 * hours / 2, 0.04 * 3.6 / 3600 / 2))
    assert observers.stats.snapshot()["variants"]["teacher"]["requests"] == {"primary": 1}   # windowed only
