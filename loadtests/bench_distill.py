"""Benchmark: the MNIST-1D distillation over several seeds, against the issue's acceptance bars.

Each seed is a complete cold run (fresh cache: the teacher is trained, the transfer set
labeled, the sweep run, everything exported and reported), so its total time is what a
user waits. Prints one row per seed, the means, and PASS/FAIL per criterion:

  teacher >= 94 % test accuracy; student >= 10x fewer params and >= 10x lower batch-1
  ONNX Runtime latency; retention >= 97 %; student beats the same-size baseline;
  whole run <= 300 s.

Usage:
    .venv/bin/python loadtests/bench_distill.py [--seeds 0 1 2] [--config distill/configs/mnist1d.yaml]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ("seed", "teacher", "student", "baseline", "retention", "param_x", "speedup_b1",
           "t_lat_ms", "s_lat_ms", "T", "alpha", "total_s", "load1")


def run_one(config_path: Path, seed: int, out_root: Path) -> dict:
    from distill.config import load_config
    from distill.pipeline import run_pipeline

    config = load_config(config_path)
    config.seed = seed
    config.cache_dir = Path(tempfile.mkdtemp(prefix="kdgate-bench-cache-"))  # cold: nothing reused
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    report = run_pipeline(config, out_root / f"seed{seed}")
    wall = time.perf_counter() - started
    return {"seed": seed, "teacher": report["teacher"]["accuracy"], "student": report["student"]["accuracy"],
            "baseline": report["baseline"]["accuracy"], "retention": report["retention"],
            "param_x": report["param_reduction"], "speedup_b1": report["speedup_batch1"],
            "t_lat_ms": report["teacher"]["latency_ms"]["batch1"], "s_lat_ms": report["student"]["latency_ms"]["batch1"],
            "T": report["student"]["temperature"], "alpha": report["student"]["alpha"], "total_s": wall,
            "load1": max(load_before, os.getloadavg()[0]), "timings": report["timings_s"]}


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def verdicts(mean: dict, worst_total: float) -> list[tuple[str, bool, str]]:
    return [
        ("teacher accuracy >= 94%", mean["teacher"] >= 0.94, f"{mean['teacher']:.4f}"),
        ("params >= 10x fewer", mean["param_x"] >= 10, f"{mean['param_x']:.1f}x"),
        ("batch-1 latency >= 10x lower", mean["speedup_b1"] >= 10, f"{mean['speedup_b1']:.1f}x"),
        ("retention >= 97%", mean["retention"] >= 0.97, f"{mean['retention']:.4f}"),
        ("student beats baseline", mean["student"] > mean["baseline"],
         f"{mean['student']:.4f} vs {mean['baseline']:.4f}"),
        ("whole run <= 300 s (slowest seed)", worst_total <= 300, f"{worst_total:.0f} s"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "distill/configs/mnist1d.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "runs/bench")
    parser.add_argument("--json", type=Path, help="Also write the rows and means to this file.")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  load average before: {os.getloadavg()}")
    print("  ".join(COLUMNS))
    rows = []
    for seed in args.seeds:
        rows.append(run_one(args.config, seed, args.out))
        print("  ".join(_cell(rows[-1][c]) for c in COLUMNS), flush=True)
    numeric = [c for c in COLUMNS if c not in ("seed", "T", "alpha")]
    mean = {c: statistics.fmean(r[c] for r in rows) for c in numeric}
    print("mean  " + "  ".join(_cell(mean[c]) if c in mean else "-" for c in COLUMNS[1:]))
    results = verdicts(mean, max(r["total_s"] for r in rows))
    for name, ok, value in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "mean": mean}, indent=2))
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
