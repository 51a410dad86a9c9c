"""`make loadtest`'s pass/fail rule (loadtests/run_loadtest.py): any failed request, no requests, or Locust's own error fails."""
from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "loadtests"))
from run_loadtest import main, verdict  # noqa: E402


@pytest.mark.parametrize("summary, problem", [
    ({"Request Count": "1500", "Failure Count": "0", "exit_code": 0}, None),
    ({"Request Count": "1500", "Failure Count": "2", "exit_code": 0}, "2 of 1500 requests failed"),
    ({"Request Count": "0", "Failure Count": "0", "exit_code": 0}, "no requests were made"),
    ({"Request Count": "10", "Failure Count": "3", "exit_code": 1}, "locust exited with status 1 (3 failed of 10)"),
])
def test_verdict(summary, problem):
    assert verdict(summary) == problem


def test_an_unreachable_gateway_fails_fast_with_a_message(tmp_path, capsys):
    from gateway.serve.local import free_port

    status = main(["--url", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path), "--ready-timeout", "1"])
    assert status == 1
    assert "was not ready within 1 s" in capsys.readouterr().err


def test_missing_models_are_named_before_any_gateway_starts(tmp_path, capsys):
    root = pathlib.Path(__file__).resolve().parents[3]
    config = root / "deployments" / "local.yaml"
    if not (root / "runs" / "demo" / "teacher.onnx").exists():
        status = main(["--config", str(config), "--out", str(tmp_path)])
        assert status == 1 and "run `make demo` first" in capsys.readouterr().err
    from run_loadtest import missing_models

    bad = tmp_path / "gw.yaml"
    bad.write_text("variants: [{model_path: /nonexistent/t.onnx}, {model_path: " + str(config) + "}]\n")
    assert missing_models(bad) == ["/nonexistent/t.onnx"]
