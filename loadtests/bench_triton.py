"""Triton backend vs in-process ONNX Runtime: the gateway's own backends, side by side.

A real Triton Inference Server (the ``tritonserver`` binary of nvidia-pytriton, on
127.0.0.1, free ports) serves the student and the teacher; the gateway's
:class:`~gateway.backends.TritonBackend` calls it over HTTP and gRPC, and
:class:`~gateway.backends.OnnxBackend` runs the same ONNX files in-process. Calls of the
three backends interleave in chunks; p50/p99 per call at batch 1 and 64.

pytriton's server has only the Python backend: each request goes tritonserver -> Python
stub -> this process (where ONNX Runtime runs the model), so the numbers include that
proxy on top of Triton's own network and scheduling cost.

Example::

    .venv/bin/python loadtests/bench_triton.py --models runs/demo --out runs/bench/triton.json
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import sysconfig
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BATCHES = (1, 64)
CHUNK = 50


def start_triton(models: dict[str, pathlib.Path], n_features: int, n_outputs: int):
    """A running pytriton ``Triton`` serving each ONNX model as ``kdgate-<name>``; returns (triton, http, grpc)."""
    # The Python backend stub links libpython; point it at this interpreter's (DESIGN.md).
    os.environ["LD_LIBRARY_PATH"] = sysconfig.get_config_var("LIBDIR")
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from gateway.backends import OnnxBackend
    from gateway.serve.local import free_port

    http_port, grpc_port = free_port(), free_port()
    config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                          grpc_port=grpc_port, metrics_port=free_port(), allow_metrics=False)
    triton = Triton(config=config)
    for name, path in models.items():
        backend = OnnxBackend(str(path), device="cpu")

        @batch
        def infer(input, _backend=backend):  # noqa: A002 - the tensor is called "input" in the export contract
            return {"logits": _backend.infer(input)}

        triton.bind(f"kdgate-{name}", infer, inputs=[Tensor(name="input", dtype=np.float32, shape=(n_features,))],
                    outputs=[Tensor(name="logits", dtype=np.float32, shape=(n_outputs,))],
                    config=ModelConfig(max_batch_size=64))
    triton.run()
    return triton, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"


def _timed(backend, x: np.ndarray, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        backend.infer(x)
        out.append(time.perf_counter() - start)
    return out


def measure(models: dict[str, pathlib.Path], x: np.ndarray, urls: tuple[str, str], requests: int) -> dict:
    """p50/p99 ms per (model, backend, batch), backends interleaved in chunks."""
    from gateway.backends import OnnxBackend, TritonBackend

    result = {}
    for name, path in models.items():
        backends = {"onnxruntime_in_process": OnnxBackend(str(path), device="cpu"),
                    "triton_http": TritonBackend(urls[0], f"kdgate-{name}", protocol="http", timeout_s=10),
                    "triton_grpc": TritonBackend(urls[1], f"kdgate-{name}", protocol="grpc", timeout_s=10)}
        for size in BATCHES:
            batch = x[:size]
            times: dict[str, list[float]] = {k: [] for k in backends}
            for key, backend in backends.items():
                np.testing.assert_allclose(backend.infer(batch), backends["onnxruntime_in_process"].infer(batch),
                                           atol=1e-4)  # same answers, and a warm-up
            for _ in range(max(1, requests // CHUNK)):
                for key, backend in backends.items():
                    times[key] += _timed(backend, batch, CHUNK)
            for key, values in times.items():
                ms = np.asarray(values) * 1000
                result.setdefault(name, {}).setdefault(key, {})[f"batch{size}"] = {
                    "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=pathlib.Path, default=ROOT / "runs" / "demo",
                        help="a `kdgate distill` output folder (student.onnx, teacher.onnx, manifest.json)")
    parser.add_argument("--requests", type=int, default=500, help="timed calls per backend, model and batch")
    parser.add_argument("--out", type=pathlib.Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    manifest = json.loads((args.models / "manifest.json").read_text())
    n_features, n_outputs = int(manifest["input"]["shape"][1]), int(manifest["output"]["shape"][1])
    models = {name: args.models / f"{name}.onnx" for name in ("student", "teacher")}
    x = np.random.default_rng(0).normal(size=(64, n_features)).astype(np.float32)
    triton, http_url, grpc_url = start_triton(models, n_features, n_outputs)
    try:
        result = {"latency": measure(models, x, (http_url, grpc_url), args.requests)}
    finally:
        triton.stop()
    result["ratios"] = {f"{model}_{backend}_vs_onnxruntime_{batch}": v[batch]["p50_ms"] /
                        per[model]["onnxruntime_in_process"][batch]["p50_ms"]
                        for per in (result["latency"],) for model, backends in per.items()
                        for backend, v in backends.items() if backend != "onnxruntime_in_process" for batch in v}
    for model, backends in result["latency"].items():
        for backend, per_batch in backends.items():
            cells = "  ".join(f"{b}: p50 {v['p50_ms']:.3f} / p99 {v['p99_ms']:.3f} ms" for b, v in per_batch.items())
            print(f"{model:<8} {backend:<24} {cells}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
