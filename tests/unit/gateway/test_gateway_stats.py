"""WindowStats: counters, latency quantiles, comparisons, drift bins, merge, cost."""
from __future__ import annotations

import bisect
import json
import math

import numpy as np
import pytest

from gateway.core.compare import Comparison, compare_classification
from gateway.core.errors import GatewayError
from gateway.core.stats import (
    FOLD_ROWS,
    LATENCY_BUCKETS_S,
    PRIMARY,
    SHADOW,
    WindowStats,
    cost_per_inference,
    histogram_quantile,
    merge_snapshots,
)


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_buckets_span_25us_to_10s_about_nine_per_decade():
    assert LATENCY_BUCKETS_S[0] == 25e-6 and LATENCY_BUCKETS_S[-1] == 10.0
    assert list(LATENCY_BUCKETS_S) == sorted(set(LATENCY_BUCKETS_S))
    ratios = [b / a for a, b in zip(LATENCY_BUCKETS_S, LATENCY_BUCKETS_S[1:])]
    assert max(ratios) < 1.3
    assert 8 <= sum(1 for b in LATENCY_BUCKETS_S if 0.01 <= b < 0.1) <= 10
    assert 45 <= len(LATENCY_BUCKETS_S) <= 55  # each bound is one Prometheus series per label set


@pytest.mark.parametrize("median_s", [60e-6, 400e-6, 0.02, 0.5])
def test_p99_of_lognormal_latencies_within_ten_percent(median_s):
    """From a student's tens of microseconds to a slow teacher, p99 is readable."""
    rng = np.random.default_rng(7)
    latencies = rng.lognormal(mean=math.log(median_s), sigma=0.5, size=20_000)
    counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
    for lat in latencies:
        counts[bisect.bisect_left(LATENCY_BUCKETS_S, lat)] += 1
    for q in (0.5, 0.99):
        exact = float(np.quantile(latencies, q))
        assert abs(histogram_quantile(counts, q) - exact) / exact <= 0.10


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_quantile_from_histogram_is_close_to_exact(q):
    rng = np.random.default_rng(1)
    latencies = rng.lognormal(mean=math.log(0.01), sigma=0.8, size=20_000)
    stats = WindowStats(clock=FakeClock())
    for lat in latencies:
        stats.record_request("student", PRIMARY, float(lat), ok=True, rows=1)
    estimate = stats.quantile("student", PRIMARY, q)
    exact = float(np.quantile(latencies, q))
    assert abs(estimate - exact) / exact < 0.1  # well inside one 26 % bucket


def test_histogram_quantile_edges():
    assert histogram_quantile([0, 0, 0], 0.5, upper_bounds=[0.001, 0.002]) is None
    assert histogram_quantile([0, 0, 4], 0.99, upper_bounds=[0.001, 0.002]) == 0.002  # overflow slot
    assert histogram_quantile([4, 0, 0], 0.5, upper_bounds=[0.001, 0.002]) == pytest.approx(0.0005)


def test_requests_errors_rows_by_variant_and_route():
    stats = WindowStats(clock=FakeClock())
    stats.record_request("student", PRIMARY, 0.003, ok=True, rows=8)
    stats.record_request("student", PRIMARY, 0.5, ok=False, rows=8)
    stats.record_request("teacher", SHADOW, 0.02, ok=True, rows=8)
    stats.record_fallback("student")
    stats.record_shadow_drop("teacher")
    stats.record_busy("student", 0.002)
    student = stats.snapshot()["variants"]["student"]
    assert student["requests"] == {PRIMARY: 2}
    assert student["errors"] == {PRIMARY: 1}
    assert student["inferences"] == {PRIMARY: 8}
    assert sum(student["latency_counts"][PRIMARY]) == 2
    assert len(student["latency_counts"][PRIMARY]) == len(LATENCY_BUCKETS_S) + 1
    assert student["latency_sum_s"][PRIMARY] == pytest.approx(0.503)
    assert (student["fallbacks"], student["busy_s"]) == (1, pytest.approx(0.002))
    teacher = stats.snapshot()["variants"]["teacher"]
    assert teacher["requests"] == {SHADOW: 1} and teacher["shadow_drops"] == 1


def test_latency_on_a_bound_lands_in_that_bucket():
    stats = WindowStats(clock=FakeClock())
    stats.record_request("s", PRIMARY, LATENCY_BUCKETS_S[0], ok=True, rows=1)
    stats.record_request("s", PRIMARY, 99.0, ok=True, rows=1)
    counts = stats.snapshot()["variants"]["s"]["latency_counts"][PRIMARY]
    assert counts[0] == 1 and counts[-1] == 1


def test_handler_latency_per_answering_variant_adds_across_replicas():
    a, b = WindowStats(), WindowStats()
    for seconds in (0.0001, 0.0002, 0.0004):
        a.record_handled("student", seconds)
    b.record_handled("student", 0.05)
    assert a.handler_quantile("teacher", 0.5) is None
    assert 0.00015 < a.handler_quantile("student", 0.5) <= 0.00025
    merged = merge_snapshots([a.snapshot(), b.snapshot()])["variants"]["student"]
    assert sum(merged["handler_latency_counts"]) == 4
    assert merged["handler_latency_sum_s"] == pytest.approx(0.0507)
    assert a.snapshot()["variants"]["student"]["requests"] == {}  # requests count model answers, not this


def test_comparisons_accumulate_sums():
    stats = WindowStats(clock=FakeClock())
    t = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    s = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    comps = compare_classification(t, s)
    stats.record_comparison("teacher", "student", comps)
    stats.record_comparison("teacher", "student", [Comparison(agree=True, abs_error=0.5)])
    pair = stats.snapshot()["comparisons"]["teacher"]["student"]
    assert (pair["compared"], pair["agreements"]) == (4, 3)
    assert pair["kl_sum"] == pytest.approx(sum(c.kl for c in comps))
    assert pair["abs_error_sum"] == pytest.approx(0.5)


def test_outputs_and_inputs_are_binned():
    stats = WindowStats(input_edges=[[0.0, 1.0], [10.0]], clock=FakeClock())
    stats.record_inputs("student", np.array([[-1.0, 5.0], [0.5, 20.0], [3.0, 10.0]]))
    stats.record_outputs("student", np.array([2, 2, 0]))
    stats.record_outputs("student", np.array([4]))
    entry = stats.snapshot()["variants"]["student"]
    # digitize: feature 0 -> bins 0, 1, 2; feature 1 -> 0, 1, 1 (10.0 is not below edge 10.0)
    assert entry["input_bins"] == [[1, 1, 1], [1, 2]]
    assert entry["class_counts"] == [1, 0, 2, 0, 1]
    with pytest.raises(GatewayError, match="3 features"):
        stats.record_inputs("student", np.zeros((1, 3)))


def test_input_bins_equal_numpy_digitize_per_feature():
    # The bins are computed for all features at once; numpy.digitize per feature is the reference,
    # with edges of different lengths, repeated edges, values on an edge, +-inf and NaN.
    rng = np.random.default_rng(3)
    edges = [np.sort(rng.normal(size=n)).tolist() for n in (1, 4, 9, 9)] + [[-1.0, 0.0, 0.0, 2.0]]
    x = rng.normal(size=(300, len(edges)))
    x[:5, 4] = [0.0, -1.0, 2.0, np.inf, -np.inf]
    x[5:8, 1] = [edges[1][0], np.nan, edges[1][3]]
    stats = WindowStats(input_edges=edges, clock=FakeClock())
    stats.record_inputs("student", x[:20])
    stats.snapshot()                           # folds 20 rows: the broadcast comparison
    stats.record_inputs("student", x[20:120])
    for row in x[120:]:                        # one row per request: folded at FOLD_ROWS and at the
        stats.record_inputs("teacher", row[None])  # next reading, by a binary search per feature
    expected = [np.bincount(np.digitize(x[:, f], e), minlength=len(e) + 1).tolist() for f, e in enumerate(edges)]
    variants = stats.snapshot()["variants"]
    summed = [[a + b for a, b in zip(s, t)]
              for s, t in zip(variants["student"]["input_bins"], variants["teacher"]["input_bins"])]
    assert summed == expected
    assert stats.drift_counts()[2] == expected


def test_pending_rows_fold_once_and_every_reading_sees_them():
    stats = WindowStats(input_edges=[[0.0]], n_classes=2, clock=FakeClock())
    for i in range(FOLD_ROWS + 3):   # past one automatic fold, then 3 rows + 3 classes still pending
        stats.record_inputs("student", np.array([[float(i % 2) - 0.5]]))
        stats.record_outputs("student", np.array([i % 2]))
    half = (FOLD_ROWS + 3) // 2
    started, classes, bins = stats.drift_counts()
    assert classes == {"student": [FOLD_ROWS + 3 - half, half]} and bins == [[FOLD_ROWS + 3 - half, half]]
    assert stats.snapshot()["variants"]["student"]["input_bins"] == bins   # nothing counted twice
    stats.set_input_edges([[0.0], [1.0]])   # new edges: the bins start over, the classes stay
    assert stats.drift_counts()[1:] == ({"student": [FOLD_ROWS + 3 - half, half]}, [])


def test_snapshot_is_json_and_a_copy():
    stats = WindowStats(clock=FakeClock())
    stats.record_request("s", PRIMARY, 0.01, ok=True, rows=1)
    snap = stats.snapshot()
    json.dumps(snap)
    stats.record_request("s", PRIMARY, 0.01, ok=True, rows=1)
    assert snap["variants"]["s"]["requests"][PRIMARY] == 1


def test_reset_starts_a_new_window():
    clock = FakeClock(100.0)
    stats = WindowStats(clock=clock)
    stats.record_request("s", PRIMARY, 0.01, ok=True, rows=1)
    clock.now = 160.0
    stats.reset()
    snap = stats.snapshot()
    assert snap["variants"] == {} and snap["started_at"] == 160.0


def test_merge_snapshots_sums_replicas():
    clock = FakeClock(100.0)
    a, b = WindowStats(clock=clock), WindowStats(clock=clock)
    a.record_request("student", PRIMARY, 0.004, ok=True, rows=2)
    b.record_request("student", PRIMARY, 0.004, ok=False, rows=2)
    b.record_request("teacher", SHADOW, 0.02, ok=True, rows=2)
    a.record_outputs("student", np.array([1]))
    b.record_outputs("student", np.array([3]))
    a.record_comparison("teacher", "student", [Comparison(agree=True, kl=0.1)])
    b.record_comparison("teacher", "student", [Comparison(agree=False, kl=0.3)])
    clock.now = 130.0
    merged = merge_snapshots([a.snapshot(), b.snapshot()])
    assert merged["replicas"] == 2 and merged["taken_at"] == 130.0
    student = merged["variants"]["student"]
    assert student["requests"] == {PRIMARY: 2} and student["errors"] == {PRIMARY: 1}
    assert sum(student["latency_counts"][PRIMARY]) == 2
    assert student["class_counts"] == [0, 1, 0, 1]
    assert merged["variants"]["teacher"]["requests"] == {SHADOW: 1}
    pair = merged["comparisons"]["teacher"]["student"]
    assert (pair["compared"], pair["agreements"], pair["kl_sum"]) == (2, 1, pytest.approx(0.4))
    with pytest.raises(GatewayError):
        merge_snapshots([])


def test_cost_per_inference_two_ways():
    clock = FakeClock(0.0)
    stats = WindowStats(clock=clock)
    for _ in range(100):
        stats.record_request("student", PRIMARY, 0.01, ok=True, rows=1)
    stats.record_busy("student", 36.0)
    clock.now = 3600.0
    cost = cost_per_inference(stats.snapshot(), "student", usd_per_hour=2.0, replicas=3)
    assert cost["provisioned_usd"] == pytest.approx(2.0 * 3 * 1.0 / 100)
    assert cost["busy_usd"] == pytest.approx(36.0 * 2.0 / 3600 / 100)
    assert cost_per_inference(stats.snapshot(), "teacher", usd_per_hour=2.0)["provisioned_usd"] is None


def test_fixed_class_count_and_bins_from_the_start():
    stats = WindowStats(input_edges=[[0.0], [0.0, 1.0]], n_classes=3, clock=FakeClock())
    stats.record_request("student", PRIMARY, 0.01, ok=True, rows=1)
    entry = stats.snapshot()["variants"]["student"]
    assert entry["class_counts"] == [0, 0, 0]
    assert entry["input_bins"] == [[0, 0], [0, 0, 0]]
    stats.record_outputs("student", np.array([1]))
    assert stats.snapshot()["variants"]["student"]["class_counts"] == [0, 1, 0]
