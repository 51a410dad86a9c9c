"""Peers of the gateway, side by side with it in ``bench_gateway.py``: what serving the same
ONNX model costs elsewhere on this machine.

* ``bare_hop_teacher``: a bare two-deployment Ray Serve app (ingress -> handle -> model
  deployment), the hop the gateway's teacher path makes, with nothing else;
* ``asgi_student``: the student in a plain single-process ASGI app (Starlette under uvicorn,
  one worker): the floor of Python HTTP serving here;
* ``triton_student``: the student behind a real Triton server (pytriton's ``tritonserver``,
  Python backend running ONNX Runtime), V2 JSON over HTTP;
* ``floor_student``: one in-process ONNX Runtime call, no HTTP at all (the physical floor).

Example (normally through ``bench_gateway.py``)::

    peers = Peers(student, teacher, features); peers.start(); ...; peers.stop()
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
V2_PATH = "/v2/models/kdgate-student/infer"


def deploy_hop_app(teacher: str) -> None:
    """``bare-hop-teacher``: ingress deployment parsing the same JSON, one handle call to the model."""
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    class HopModel:
        def __init__(self, path: str):
            from gateway.backends import OnnxBackend

            self.backend = OnnxBackend(path, device="cpu")

        async def __call__(self, x: np.ndarray) -> np.ndarray:
            return self.backend.infer(x)

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    class HopIngress:
        def __init__(self, model):
            self.model = model

        async def __call__(self, request: Request) -> dict:
            x = np.asarray((await request.json())["instances"], dtype=np.float32)
            return {"predictions": (await self.model.remote(x)).tolist()}

    serve.run(HopIngress.bind(HopModel.bind(teacher)), name="bare-hop-teacher", route_prefix="/bare-hop-teacher")


def asgi_app(model_path: str):
    """The plain ASGI peer: V1 predict on one Starlette route, ONNX Runtime inline."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from gateway.backends import OnnxBackend

    backend = OnnxBackend(model_path, device="cpu")

    async def predict(request: Request) -> JSONResponse:
        x = np.asarray((await request.json())["instances"], dtype=np.float32)
        return JSONResponse({"predictions": backend.infer(x).tolist()})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"])])


def floor_latencies(model_path: str, features: int, n: int) -> np.ndarray:
    """Seconds per in-process ONNX Runtime call at batch 1 (no HTTP)."""
    from gateway.backends import OnnxBackend

    backend = OnnxBackend(model_path, device="cpu")
    x = np.full((1, features), 0.1, dtype=np.float32)
    for _ in range(100):
        backend.infer(x)
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        backend.infer(x)
        out[i] = time.perf_counter() - start
    return out


class Peers:
    """The ASGI and Triton peers (outside Ray): their URLs and request bodies."""

    def __init__(self, student: str, features: int, n_outputs: int):
        self.student, self.features, self.n_outputs = student, features, n_outputs
        self._asgi: subprocess.Popen | None = None
        self._triton = None
        self.urls: dict[str, str] = {}
        row = [0.1] * features
        self.bodies = {"asgi_student": json.dumps({"instances": [row]}).encode(),
                       "triton_student": json.dumps({"inputs": [{"name": "input", "shape": [1, features],
                                                                  "datatype": "FP32", "data": row}]}).encode()}

    def start(self) -> "Peers":
        from gateway.serve.local import free_port

        port = free_port()
        self._asgi = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "bench_peers:_asgi_factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT / "loadtests", env={**_env(), "KDGATE_PEER_MODEL": self.student})
        self.urls["asgi_student"] = f"http://127.0.0.1:{port}/predict"
        _wait_post(self.urls["asgi_student"], self.bodies["asgi_student"], self._asgi)
        try:
            from bench_triton import start_triton

            self._triton, http_url, _ = start_triton({"student": pathlib.Path(self.student)}, self.features,
                                                     self.n_outputs)
            self.urls["triton_student"] = f"http://{http_url}{V2_PATH}"
        except Exception as err:  # noqa: BLE001 -- a missing Triton must not cost the other sides
            print(f"bench: Triton peer unavailable ({type(err).__name__}: {err})", flush=True)
        return self

    def stop(self) -> None:
        if self._asgi is not None:
            self._asgi.terminate()
            self._asgi.wait(timeout=10)
        if self._triton is not None:
            self._triton.stop()


def _asgi_factory():
    import os

    return asgi_app(os.environ["KDGATE_PEER_MODEL"])


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _wait_post(url: str, body: bytes, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer at {url} exited with {proc.returncode}")
        try:
            if httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"peer at {url} not ready within {timeout_s:.0f} s")
