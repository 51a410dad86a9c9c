"""Kill one of 2 Gateway (ingress) replicas under a bounded load; count what fails (issue 11, point 5).

Own local Ray Serve (fast modes: HAProxy in front of the ingress replicas), two tiny ONNX models
exported on the spot, ``--threads`` clients for ``--seconds`` without any client retry; one
Gateway replica is SIGKILLed (``ray.kill``) at ``--kill-at``. ``--retry-on`` sets HAProxy's
``retry-on`` (``RAY_SERVE_HAPROXY_RETRY_ON``; Ray's default replays only connection failures,
since nothing was sent): inference is idempotent, so ``conn-failure empty-response`` also
replays a request whose replica died before answering.

Example::

    $ python loadtests/kill_gateway_replica.py --threads 16 --seconds 20
    $ python loadtests/kill_gateway_replica.py --retry-on "conn-failure empty-response"
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import threading
import time

import numpy as np

APP, FEATURES = "kill", 40


def _models(out: pathlib.Path) -> dict[str, str]:
    import torch

    from distill.export import export_onnx

    x = np.random.default_rng(0).normal(size=(64, FEATURES)).astype(np.float32)
    paths = {}
    for name, hidden in (("teacher", 64), ("student", 8)):
        torch.manual_seed(hidden)
        net = torch.nn.Sequential(torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
        paths[name] = str(out / f"{name}.onnx")
        export_onnx(net, paths[name], x)
    return paths


def _deploy(models: dict[str, str], state: pathlib.Path) -> None:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = {
        "model_name": "mnist1d",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": models["teacher"], "timeout_s": 5.0},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": models["student"],
             "colocated": True},
        ],
        "routing": {"weights": {"teacher": 50, "student": 50}},
        "capture": {"enabled": False}, "audit_log": str(state / "audit.jsonl"),
    }
    schema = ServeDeploySchema(applications=[{
        "name": APP, "route_prefix": f"/{APP}", "import_path": "gateway.serve.app:build_app",
        "args": {"config": config},
        "deployments": [{"name": "Gateway", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1},
                         "user_config": {}}],
    }])
    _get_global_client().deploy_apps(schema, _blocking=True)


def _gateway_replicas() -> list[str]:
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(f"SERVE_REPLICA::{APP}#Gateway#"))


def _client(url: str, stop: threading.Event, seed: int, sent: list, failures: list) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            body = {"instances": rng.normal(size=(2, FEATURES)).round(3).tolist()}
            try:
                response = client.post(f"{url}/v1/models/mnist1d:predict", json=body)
                status, text = response.status_code, response.text[:160]
            except httpx.TransportError as err:
                status, text = 599, repr(err)[:160]
            sent.append(time.monotonic())
            if status != 200:
                failures.append((time.monotonic(), status, text))


def measure(threads: int, seconds: float, kill_at: float) -> dict:
    """Run the load, kill one Gateway replica, and report requests, failures and the replacement time."""
    import ray

    from gateway.serve.local import LocalServe, wait_ready

    with tempfile.TemporaryDirectory() as tmp, LocalServe(fast=True, num_cpus=2) as local:
        _deploy(_models(pathlib.Path(tmp)), pathlib.Path(tmp))
        url = f"{local.url}/{APP}"
        wait_ready(url)
        before = _gateway_replicas()
        stop, sent, failures = threading.Event(), [], []
        workers = [threading.Thread(target=_client, args=(url, stop, seed, sent, failures)) for seed in range(threads)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        time.sleep(kill_at)
        ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
        killed_at, replaced_s = time.monotonic(), None
        while time.monotonic() < started + seconds:
            now = _gateway_replicas()
            if replaced_s is None and len(now) == 2 and before[0] not in now:
                replaced_s = time.monotonic() - killed_at
            time.sleep(0.25)
        stop.set()
        for worker in workers:
            worker.join()
    return {"threads": threads, "seconds": seconds, "retry_on": os.environ.get("RAY_SERVE_HAPROXY_RETRY_ON"),
            "requests": len(sent), "after_kill": sum(t >= killed_at for t in sent), "failed": len(failures),
            "failures": [(round(t - killed_at, 2), status, text) for t, status, text in failures[:10]],
            "replaced_s": replaced_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--kill-at", type=float, default=8.0, help="seconds into the load")
    parser.add_argument("--retry-on", default=None, help="HAProxy retry-on (RAY_SERVE_HAPROXY_RETRY_ON)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the result as JSON")
    args = parser.parse_args()
    if args.retry_on:
        os.environ["RAY_SERVE_HAPROXY_RETRY_ON"] = args.retry_on  # read when Serve starts
    result = measure(args.threads, args.seconds, args.kill_at)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
