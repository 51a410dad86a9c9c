"""Gateway overhead benchmark: the gateway vs a bare Ray Serve app, shadow cost, batching gain.

One run, one Ray instance, the same ONNX models, measured side by side (sides alternate
every 100 requests, throughput rounds alternate too, so machine noise hits all alike):

* p50 / p99 latency (one sequential client) and max requests/s at 0 failures
  (``--concurrency`` clients) of the gateway's **student path** (100 % student, colocated
  ONNX Runtime) and **teacher path** (100 % teacher: ingress -> handle -> teacher
  deployment with dynamic batching) vs a bare single-deployment Serve app running the
  same model on the same JSON body;
* primary-path p50/p99 of the student path with shadow at 10 % vs 0 % (switched live
  through the admin API);
* teacher-path requests/s at concurrency ``--batch-concurrency`` (32) with dynamic
  batching on vs off (two gateway apps, identical but for batching);
* peers (:mod:`bench_peers`): a bare two-deployment Serve app doing the teacher path's hop,
  the student in a plain uvicorn ASGI app and behind Triton, and the in-process ONNX
  Runtime floor; the gateway's overhead in microseconds over the bare app;
* an A/A check: a second, identical bare deployment of the student against the first (latency
  only), the resolution of every p50 ratio above on this machine in this run.

Targets (issue: request path): student p50 <= 1.05x bare and max rps >= 0.95x bare;
colocated teacher (``gw-colo``: ONNX Runtime in the Gateway replica; its own thread, or inline when fast)
p50 <= 1.15x bare and max rps >= 0.9x bare; teacher in its own deployment p50 <= 1.2x the bare hop app; shadow 10 % p99 <= 1.05x
shadow 0 %; batching costs no p50 at concurrency 1 (<= 1.05x off) and gains >= 2x at
c = 32. Ratios are printed with "met" / "NOT met", the latency ratios with a 95 % bootstrap
interval over the rounds (how far the machine's noise could move them); ``--out`` writes
everything as JSON.

Example::

    .venv/bin/python loadtests/bench_gateway.py --requests 1000 --out runs/bench/gateway.json
    .venv/bin/python loadtests/bench_gateway.py --default-modes   # Ray Serve's default proxy
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys
import tempfile
import time

import httpx
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtests"))
from bench_peers import Peers, deploy_hop_app, floor_latencies  # noqa: E402 -- needs the paths above
TOKEN = "bench-token"
CHUNK = 100  # sequential requests per side before switching sides
PATHS = {"student": {"teacher": 0, "student": 100}, "teacher": {"teacher": 100, "student": 0}}
# (name, measured ratio key, target, "le" | "ge")
TARGETS = (
    ("student-path p50 / bare", "student_p50_vs_bare", 1.05, "le"),
    ("student-path max rps / bare", "student_rps_vs_bare", 0.95, "ge"),
    ("teacher-path p50 / bare hop app", "teacher_p50_vs_bare_hop", 1.2, "le"),
    ("colocated teacher p50 / bare", "teacher_colocated_p50_vs_bare", 1.15, "le"),
    ("colocated teacher max rps / bare", "teacher_colocated_rps_vs_bare", 0.9, "ge"),
    ("p99 shadow 10 % / shadow 0 %", "shadow10_p99_vs_shadow0", 1.05, "le"),
    ("teacher p50 c=1 batching on / off", "batching_p50_on_vs_off", 1.05, "le"),
    ("teacher rps batching on / off (c=32)", "batching_rps_on_vs_off", 2.0, "ge"),
)
PEERS = ("asgi_student", "triton_student")
# The latency target ratios (each also gets a bootstrap interval): key -> (numerator side, denominator side, percentile)
LATENCY_PAIRS = {
    "student_p50_vs_bare": ("gateway_student", "bare_student", 50),
    "teacher_p50_vs_bare_hop": ("gateway_teacher", "bare_hop_teacher", 50),
    "teacher_colocated_p50_vs_bare": ("gateway_teacher_colocated", "bare_teacher", 50),
    "shadow10_p99_vs_shadow0": ("shadow_10", "shadow_0", 99),
    "batching_p50_on_vs_off": ("gateway_teacher", "gateway_teacher_nobatch", 50),
    "bare_student_aa_p50": ("bare_student_aa", "bare_student", 50),   # A/A: how far two identical apps differ
}
CI_RESAMPLES = 1000


def demo_or_tiny_models(args, tmp: pathlib.Path) -> tuple[str, str, int]:
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


def _gateway_config(student: str, teacher: str, tmp: pathlib.Path, *, batching: bool) -> dict:
    """The student's manifest (the demo's, when its models are used) switches on what production
    runs per request: input binning against its training reference, for the drift gates."""
    manifest = pathlib.Path(student).with_name("manifest.json")
    return {
        "model_name": "bench",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": teacher, "device": "cpu",
             "batching": {"enabled": batching, "max_batch_size": 32, "wait_timeout_s": 0.002}},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": student, "device": "cpu",
             "colocated": True, **({"manifest_path": str(manifest)} if manifest.exists() else {})},
        ],
        "routing": {"weights": PATHS["student"]},
        "shadow": {"fraction": 0.0, "canary_compare_fraction": 0.0, "queue_size": 64},
        "capture": {"enabled": False},
        "admin": {"token_file": str(tmp / "token")},
        "audit_log": str(tmp / f"audit-{batching}.jsonl"),
    }


def _deploy(student: str, teacher: str, tmp: pathlib.Path) -> None:
    """bare-student (and its A/A twin), bare-teacher, gw (batching on), gw-nobatch and gw-colo (colocated teacher) apps."""
    from ray import serve
    from starlette.requests import Request

    from gateway.serve.app import build_app

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    class BareOnnx:
        """The baseline: one deployment, same model, same JSON in and out, nothing else."""

        def __init__(self, path: str):
            from gateway.backends import OnnxBackend

            self.backend = OnnxBackend(path, device="cpu")  # the gateway's own ORT settings

        async def __call__(self, request: Request) -> dict:
            x = np.asarray((await request.json())["instances"], dtype=np.float32)
            return {"predictions": self.backend.infer(x).tolist()}

    (tmp / "token").write_text(TOKEN)
    deploy_hop_app(teacher)
    serve.run(BareOnnx.bind(student), name="bare-student", route_prefix="/bare-student")
    serve.run(BareOnnx.bind(student), name="bare-student-aa", route_prefix="/bare-student-aa")
    serve.run(BareOnnx.bind(teacher), name="bare-teacher", route_prefix="/bare-teacher")
    serve.run(build_app({"config": _gateway_config(student, teacher, tmp, batching=True)}), name="gw",
              route_prefix="/gw")
    nobatch = _gateway_config(student, teacher, tmp, batching=False)
    nobatch["routing"]["weights"] = PATHS["teacher"]
    serve.run(build_app({"config": nobatch}), name="gw-nobatch", route_prefix="/gw-nobatch")
    colocated = _gateway_config(student, teacher, tmp, batching=False)
    colocated["variants"][0]["colocated"] = True   # ONNX Runtime in the Gateway replica
    colocated["routing"]["weights"] = PATHS["teacher"]
    serve.run(build_app({"config": colocated}), name="gw-colo", route_prefix="/gw-colo")


class Bench:
    """The HTTP side of the benchmark: URLs, the live split of the ``gw`` app, the clients."""

    def __init__(self, base: str, features: int, peers: Peers | None = None):
        self.base = base
        self.body = json.dumps({"instances": [[0.1] * features]}).encode()
        self.bodies = dict(peers.bodies) if peers else {}
        self.admin = httpx.Client(timeout=10, headers={"authorization": f"Bearer {TOKEN}"})
        self.split: str | None = None
        predict = "/v1/models/bench:predict"
        self.urls = {"bare_student": f"{base}/bare-student", "bare_student_aa": f"{base}/bare-student-aa",
                     "bare_teacher": f"{base}/bare-teacher",
                     "gateway_student": f"{base}/gw{predict}", "gateway_teacher": f"{base}/gw{predict}",
                     "gateway_teacher_nobatch": f"{base}/gw-nobatch{predict}",
                     "gateway_teacher_colocated": f"{base}/gw-colo{predict}",
                     "bare_hop_teacher": f"{base}/bare-hop-teacher", **(peers.urls if peers else {})}

    def use(self, side: str) -> str:
        """The URL of ``side``, after switching the gw app's split when the side needs it."""
        fixed = ("gateway_teacher_nobatch", "gateway_teacher_colocated")   # apps of their own, split fixed
        path = side.split("_")[1] if side.startswith("gateway_") and side not in fixed else None
        if path is not None and path != self.split:
            self.admin.put(f"{self.base}/gw/admin/split", json={"weights": PATHS[path]}).raise_for_status()
            self.split = path
        return self.urls[side]

    def set_shadow(self, fraction: float) -> None:
        overlay = {"shadow": {"fraction": fraction, "canary_compare_fraction": fraction}}
        self.admin.put(f"{self.base}/gw/admin/config", json=overlay).raise_for_status()

    def latencies(self, url: str, n: int, body: bytes | None = None) -> np.ndarray:
        headers = {"content-type": "application/json"}
        body = body or self.body
        out = np.empty(n)
        with httpx.Client(timeout=30) as client:
            for i in range(n):
                start = time.perf_counter()
                response = client.post(url, content=body, headers=headers)
                out[i] = time.perf_counter() - start
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
        return out

    def throughput(self, url: str, concurrency: int, seconds: float, body: bytes | None = None) -> tuple[float, int]:
        """(requests/s, failures) of ``concurrency`` clients for ``seconds``."""
        return asyncio.run(_throughput(url, body or self.body, concurrency, seconds))


async def _throughput(url: str, body: bytes, concurrency: int, seconds: float) -> tuple[float, int]:
    headers = {"content-type": "application/json"}
    done, failed = 0, 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            nonlocal done, failed
            while time.perf_counter() < deadline:
                try:
                    response = await client.post(url, content=body, headers=headers)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                done, failed = done + ok, failed + (not ok)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start), failed


def _summary(lat: list[np.ndarray], runs: list[tuple[float, int]]) -> dict:
    all_lat = np.concatenate(lat) * 1000 if lat else np.array([np.nan])
    clean = [rps for rps, failed in runs if failed == 0]
    return {"p50_ms": float(np.percentile(all_lat, 50)), "p99_ms": float(np.percentile(all_lat, 99)),
            "max_rps": float(max(clean)) if clean else None, "rps_runs": [round(r, 1) for r, _ in runs],
            "failures": int(sum(f for _, f in runs)), "requests": int(all_lat.size if lat else 0)}


def _alternate(bench: Bench, sides: list[str], chunks: int, lat: dict) -> None:
    for i in range(chunks):  # rotate the order: drift and warm-up hit every side alike
        for side in sides[i % len(sides):] + sides[:i % len(sides)]:
            lat[side].append(bench.latencies(bench.use(side), CHUNK, bench.bodies.get(side)))


def measure(bench: Bench, args) -> dict:
    """Every measurement, sides interleaved; returns the raw summaries per side."""
    paths = ["bare_student", "gateway_student", "bare_teacher", "gateway_teacher", "gateway_teacher_colocated",
             "bare_hop_teacher",
             *(p for p in PEERS if p in bench.urls)]
    # Latency only: batching off (what the batch wait adds to the teacher path) and the A/A twin.
    latency_only = ["gateway_teacher_nobatch", "bare_student_aa"]
    for side in paths + latency_only:
        bench.latencies(bench.use(side), 100, bench.bodies.get(side))  # warm up every path
    lat = {k: [] for k in paths + latency_only + ["shadow_0", "shadow_10"]}
    runs = {k: [] for k in paths + ["gateway_teacher_c32", "gateway_teacher_nobatch_c32"]}
    chunks = max(1, args.requests // CHUNK)
    _alternate(bench, paths + latency_only, chunks, lat)
    for _ in range(args.rounds):
        for side in paths:
            runs[side].append(bench.throughput(bench.use(side), args.concurrency, args.seconds,
                                               bench.bodies.get(side)))
        for side in ("gateway_teacher", "gateway_teacher_nobatch"):
            runs[f"{side}_c32"].append(bench.throughput(bench.use(side), args.batch_concurrency, args.seconds))
    bench.use("gateway_student")
    for i in range(chunks):
        order = ((0.0, "shadow_0"), (0.1, "shadow_10"))
        for fraction, key in (order if i % 2 == 0 else order[::-1]):
            bench.set_shadow(fraction)
            lat[key].append(bench.latencies(bench.urls["gateway_student"], CHUNK))
    bench.set_shadow(0.0)
    result = {k: _summary(lat.get(k, []), runs.get(k, [])) for k in sorted(set(lat) | set(runs))}
    result["ratio_ci"] = ratio_intervals(lat)
    return result


def ratio_intervals(lat: dict[str, list[np.ndarray]], seed: int = 0) -> dict[str, list[float]]:
    """95 % bootstrap interval of each latency ratio in :data:`LATENCY_PAIRS`: the rounds of chunks
    are resampled with replacement, the same rounds for both sides (chunk i of every side ran in
    round i, so what the machine did in a round weighs on both)."""
    rng = np.random.default_rng(seed)
    intervals = {}
    for key, (top, bottom, q) in LATENCY_PAIRS.items():
        a, b = lat.get(top) or [], lat.get(bottom) or []
        if not a or len(a) != len(b):
            continue
        a, b = np.stack(a), np.stack(b)   # [rounds, CHUNK]
        picks = rng.integers(0, len(a), size=(CI_RESAMPLES, len(a)))
        ratios = [np.percentile(a[pick], q) / np.percentile(b[pick], q) for pick in picks]
        intervals[key] = [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]
    return intervals


def ratios(result: dict) -> dict:
    """The target ratios from the per-side summaries (None where a side had no clean run or is absent)."""
    def get(side: str, key: str):
        return (result.get(side) or {}).get(key)

    def div(a: str, b: str, key: str = "p50_ms"):
        top, bottom = get(a, key), get(b, key)
        return top / bottom if top is not None and bottom else None

    overhead = (get("gateway_student", "p50_ms") or 0) - (get("bare_student", "p50_ms") or 0)
    return {
        **{key: div(top, bottom, f"p{q}_ms") for key, (top, bottom, q) in LATENCY_PAIRS.items()},
        "student_p99_vs_bare": div("gateway_student", "bare_student", "p99_ms"),
        "teacher_p50_vs_bare": div("gateway_teacher", "bare_teacher"),
        "teacher_p99_vs_bare": div("gateway_teacher", "bare_teacher", "p99_ms"),
        "teacher_nobatch_p50_vs_bare": div("gateway_teacher_nobatch", "bare_teacher"),
        "student_rps_vs_bare": div("gateway_student", "bare_student", "max_rps"),
        "teacher_rps_vs_bare": div("gateway_teacher", "bare_teacher", "max_rps"),
        "teacher_colocated_rps_vs_bare": div("gateway_teacher_colocated", "bare_teacher", "max_rps"),
        "shadow10_p50_vs_shadow0": div("shadow_10", "shadow_0"),
        "batching_rps_on_vs_off": div("gateway_teacher_c32", "gateway_teacher_nobatch_c32", "max_rps"),
        "teacher_nobatch_p50_vs_bare_hop": div("gateway_teacher_nobatch", "bare_hop_teacher"),
        "student_overhead_us": 1000 * overhead if "gateway_student" in result else None,
        "bare_student_p50_vs_asgi": div("bare_student", "asgi_student"),
        "bare_student_p50_vs_floor": div("bare_student", "floor_student"),
    }


def verdicts(measured: dict, intervals: dict | None = None) -> list[dict]:
    """One row per target: measured ratio, its 95 % interval where there is one, target, met or NOT met
    (the verdict reads the measured ratio; the interval says how far noise could move it)."""
    rows = []
    for name, key, target, sense in TARGETS:
        value = measured.get(key)
        met = value is not None and (value <= target if sense == "le" else value >= target)
        rows.append({"name": name, "key": key, "value": value, "ci": (intervals or {}).get(key),
                     "target": f"{'<=' if sense == 'le' else '>='} {target:g}x", "met": met})
    return rows


def run(args) -> dict:
    from gateway.backends import OnnxBackend
    from gateway.serve.local import LocalServe

    with tempfile.TemporaryDirectory() as tmp_name, \
            LocalServe(fast=not args.default_modes, num_cpus=args.logical_cpus) as local:
        tmp = pathlib.Path(tmp_name)
        student, teacher, features = demo_or_tiny_models(args, tmp)
        _deploy(student, teacher, tmp)
        n_outputs = OnnxBackend(student, device="cpu").io_shapes()[1][1]
        peers = Peers(student, features, n_outputs).start()
        try:
            result = measure(Bench(local.url, features, peers), args)
        finally:
            peers.stop()
        result["floor_student"] = _summary([floor_latencies(student, features, args.requests)], [])
        result["mode"] = local.mode
    result["models"] = {"student": student, "teacher": teacher}
    result["ratios"] = ratios(result)
    result["targets"] = verdicts(result["ratios"], result.get("ratio_ci"))
    result["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    return result


def report(result: dict) -> None:
    """Print the per-side table and every target with met / NOT met."""
    print(f"kdgate gateway benchmark — Ray Serve {result['mode']} mode")
    print(f"{'side':<28}{'p50 ms':>9}{'p99 ms':>9}{'max rps':>9}{'fail':>6}")
    for key, r in result.items():
        if isinstance(r, dict) and "p50_ms" in r:
            rps = f"{r['max_rps']:.0f}" if r["max_rps"] else "-"
            print(f"{key:<28}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{rps:>9}{r['failures']:>6}")
    overhead = result["ratios"].get("student_overhead_us")
    if overhead is not None:
        print(f"gateway overhead over the bare app (student p50): {overhead:.0f} us")
    aa, aa_ci = result["ratios"].get("bare_student_aa_p50"), result.get("ratio_ci", {}).get("bare_student_aa_p50")
    if aa is not None:
        print(f"A/A, a second bare student app / the first (p50): {aa:.3f}x"
              + (f"  95 % CI {aa_ci[0]:.3f}-{aa_ci[1]:.3f}" if aa_ci else ""))
    for row in result["targets"]:
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}x"
        ci = f"  95 % CI {row['ci'][0]:.3f}-{row['ci'][1]:.3f}" if row.get("ci") else ""
        print(f"{row['name']:<40} {value:>8}  (target {row['target']}: {'met' if row['met'] else 'NOT met'}){ci}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="sequential requests per side (at 1,000 the "
                        "student p50 ratio moved by 0.08 between runs)")
    parser.add_argument("--rounds", type=int, default=3, help="max-rps runs per side (the best clean one counts)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients for the max-rps runs")
    parser.add_argument("--batch-concurrency", type=int, default=32, help="clients for batching on/off")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one max-rps run")
    parser.add_argument("--logical-cpus", type=int, default=6,
                        help="Ray's logical CPUs: room for every replica (they share the real cores)")
    parser.add_argument("--default-modes", action="store_true", help="Ray Serve's default proxy, no fast modes")
    parser.add_argument("--tiny", action="store_true", help="use tiny exported models even if runs/demo exists")
    parser.add_argument("--out", type=pathlib.Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = run(args)
    report(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
