"""Shared integration fixtures: tiny exported ONNX models, one real Ray Serve instance, a real Triton.

Everything is session-scoped and listens on 127.0.0.1 only. Ray gets 2 CPUs; Serve's
HTTP proxy takes a free port. Triton is nvidia-pytriton's bundled tritonserver serving an
ONNX model through a bound Python function (the libpython fix from DESIGN.md applied).
"""
from __future__ import annotations

import os
import sysconfig

import numpy as np
import pytest
# Load Serve's constants before LocalServe turns the fast modes on (they are read at import): the
# test driver's own handles then keep their router in a separate loop and work from sync code.
import ray.serve  # noqa: F401,E402

from gateway.serve.local import LocalServe, free_port
from manifest_support import write_manifest_file

FEATURES, CLASSES = 40, 10


def _mlp(hidden: int, seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, CLASSES)
    )


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory) -> dict:
    """teacher.onnx, student.onnx and a manifest.json exported through distill.export."""
    from distill.export import export_onnx

    out = tmp_path_factory.mktemp("models")
    x = np.random.default_rng(0).normal(size=(64, FEATURES)).astype(np.float32)
    export_onnx(_mlp(64, seed=1), out / "teacher.onnx", x)
    export_onnx(_mlp(8, seed=2), out / "student.onnx", x)
    write_manifest_file(out / "manifest.json", features=FEATURES, classes=CLASSES)
    return {"dir": out, "teacher": str(out / "teacher.onnx"), "student": str(out / "student.onnx"),
            "manifest": str(out / "manifest.json"), "x": x}


@pytest.fixture(scope="session")
def serve_instance():
    """One real Ray Serve instance for the whole session: ``{"url": http://127.0.0.1:PORT}``.

    kdgate's own local Serve (:class:`gateway.serve.local.LocalServe`): 2 CPUs, loopback, free
    ports, the fast modes unless ``RAY_SERVE_ENABLE_HA_PROXY=0`` asks for Ray Serve's defaults.
    """
    fast = os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "1") != "0"
    with LocalServe(fast=fast, num_cpus=2) as local:
        yield {"url": local.url, "port": local.port, "metrics_url": f"http://127.0.0.1:{local.metrics_port}/metrics"}


def start_triton(model_path: str, *, http_port: int, grpc_port: int, model: str = "kdgate-teacher",
                 input_dtype=np.float32, input_shape: tuple = (FEATURES,), output_width: int = CLASSES):
    """A running real Triton server (pytriton's tritonserver) serving ``model_path`` as ``model``.

    The caller stops it (``.stop()``); starting again on the same ports brings it back. A text
    model: ``input_dtype=np.int64, input_shape=(-1,)`` (token ids of any length).
    """
    pytest.importorskip("pytriton")
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    # The Python backend stub links libpython; point it at this interpreter's (DESIGN.md).
    os.environ["LD_LIBRARY_PATH"] = sysconfig.get_config_var("LIBDIR")
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])

    @batch
    def infer(input):  # noqa: A002 - the tensor is called "input" in the export contract
        return {"logits": session.run(["logits"], {"input": input})[0]}

    config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                          grpc_port=grpc_port, metrics_port=free_port(), allow_metrics=False)
    triton = Triton(config=config)
    triton.bind(model, infer,
                inputs=[Tensor(name="input", dtype=input_dtype, shape=input_shape)],
                outputs=[Tensor(name="logits", dtype=np.float32, shape=(output_width,))],
                config=ModelConfig(max_batch_size=64))
    triton.run()
    return triton


@pytest.fixture(scope="session")
def triton_server(onnx_models):
    """A real Triton server (pytriton) serving the teacher ONNX model as ``kdgate-teacher``."""
    http_port, grpc_port = free_port(), free_port()
    triton = start_triton(onnx_models["teacher"], http_port=http_port, grpc_port=grpc_port)
    try:
        yield {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}", "model": "kdgate-teacher"}
    finally:
        triton.stop()


@pytest.fixture()
def triton_for():
    """``start(onnx_path, **start_triton options)`` -> ``{"http": "host:port", "model": name}``: a real
    Triton server (pytriton) per call, all stopped after the test."""
    started = []

    def start(model_path: str, **options):
        http_port, grpc_port = free_port(), free_port()
        started.append(start_triton(model_path, http_port=http_port, grpc_port=grpc_port, **options))
        return {"http": f"127.0.0.1:{http_port}", "model": options.get("model", "kdgate-teacher")}

    yield start
    for triton in started:
        triton.stop()


@pytest.fixture()
def triton_factory(onnx_models):
    """Start real Triton servers serving the teacher; all are stopped after the test.

    ``start()`` takes free ports; ``start(ports)`` restarts on the ports of an earlier one.
    Returns ``(server, {"http": port, "grpc": port})``.
    """
    started = []

    def start(ports: dict | None = None):
        ports = ports or {"http": free_port(), "grpc": free_port()}
        started.append(start_triton(onnx_models["teacher"], http_port=ports["http"], grpc_port=ports["grpc"]))
        return started[-1], ports

    yield start
    for triton in started:
        triton.stop()
