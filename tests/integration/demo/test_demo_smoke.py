"""`make demo`'s whole flow, shortened: tiny models, 1-second analysis intervals.

The models come from a seconds-long `kdgate distill` of ``distill/configs/tiny.yaml``;
its student is too weak to pass the gates, so v1 is replaced by a lightly perturbed copy
of the tiny teacher (about 95 % agreement) before ``python -m kdgate.demo
--skip-distill`` runs as a user would (its own Ray, Serve, Locust). The demo cannot rot
silently: v1 must be promoted (teacher -> v1), the corrupted v2 rolled back onto v1, the
drift must make the guard roll v1 back to the teacher, the captured rows must go through
`kdgate capture export` and `kdgate distill` into a v3 that is rolled out; no request may
fail, the report must be written and no process may be left behind. v3 is distilled from
the tiny recipe's weak student, so the test accepts either verdict for it (consistently
reported); on the demo's own models it is promoted (README).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = pathlib.Path(__file__).resolve().parents[3]
TINY = ROOT / "distill" / "configs" / "tiny.yaml"


def _tiny_models(out: pathlib.Path) -> None:
    from distill.config import load_config
    from distill.pipeline import run_pipeline
    from kdgate.demo.setup import DemoModels, perturb_onnx, write_traffic_rows

    run_pipeline(load_config(TINY), out)
    models = DemoModels.from_dir(out)
    write_traffic_rows(TINY, models)
    perturb_onnx(models.teacher, models.student, noise=0.02)


@pytest.mark.timeout(480)
def test_demo_tells_the_lifecycle_v1_v2_drift_v3(tmp_path):
    models = tmp_path / "models"
    _tiny_models(models)
    # 150 samples per check: with 40 rows per check the worst of 40 features' PSI reached 0.266
    # by chance once (fresh-clone run) and rolled the healthy v1 back on input drift.
    command = [sys.executable, "-m", "kdgate.demo", "--skip-distill", "--config", str(TINY), "--out", str(models),
               "--interval", "1", "--guard-interval", "3", "--guard-shadow", "0.5", "--min-samples", "150",
               "--linger", "1", "--bad-noise", "1.0", "--stage-timeout", "90", "--users", "2", "--v3-epochs", "3",
               "--capture-s", "3", "--latency-requests", "200"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=460)
    output = proc.stdout + proc.stderr
    report_dir = models / "demo-report"
    report = json.loads((report_dir / "report.json").read_text())
    unexpected = [n for n in report["notes"] if n.startswith("NOT as expected")]
    assert proc.returncode == (1 if unexpected else 0), output[-4000:]
    assert all("v3" in n for n in unexpected), unexpected     # only v3's verdict may differ (weak tiny student)
    rows = {row["stage"]: row for row in report["stages"]}
    assert list(rows) == ["v1", "v2", "drift", "v3"], output[-3000:]
    lifecycle = [(r["stable_before"], r["outcome"], r["stable_after"]) for r in report["stages"][:3]]
    assert lifecycle == [("teacher", "Guarding", "v1"), ("v1", "RolledBack", "v1"),
                         ("v1", "RolledBack", "teacher")], (lifecycle, output[-3000:])
    v3 = rows["v3"]
    assert v3["stable_before"] == "teacher"
    assert (v3["outcome"], v3["stable_after"]) in {("Guarding", "v3"), ("RolledBack", "teacher")}
    assert "input_drift" in rows["drift"]["reason"] and rows["drift"]["reason"].startswith("guard rolled v1 back")
    assert [row["failures"] for row in report["stages"]] == [0, 0, 0, 0]
    assert all(row["requests"] > 0 for row in report["stages"])
    assert rows["v1"]["weights_seen"][-1] == 100.0 and rows["v2"]["weights_seen"][-1] == 0.0
    assert (models / "v3" / "student.onnx").exists() and "captured rows re-distilled" in report["subtitle"]
    assert report["captured_rows"] > 0 and f"{report['captured_rows']} captured rows" in report["subtitle"]
    assert (report_dir / "report.html").stat().st_size > 10_000
    assert {p.name for p in (report_dir / "plots").iterdir()} >= {"stable.png", "weight.png", "agreement.png",
                                                                  "latency.png", "cost.png"}
    latency = report["latency"]["variants"]["v1"]   # the one-client check after v1's promotion
    assert latency["gateway_requests"] == latency["requests"] > 0 and latency["gateway_p50_ms"] > 0
    assert "processes left running: none" in " ".join(output.split())
