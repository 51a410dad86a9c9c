"""Report rendering: report.json, report.html and the three PNG plots from a fake report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.plots import pareto_front
from distill.report import json_safe, write_report

LABELS = [str(i) for i in range(10)]


def fake_report() -> dict:
    """A report dict shaped like the pipeline's, with numpy types where the pipeline has them."""
    rng = np.random.default_rng(0)

    def variant(accuracy, params, latency, size):
        per_class = {label: float(np.clip(accuracy + rng.normal(0, 0.03), 0, 1)) for label in LABELS}
        return {"accuracy": np.float64(accuracy), "params": np.int64(params),
                "latency_ms": {"batch1": latency, "batch64": latency * 20},
                "torch_latency_ms": {"batch1": latency * 3, "batch64": latency * 25},
                "onnx_size_bytes": size, "per_class": per_class, "ece": 0.03,
                "worst_class": {"label": "7", "accuracy": min(per_class.values())}}

    sweep = [{"temperature": t, "alpha": a, "val_accuracy": float(0.85 + 0.01 * np.log2(t) + 0.02 * a),
              "params": 8010, "latency_ms_batch1": 0.02 + rng.uniform(0, 0.004), "chosen": False,
              "kind": "kd"} for t in (1, 2, 4, 8, 16) for a in (0.5, 0.7, 0.9)]
    sweep[-1]["chosen"] = True
    sweep.append({"temperature": None, "alpha": 0.0, "val_accuracy": 0.84, "params": 8010,
                  "latency_ms_batch1": 0.021, "chosen": False, "kind": "baseline"})
    student = variant(0.925, 8010, 0.021, 40_000) | {"temperature": 16.0, "alpha": 0.9,
                                                     "int8": {"accuracy": 0.921, "onnx_size_bytes": 14_000,
                                                              "latency_ms": {"batch1": 0.025, "batch64": 0.3}}}
    return {
        "config": {"dataset": {"name": "mnist1d"}}, "task": "classification", "class_labels": LABELS,
        "dataset": {"name": "mnist1d", "n_train": 3600, "n_val": 400, "n_test": 1000,
                    "n_unlabeled": 40000, "sha256": "0123abcd"},
        "teacher": variant(0.956, 150_000, 0.35, 600_000) | {"source": "trained"},
        "student": student, "baseline": variant(0.88, 8010, 0.021, 40_000),
        "retention": 0.925 / 0.956, "agreement": np.float32(0.94), "speedup_batch1": 16.7,
        "size_reduction": 15.0, "param_reduction": 18.7,
        "cost_per_million_usd": {"teacher": 0.2, "student": 0.012},
        "parity": {"student_max_abs_diff": 1.2e-6, "teacher_max_abs_diff": 3.4e-6, "tolerance": 1e-4},
        "sweep": sweep,
        "timings_s": {"teacher": 40.2, "soft_labels": 1.1, "sweep": 120.0, "final": 20.0,
                      "export": 5.0, "total": 190.0, "report": 0.5},
        "soft_label_cache": {"hit": False, "key": "deadbeef"},
        "strategies": [{"strategy": "labeled only", "accuracy": 0.87}, {"strategy": "transfer set",
                                                                       "accuracy": 0.925}],
    }


def test_report_writes_json_html_and_three_pngs(tmp_path):
    html_path = write_report(tmp_path, fake_report())
    assert html_path == tmp_path / "report.html"
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["teacher"]["params"] == 150_000 and written["agreement"] == pytest.approx(0.94)
    assert len(written["sweep"]) == 16
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["accuracy_vs_latency.png", "per_class_accuracy.png", "temperature_alpha_heatmap.png"]
    for png in pngs:
        data = (tmp_path / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 3  # self-contained
    for text in ("95.60 %", "92.50 %", "88.00 %", "student INT8", "16.7×", "Sweep", "Strategies",
                 "transfer set", "miss (teacher run", "deadbeef", "$0.012", "150,000"):
        assert text in page, text
    assert page.index("<td>report</td>") < page.index("<td>total</td>")  # the total comes last


def test_report_tolerates_a_black_box_run_without_baseline_or_sweep(tmp_path):
    report = fake_report()
    for key in ("baseline", "sweep", "strategies", "parity", "timings_s"):
        report.pop(key)
    report["teacher"] = {"accuracy": 0.95, "source": "logits"}  # no ONNX teacher: no latency
    html_path = write_report(tmp_path, report)
    assert "—" in html_path.read_text()
    assert (tmp_path / "plots" / "per_class_accuracy.png").exists()
    assert not (tmp_path / "plots" / "temperature_alpha_heatmap.png").exists()


def test_regression_report_shows_mse_and_skips_accuracy_plots(tmp_path):
    sweep = [{"kind": "kd", "temperature": t, "alpha": 0.5, "val_neg_mse": -0.5 / t, "chosen": t == 4,
              "latency_ms_batch1": 0.01} for t in (1, 2, 4)]
    report = {"task": "regression", "sweep": sweep,
              "teacher": {"mse": 0.125, "params": 1000, "latency_ms": {"batch1": 0.1}},
              "student": {"mse": 0.25, "params": 100, "latency_ms": {"batch1": 0.01}}}
    page = write_report(tmp_path, report).read_text()
    assert "test MSE" in page and "0.125" in page and "validation −MSE" in page
    assert [p.name for p in (tmp_path / "plots").glob("*.png")] == ["temperature_alpha_heatmap.png"]


def test_pareto_front_keeps_only_undominated_points():
    points = [(0.02, 90.0), (0.02, 88.0), (0.03, 89.0), (0.4, 95.0), (0.5, 94.0)]
    assert pareto_front(points) == [(0.02, 90.0), (0.4, 95.0)]


def test_json_safe_converts_numpy_and_nan():
    converted = json_safe({"a": np.int64(3), "b": (np.float32(0.25),), "c": np.inf, "d": Path("x")})
    assert converted == {"a": 3, "b": [0.25], "c": None, "d": "x"}
    json.dumps(converted)


def write_example(out_dir: Path) -> Path:
    """Render the example report (used by hand to look at the plots)."""
    return write_report(out_dir, fake_report())


if __name__ == "__main__":
    print(write_example(Path("/tmp/kdgate-example-report")))


def test_headline_table_shows_a_text_teachers_int8_row_and_still_highlights_the_student():
    from distill.report import headline_table

    report = fake_report()
    report["teacher"]["int8"] = {"accuracy": 0.954, "onnx_size_bytes": 150_000, "latency_ms": {"batch1": 0.2}}
    rows = headline_table(report).split("<tr")[2:]  # after the header row
    names = [row.split("<td>")[1].split("</td>")[0] for row in rows]
    assert names == ["teacher", "teacher INT8", "student", "student INT8", "baseline"]
    assert rows[2].startswith(' class="chosen"') and sum('class="chosen"' in row for row in rows) == 1
