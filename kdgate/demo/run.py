"""`make demo`: a student's production life on one machine, in under ten minutes.

1. distil an MNIST-1D student from a teacher and export both to ONNX (``kdgate distill``);
2. start the gateway on a private local Ray Serve (loopback, free ports, fast modes);
3. **v1**: roll the student out under real Locust load: shadow -> 5 -> 25 -> 50 -> 100 %, each
   step gated on agreement with the teacher, KL, latency, errors, output and input drift and,
   before 100 %, cost per inference -- promoted, v1 becomes the stable variant (guarded);
4. **v2**: a deliberately corrupted candidate takes a 5 % canary from v1; the gates fail and
   the controller rolls it back onto v1 (v1 stays at 100 %);
5. **drift**: v1 is guarded again; once a guard check passed, the live inputs drift; the guard
   rolls v1 back to the teacher and the disagreeing inputs are captured;
6. **v3**: ``kdgate capture export`` (captured rows appended to the original transfer set) ->
   ``kdgate distill`` (short schedule, the served teacher labels) -> v3 is rolled out on the
   drifted traffic and promoted;
7. print a summary table and write a report folder (HTML + PNG plots: weight and stable
   variant over time, agreement, p50/p99 per variant, cost per inference, rollbacks);
   after v1's promotion a one-client latency check sets the gateway's own histograms beside
   the client's figures minus network time (:mod:`kdgate.demo.latency`).

No request may fail throughout. Ray, Serve, HAProxy and Locust are shut down on success,
failure, Ctrl-C or SIGTERM.

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
import subprocess
import sys
import time
from typing import Any

import yaml

from kdgate.demo.setup import (
    DRIFT_STD, MODEL_NAME, STAGES, STUDENT_USD_PER_HOUR, TEACHER_USD_PER_HOUR, V1_STAGE, DemoModels, Stage, base_dataset,
    calibrated_gates, make_bad_student, offline_agreement, redistill_config, shift_features, stage_config,
    write_json, write_traffic_rows,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "deployments" / "demo" / "distill-mnist1d.yaml"
SCENARIOS = {  # --scenario: its distill config and model folder (kdgate/demo/text.py for "text")
    "mnist1d": {"config": DEFAULT_CONFIG, "out": pathlib.Path("runs/demo"), "bad_noise": 0.3},
    "text": {"config": ROOT / "deployments" / "demo" / "distill-minilm-spam.yaml",
             "out": pathlib.Path("runs/demo-text"), "bad_noise": 3.0},
}
TERMINAL_PHASES = ("Promoted", "Guarding", "RolledBack", "Aborted")  # Guarding: promoted, watched


def _raise_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up exactly like Ctrl-C


class Demo:
    """One run of the demo; :meth:`run` returns the report dict. A scenario (:mod:`kdgate.demo.text`)
    overrides the class attributes and the hooks ``prepare``, ``stage_config``, ``write_traffic``,
    ``latency_bodies``, ``locust_env`` and ``info``."""

    stages: tuple[Stage, ...] = STAGES
    title, model_name = "MNIST-1D", MODEL_NAME

    def __init__(self, args: argparse.Namespace, console):
        self.args, self.console = args, console
        self.models = DemoModels.from_dir(args.out)
        self.report_dir = args.report or args.out / "demo-report"
        self.workdir = self.report_dir / "gateway"
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.captured_rows: int | None = None

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] [bold cyan]demo[/] {message}")

    def run(self) -> dict[str, Any]:
        shutil.rmtree(self.workdir, ignore_errors=True)  # a fresh rollout state, capture and audit log
        self.distill()
        offline, gates, students = self.prepare()
        v1_gates = gates
        from gateway.serve.local import LocalServe

        manifests, stages, latency = {}, [], None
        guard = {"interval_s": self.args.guard_interval, "min_samples": self.args.min_samples,
                 "shadow_fraction": self.args.guard_shadow}
        with LocalServe(fast=not self.args.default_modes, num_cpus=self.args.num_cpus) as local:
            self.say(f"Ray Serve up on {local.url} ({local.mode} mode)")
            token_file = self.workdir / "admin-token"
            token_file.parent.mkdir(parents=True, exist_ok=True)
            token_file.write_text(token := secrets.token_urlsafe(16))
            for stage in self.stages:
                if stage.variant not in students:
                    try:
                        students[stage.variant], manifests[stage.variant], offline["v3"] = self.redistill()
                    except subprocess.CalledProcessError as err:  # e.g. nothing captured: no v3 to roll out
                        self.notes.append(f"{stage.title}: `kdgate {' '.join(err.cmd[3:5])}` failed "
                                          f"(exit {err.returncode}, see {self.workdir / 'kdgate-cli.log'})")
                        break
                    offline["v3_drifted"] = offline_agreement(self.models.teacher, students["v3"], self._drifted)
                    gates = calibrated_gates(offline["v3_drifted"])  # v1's rule, on the traffic v3 will serve
                config = self.stage_config(stage, students=students, manifests=manifests, gates=gates,
                                           token_file=token_file, guard=guard)
                stages.append(self.roll_out(stage, config, local.url, token))
                if stage.key == V1_STAGE.key:  # v1 serves alone now: the gateway's latency against a client's
                    latency = self.latency_check(local.url, token)
        return {"offline": offline, "gates": v1_gates, "v3_gates": gates if "v3" in students else None,
                "stages": stages, "info": self.info(), "latency": latency, "title": self.title,
                "captured_rows": self.captured_rows}

    def prepare(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, pathlib.Path]]:
        """Offline agreement of each student with the teacher, the gates calibrated on it, the students' files."""
        rows = self._rows()
        self._drifted = shift_features(rows, DRIFT_STD)
        good = offline_agreement(self.models.teacher, self.models.student, rows)
        bad_path, bad = make_bad_student(self.models, noise=self.args.bad_noise)
        offline = {"v1": good, "v2": bad, "v1_drifted": offline_agreement(self.models.teacher, self.models.student,
                                                                           self._drifted)}
        gates = calibrated_gates(good)
        self.say(f"offline agreement with the teacher on {good['rows']} held-out rows: v1 {good['agreement']:.1%} "
                 f"({offline['v1_drifted']['agreement']:.1%} on drifted rows), corrupted v2 {bad['agreement']:.1%}; "
                 f"agreement gate: Wilson lower bound >= {gates['agreement']['min_lower_bound']:.3f}, "
                 f"KL gate <= {gates['kl']['max_mean']:.3f}")
        return offline, gates, {"v1": self.models.student, "v2": bad_path}

    def stage_config(self, stage: Stage, **kwargs) -> dict[str, Any]:
        """The gateway config a stage deploys (:func:`kdgate.demo.setup.stage_config`)."""
        return stage_config(stage, self.models, workdir=self.workdir, interval_s=self.args.interval,
                            min_samples=self.args.min_samples, **kwargs)

    def info(self) -> list[str]:
        """What the report's notes say about how the demo is set up."""
        return [
            "The split is per request (sticky_header: null): with the few Locust users a 2-core machine can "
            "drive, a sticky 5 % canary would hold all or none of them. deployments/*.yaml keep x-user-id.",
            f"v2 is v1 with Gaussian noise of {self.args.bad_noise:g} x each weight tensor's std added "
            "(a corrupted export); it goes straight to a live 5 % canary taken from the stable v1.",
            f"The drift: every 2nd input feature moved by {DRIFT_STD:g} standard deviation. v3's manifest reference "
            "is v1's training data, which drifted traffic no longer resembles: v3's input-drift gate is off; "
            "its agreement and KL gates are calibrated like v1's (6 points under its offline agreement), on "
            "drifted held-out rows.",
            f"After a promotion the teacher answers only the guard's {self.args.guard_shadow:.0%} shadow share "
            "of the stable student's traffic.",
            "Cost per inference = busy seconds x $/hour of the variant / inferences "
            f"(teacher ${TEACHER_USD_PER_HOUR}/h, student ${STUDENT_USD_PER_HOUR}/h).",
        ]

    def latency_check(self, url: str, token: str) -> dict[str, Any]:
        """One client, no other load: the handler histograms against client time minus network time."""
        from kdgate.demo.latency import describe, measure
        from kdgate.demo.load import AdminClient

        admin = AdminClient(url, token)
        try:
            result = measure(url, self.model_name, self.latency_bodies(), admin, requests=self.args.latency_requests)
        finally:
            admin.close()
        for line in describe(result):
            self.say(f"  {line}")
        return result

    def redistill(self) -> tuple[pathlib.Path, pathlib.Path, dict[str, float]]:
        """capture export -> distill: v3 from the original transfer set plus the captured drifted rows."""
        v3_dir = self.models.dir / "v3"
        v3_dir.mkdir(parents=True, exist_ok=True)
        base = base_dataset(self.args.config, v3_dir / "base.npz")
        data = v3_dir / "transfer-with-capture.npz"
        self._kdgate("capture", "export", "--dir", str(self.workdir / "capture-drift"), "--base", str(base),
                     "--out", str(data))
        import numpy as np

        with np.load(base) as b, np.load(data) as d:
            self.captured_rows = int(len(d["x_unlabeled"]) - len(b["x_unlabeled"]))
        config_path = v3_dir / "distill-v3.yaml"
        config_path.write_text(yaml.safe_dump(redistill_config(self.args.config, self.models, data,
                                                               epochs=self.args.v3_epochs)))
        self.say(f"{self.captured_rows} captured rows appended to the transfer set; distilling v3")
        self._kdgate("distill", str(config_path), "--out", str(v3_dir))
        v3 = DemoModels.from_dir(v3_dir)
        agreement = offline_agreement(self.models.teacher, v3.student, self._rows())
        return v3.student, v3.manifest, agreement

    def write_traffic(self) -> int:
        """The distill config's held-out test rows as the load test's inputs; returns their number."""
        return write_traffic_rows(self.args.config, self.models)

    def latency_bodies(self) -> list[bytes]:
        """The latency check's request bodies: one held-out row each."""
        from kdgate.demo.latency import v2_bodies

        return v2_bodies(self._rows())

    def _kdgate(self, *args: str) -> None:
        """Run the ``kdgate`` CLI as a user would (its output in the demo's log)."""
        self.say("[bold]kdgate " + " ".join(args) + "[/]")
        log = self.workdir / "kdgate-cli.log"
        with log.open("a") as out:
            subprocess.run([sys.executable, "-m", "kdgate.cli", *args], check=True, stdout=out,
                           stderr=subprocess.STDOUT)

    def _rows(self):
        import numpy as np

        return np.load(self.models.traffic)

    def distill(self) -> None:
        """Train and export (or reuse with --skip-distill when the artifacts exist)."""
        missing = self.models.missing()
        if self.args.skip_distill and set(missing) <= {self.models.traffic.name}:
            if missing:
                self.say(f"{self.write_traffic()} held-out rows saved as load-test inputs")
            self.say(f"reusing the distilled models in {self.models.dir}")
            return
        from distill.cli import RichReporter, summary_table
        from distill.config import load_config
        from distill.pipeline import run_pipeline

        self.say(f"distilling: {self.args.config} -> {self.models.dir}")
        with RichReporter(self.console) as reporter:
            report = run_pipeline(load_config(self.args.config), self.models.dir, reporter)
        self.console.print(summary_table(report))
        rows = self.write_traffic()
        self.say(f"distill report: {self.models.dir / 'report.html'}; {rows} held-out rows saved as load-test inputs")

    def roll_out(self, stage: Stage, config: dict, url: str, token: str) -> dict[str, Any]:
        """Deploy the stage's gateway, load it with Locust, wait for the rollout's verdict."""
        from ray import serve

        from gateway.serve.app import build_app
        from gateway.serve.local import wait_ready
        from kdgate.demo.load import AdminClient, Sampler, combined_stats

        students = ", ".join((*stage.others, stage.variant))
        self.say(f"[bold]{stage.title}[/]: deploying teacher + {students}, candidate {stage.variant}")
        serve.run(build_app({"config": config}), name="kdgate", route_prefix="/")
        wait_ready(url)
        with Sampler(url, token, stage=stage.key) as sampler:
            final, parts = self._drive(stage, sampler, url)
        admin = AdminClient(url, token)
        history = admin.get("/admin/rollout")
        admin.close()
        locust, outcome = combined_stats(parts), history["status"]["phase"]
        stable_after = history["status"]["stable"]
        if final is None:
            self.notes.append(f"{stage.title}: no verdict within {self.args.stage_timeout:g} s (phase {outcome})")
        if (outcome, stable_after) != (stage.expect, stage.expect_stable):
            self.notes.append(f"{stage.title}: expected {stage.expect} with {stage.expect_stable} stable, got "
                              f"{outcome} with {stable_after} stable")
        if locust["failures"]:
            self.notes.append(f"{stage.title}: {locust['failures']} of {locust['requests']} requests failed")
        self.say(f"{stage.title}: [bold]{outcome}[/], stable {stable_after}: {history['status'].get('reason', '')}; "
                 f"Locust sent {locust['requests']} requests, {locust['failures']} failed")
        return {"key": stage.key, "title": stage.title, "variant": stage.variant, "expect": stage.expect,
                "samples": sampler.samples, "status": history["status"], "checks": history["checks"],
                "events": history["events"], "locust": locust}

    def _drive(self, stage: Stage, sampler, url: str) -> tuple[dict | None, list[dict[str, Any]]]:
        """Load the stage until its verdict: (the verdict's sample or None, Locust summaries).

        The drift stage starts guarded: healthy load until a guard check passed, then drifted
        load until the guard rolls back. Other stages wait for any verdict of their candidate.
        """
        from kdgate.demo.load import wait_for

        progress, parts = _ProgressPrinter(self, stage), []
        mine = lambda s: s.get("candidate") == stage.variant  # noqa: E731 -- not the previous stage's status
        verdicts = ("RolledBack", "Aborted") if stage.drift == "after_guard" else TERMINAL_PHASES
        load = self._locust(url, stage, DRIFT_STD if stage.drift == "always" else 0.0, "")
        try:
            if stage.drift == "after_guard":
                wait_for(sampler, lambda s: mine(s) and s["phase"] == "Guarding" and s["last_verdict"] == "passed",
                         timeout_s=self.args.stage_timeout, on_sample=progress)
                parts.append(self._stop(load))
                self.say(f"  a guard check passed on healthy traffic; the inputs now drift "
                         f"(every 2nd feature +{DRIFT_STD:g} std)")
                load = self._locust(url, stage, DRIFT_STD, "-drifted")
            final = wait_for(sampler, lambda s: mine(s) and s["phase"] in verdicts,
                             timeout_s=self.args.stage_timeout, on_sample=progress)
            # Traffic goes on after the verdict (still no failures); after the guard rollback the teacher
            # serves and v1 answers in shadow, so the drifted inputs it disagrees on keep being captured.
            time.sleep(self.args.linger + (self.args.capture_s if stage.drift == "after_guard" else 0.0))
        finally:
            parts.append(self._stop(load))
        return final, parts

    def _locust(self, url: str, stage: Stage, shift_std: float, suffix: str):
        from kdgate.demo.load import LocustLoad

        load = LocustLoad(url, csv_prefix=self.workdir / f"locust-{stage.key}{suffix}", users=self.args.users,
                          model=self.model_name, shift_std=shift_std, env=self.locust_env())
        return load.__enter__()

    def locust_env(self) -> dict[str, str]:
        """Extra environment of the Locust process (what loadtests/locustfile.py sends)."""
        return {}

    @staticmethod
    def _stop(load) -> dict[str, Any]:
        load.stop()
        return load.summary()


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
    offline = result["offline"]
    agreement = ", ".join(f"{name.replace('_drifted', ' on drifted rows')} {offline[name]['agreement']:.1%}"
                          for name in ("v1", "v2", "v1_drifted", "v3", "v3_drifted") if name in offline)
    redistilled = f"{result.get('captured_rows') or 0} captured rows re-distilled into v3; " if "v3" in offline else ""
    subtitle = (f"{result.get('title', 'MNIST-1D')}, teacher vs distilled students; offline agreement with the "
                f"teacher: {agreement}; {redistilled}demo wall time {wall_s:.0f} s")
    return {"subtitle": subtitle, "wall_s": wall_s, "stages": rows, "stage_details": details, "points": points,
            "gates": result["gates"], "v3_gates": result.get("v3_gates"), "offline": result["offline"],
            "captured_rows": result.get("captured_rows"), "latency": result.get("latency"),
            "notes": [f"NOT as expected: {n}" for n in notes] + result.get("info", [])}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kdgate.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="mnist1d",
                        help="mnist1d: the whole lifecycle; text: MiniLM teacher, text student, v1 and v2")
    parser.add_argument("--config", type=pathlib.Path, help="distill config (default: the scenario's)")
    parser.add_argument("--out", type=pathlib.Path, help="model folder (default: runs/demo, runs/demo-text)")
    parser.add_argument("--report", type=pathlib.Path, help="report folder (default OUT/demo-report)")
    parser.add_argument("--skip-distill", action="store_true", help="reuse OUT's models when present")
    parser.add_argument("--interval", type=float, default=6.0, help="rollout analysis interval, seconds")
    parser.add_argument("--min-samples", type=int, default=100, help="samples a gate needs to judge")
    parser.add_argument("--users", type=int, default=3, help="Locust users (closed loop, 10-50 ms think time)")
    parser.add_argument("--bad-noise", type=float,
                        help="weight noise of the corrupted v2 (x std; default 0.3, text 3.0: a bag of tokens "
                             "averages noise out)")
    parser.add_argument("--guard-interval", type=float, default=6.0, help="guard check interval, seconds")
    parser.add_argument("--guard-shadow", type=float, default=0.25,
                        help="share of the stable student's traffic the teacher answers in shadow")
    parser.add_argument("--v3-epochs", type=int, help="training epochs of v3 (default: the distill recipe's)")
    parser.add_argument("--capture-s", type=float, default=15.0,
                        help="seconds of drifted load after the guard rollback (v1 shadowed, disagreements captured)")
    parser.add_argument("--stage-timeout", type=float, default=180.0, help="longest wait for a verdict, seconds")
    parser.add_argument("--linger", type=float, default=4.0, help="seconds of load after each verdict")
    parser.add_argument("--latency-requests", type=int, default=1500,
                        help="requests of the one-client latency check after v1's promotion")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--default-modes", action="store_true", help="Ray Serve's default proxy, no fast modes")
    parser.add_argument("--rebuild-report", action="store_true", help="re-render the last run's report only")
    args = parser.parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    args.config = args.config or scenario["config"]
    args.out = args.out or scenario["out"]
    args.bad_noise = scenario["bad_noise"] if args.bad_noise is None else args.bad_noise
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit 0 when every stage ended as expected with no failed request, 1 otherwise, 130 on Ctrl-C."""
    from rich.console import Console

    from kdgate.demo.report import rich_summary, write_demo_report
    from gateway.serve.local import child_processes

    console = Console(width=None if sys.stdout.isatty() else 132)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    args = parse_args(argv)
    if args.scenario == "text":
        from kdgate.demo.text import TextDemo

        demo = TextDemo(args, console)
    else:
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
    if report.get("latency"):
        from kdgate.demo.latency import describe

        for line in describe(report["latency"]):
            console.print(f"latency: {line}")
    for note in demo.notes:
        console.print(f"[red]NOT as expected[/]: {note}")
    return 1 if demo.notes else 0


if __name__ == "__main__":
    sys.exit(main())
