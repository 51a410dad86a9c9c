"""Backends on real servers: Triton (pytriton), fallback from a broken student, shadow + capture."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from gateway_support import ADMIN_TOKEN as TOKEN
from gateway_support import gateway_config, onnx_reference

pytestmark = pytest.mark.integration


def _stats(url: str) -> dict:
    response = httpx.get(f"{url}/admin/stats", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _predict(url: str, x: np.ndarray, headers=None) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/mnist1d:predict", json={"instances": x.tolist()},
                      headers=headers or {}, timeout=20)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_backend_answers(app_factory, onnx_models, triton_server, tmp_path, protocol):
    import tritonclient.http as tc

    # The server itself answers (the fixture is a real tritonserver).
    assert tc.InferenceServerClient(triton_server["http"]).is_model_ready(triton_server["model"])
    config = gateway_config(onnx_models, tmp_path)
    teacher = config["variants"][0]
    teacher.update(backend="triton", model_path=None, batching={"enabled": False},
                   triton={"url": triton_server[protocol], "protocol": protocol, "model_name": triton_server["model"]})
    url = app_factory(f"triton-{protocol}", config)
    x = onnx_models["x"][:4]
    response = _predict(url, x, headers={"x-kdgate-force-variant": "teacher"})
    assert response.status_code == 200, response.text
    assert response.headers["x-kdgate-variant"] == "teacher"
    np.testing.assert_allclose(np.asarray(response.json()["predictions"], np.float32),
                               onnx_reference(onnx_models["teacher"], x), rtol=1e-5, atol=1e-5)


def test_broken_student_falls_back_to_the_teacher(app_factory, onnx_models, tmp_path):
    config = gateway_config(onnx_models, tmp_path)
    student = config["variants"][1]
    # A remote student whose Triton server does not exist: every call fails fast.
    student.update(backend="triton", model_path=None, colocated=False, timeout_s=0.5,
                   triton={"url": "127.0.0.1:9", "model_name": "gone"})
    config["routing"]["weights"] = {"teacher": 0, "student": 100}
    url = app_factory("fallback", config)
    x = onnx_models["x"][:3]
    for _ in range(5):
        response = _predict(url, x)
        assert response.status_code == 200, response.text
        assert response.headers["x-kdgate-variant"] == "teacher"
        assert response.headers["x-kdgate-fallback"] == "true"
        np.testing.assert_allclose(np.asarray(response.json()["predictions"], np.float32),
                                   onnx_reference(onnx_models["teacher"], x), rtol=1e-5, atol=1e-5)
    stats = _stats(url)["variants"]
    assert stats["student"]["fallbacks"] == 5
    assert stats["student"]["errors"]["primary"] == 5


def test_shadow_compares_answers_and_captures_disagreements(app_factory, onnx_models, tmp_path):
    config = gateway_config(onnx_models, tmp_path)
    config["routing"]["weights"] = {"teacher": 100, "student": 0}
    config["shadow"] = {"fraction": 1.0, "canary_compare_fraction": 0.0, "queue_size": 256}
    url = app_factory("shadow", config)
    x = onnx_models["x"][:8]
    for _ in range(10):
        response = _predict(url, x)
        assert response.status_code == 200 and response.headers["x-kdgate-variant"] == "teacher"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        compared = _stats(url)["comparisons"].get("teacher", {}).get("student", {}).get("compared", 0)
        if compared >= 80:
            break
        time.sleep(0.2)
    assert compared == 80  # every row of every request, compared in the background
    stats = _stats(url)
    assert stats["variants"]["student"]["requests"]["shadow"] == 10
    # The two tiny random models disagree on some rows: those were captured (segments of 4 rows).
    expected_disagreements = int((onnx_reference(onnx_models["teacher"], x).argmax(1)
                                  != onnx_reference(onnx_models["student"], x).argmax(1)).sum()) * 10
    assert stats["comparisons"]["teacher"]["student"]["agreements"] == 80 - expected_disagreements
    assert expected_disagreements > 0
    out = tmp_path / "captured.npz"
    result = subprocess.run([sys.executable, "-m", "kdgate.cli", "capture", "export", "--out", str(out),
                             "--dir", config["capture"]["dir"]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    with np.load(out) as data:
        rows = data["x_unlabeled"]
        assert rows.shape[1:] == x.shape[1:] and len(rows) == expected_disagreements - expected_disagreements % 4
        assert np.all((data["teacher_logits"].argmax(1)) != data["student_logits"].argmax(1))


def test_audit_log_records_the_initial_config(app_factory, onnx_models, tmp_path):
    config = gateway_config(onnx_models, tmp_path)
    url = app_factory("audited", config)
    httpx.put(f"{url}/admin/split", json={"weights": {"teacher": 80, "student": 20}},
              headers={"authorization": f"Bearer {TOKEN}"}, timeout=10).raise_for_status()
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in entries][:1] == ["config.initial"]
    assert entries[-1]["actor"] == "admin-api"
    assert "routing.weights.student: 5.0 -> 20.0" in entries[-1]["changes"]


def test_metrics_are_scraped_from_the_ray_metrics_export_port(app_factory, onnx_models, tmp_path, serve_instance):
    config = gateway_config(onnx_models, tmp_path)
    config["model_name"] = "metered"
    url = app_factory("metered", config)
    httpx.put(f"{url}/admin/split", json={"weights": {"teacher": 50, "student": 50}},
              headers={"authorization": f"Bearer {TOKEN}"}, timeout=10).raise_for_status()
    for _ in range(20):
        assert httpx.post(f"{url}/v1/models/metered:predict", json={"instances": onnx_models["x"][:2].tolist()},
                          timeout=20).status_code == 200
    wanted = ("ray_kdgate_requests_total", "ray_kdgate_request_duration_seconds_bucket", "ray_kdgate_weight_ratio")
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        text = httpx.get(serve_instance["metrics_url"], timeout=10).text
        lines = [line for line in text.splitlines() if 'model="metered"' in line]
        if all(any(line.startswith(name) for line in lines) for name in wanted):
            break
        time.sleep(2)
    lines = [line for line in text.splitlines() if 'model="metered"' in line]
    for name in wanted:
        assert any(line.startswith(name) for line in lines), f"{name} not exported"
    requests = [line for line in lines if line.startswith("ray_kdgate_requests_total") and 'route="primary"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in requests) == 20
    assert any('variant="student"' in line and line.endswith(" 0.5") for line in lines
               if line.startswith("ray_kdgate_weight_ratio"))
