"""Soak: constant load on a local gateway for minutes; memory, p99 and the capture bound over time.

One private Ray + Serve (loopback, free ports) serves a gateway with everything on: a 50/50
sticky split, 10 % shadow, canary comparison, capture of disagreements into a deliberately
small rotating store. ``--clients`` threads send constant load for ``--minutes``. Every
``--sample-s`` seconds it records the resident memory (RSS) of every Ray process, the
capture directory's size, and the latency of the requests since the last sample.

Verdicts (after ``--warmup-s`` of warm-up): every process's RSS grows < 10 % (from its
first post-warm-up sample to its last); the last minute's p99 is at most 1.5x the first
post-warm-up minute's; the capture store never exceeds its bound; no request failed.
Exit status 1 when any verdict fails; ``--out`` writes every sample as JSON.

Usage::

    .venv/bin/python loadtests/soak.py --minutes 10            # the issue's soak (make chaos)
    .venv/bin/python loadtests/soak.py --minutes 2 --warmup-s 30
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import threading
import time

import httpx
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtests"))
CAPTURE_BOUND = 2 * 1024 * 1024   # small on purpose: the store must rotate during the soak
MAX_RSS_GROWTH, MAX_P99_RATIO = 0.10, 1.5


def soak_config(student: str, teacher: str, tmp: pathlib.Path) -> dict:
    """A gateway config with every hot-path feature on and a small capture bound."""
    return {
        "model_name": "soak",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": teacher, "device": "cpu",
             "batching": {"enabled": True, "max_batch_size": 32, "wait_timeout_s": 0.002}},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": student, "device": "cpu",
             "colocated": True},
        ],
        "routing": {"weights": {"teacher": 50, "student": 50}, "sticky_header": "x-user-id"},
        "shadow": {"fraction": 0.1, "canary_compare_fraction": 0.1, "queue_size": 64},
        "capture": {"enabled": True, "dir": str(tmp / "capture"), "max_bytes": CAPTURE_BOUND},
        "audit_log": str(tmp / "audit.jsonl"),
    }


class Load:
    """``clients`` threads posting V1 requests until stopped; latencies kept per sample period."""

    def __init__(self, url: str, features: int, clients: int):
        self.url, self.features = url, features
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        self.sent = self.failed = 0
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, index: int) -> None:
        rng = np.random.default_rng(index)
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                body = {"instances": rng.normal(size=(4, self.features)).round(4).tolist()}
                started = time.perf_counter()
                try:
                    ok = client.post(f"{self.url}/v1/models/soak:predict", json=body,
                                     headers={"x-user-id": f"u{rng.integers(1000)}"}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with self._lock:
                    self._latencies.append(time.perf_counter() - started)
                    self.sent += 1
                    self.failed += not ok

    def take_latencies(self) -> np.ndarray:
        with self._lock:
            taken, self._latencies = self._latencies, []
        return np.asarray(taken)


def ray_processes() -> dict[str, int]:
    """RSS in bytes of this soak's own Ray processes (the descendants of this driver) and itself."""
    import psutil

    me = psutil.Process()
    rss = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            rss[f"{proc.name()}[{proc.pid}]"] = proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return rss


def directory_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def sample(load: Load, started: float, capture_dir: pathlib.Path) -> dict:
    lat = load.take_latencies()
    return {"t_s": round(time.monotonic() - started, 1), "requests": int(lat.size),
            "p50_ms": float(np.percentile(lat, 50) * 1e3) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99) * 1e3) if lat.size else None,
            "capture_bytes": directory_bytes(capture_dir), "rss": ray_processes(),
            "sent": load.sent, "failed": load.failed}


def verdicts(samples: list[dict], warmup_s: float, bound: int) -> list[tuple[str, bool, str]]:
    """Pass/fail per criterion from the samples (pure: unit-tested)."""
    steady = [s for s in samples if s["t_s"] >= warmup_s and s["requests"]]
    if len(steady) < 2:
        return [("at least two samples after warm-up", False, f"{len(steady)} samples")]
    first, last = steady[0], steady[-1]
    growth = {name: last["rss"][name] / rss - 1 for name, rss in first["rss"].items() if name in last["rss"]}
    worst = max(growth, key=growth.get) if growth else "none"
    p99_ratio = last["p99_ms"] / first["p99_ms"]
    biggest_capture = max(s["capture_bytes"] for s in samples)
    return [
        ("every process's RSS grows < 10 % after warm-up", bool(growth) and growth[worst] < MAX_RSS_GROWTH,
         f"worst {worst}: {growth.get(worst, 0) * 100:+.1f} % over {last['t_s'] - first['t_s']:.0f} s"),
        (f"last p99 <= {MAX_P99_RATIO}x first p99 after warm-up", p99_ratio <= MAX_P99_RATIO,
         f"{first['p99_ms']:.1f} ms -> {last['p99_ms']:.1f} ms ({p99_ratio:.2f}x)"),
        ("capture store within its bound", biggest_capture <= bound, f"max {biggest_capture} of {bound} bytes"),
        ("no request failed", last["failed"] == 0, f"{last['failed']} of {last['sent']}"),
    ]


def print_table(samples: list[dict]) -> None:
    print(f"{'t (s)':>7} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'capture KiB':>12} {'Ray RSS MiB':>12} failed")
    for s in samples:
        print_row(s)


def print_row(s: dict) -> None:
    p50 = f"{s['p50_ms']:.1f}" if s["p50_ms"] is not None else "-"
    p99 = f"{s['p99_ms']:.1f}" if s["p99_ms"] is not None else "-"
    print(f"{s['t_s']:>7.0f} {s['requests']:>9} {p50:>8} {p99:>8} {s['capture_bytes'] / 1024:>12.0f} "
          f"{sum(s['rss'].values()) / 2**20:>12.0f} {s['failed']}", flush=True)


def run(args) -> list[dict]:
    from bench_gateway import demo_or_tiny_models
    from ray import serve

    from gateway.serve.app import build_app
    from gateway.serve.local import LocalServe

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kdgate-soak-"))
    student, teacher, features = demo_or_tiny_models(args, tmp)
    samples: list[dict] = []
    with LocalServe(fast=not args.default_modes) as local:
        serve.run(build_app({"config": soak_config(student, teacher, tmp)}), name="soak", route_prefix="/")
        load = Load(local.url, features, args.clients)
        started = time.monotonic()
        for thread in load.threads:
            thread.start()
        print_table([])
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(args.sample_s)
                samples.append(sample(load, started, tmp / "capture"))
                print_row(samples[-1])
        finally:
            load.stop.set()
            for thread in load.threads:
                thread.join()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--warmup-s", type=float, default=120.0, help="seconds not judged (caches, JIT, pools)")
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--clients", type=int, default=4, help="client threads of constant load")
    parser.add_argument("--tiny", action="store_true", help="tiny models even if runs/demo exists")
    parser.add_argument("--default-modes", action="store_true", help="Ray Serve's default proxy")
    parser.add_argument("--out", type=pathlib.Path, help="write the samples and verdicts as JSON here")
    args = parser.parse_args(argv)
    samples = run(args)
    results = verdicts(samples, args.warmup_s, CAPTURE_BOUND)
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"samples": samples, "verdicts": results}, indent=2))
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
