"""The demo report's pure parts: timeline from window-stat snapshots, summary rows, HTML."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.core.compare import compare_classification
from gateway.core.stats import PRIMARY, SHADOW, WindowStats
from kdgate.demo.report import (
    rollback_moments, stage_summary, summary_cells, timeline_points, weight_path, write_demo_report,
)

PRICES = {"teacher": 0.4, "student": 0.1}


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _samples(seconds: int, *, stage: str = "good", weight: float = 25.0, agree: bool = True) -> list[dict]:
    """One sample per second of 10 requests: student primary 4 ms, teacher primary 20 ms."""
    clock, rng = _Clock(), np.random.default_rng(0)
    stats = WindowStats(clock=clock)
    samples = []
    for _ in range(seconds):
        clock.t += 1.0
        for _ in range(10):
            stats.record_request("student", PRIMARY, 0.004, True, 1)
            stats.record_busy("student", 0.004)
            stats.record_request("teacher", PRIMARY, 0.020, True, 1)
            stats.record_busy("teacher", 0.020)
            stats.record_request("teacher", SHADOW, 0.020, True, 1)
        teacher = rng.normal(size=(10, 10))
        student = teacher if agree else rng.normal(size=(10, 10))
        stats.record_comparison("teacher", "student", compare_classification(teacher, student))
        samples.append({"t": clock.t, "stage": stage, "phase": "Progressing", "rollout_weight": weight,
                        "candidate": "student", "stable": "teacher",
                        "weights": {"teacher": 100 - weight, "student": weight}, "stats": stats.snapshot()})
    return samples


def test_timeline_points_measure_each_window_like_the_gates_do():
    points = timeline_points(_samples(8), teacher="teacher", student="student", prices=PRICES, window_s=5)
    assert len(points) == 8 and all(p["weight"] == 25.0 for p in points)
    assert "agreement" not in points[0]   # no full window behind the first samples yet
    last = points[-1]
    assert last["agreement"] == 1.0 and last["compared"] == 50
    assert last["student"]["p50_ms"] == pytest.approx(4.0, rel=0.3)
    assert last["teacher"]["p99_ms"] == pytest.approx(20.0, rel=0.3)
    # cost: busy seconds x $/h / inferences -> 0.004 s x $0.1/h = $1.1e-7 per inference
    assert last["student"]["usd_per_million"] == pytest.approx(0.004 * 0.1 / 3600 * 1e6, rel=1e-6)
    assert last["rps"] == pytest.approx(30.0)


def test_a_restarted_replica_starts_a_new_window_instead_of_negative_counts():
    first, second = _samples(6), _samples(6)
    for s in second:
        s["stats"]["started_at"] += 1.0   # another stats lifetime
        s["t"] += 100
    points = timeline_points(first + second, teacher="teacher", student="student", prices=PRICES, window_s=5)
    assert "agreement" not in points[6] and "agreement" in points[-1]


def test_weight_path_collapses_repeats_in_order():
    assert weight_path([{"weight": w} for w in (0, 0, 5, 25, 25, 100)]) == [0, 5, 25, 100]
    assert weight_path([{"weight": w} for w in (5, 5, 0)]) == [5, 0]


def _stage_row(agree: bool = True, phase: str = "Promoted") -> dict:
    stage = {"key": "good", "title": "v1: distilled student", "variant": "student"}
    points = timeline_points(_samples(8, agree=agree), teacher="teacher", student="student", prices=PRICES, window_s=5)
    status = {"phase": phase, "reason": "all gates passed", "updated_at": points[-1]["t"], "stable": "student"}
    return stage_summary(stage, points, status, {"requests": 120, "failures": 0, "p99_ms": 30.0})


def test_stage_summary_row_and_cells():
    row = _stage_row()
    assert row["outcome"] == "Promoted" and row["weights_seen"] == [25.0] and row["agreement"] == 1.0
    assert row["failures"] == 0 and row["seconds"] == pytest.approx(7.0)
    cells = summary_cells(row)
    assert cells[0] == "v1: distilled student" and cells[4] == "100.0 %" and cells[8] == "120"
    assert summary_cells({**row, "agreement": None})[4] == "-"
    assert (row["stable_before"], row["stable_after"], cells[2]) == ("teacher", "student", "teacher → student")


def test_rollback_moments_come_from_rolled_back_stages_only():
    stages = [{"variant": "student", "status": {"phase": "Promoted", "updated_at": 1.0}},
              {"variant": "student-v2", "status": {"phase": "RolledBack", "updated_at": 9.0, "reason": "x"}}]
    assert rollback_moments(stages) == [(9.0, "student-v2 rolled back")]


def test_write_demo_report_renders_html_with_plots_and_checks(tmp_path):
    row = _stage_row(agree=False, phase="RolledBack")
    points = timeline_points(_samples(8, agree=False), teacher="teacher", student="student", prices=PRICES,
                             window_s=5)
    check = {"at": points[-1]["t"], "window": {"start": points[0]["t"], "end": points[-1]["t"]},
             "phase": "Progressing", "weight": 25.0, "verdict": "failed", "decision": "rollback: agreement",
             "gates": [{"name": "agreement", "status": "failed", "value": 0.1, "threshold": 0.9}]}
    details = [{"title": row["title"], "variant": "student", "checks": [check],
                "status": {"phase": "RolledBack", "updated_at": points[-1]["t"], "reason": "agreement failed"}}]
    report = {"subtitle": "test", "stages": [row], "stage_details": details, "points": points, "notes": ["a note"]}
    html_path = write_demo_report(tmp_path, report)
    text = html_path.read_text()
    assert "data:image/png;base64" in text and "rollback: agreement" in text and "a note" in text
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["agreement.png", "cost.png", "latency.png",
                                                                      "stable.png", "weight.png"]
    assert (tmp_path / "report.json").exists()


def test_promotions_are_the_moments_a_candidate_becomes_stable():
    from kdgate.demo.plots import promotion_moments

    points = [{"t": 1, "candidate": "v1", "stable": "teacher"}, {"t": 2, "candidate": "v1", "stable": "v1"},
              {"t": 3, "candidate": "v2", "stable": "v1"}, {"t": 4, "candidate": "v1", "stable": "v1"},
              {"t": 5, "candidate": "v3", "stable": "teacher"}, {"t": 6, "candidate": "v3", "stable": "v3"}]
    assert promotion_moments(points) == [(2, "v1 promoted"), (6, "v3 promoted")]   # v1 guarded again: none


def test_locust_runs_of_one_stage_add_up():
    from kdgate.demo.load import combined_stats

    healthy = {"requests": 100, "failures": 0, "p50_ms": 3.0, "p99_ms": 20.0, "rps": 50.0}
    drifted = {"requests": 300, "failures": 2, "p50_ms": 4.0, "p99_ms": 12.0, "rps": 60.0}
    both = combined_stats([healthy, drifted])
    assert (both["requests"], both["failures"], both["p99_ms"], both["p50_ms"]) == (400, 2, 20.0, 4.0)
    assert combined_stats([healthy]) == healthy
