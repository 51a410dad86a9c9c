"""`make demo`: kdgate's whole story on one machine, in about five minutes.

1. distil an MNIST-1D student from a teacher and export both to ONNX (``kdgate distill``);
2. start the gateway on a private local Ray Serve (loopback, free ports, fast modes);
3. roll the student out under real Locust load: shadow -> 5 -> 25 -> 50 -> 100 %, each step
   gated on agreement with the teacher, KL, latency, errors, output and input drift and,
   before 100 %, cost per inference -- automatic promotion;
4. roll out a deliberately corrupted student v2 (its weights perturbed): the gates fail
   and the controller rolls it back on its own, while no request fails;
5. print a summary table and write a report folder (HTML + PNG plots: weight over time,
   agreement, p50/p99 per variant, cost per inference, the moment of rollback).

Ray, Serve, HAProxy and Locust are shut down on success, failure, Ctrl-C or SIGTERM.

Example::

    make demo                                   # = .venv/bin/python -m kdgate.demo
    .venv/bin/python -m kdgate.demo --skip-distill --out runs/demo   # reuse the models
"""
from __future__ import annotations

import argparse
import json
import pathlib
import secrets
import shutil
import signal
import sys
import time
from typing import Any

from kdgate.demo.setup import (
    BAD_STAGE, GOOD_STAGE, STUDENT_USD_PER_HOUR, TEACHER_USD_PER_HOUR, DemoModels, Stage, calibrated_gates,
    make_bad_student, offline_agreement, stage_config, write_json, write_traffic_rows,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "deployments" / "demo" / "distill-mnist1d.yaml"
TERMINAL_PHASES = ("Promoted", "Guarding", "RolledBack", "Aborted")  # Guarding: promoted, watched


def _raise_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up exactly like Ctrl-C


class Demo:
    """One run of the demo; :meth:`run` returns the report dict."""

    def __init__(self, args: argparse.Namespace, console):
        self.args, self.console = args, console
        self.models = DemoModels.from_dir(args.out)
        self.report_dir = args.report or args.out / "demo-report"
        self.workdir = self.report_dir / "gateway"
        self.started = time.monotonic()
        self.notes: list[str] = []

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] [bold cyan]demo[/] {message}")

    def run(self) -> dict[str, Any]:
        shutil.rmtree(self.workdir, ignore_errors=True)  # a fresh rollout state, capture and audit log
        self.distill()
        good = offline_agreement(self.models.teacher, self.models.student, self._rows())
        bad_path, bad = make_bad_student(self.models, noise=self.args.bad_noise)
        gates = calibrated_gates(good)
        self.say(f"offline agreement with the teacher on {good['rows']} held-out rows: v1 {good['agreement']:.1%}, "
                 f"corrupted v2 {bad['agreement']:.1%}; agreement gate: Wilson lower bound >= "
                 f"{gates['agreement']['min_lower_bound']:.3f}, KL gate <= {gates['kl']['max_mean']:.3f}")
        from gateway.serve.local import LocalServe

        stages = []
        with LocalServe(fast=not self.args.default_modes, num_cpus=self.args.num_cpus) as local:
            self.say(f"Ray Serve up on {local.url} ({local.mode} mode)")
            token = secrets.token_urlsafe(16)
            token_file = self.workdir / "admin-token"
            token_file.parent.mkdir(parents=True, exist_ok=True)
            token_file.write_text(token)
            for stage, student in ((GOOD_STAGE, self.models.student), (BAD_STAGE, bad_path)):
                config = stage_config(stage, self.models, student_path=student, gates=gates, workdir=self.workdir,
                                      token_file=token_file, interval_s=self.args.interval,
                                      min_samples=self.args.min_samples)
                stages.append(self.roll_out(stage, config, local.url, token))
        info = [
            "The split is per request (sticky_header: null): with the few Locust users a 2-core machine can "
            "drive, a sticky 5 % canary would hold all or none of them. deployments/*.yaml keep x-user-id.",
            f"v2 is v1 with Gaussian noise of {self.args.bad_noise:g} x each weight tensor's std added "
            "(a corrupted export); it goes straight to a live 5 % canary so its rollback takes live traffic away.",
            "Cost per inference = busy seconds x $/hour of the variant / inferences "
            f"(teacher ${TEACHER_USD_PER_HOUR}/h, student ${STUDENT_USD_PER_HOUR}/h).",
        ]
        return {"offline": {"v1": good, "v2": bad}, "gates": gates, "stages": stages, "info": info}

    def _rows(self):
        import numpy as np

        return np.load(self.models.traffic)

    def distill(self) -> None:
        """Train and export (or reuse with --skip-distill when the artifacts exist)."""
        if self.args.skip_distill and not self.models.missing():
            self.say(f"reusing the distilled models in {self.models.dir}")
            return
        from distill.cli import RichReporter, summary_table
        from distill.config import load_config
        from distill.pipeline import run_pipeline

        self.say(f"distilling: {self.args.config} -> {self.models.dir}")
        with RichReporter(self.console) as reporter:
            report = run_pipeline(load_config(self.args.config), self.models.dir, reporter)
        self.console.print(summary_table(report))
        rows = write_traffic_rows(self.args.config, self.models)
        self.say(f"distill report: {self.models.dir / 'report.html'}; {rows} held-out rows saved as load-test inputs")

    def roll_out(self, stage: Stage, config: dict, url: str, token: str) -> dict[str, Any]:
        """Deploy the stage's gateway, load it with Locust, wait for the rollout's verdict."""
        from ray import serve

        from gateway.serve.app import build_app
        from gateway.serve.local import wait_ready
        from kdgate.demo.load import AdminClient, LocustLoad, Sampler, wait_for_phase

        self.say(f"[bold]{stage.title}[/]: deploying teacher + {stage.variant}, rollout steps {list(stage.steps)}")
        serve.run(build_app({"config": config}), name="kdgate", route_prefix="/")
        wait_ready(url)
        load = LocustLoad(url, csv_prefix=self.workdir / f"locust-{stage.key}", users=self.args.users)
        progress = _ProgressPrinter(self, stage)
        with load, Sampler(url, token, stage=stage.key) as sampler:
            self.say(f"Locust (loadtests/locustfile.py): {self.args.users} sticky users, V1 + V2 requests of 4 rows")
            final = wait_for_phase(sampler, TERMINAL_PHASES, timeout_s=self.args.stage_timeout, on_sample=progress)
            time.sleep(self.args.linger)  # traffic goes on after the verdict: still no failures
        admin = AdminClient(url, token)
        history = admin.get("/admin/rollout")
        admin.close()
        locust = load.summary()
        outcome = history["status"]["phase"]
        if final is None:
            self.notes.append(f"{stage.title}: no verdict within {self.args.stage_timeout:g} s (phase {outcome})")
        if outcome != stage.expect:
            self.notes.append(f"{stage.title}: expected {stage.expect}, got {outcome}")
        self.say(f"{stage.title}: [bold]{outcome}[/] {history['status'].get('reason', '')}; Locust sent "
                 f"{locust['requests']} requests, {locust['failures']} failed")
        return {"key": stage.key, "title": stage.title, "variant": stage.variant, "expect": stage.expect,
                "samples": sampler.samples, "status": history["status"], "checks": history["checks"],
                "events": history["events"], "locust": locust}


class _ProgressPrinter:
    """Prints a line whenever the rollout's phase or weight changes."""

    def __init__(self, demo: Demo, stage: Stage):
        self.demo, self.stage, self.last = demo, stage, None

    def __call__(self, sample: dict) -> None:
        state = (sample["phase"], sample["rollout_weight"])
        if state != self.last:
            self.last = state
            self.demo.say(f"  {self.stage.variant}: {sample['phase']:<11} live weight {sample['rollout_weight']:g} %")


def build_report(result: dict[str, Any], notes: list[str], wall_s: float) -> dict[str, Any]:
    """The report dict: windowed timeline points, one summary row per stage, details."""
    from kdgate.demo.report import stage_summary, timeline_points

    prices = {"teacher": TEACHER_USD_PER_HOUR}
    points, rows, details = [], [], []
    for stage in result["stages"]:
        stage_points = timeline_points(stage["samples"], teacher="teacher", student=stage["variant"],
                                       prices={**prices, stage["variant"]: STUDENT_USD_PER_HOUR})
        points += stage_points
        rows.append(stage_summary(stage, stage_points, stage["status"], stage["locust"]))
        details.append({k: v for k, v in stage.items() if k != "samples"})
    v1, v2 = result["offline"]["v1"], result["offline"]["v2"]
    subtitle = (f"MNIST-1D, teacher vs distilled student; offline agreement v1 {v1['agreement']:.1%}, "
                f"corrupted v2 {v2['agreement']:.1%}; demo wall time {wall_s:.0f} s")
    return {"subtitle": subtitle, "wall_s": wall_s, "stages": rows, "stage_details": details, "points": points,
            "gates": result["gates"], "offline": result["offline"],
            "notes": [f"NOT as expected: {n}" for n in notes] + result.get("info", [])}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kdgate.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=pathlib.Path, default=DEFAULT_CONFIG, help="distill config")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/demo"), help="model folder")
    parser.add_argument("--report", type=pathlib.Path, help="report folder (default OUT/demo-report)")
    parser.add_argument("--skip-distill", action="store_true", help="reuse OUT's models when present")
    parser.add_argument("--interval", type=float, default=6.0, help="rollout analysis interval, seconds")
    parser.add_argument("--min-samples", type=int, default=100, help="samples a gate needs to judge")
    parser.add_argument("--users", type=int, default=3, help="Locust users (closed loop, 10-50 ms think time)")
    parser.add_argument("--bad-noise", type=float, default=0.3, help="weight noise of the corrupted v2 (x std)")
    parser.add_argument("--stage-timeout", type=float, default=180.0, help="longest wait for a verdict, seconds")
    parser.add_argument("--linger", type=float, default=4.0, help="seconds of load after each verdict")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--default-modes", action="store_true", help="Ray Serve's default proxy, no fast modes")
    parser.add_argument("--rebuild-report", action="store_true", help="re-render the last run's report only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit 0 when v1 was promoted and v2 rolled back, 1 otherwise, 130 on Ctrl-C."""
    from rich.console import Console

    from kdgate.demo.report import rich_summary, write_demo_report
    from gateway.serve.local import child_processes

    console = Console(width=None if sys.stdout.isatty() else 132)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    args = parse_args(argv)
    demo = Demo(args, console)
    raw_path = demo.report_dir / "demo-raw.json"
    if args.rebuild_report:  # re-render a finished run's report (no Ray, no training)
        result = json.loads(raw_path.read_text())
        wall_s, demo.notes = result["wall_s"], result["notes"]
    else:
        try:
            result = demo.run()
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: Ray, Serve and Locust were shut down")
            return 130
        wall_s = time.monotonic() - demo.started
        write_json(raw_path, {**result, "wall_s": wall_s, "notes": demo.notes})
    report = build_report(result, demo.notes, wall_s)
    html_path = write_demo_report(demo.report_dir, report)
    console.print(rich_summary(report["stages"], title=f"kdgate demo ({wall_s:.0f} s wall)"))
    for row in report["stages"]:
        if row["reason"]:
            console.print(f"[bold]{row['title']}[/]: {row['reason']}")
    left = child_processes()
    console.print(f"report: [bold]{html_path}[/] (plots in {html_path.parent / 'plots'}); "
                  f"processes left running: {', '.join(left) or 'none'}")
    for note in demo.notes:
        console.print(f"[red]NOT as expected[/]: {note}")
    return 1 if demo.notes else 0


if __name__ == "__main__":
    sys.exit(main())
