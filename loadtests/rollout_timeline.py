"""Print the timeline of a rollout: weight per step, gate values, decision, time.

Two sources:

* ``--simulate healthy|drifting|both`` (default both): synthetic traffic through the real
  core -- routing (``choose_variant``), answer comparison, ``WindowStats``, the embedded
  observation source, the gates, the state machine and the reconciler with its SQLite
  store -- on a fake clock, so a 10-minute rollout takes a second. The drifting student
  turns bad at ``--drift-at`` seconds: its inputs shift and it disagrees with the teacher.
* ``--evidence DIR``: the checks recorded in a real run's evidence bundle (or state file).

Usage::

    .venv/bin/python loadtests/rollout_timeline.py --simulate both --interval 30 --rps 20
    .venv/bin/python loadtests/rollout_timeline.py --evidence runs/rollout-evidence/20261122T...-rollback-student
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from gateway.core.compare import compare_classification  # noqa: E402
from gateway.rollout.core.observations import EmbeddedSource  # noqa: E402
from gateway.rollout.core.spec import RolloutSpec  # noqa: E402
from gateway.core.routing import choose_variant  # noqa: E402
from gateway.core.stats import PRIMARY, SHADOW, WindowStats  # noqa: E402
from gateway.rollout.reconciler import RolloutReconciler  # noqa: E402
from gateway.rollout.store import RolloutStore, format_timeline  # noqa: E402

TEACHER, STUDENT = "teacher", "student"
N_FEATURES, N_CLASSES = 8, 10


@dataclass
class SimulatedTraffic:
    """Requests per simulated second; the split follows the weights the reconciler sets."""

    rps: int
    seed: int
    drift_at: float | None = None   # seconds after the start when the student turns bad
    compare_fraction: float = 0.25  # live student requests also answered by the teacher

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.weights = {TEACHER: 100.0, STUDENT: 0.0}
        self.projection = self.rng.normal(size=(N_FEATURES, N_CLASSES))
        normal = self.rng.normal(size=(20000, N_FEATURES))
        qs = np.linspace(0.1, 0.9, 9)
        self.edges = [np.quantile(normal[:, f], qs).tolist() for f in range(N_FEATURES)]
        self.reference = {"inputs": {"edges": self.edges, "fractions": [[0.1] * 10] * N_FEATURES}}

    def set_weights(self, weights: dict[str, float]) -> None:
        self.weights = dict(weights)

    def second(self, stats: WindowStats, elapsed: float) -> None:
        """One simulated second of traffic recorded into ``stats``."""
        drifted = self.drift_at is not None and elapsed >= self.drift_at
        x = self.rng.normal(size=(self.rps, N_FEATURES)) + (1.0 if drifted else 0.0)
        teacher = x @ self.projection
        student = teacher + self.rng.normal(scale=2.0 if drifted else 0.12, size=teacher.shape)
        answered = {TEACHER: [], STUDENT: []}
        for i in range(self.rps):
            primary = choose_variant(self.weights, sticky_key=None, draw=float(self.rng.random()))
            other = STUDENT if primary == TEACHER else TEACHER
            answered[primary].append((i, PRIMARY))
            if primary == TEACHER or self.rng.random() < self.compare_fraction:
                answered[other].append((i, SHADOW))
        for variant, rows in answered.items():
            mean_s = 0.02 if variant == TEACHER else 0.004
            for _, route in rows:
                latency = float(self.rng.lognormal(np.log(mean_s), 0.25))
                stats.record_request(variant, route, latency, True, 1)
                stats.record_busy(variant, latency)
            idx = [i for i, _ in rows]
            if idx:
                stats.record_outputs(variant, (teacher if variant == TEACHER else student)[idx].argmax(1))
        both = sorted({i for i, r in answered[STUDENT]} & {i for i, r in answered[TEACHER]})
        if both:
            stats.record_comparison(TEACHER, STUDENT, compare_classification(teacher[both], student[both]))
        stats.record_inputs(TEACHER, x)


class _Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def simulate(spec: RolloutSpec, traffic: SimulatedTraffic, *, duration_s: float, state_dir: pathlib.Path,
             t0: float = 1_800_000_000.0) -> list[dict[str, Any]]:
    """Run one simulated rollout; return its recorded checks (oldest first).

    The state file and evidence bundles go to ``state_dir``.
    """
    spec = spec.model_copy(update={"evidence_dir": str(state_dir / "evidence")})
    clock = _Clock(t0)
    stats = WindowStats(input_edges=traffic.edges, clock=clock)
    store = RolloutStore(state_dir / "state.sqlite")
    source = EmbeddedSource(stats.snapshot, teacher=TEACHER, student=STUDENT, reference=traffic.reference,
                            usd_per_hour={TEACHER: 3.0, STUDENT: 0.4})
    reconciler = RolloutReconciler(spec, store, source, traffic.set_weights, teacher=TEACHER, student=STUDENT,
                                   notify=lambda payload: None, clock=clock)
    reconciler.tick()
    for second in range(int(duration_s)):
        traffic.second(stats, float(second))
        clock.t = t0 + second + 1
        status = reconciler.tick()
        if status.phase.value in ("Promoted", "Guarding", "RolledBack", "Aborted"):
            break
    return store.checks()


def load_evidence(path: pathlib.Path) -> list[dict[str, Any]]:
    """Checks from an evidence bundle directory / evidence.json, or a rollout state file."""
    if path.is_dir():
        path = path / "evidence.json"
    if path.suffix == ".json":
        return json.loads(path.read_text())["checks"]
    return RolloutStore(path).checks()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulate", choices=("healthy", "drifting", "both"), default="both")
    parser.add_argument("--evidence", type=pathlib.Path, help="print a real run's checks instead")
    parser.add_argument("--interval", type=float, default=30.0, help="analysis interval, seconds")
    parser.add_argument("--rps", type=int, default=20, help="simulated requests per second")
    parser.add_argument("--drift-at", type=float, default=75.0, help="when the drifting student turns bad (s)")
    parser.add_argument("--duration", type=float, default=900.0, help="longest simulated run (s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.evidence:
        print(format_timeline(load_evidence(args.evidence)))
        return 0
    spec = RolloutSpec(interval_s=args.interval, min_samples=300, failure_threshold=2, deadline_s=10 * args.interval)
    scenarios = ("healthy", "drifting") if args.simulate == "both" else (args.simulate,)
    for name in scenarios:
        drift_at = args.drift_at if name == "drifting" else None
        traffic = SimulatedTraffic(rps=args.rps, seed=args.seed, drift_at=drift_at)
        with tempfile.TemporaryDirectory() as tmp:
            checks = simulate(spec, traffic, duration_s=args.duration, state_dir=pathlib.Path(tmp))
        title = f"{name} student" + (f" (turns bad at t={drift_at:g} s)" if drift_at is not None else "")
        print(f"\n== {title}: interval {args.interval:g} s, {args.rps} req/s, min_samples {spec.min_samples} ==")
        print(format_timeline(checks, t0=1_800_000_000.0))
        if checks:
            last = checks[-1]
            print(f"-> {last['decision'].split(':')[0]} at t={last['at'] - 1_800_000_000.0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
