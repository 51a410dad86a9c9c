"""The rollout controller hosted in the gateway app drives the split on live traffic."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from gateway_support import (
    ADMIN_TOKEN, FEATURES, deploy, drifting_traffic, gateway_config, held_rollout_config, wait_for_student_weight,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = ADMIN_TOKEN
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _traffic(url: str, stop: threading.Event, failures: list) -> None:
    body = {"instances": [[0.3] * FEATURES] * 4}
    with httpx.Client(timeout=20) as client:
        while not stop.is_set():
            response = client.post(f"{url}/v1/models/mnist1d:predict", json=body)
            if response.status_code != 200:
                failures.append(response.status_code)


def _kdgate(*args: str):
    from typer.testing import CliRunner

    from kdgate.cli import app

    return CliRunner().invoke(app, list(args))


def _operator_steers_it_with_the_cli(url: str, token_file) -> None:
    """`kdgate rollout ...` reaches the same admin API; refusals exit non-zero with the reason."""
    auth = ["--url", url, "--token-file", str(token_file)]
    result = _kdgate("rollout", "set-weight", "50", *auth)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["phase"] == "Paused"
    wait_for_student_weight(url, 50.0)
    result = _kdgate("rollout", "status", "--json", *auth)
    assert result.exit_code == 0 and json.loads(result.output)["status"]["weight"] == 50.0, result.output
    text = _kdgate("rollout", "status", *auth).output
    assert "phase      Paused" in text and "stable     teacher" in text and "student 50 %" in text, text
    result = _kdgate("rollout", "abort", *auth)
    assert result.exit_code == 0, result.output
    wait_for_student_weight(url, 0.0)
    refused = _kdgate("rollout", "pause", *auth)
    assert refused.exit_code == 1 and "409" in refused.output, refused.output
    wrong = token_file.with_name("wrong-token")
    wrong.write_text("not-the-token")
    denied = _kdgate("rollout", "status", "--url", url, "--token-file", str(wrong))
    assert denied.exit_code == 1 and "401" in denied.output and "not-the-token" not in denied.output


def test_hosted_rollout_promotes_an_agreeing_student_step_by_step(serve_instance, onnx_models, tmp_path):
    from ray import serve

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = gateway_config(onnx_models, tmp_path, admin={"token_file": str(token_file)})
    # The student is the teacher's own file: every answer agrees, so every gate passes.
    config["variants"][1]["model_path"] = onnx_models["teacher"]
    config["routing"]["weights"] = {"teacher": 100, "student": 0}
    config["shadow"] = {"fraction": 1.0, "canary_compare_fraction": 1.0}
    config["rollout"] = {
        "steps": ["shadow", 10, 50, 100], "interval_s": 1.0, "min_samples": 60, "failure_threshold": 2,
        "deadline_s": 120, "gates": {"input_drift": {"enabled": False}, "latency": {"enabled": False}},
        "state_path": str(tmp_path / "rollout.sqlite"), "evidence_dir": str(tmp_path / "evidence"),
    }
    deploy(config, name="rollout", prefix="/rollout")
    url = f"{serve_instance['url']}/rollout"
    wait_ready(url)
    stop, failures = threading.Event(), []
    worker = threading.Thread(target=_traffic, args=(url, stop, failures))
    worker.start()
    seen_weights, phase, status = set(), None, None
    try:
        manual = httpx.put(f"{url}/admin/split", json={"weights": {"teacher": 0, "student": 100}},
                           headers=AUTH, timeout=10)
        assert manual.status_code == 409 and "rollout" in manual.json()["error"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            seen_weights.add(httpx.get(f"{url}/admin/split", headers=AUTH, timeout=10).json()["weights"]["student"])
            status = httpx.get(f"{url}/admin/rollout", headers=AUTH, timeout=10).json()["status"]
            phase = status["phase"]
            if phase == "Guarding" and 100.0 in seen_weights:
                break
            time.sleep(0.5)
        bad = httpx.post(f"{url}/admin/rollout/resume", headers=AUTH, timeout=10)
        assert bad.status_code == 409, bad.text
        _operator_steers_it_with_the_cli(url, token_file)
    finally:
        stop.set()
        worker.join()
        serve.delete("rollout")
    assert phase == "Guarding", f"{seen_weights} {status}"
    assert {10.0, 50.0, 100.0} <= seen_weights
    assert failures == []


def test_input_drift_rolls_the_student_back_within_two_intervals_without_failing_a_request(
        serve_instance, onnx_models, tmp_path):
    from ray import serve

    interval = 1.0
    # A 4 s lookback gathers the 240 rows a check needs even on a loaded machine; the bound
    # below counts from the first check that sees the drift, so it does not depend on it.
    config = held_rollout_config(onnx_models, tmp_path, interval_s=interval, lookback_s=4 * interval)
    deploy(config, name="drift", prefix="/drift")
    url = f"{serve_instance['url']}/drift"
    wait_ready(url)
    stop, shift, failures, sent = threading.Event(), [0.0], [], []
    worker = threading.Thread(target=drifting_traffic, args=(url, stop, shift, failures, sent))
    worker.start()
    drift_at, history = None, {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            history = httpx.get(f"{url}/admin/rollout", headers=AUTH, timeout=10).json()
            status = history["status"]
            if drift_at is None and status["weight"] >= 10:
                shift[0], drift_at = 3.0, time.time()   # the inputs drift while the student is live
            if status["phase"] == "RolledBack":
                break
            time.sleep(0.2)
        rolled_back_at = time.time()
        time.sleep(1.0)   # traffic goes on after the rollback: still no failure
        split = httpx.get(f"{url}/admin/split", headers=AUTH, timeout=10).json()["weights"]
    finally:
        stop.set()
        worker.join()
        serve.delete("drift")
    status = history["status"]
    gates = [(g["name"], g["status"], g["detail"]) for g in status["last_gates"]]
    assert status["phase"] == "RolledBack", "\n".join(
        [f"{status['phase']}: {status['reason']} (verdict {status['last_verdict']}, error {status['last_error']!r})",
         *map(str, gates), f"{len(sent)} sent, failures {failures[:3]}"])
    assert split["student"] == 0.0
    assert "input_drift" in status["reason"], status["reason"]
    failed_checks = [c for c in history["checks"] if c["at"] >= drift_at
                     and any(g["name"] == "input_drift" and g["status"] == "failed" for g in c["gates"])]
    visible_at = failed_checks[0]["at"]
    print(f"drift injected, first failing check after {visible_at - drift_at:.2f} s, "
          f"rolled back {status['updated_at'] - visible_at:.2f} s later; seen rolled back "
          f"{rolled_back_at - drift_at:.2f} s after the drift; {len(sent)} requests, {len(failures)} failed")
    assert status["updated_at"] - visible_at <= 2 * interval + 0.5
    assert failures == []
    assert len(sent) > 100
