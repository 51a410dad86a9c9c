"""The rollout controller hosted in a real Ray Serve deployment, and restarted.

The deployment here is the template for the gateway app: one replica holding a
``RolloutController``; gateway replicas call ``sync(replica_id, snapshot)`` and route with
the weights it returns. A driver plays two gateway replicas with synthetic traffic.
"""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from gateway.core.compare import compare_classification
from gateway.core.stats import PRIMARY, SHADOW, WindowStats
from manifest_support import write_manifest_file

# serve.delete takes ~35 s per app under the shared fixture's fast modes (1 s without): slow.
pytestmark = [pytest.mark.integration, pytest.mark.slow]
APP = "kdgate-rollout-test"


def _config(tmp_path) -> dict:
    manifest = tmp_path / "manifest.json"
    write_manifest_file(manifest)
    return {
        "model_name": "mnist1d",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": "t.onnx"},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": "s.onnx"},
        ],
        "routing": {"weights": {"teacher": 100}},
        "shadow": {"fraction": 1.0},
        "rollout": {"interval_s": 1.0, "min_samples": 60, "failure_threshold": 2, "deadline_s": 30,
                    "steps": ["shadow", 10, 50, 100],
                    "gates": {"input_drift": {"enabled": False}, "latency": {"max_ratio_to_teacher": None}},
                    "state_path": str(tmp_path / "state.sqlite"), "evidence_dir": str(tmp_path / "evidence")},
    }


def _deploy(serve, config: dict):
    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0},
                      graceful_shutdown_timeout_s=2, graceful_shutdown_wait_loop_s=0.5)
    class RolloutHost:
        def __init__(self, gateway_config: dict):
            from gateway.core.config import load_gateway_config
            from gateway.rollout.controller import RolloutController

            self.controller = RolloutController(load_gateway_config(gateway_config))
            self.task = None

        def _ensure_loop(self):
            if self.task is None:
                self.task = asyncio.get_running_loop().create_task(self.controller.run())

        async def sync(self, replica_id: str, snapshot: dict) -> dict:
            self._ensure_loop()
            return self.controller.sync(replica_id, snapshot)

        def __del__(self):  # Serve's shutdown hook: end the tick loop
            self.controller.stop()

        async def command(self, name: str, actor: str) -> dict:
            self._ensure_loop()
            return await asyncio.to_thread(self.controller.command, name, actor=actor)

    return serve.run(RolloutHost.bind(config), name=APP, route_prefix=None)


def _play_replicas(handle, replicas, weights, *, noise, rng, seconds):
    """Synthetic traffic on two 'gateway replicas' that sync with the controller every 0.2 s."""
    deadline, history = time.time() + seconds, []
    while time.time() < deadline:
        for stats in replicas.values():
            for _ in range(10):
                t = rng.normal(size=(1, 4)) * 3
                s = t + rng.normal(scale=noise, size=t.shape)
                live_student = rng.random() * 100 < weights["student"]
                for variant, y in (("teacher", t), ("student", s)):
                    route = PRIMARY if (variant == "student") == live_student else SHADOW
                    stats.record_request(variant, route, 0.002 if variant == "student" else 0.01, True, 1)
                    stats.record_outputs(variant, y.argmax(1))
                stats.record_comparison("teacher", "student", compare_classification(t, s))
        for name, stats in replicas.items():
            answer = handle.sync.remote(name, stats.snapshot()).result(timeout_s=30)
            weights.update(answer["weights"])
            history.append((answer["phase"], answer["weights"]["student"]))
        time.sleep(0.2)
    return history


def test_controller_in_serve_promotes_rolls_back_and_survives_restart(serve_instance, tmp_path):
    from ray import serve

    config, rng = _config(tmp_path), np.random.default_rng(0)
    handle = _deploy(serve, config)
    weights = {"teacher": 100.0, "student": 0.0}
    replicas = {"r1": WindowStats(), "r2": WindowStats()}
    history = _play_replicas(handle, replicas, weights, noise=0.05, rng=rng, seconds=8)
    assert ("Guarding", 100.0) in history, history[-5:]   # promoted, and guarded from then on
    assert [w for _, w in history] == sorted(w for _, w in history)   # never moved backwards

    # A new student version = a new rollout (fresh state), which goes bad at 10 %. The cost
    # gate has no prices (no data), so the rollout holds at 10 % instead of promoting.
    config["variants"][1]["version"] = "2"
    config["rollout"]["steps"] = ["shadow", 10, 100]
    config["rollout"]["gates"]["cost"] = {"enabled": True}
    serve.delete(APP)
    handle = _deploy(serve, config)
    weights.update(teacher=100.0, student=0.0)
    history = _play_replicas(handle, replicas, weights, noise=0.05, rng=rng, seconds=2.5)
    assert ("Progressing", 10.0) in history, history[-5:]
    history = _play_replicas(handle, replicas, weights, noise=6.0, rng=rng, seconds=5)
    assert history[-1] == ("RolledBack", 0.0), history[-5:]

    # The controller restarts: the student stays rolled back until a person acts.
    serve.delete(APP)
    handle = _deploy(serve, config)
    history = _play_replicas(handle, replicas, weights, noise=0.05, rng=rng, seconds=3)
    assert all(w == 0.0 for _, w in history) and history[-1][0] == "RolledBack"
    status = handle.command.remote("resume", "integration-test").result(timeout_s=30)
    assert status["phase"] == "Shadowing"
    serve.delete(APP)
