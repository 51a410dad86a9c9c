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
    from gateway.serve.count_exporter import CountExporter

    exported = _exported_names(GatewayMetrics(model="m")) | _exported_names(CountExporter())
    assert set(METRICS.values()) <= exported, set(METRICS.values()) - exported


def test_the_exporter_counts_classes_and_input_bins_under_the_application_not_the_replica():
    from gateway.serve.count_exporter import CountExporter

    exporter = CountExporter()
    exporter.predictions, exporter.input_bins = RecordingCounter(), RecordingCounter()
    tags = {"application": "kdgate", "deployment": "Gateway", "model": "m"}
    exporter.add(tags, {"student": [3, 0, 2]}, [[1, 0], [0, 1]])
    exporter.add(tags, {}, [[1, 0], [0, 1]])
    assert sorted((c[1]["class"], c[0]) for c in exporter.predictions.calls) == [("0", 3), ("2", 2)]
    assert all(c[1] == {**tags, "variant": "student", "class": c[1]["class"]} for c in exporter.predictions.calls)
    assert sorted((c[1]["feature"], c[1]["bin"], c[0]) for c in exporter.input_bins.calls) == [
        ("0", "0", 1), ("0", "0", 1), ("1", "1", 1), ("1", "1", 1)]
    assert {frozenset(c[1]) for c in exporter.input_bins.calls} == {frozenset({*tags, "feature", "bin"})}


class RecordingSink:
    def __init__(self):
        self.classes: list[tuple[str, str, int]] = []   # (variant, class, n)
        self.bins: list[tuple[str, str, int]] = []      # (feature, bin, n)

    def __call__(self, classes, bins):
        self.classes += [(v, str(c), n) for v, counts in classes.items() for c, n in enumerate(counts) if n]
        self.bins += [(str(f), str(b), n) for f, row in enumerate(bins) for b, n in enumerate(row) if n]

    def clear(self):
        self.classes.clear(), self.bins.clear()


def test_the_window_stats_counts_reach_the_exporter_once_per_flush_as_growth():
    # Off the request path: each flush exports what the cumulative counts grew by since the last.
    import numpy as np

    from gateway.core.stats import WindowStats

    metrics = GatewayMetrics(model="m")
    metrics.count_sink = sink = RecordingSink()
    stats = WindowStats(input_edges=[[0.0], [0.0]], n_classes=3)
    metrics.export_counts(stats.drift_counts)
    x = np.array([[-1.0, 1.0], [1.0, 1.0], [2.0, -3.0]])
    stats.record_inputs("student", x)
    stats.record_outputs("student", np.array([1, 1, 0]))
    stats.record_outputs("teacher", np.array([1, 1, 0]))   # a shadow answer: classes, no inputs
    metrics.flush()
    assert sorted(sink.classes) == [("student", "0", 1), ("student", "1", 2), ("teacher", "0", 1), ("teacher", "1", 2)]
    assert sorted(sink.bins) == [("0", "0", 1), ("0", "1", 2), ("1", "0", 1), ("1", "1", 2)]
    sink.clear()
    metrics.flush()                                            # nothing new: nothing sent
    assert sink.classes == [] and sink.bins == []
    stats.record_inputs("teacher", x[:1])
    metrics.flush()
    assert sink.bins == [("0", "0", 1), ("1", "1", 1)]
    restarted = WindowStats(input_edges=[[0.0], [0.0]], n_classes=3)   # a new config: counts from zero
    restarted.record_outputs("student", np.array([2]))
    metrics.export_counts(restarted.drift_counts)
    sink.clear()
    metrics.flush()
    assert sink.classes == [("student", "2", 1)]
    metrics.close()


def test_input_bins_are_exported_only_where_the_rollout_reads_prometheus():
    # features x bins series: only the Prometheus rollout source reads them; class counts always go.
    from types import SimpleNamespace

    import numpy as np

    from gateway.core.stats import WindowStats
    from gateway.observers import Observers

    sent = {}
    for source in ("embedded", "prometheus", None):
        metrics = GatewayMetrics(model="m")
        metrics.count_sink = sink = RecordingSink()
        observers = Observers(metrics=metrics)
        observers.stats = WindowStats(input_edges=[[0.0]], n_classes=2)
        observers._config = SimpleNamespace(rollout=None if source is None else SimpleNamespace(source=source))
        observers.stats.record_inputs("student", np.array([[1.0]]))
        observers.stats.record_outputs("student", np.array([1]))
        metrics.flush()
        metrics.close()
        sent[source] = (sink.classes, sink.bins)
    assert sent == {"embedded": ([("student", "1", 1)], []), None: ([("student", "1", 1)], []),
                    "prometheus": ([("student", "1", 1)], [("0", "1", 1)])}
