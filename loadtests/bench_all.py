"""`make bench`: every kdgate benchmark in one run -> bench.json and bench.md.

Runs, each in its own process (its own Ray / Triton, shut down when it ends):

* ``bench_gateway.py`` -- gateway vs bare Serve (student and teacher paths), shadow 10 %
  vs 0 %, batching on vs off at concurrency 32; Ray Serve fast modes by default,
  ``--default-modes`` for Ray's defaults, ``--both-modes`` for both;
* ``bench_models.py`` -- student vs teacher under ONNX Runtime, each vs PyTorch eager;
* ``bench_triton.py`` -- the Triton backend (real tritonserver) vs in-process ONNX Runtime.

The models are `make demo`'s (``runs/demo``); when they are missing, the demo's
distillation runs first. Each benchmark's output goes to ``OUT/<name>.log``; the
markdown table is printed at the end and written to ``OUT/bench.md``.

Example::

    .venv/bin/python loadtests/bench_all.py --out runs/bench
    .venv/bin/python loadtests/bench_all.py --out runs/bench --both-modes
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = ROOT / "runs" / "demo"
DEMO_DISTILL_CONFIG = ROOT / "deployments" / "demo" / "distill-mnist1d.yaml"


def _run(name: str, command: list[str], out: pathlib.Path, timeout_s: float) -> tuple[dict | None, str | None]:
    """Run one benchmark script writing ``out/<name>.json``; (result, error)."""
    json_path, log_path = out / f"{name}.json", out / f"{name}.log"
    json_path.unlink(missing_ok=True)
    started = time.monotonic()
    print(f"bench: {name} ... (log: {log_path})", flush=True)
    with log_path.open("w") as log:
        try:
            proc = subprocess.run([sys.executable, *command, "--out", str(json_path)], stdout=log,
                                  stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout_s:.0f} s"
    print(f"bench: {name} done in {time.monotonic() - started:.0f} s (exit {proc.returncode})", flush=True)
    if proc.returncode != 0 or not json_path.exists():
        tail = log_path.read_text()[-600:]
        return None, f"exit {proc.returncode}; last output: {tail}"
    return json.loads(json_path.read_text()), None


def _ensure_models() -> None:
    """Distil `make demo`'s models when runs/demo has none."""
    needed = [MODELS / n for n in ("student.onnx", "teacher.onnx", "manifest.json", "report.json")]
    if all(p.exists() for p in needed):
        return
    print(f"bench: no models in {MODELS}; distilling them first ({DEMO_DISTILL_CONFIG.name})", flush=True)
    subprocess.run([str(pathlib.Path(sys.executable).with_name("kdgate")), "distill", str(DEMO_DISTILL_CONFIG),
                    "--out", str(MODELS)], cwd=ROOT, check=True)


def run(args) -> dict:
    """Every benchmark in turn; a failing one is reported, the others still run."""
    from kdgate.bench.report import machine_description

    started = time.monotonic()
    machine = machine_description()
    _ensure_models()
    bench: dict = {"machine": machine, "gateway": {}, "errors": {}, "command": args.command}
    modes = ["fast", "default"] if args.both_modes else ["default" if args.default_modes else "fast"]
    gateway_args = ["--requests", str(args.requests), "--rounds", str(args.rounds), "--seconds", str(args.seconds)]
    for mode in modes:
        extra = ["--default-modes"] if mode == "default" else []
        result, error = _run(f"gateway-{mode}", ["loadtests/bench_gateway.py", *gateway_args, *extra],
                             args.out, args.timeout)
        if result is not None:
            bench["gateway"][mode] = result
        else:
            bench["errors"][f"gateway ({mode})"] = error
    for name, script in (("models", "loadtests/bench_models.py"), ("triton", "loadtests/bench_triton.py")):
        result, error = _run(name, [script, "--models", str(MODELS)], args.out, args.timeout)
        bench[name] = result
        if error:
            bench["errors"][name] = error
    bench["load_after"] = [round(v, 2) for v in os.getloadavg()]
    bench["wall_s"] = time.monotonic() - started
    return bench


def main(argv: list[str] | None = None) -> int:
    from kdgate.bench.report import bench_markdown
    from kdgate.demo.setup import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "bench", help="output folder")
    parser.add_argument("--default-modes", action="store_true", help="gateway bench on Ray Serve's defaults")
    parser.add_argument("--both-modes", action="store_true", help="gateway bench in fast and default modes")
    parser.add_argument("--requests", type=int, default=3000, help="gateway: sequential requests per side")
    parser.add_argument("--rounds", type=int, default=3, help="gateway: max-rps runs per side")
    parser.add_argument("--seconds", type=float, default=3.0, help="gateway: length of one max-rps run")
    parser.add_argument("--timeout", type=float, default=600.0, help="longest run of one benchmark, seconds")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    flags = [f for f, on in (("--default-modes", args.default_modes), ("--both-modes", args.both_modes)) if on]
    args.command = "make bench" + (f" BENCH_ARGS={' '.join(flags)}" if flags else "")
    bench = run(args)
    write_json(args.out / "bench.json", bench)
    markdown = bench_markdown(bench)
    (args.out / "bench.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\nbench: wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    return 1 if bench["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
