"""`kdgate distill`: --schema, and bad configs exit 2 before any training."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from kdgate.cli import app

runner = CliRunner()


def test_schema_prints_the_config_json_schema():
    result = runner.invoke(app, ["distill", "--schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["additionalProperties"] is False
    assert {"data", "teacher", "student", "sweep", "export"} <= set(schema["properties"])
    assert schema["properties"]["sweep"]["description"]


def test_bad_config_exits_2_naming_the_field(tmp_path, monkeypatch):
    import distill.pipeline

    def no_training(*_a, **_k):
        raise AssertionError("a bad config must fail before the pipeline starts")
    monkeypatch.setattr(distill.pipeline, "run_pipeline", no_training)
    path = tmp_path / "bad.yaml"
    path.write_text("sweep:\n  alphas: [0.5, 2]\nstudent:\n  train: {lr: -1}\n")
    result = runner.invoke(app, ["distill", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "sweep: Value error, alphas must all lie in [0, 1]" in result.output
    assert "student.train.lr:" in result.output
    assert not (tmp_path / "out").exists()


def test_missing_config_file_exits_2(tmp_path):
    result = runner.invoke(app, ["distill", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot read the config" in result.output


def test_no_arguments_explains_usage():
    result = runner.invoke(app, ["distill"])
    assert result.exit_code == 2 and "--schema" in result.output
