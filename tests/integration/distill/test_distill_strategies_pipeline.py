"""`kdgate distill` with a non-default strategy: the report shows every stage and the comparison."""
from __future__ import annotations

import json
from pathlib import Path

from distill.config import load_config
from distill.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[3]


def test_progressive_strategy_appears_in_report_json_and_html(tmp_path):
    config = load_config(ROOT / "distill/configs/tiny.yaml")
    config.cache_dir = tmp_path / "cache"
    config.export.int8 = config.export.triton = False
    config.strategy.kind = "progressive"
    report = run_pipeline(config, tmp_path / "out")
    saved = json.loads((tmp_path / "out/report.json").read_text())
    stages = [s["stage"] for s in saved["strategy"]["stages"]]
    assert stages == ["teacher", "assistant", "student"]
    assert saved["strategy"]["reference_kd"]["accuracy"] is not None
    assert isinstance(saved["strategy"]["beats_plain_kd"], bool)
    assert saved["strategy"]["stages"][-1]["params"] == report["student"]["params"]
    assert [r["model"] for r in saved["strategies"]][-2:] == ["plain KD (reference)", "baseline (no teacher)"]
    html = (tmp_path / "out/report.html").read_text()
    assert "<h2>Strategies</h2>" in html and "student (progressive, exported)" in html
    assert json.loads((tmp_path / "out/manifest.json").read_text())["hyperparameters"]["strategy"] == "progressive"
