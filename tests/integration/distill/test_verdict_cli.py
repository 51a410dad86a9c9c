"""`kdgate distill` on a run whose student loses to its baseline and whose sweep ties: both said, exit 0.

The student's learning rate is ~0, so every sweep run is the same untrained network (an exact
tie) and the final student cannot beat a baseline trained for 20 epochs: both verdicts are
certain, whatever the machine's speed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kdgate.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]


def test_losing_student_and_tied_sweep_are_printed_and_recorded(tmp_path):
    config = yaml.safe_load((ROOT / "distill/configs/tiny.yaml").read_text())
    config["student"]["train"] = {"epochs": 1, "batch_size": 256, "lr": 1e-9}
    config["student"]["baseline_train"] = {"epochs": 20, "batch_size": 64}
    config["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "losing.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["distill", str(path), "--out", str(out)], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "WARNING baseline: the distilled student does NOT beat the same-size baseline" in result.output
    assert "WARNING sweep: the sweep could NOT tell its 2 runs apart" in result.output
    assert "try: a larger student" in result.output and "try: lengthen the sweep (sweep.epochs, now 1" in result.output
    report = json.loads((out / "report.json").read_text())
    verdicts = report["verdicts"]
    assert (verdicts["baseline"]["status"], verdicts["baseline"]["ok"]) == ("loses", False)
    assert verdicts["baseline"]["figures"]["student"] == report["student"]["accuracy"]
    assert (verdicts["sweep"]["status"], verdicts["sweep"]["ok"]) == ("tied", False)
    assert verdicts["sweep"]["figures"]["exact_ties"] == 2
    assert "<h2>Verdicts</h2>" in (out / "report.html").read_text()
