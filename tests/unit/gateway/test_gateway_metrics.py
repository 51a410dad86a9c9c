"""HeldGauge: rarely-changing gauges are set again so Ray does not evict them (~20 s TTL)."""
from __future__ import annotations

from gateway.serve.metrics import GatewayMetrics, HeldGauge


class RecordingGauge:
    def __init__(self):
        self.calls: list[tuple[float, dict]] = []

    def set(self, value, tags):
        self.calls.append((value, dict(tags)))


def test_refresh_sets_every_series_again_to_its_last_value():
    gauge = HeldGauge("kdgate_test_ratio", description="test", tag_keys=("variant",))
    gauge._gauge = RecordingGauge()
    gauge.set(0.95, {"variant": "teacher"})
    gauge.set(0.05, {"variant": "student"})
    gauge.set(0.10, {"variant": "student"})
    gauge._gauge.calls.clear()
    gauge.refresh()
    assert sorted(gauge._gauge.calls, key=lambda c: c[1]["variant"]) == [
        (0.10, {"variant": "student"}), (0.95, {"variant": "teacher"})]


def test_gateway_metrics_refresh_covers_weights_and_cost():
    metrics = GatewayMetrics(model="m")
    metrics.weight._gauge, metrics.cost._gauge = RecordingGauge(), RecordingGauge()
    metrics.set_weights({"teacher": 90.0, "student": 10.0})
    metrics.set_cost("student", provisioned=1e-6, busy=None)
    metrics.weight._gauge.calls.clear()
    metrics.cost._gauge.calls.clear()
    metrics.refresh()
    assert {c[1]["variant"]: c[0] for c in metrics.weight._gauge.calls} == {"teacher": 0.9, "student": 0.1}
    assert metrics.cost._gauge.calls == [(1e-6, {"variant": "student", "model": "m", "method": "provisioned"})]
