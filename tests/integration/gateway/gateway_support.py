"""Helpers shared by the gateway integration tests (fixtures live in tests/integration/conftest.py)."""
from __future__ import annotations

import time

import httpx
import numpy as np

FEATURES = 40
ADMIN_TOKEN = "gateway-admin-token"  # what app_factory's token file holds


def onnx_reference(path: str, x: np.ndarray) -> np.ndarray:
    """What ONNX Runtime answers for ``x`` (the expected gateway output)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def gateway_config(models: dict, tmp_path, **overrides) -> dict:
    """A gateway config dict: remote ONNX teacher, colocated ONNX student, 95/5 split."""
    config = {
        "model_name": "mnist1d",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": models["teacher"],
             "device": "cpu", "timeout_s": 5.0, "version": "t1",
             "batching": {"enabled": True, "max_batch_size": 16, "wait_timeout_s": 0.002}},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": models["student"],
             "device": "cpu", "colocated": True, "version": "s1",
             "manifest_path": models["manifest"]},
        ],
        "routing": {"weights": {"teacher": 95, "student": 5}, "allow_force": True},
        "shadow": {"fraction": 0.0, "canary_compare_fraction": 0.0},
        "limits": {"max_batch_rows": 64, "max_body_bytes": 65536},
        "capture": {"dir": str(tmp_path / "capture"), "segment_rows": 4},
        "audit_log": str(tmp_path / "audit.jsonl"),
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def deploy(config: dict, *, name: str, prefix: str) -> None:
    """Deploy (or update in place) one gateway application under ``prefix``."""
    from ray import serve

    from gateway.app import build_app

    serve.run(build_app({"config": config}), name=name, route_prefix=prefix)


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    """Wait until the gateway at ``url`` answers ready."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def serve_deploy(config: dict, *, name: str, prefix: str, overlay: dict | None = None,
                 deployments: list[dict] | None = None) -> None:
    """Deploy like ``serve deploy FILE.yaml``: a declarative config the controller builds.

    ``overlay`` is the Gateway deployment's ``user_config``: a redeploy that edits only it
    is applied in place (reconfigure); ``serve.run`` always ships a new code version.
    ``deployments`` adds per-deployment options, e.g. ``[{"name": "model-teacher", "num_replicas": 2}]``.
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema(applications=[{
        "name": name, "route_prefix": prefix, "import_path": "gateway.app:build_app",
        "args": {"config": config},
        "deployments": [{"name": "Gateway", "user_config": overlay or {}}, *(deployments or [])],
    }])
    _get_global_client().deploy_apps(schema, _blocking=True)
