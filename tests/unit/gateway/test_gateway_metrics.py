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


class RecordingCounter:
    def __init__(self):
        self.calls: list[tuple[float, dict]] = []

    def inc(self, value, tags):
        self.calls.append((value, dict(tags)))


def _exported_names(metrics: GatewayMetrics) -> set[str]:
    """Series names Ray exports for the replica's metrics (``ray_`` prefix; histograms' three series)."""
    from ray.util.metrics import Counter, Histogram

    names = set()
    for metric in vars(metrics).values():
        metric = getattr(metric, "_gauge", metric)
        if isinstance(metric, Histogram):
            names |= {f"ray_{metric._name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        elif isinstance(metric, Counter) or hasattr(metric, "_name"):
            names.add(f"ray_{metric._name}")
    return names


def test_every_series_the_prometheus_rollout_source_reads_is_one_the_gateway_exports():
    # The source once read ray_kdgate_busy_seconds_total, ray_kdgate_predictions_total and
    # ray_kdgate_input_bin_total, which no replica exported: with rollout.source prometheus the
    # drift gates never had data, so no rollout could pass a check, and the cost gate had no busy time.
    from gateway.rollout.prometheus_source import METRICS

    exported = _exported_names(GatewayMetrics(model="m"))
    assert set(METRICS.values()) <= exported, set(METRICS.values()) - exported


def test_class_counts_and_input_bins_reach_their_counters():
    metrics = GatewayMetrics(model="m")
    metrics.predictions, metrics.input_bins = RecordingCounter(), RecordingCounter()
    metrics.observe_classes("student", [3, 0, 2])
    metrics.observe_input_bins([[1, 0], [0, 1]])
    metrics.observe_input_bins([[1, 0], [0, 1]])
    metrics.flush()
    assert sorted((c[1]["class"], c[0]) for c in metrics.predictions.calls) == [("0", 3), ("2", 2)]
    assert all(c[1]["variant"] == "student" and c[1]["model"] == "m" for c in metrics.predictions.calls)
    assert sorted((c[1]["feature"], c[1]["bin"], c[0]) for c in metrics.input_bins.calls) == [
        ("0", "0", 2), ("1", "1", 2)]
    metrics.close()


def test_observers_send_the_window_stats_class_counts_and_input_bins_to_the_metrics():
    from types import SimpleNamespace
    from unittest import mock

    import numpy as np

    from gateway.core.stats import WindowStats
    from gateway.observers import Observers

    metrics = mock.Mock(spec=GatewayMetrics)
    observers = Observers(metrics=metrics)
    observers._config = SimpleNamespace(task="classification")
    observers.stats = WindowStats(input_edges=[[0.0], [0.0]], n_classes=3)
    x = np.array([[-1.0, 1.0], [1.0, 1.0], [2.0, -3.0]])
    y = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    observers.request("student", "primary", 0.001, ok=True, rows=3, x=x, y=y)
    observers.request("teacher", "shadow", 0.001, ok=True, rows=3, x=x, y=y)   # inputs once, on primary
    metrics.observe_input_bins.assert_called_once_with([[1, 2], [1, 2]])
    assert metrics.observe_classes.call_args_list == [mock.call("student", [1, 2]), mock.call("teacher", [1, 2])]
