"""The rollout controller hosted in the gateway app drives the split on live traffic."""
from __future__ import annotations

import threading
import time

import httpx
import pytest
from gateway_support import FEATURES, deploy, gateway_config, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "rollout-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _traffic(url: str, stop: threading.Event, failures: list) -> None:
    body = {"instances": [[0.3] * FEATURES] * 4}
    with httpx.Client(timeout=20) as client:
        while not stop.is_set():
            response = client.post(f"{url}/v1/models/mnist1d:predict", json=body)
            if response.status_code != 200:
                failures.append(response.status_code)


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
            if phase == "Promoted" and 100.0 in seen_weights:
                break
            time.sleep(0.5)
        bad = httpx.post(f"{url}/admin/rollout/resume", headers=AUTH, timeout=10)
        assert bad.status_code == 409, bad.text
    finally:
        stop.set()
        worker.join()
        serve.delete("rollout")
    assert phase == "Promoted", f"{seen_weights} {status}"
    assert {10.0, 50.0, 100.0} <= seen_weights
    assert failures == []
