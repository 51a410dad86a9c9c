"""Gateway overhead benchmark: student path vs a bare Ray Serve app, and the cost of shadow.

One run, one Ray instance, one ONNX model, measured side by side (sides alternate every
100 requests so machine noise hits both alike):

* p50 / p99 latency (one sequential client) and max requests/s (``--concurrency``
  clients) of the gateway's student path (100 % student, colocated ONNX Runtime) vs a
  bare single-deployment Serve app that runs the same model on the same JSON body;
* primary-path p99 of the student path with shadow at 10 % (the teacher answers a
  tenth of the requests in the background) vs 0 %, switched live through the admin API.

Targets: student-path p50 <= 1.0x bare; shadow adds <= 5 % to p99. The ratios are
printed with "met" or "NOT met"; ``--out`` writes them as JSON.

Example::

    .venv/bin/python loadtests/bench_gateway.py --requests 2000 --out runs/bench/gateway.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import socket
import sys
import tempfile
import time

import httpx
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token"
FAST_MODE_ENV = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")
CHUNK = 100  # sequential requests per side before switching sides


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _models(args, tmp: pathlib.Path) -> tuple[str, str, int]:
    """(student, teacher, n_features): runs/demo models when present, else tiny exports."""
    demo = ROOT / "runs" / "demo"
    if not args.tiny and (demo / "student.onnx").exists() and (demo / "teacher.onnx").exists():
        manifest = json.loads((demo / "manifest.json").read_text())
        return str(demo / "student.onnx"), str(demo / "teacher.onnx"), int(manifest["input"]["shape"][1])
    import torch

    from distill.export import export_onnx

    x = np.random.default_rng(0).normal(size=(16, 40)).astype(np.float32)
    for name, hidden in (("student", 16), ("teacher", 128)):
        torch.manual_seed(hidden)
        net = torch.nn.Sequential(torch.nn.Linear(40, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
        export_onnx(net, tmp / f"{name}.onnx", x)
    return str(tmp / "student.onnx"), str(tmp / "teacher.onnx"), 40


def _deploy(student: str, teacher: str, tmp: pathlib.Path) -> None:
    from ray import serve
    from starlette.requests import Request

    from gateway.app import build_app

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    class BareOnnx:
        """The baseline: one deployment, same model, same JSON in and out, nothing else."""

        def __init__(self, path: str):
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        async def __call__(self, request: Request) -> dict:
            x = np.asarray((await request.json())["instances"], dtype=np.float32)
            return {"predictions": self.session.run(["logits"], {"input": x})[0].tolist()}

    (tmp / "token").write_text(TOKEN)
    config = {
        "model_name": "bench",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": teacher, "device": "cpu",
             "batching": {"enabled": True, "max_batch_size": 16, "wait_timeout_s": 0.002}},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": student, "device": "cpu",
             "colocated": True},
        ],
        "routing": {"weights": {"teacher": 0, "student": 100}},
        "shadow": {"fraction": 0.0, "canary_compare_fraction": 0.0, "queue_size": 64},
        "capture": {"enabled": False},
        "admin": {"token_file": str(tmp / "token")},
        "audit_log": str(tmp / "audit.jsonl"),
    }
    serve.run(BareOnnx.bind(student), name="bare", route_prefix="/bare")
    serve.run(build_app({"config": config}), name="gateway", route_prefix="/gw")


def _set_shadow(base: str, fraction: float) -> None:
    """Switch shadow live through the admin API (same replica, no redeploy)."""
    overlay = {"shadow": {"fraction": fraction, "canary_compare_fraction": fraction}}
    response = httpx.put(f"{base}/gw/admin/config", json=overlay,
                         headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    response.raise_for_status()


def _latencies(url: str, body: bytes, n: int) -> np.ndarray:
    headers = {"content-type": "application/json"}
    out = np.empty(n)
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            start = time.perf_counter()
            response = client.post(url, content=body, headers=headers)
            out[i] = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
    return out


async def _throughput(url: str, body: bytes, concurrency: int, seconds: float) -> float:
    headers = {"content-type": "application/json"}
    done = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                response = await client.post(url, content=body, headers=headers)
                response.raise_for_status()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def _summary(lat: list[np.ndarray], rps: list[float]) -> dict:
    all_lat = np.concatenate(lat) * 1000
    return {"p50_ms": float(np.percentile(all_lat, 50)), "p99_ms": float(np.percentile(all_lat, 99)),
            "max_rps": float(max(rps)) if rps else None, "requests": int(all_lat.size)}


def run(args) -> dict:
    import ray
    from ray import serve

    for name in FAST_MODE_ENV:
        os.environ[name] = "0" if args.default_modes else "1"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        student, teacher, features = _models(args, tmp)
        _deploy(student, teacher, tmp)
        body = json.dumps({"instances": [[0.1] * features]}).encode()
        urls = {"bare": f"{base}/bare", "gateway": f"{base}/gw/v1/models/bench:predict"}
        for url in urls.values():  # warm up both paths
            _latencies(url, body, 200)
        lat = {k: [] for k in ("bare", "gateway", "shadow_0", "shadow_10")}
        rps = {"bare": [], "gateway": []}
        chunks = max(1, args.requests // CHUNK)
        for i in range(chunks):  # alternate sides in small chunks: drift hits both alike
            for side in (("bare", "gateway") if i % 2 == 0 else ("gateway", "bare")):
                lat[side].append(_latencies(urls[side], body, CHUNK))
        for _ in range(args.rounds):
            for side in ("bare", "gateway"):
                rps[side].append(asyncio.run(_throughput(urls[side], body, args.concurrency, args.seconds)))
        for i in range(chunks):
            order = ((0.0, "shadow_0"), (0.1, "shadow_10"))
            for fraction, key in (order if i % 2 == 0 else order[::-1]):
                _set_shadow(base, fraction)
                lat[key].append(_latencies(urls["gateway"], body, CHUNK))
        serve.shutdown()
        ray.shutdown()
    result = {k: _summary(v, rps.get(k, [])) for k, v in lat.items()}
    result["mode"] = "default" if args.default_modes else "fast (HAProxy + throughput-optimized)"
    result["ratios"] = {
        "student_p50_vs_bare": result["gateway"]["p50_ms"] / result["bare"]["p50_ms"],
        "student_p99_vs_bare": result["gateway"]["p99_ms"] / result["bare"]["p99_ms"],
        "student_rps_vs_bare": result["gateway"]["max_rps"] / result["bare"]["max_rps"],
        "shadow10_p99_vs_shadow0": result["shadow_10"]["p99_ms"] / result["shadow_0"]["p99_ms"],
    }
    return result


def _report(result: dict) -> None:
    print(f"kdgate gateway benchmark — Ray Serve {result['mode']} mode")
    print(f"{'path':<12}{'p50 ms':>10}{'p99 ms':>10}{'max rps':>10}{'n':>8}")
    for key in ("bare", "gateway", "shadow_0", "shadow_10"):
        r = result[key]
        rps = f"{r['max_rps']:.0f}" if r["max_rps"] else "-"
        print(f"{key:<12}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{rps:>10}{r['requests']:>8}")
    ratios = result["ratios"]
    p50, shadow = ratios["student_p50_vs_bare"], ratios["shadow10_p99_vs_shadow0"]
    print(f"student-path p50 / bare p50 = {p50:.3f}x  (target <= 1.0x: {'met' if p50 <= 1.0 else 'NOT met'})")
    print(f"student-path p99 / bare p99 = {ratios['student_p99_vs_bare']:.3f}x")
    print(f"student-path rps / bare rps = {ratios['student_rps_vs_bare']:.3f}x")
    print(f"p99 shadow 10 % / shadow 0 % = {shadow:.3f}x  (target <= 1.05x: {'met' if shadow <= 1.05 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per side (all rounds)")
    parser.add_argument("--rounds", type=int, default=4, help="max-rps runs per side (the best counts)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients for the max-rps runs")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one max-rps run")
    parser.add_argument("--default-modes", action="store_true", help="Ray Serve's default proxy, no fast modes")
    parser.add_argument("--tiny", action="store_true", help="use tiny exported models even if runs/demo exists")
    parser.add_argument("--out", type=pathlib.Path, help="write the figures as JSON here")
    args = parser.parse_args()
    result = run(args)
    _report(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
