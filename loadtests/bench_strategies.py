"""Benchmark: every distillation strategy on MNIST-1D against plain KD and the no-teacher baseline.

Per seed: the data, one teacher (narrower than mnist1d.yaml's, with BatchNorm, which data-free distillation's statistics
matching needs; every strategy distils from this same teacher), its soft labels, the
temperature x alpha sweep (the chosen T and alpha are used by every strategy) and the
baseline; then each strategy trains a student with ``run_strategy``, exactly as
``kdgate distill`` would with that ``strategy`` section. Test accuracy, retention
(accuracy / teacher accuracy) and the strategy's own training time are averaged over seeds.

A shortened schedule keeps the whole run well under 30 minutes on a 2-core CPU (printed at
the start): fewer student epochs than distill/configs/mnist1d.yaml, born-again on the
teacher's own rows and schedule, a small synthetic pool for data-free. Nothing is tuned per
strategy after looking at test results; a strategy that does not beat plain KD is listed so.

Usage:
    .venv/bin/python loadtests/bench_strategies.py [--seeds 0 1 2] [--out runs/bench_strategies]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDENT_EPOCHS = 10
TEACHER_WIDTH = 64        # mnist1d.yaml: 160 (a 4x cheaper teacher keeps born-again and data-free affordable)
TRANSFER_ROWS = 20000     # mnist1d.yaml: 40000
SWEEP = {"temperatures": [2.0, 4.0, 8.0], "alphas": [0.7, 0.9], "epochs": 3, "data_fraction": 0.5}
DATA_FREE = {"rounds": 3, "samples_per_round": 1024, "steps": 30, "epochs_per_round": 15}
FEATURE_PAIRS = [{"teacher": "features.6", "student": "features.1"},   # 160x20 <- 32x20
                 {"teacher": "features.13", "student": "features.3"}]  # 160x10 <- 32x10
STRATEGIES = {
    "plain KD": {"kind": "kd"},
    "KD, temperature decay (T -> 1)": {"kind": "kd", "schedules": {"temperature": {"shape": "linear", "end": 1.0}}},
    "KD, alpha decay (alpha -> 0.5)": {"kind": "kd", "schedules": {"alpha": {"shape": "linear", "end": 0.5}}},
    "feature matching (2 pairs, beta 1)": {"kind": "features", "features": {"pairs": FEATURE_PAIRS, "beta": 1.0}},
    "progressive (assistant width 64)": {"kind": "progressive"},
    "born-again (teacher-size)": {"kind": "born_again"},
    "data-free (no real inputs)": {"kind": "data_free", "data_free": DATA_FREE},
}


def bench_config(seed: int, cache: Path):
    from distill.config import load_config

    config = load_config(ROOT / "distill/configs/mnist1d.yaml")
    config.seed, config.cache_dir = seed, cache
    config.threads = 1  # on a shared 2-core CPU a second torch thread mostly waits (and slows everything)
    config.teacher.architecture.batchnorm = True
    config.teacher.architecture.width = TEACHER_WIDTH
    config.data.mnist1d.n_unlabeled = TRANSFER_ROWS
    config.student.train.epochs = STUDENT_EPOCHS
    config.sweep = config.sweep.model_validate(SWEEP)
    return config


def prepare(seed: int, cache: Path) -> dict:
    """Data, teacher, soft labels and the sweep (which also trains the baseline) for one seed."""
    from distill.data import load_dataset
    from distill.pipeline import SilentReporter, label_with_teacher, prepare_teacher
    from distill.sweep import choose_best, run_sweep
    from distill.train import predict, validation_score

    config = bench_config(seed, cache)
    ds = load_dataset(config.data, config.seed)
    teacher = prepare_teacher(config, ds, SilentReporter())
    soft, _ = label_with_teacher(config, ds, teacher, SilentReporter())
    started = time.perf_counter()
    runs = run_sweep(config, ds, soft)
    best = choose_best(runs)
    baseline = next(r for r in runs if r.kind == "baseline")
    return {"config": config, "ds": ds, "teacher": teacher, "soft": soft, "best": best,
            "teacher_accuracy": float((soft.test.argmax(1) == ds.y_test).mean()),
            "baseline_accuracy": validation_score(predict(baseline.model, ds.x_test), ds.y_test, ds.task),
            "sweep_s": time.perf_counter() - started}


def run_one_strategy(prepared: dict, settings: dict) -> dict:
    from distill.config import StrategyConfig
    from distill.strategies.runner import run_strategy

    config = prepared["config"].model_copy(deep=True)
    config.strategy = StrategyConfig.model_validate({**settings, "compare_with_kd": False})
    started = time.perf_counter()
    result = run_strategy(config, prepared["ds"], prepared["soft"], prepared["teacher"],
                          prepared["best"].temperature, prepared["best"].alpha)
    seconds = time.perf_counter() - started
    final = result.report["stages"][-1]
    return {"accuracy": final["accuracy"], "retention": final["accuracy"] / prepared["teacher_accuracy"],
            "params": final["params"], "time_s": seconds}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean (and spread) per strategy over seeds, with the difference to plain KD."""
    names = list(dict.fromkeys(r["strategy"] for r in rows))
    kd = statistics.fmean(r["accuracy"] for r in rows if r["strategy"] == "plain KD")
    table = []
    for name in names:
        mine = [r for r in rows if r["strategy"] == name]
        accuracy = statistics.fmean(r["accuracy"] for r in mine)
        table.append({"strategy": name, "accuracy": accuracy,
                      "accuracy_sd": statistics.pstdev(r["accuracy"] for r in mine),
                      "retention": statistics.fmean(r["retention"] for r in mine),
                      "vs_plain_kd": accuracy - kd, "params": mine[0]["params"],
                      "time_s": statistics.fmean(r["time_s"] for r in mine), "seeds": len(mine)})
    return table


def markdown(table: list[dict], teacher: float) -> str:
    lines = [f"Teacher test accuracy (mean): {100 * teacher:.2f} %", "",
             "| strategy | accuracy | ± sd | retention | vs plain KD | params | time (s) | beats plain KD |",
             "|---|---|---|---|---|---|---|---|"]
    for row in table:
        verdict = "—" if row["strategy"] in ("plain KD", "baseline (no teacher)") else (
            "yes" if row["vs_plain_kd"] > 0 else "**no**")
        lines.append(f"| {row['strategy']} | {100 * row['accuracy']:.2f} % | {100 * row['accuracy_sd']:.2f} | "
                     f"{100 * row['retention']:.2f} % | {100 * row['vs_plain_kd']:+.2f} pts | {row['params']:,} | "
                     f"{row['time_s']:.1f} | {verdict} |")
    return "\n".join(lines)


def bench_seed(seed: int, cache: Path, only: list[str] | None) -> list[dict]:
    started = time.perf_counter()
    prepared = prepare(seed, cache)
    print(f"  seed {seed}  teacher accuracy {prepared['teacher_accuracy']:.4f}, sweep chose "
          f"T={prepared['best'].temperature:g} alpha={prepared['best'].alpha:g}; data, teacher, soft labels, "
          f"sweep and baseline took {time.perf_counter() - started:.0f} s", flush=True)
    params = sum(p.numel() for p in prepared["best"].model.parameters())
    rows = [{"seed": seed, "strategy": "baseline (no teacher)", "accuracy": prepared["baseline_accuracy"],
             "retention": prepared["baseline_accuracy"] / prepared["teacher_accuracy"], "params": params,
             "time_s": 0.0, "teacher_accuracy": prepared["teacher_accuracy"]}]
    for name, settings in STRATEGIES.items():
        if only and name != "plain KD" and not any(o in settings["kind"] for o in only):
            continue
        rows.append({"seed": seed, "strategy": name, "teacher_accuracy": prepared["teacher_accuracy"],
                     "T": prepared["best"].temperature, "alpha": prepared["best"].alpha,
                     **run_one_strategy(prepared, settings)})
        print(f"  seed {seed}  {name:38s} accuracy {rows[-1]['accuracy']:.4f}  {rows[-1]['time_s']:.1f} s", flush=True)
    return rows


def write_results(out: Path, rows: list[dict], wall: float) -> str:
    """bench_strategies.md and .json for the seeds done so far; returns the markdown."""
    table = summarise(rows)
    seeds = sorted({r["seed"] for r in rows})
    teacher = statistics.fmean({r["seed"]: r["teacher_accuracy"] for r in rows}.values())
    text = markdown(table, teacher) + f"\n\nMean over seeds {seeds}; total wall time {wall:.0f} s.\n"
    (out / "bench_strategies.md").write_text(text)
    (out / "bench_strategies.json").write_text(json.dumps({"rows": rows, "table": table}, indent=2))
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "runs/bench_strategies")
    parser.add_argument("--only", nargs="*", help="strategy kinds to run besides plain KD (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()}")
    print(f"shortened schedule (mnist1d.yaml in brackets): teacher width {TEACHER_WIDTH} (160) with BatchNorm; "
          f"{TRANSFER_ROWS} transfer rows (40000); student {STUDENT_EPOCHS} epochs (20); sweep {SWEEP} "
          f"(5 x 3 grid, 4 epochs); born-again on the teacher's 3600 labeled rows and schedule; data-free "
          f"{DATA_FREE}. Times: each strategy's own training, on a CPU shared with other work.")
    started, rows = time.perf_counter(), []
    for seed in args.seeds:
        rows += bench_seed(seed, args.out / "cache", args.only)
        text = write_results(args.out, rows, time.perf_counter() - started)  # partial results survive a stop
    print("\n" + text)
    print(f"written: {args.out / 'bench_strategies.md'} and {args.out / 'bench_strategies.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
