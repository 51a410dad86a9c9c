"""Faults of the gateway's dependencies: a Triton teacher that goes down and comes back."""
from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from gateway_support import gateway_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TEACHER = {"x-kdgate-force-variant": "teacher"}
STUDENT = {"x-kdgate-force-variant": "student"}


def _predict(url: str, x: np.ndarray, headers: dict) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/models/mnist1d:predict", json={"instances": x.tolist()},
                          headers=headers, timeout=30)
    return response, time.perf_counter() - started


def test_triton_down_fails_fast_with_503_retry_after_and_recovers_by_itself(
        app_factory, triton_factory, onnx_models, tmp_path):
    triton, ports = triton_factory()
    config = gateway_config(onnx_models, tmp_path)
    config["variants"][0].update(backend="triton", model_path=None, batching={"enabled": False}, timeout_s=1.0,
                                 triton={"url": f"127.0.0.1:{ports['http']}", "model_name": "kdgate-teacher"})
    url = app_factory("triton-faults", config)
    x = onnx_models["x"][:2]
    assert _predict(url, x, TEACHER)[0].status_code == 200

    triton.stop()
    down, seconds = _predict(url, x, TEACHER)
    assert down.status_code == 503, down.text
    assert down.headers["retry-after"] == "1" and "no variant could answer" in down.json()["error"]
    assert seconds < 3.0, f"a dead Triton took {seconds:.2f} s to fail"
    assert _predict(url, x, STUDENT)[0].status_code == 200   # the in-process student keeps serving

    down_at = time.monotonic()
    triton_factory(ports)                                 # Triton returns on the same address
    deadline, response = time.monotonic() + 60, down
    while time.monotonic() < deadline:
        response, _ = _predict(url, x, TEACHER)
        if response.status_code == 200:
            break
        time.sleep(0.5)
    print(f"dead Triton answered 503 in {seconds * 1000:.0f} ms; "
          f"teacher served again {time.monotonic() - down_at:.1f} s after the restart began")
    assert response.status_code == 200, response.text
    assert response.headers["x-kdgate-variant"] == "teacher"
