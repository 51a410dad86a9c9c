"""Honest verdicts: does the student beat its no-teacher baseline, and could the sweep tell its runs apart?

A run that loses to the same-size model trained without the teacher, or a sweep whose runs all
scored within noise of each other (so the "chosen" setting was picked by list order), still
exits 0 -- but the CLI, report.html and report.json say so in plain words, with what to try.
Pure functions of report figures; no torch, no I/O.

Noise: for accuracies, one standard error of a proportion over the rows scored
(``sqrt(p (1 - p) / n)``, never below one row, ``1 / n``); for (negated) MSE, 1 % of the best
score's magnitude (the report has no per-row errors to estimate it from).

Example:
    >>> v = baseline_verdict(0.940, 0.951, n_rows=1000, metric="test accuracy")
    >>> v.status, v.ok
    ('loses', False)
    >>> sweep_verdict([{"kind": "kd", "val_accuracy": 0.9}, {"kind": "kd", "val_accuracy": 0.9}], 500).status
    'tied'
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

MSE_NOISE = 0.01  # relative tolerance under which two (negated) MSE scores count as equal

BASELINE_ADVICE = (
    "train the student longer (student.train.epochs)",
    "give it more unlabeled transfer data (the data source's n_unlabeled / transfer texts)",
    "a larger student (student.architecture width / depth / hidden)",
    "a longer sweep, so it can pick a better temperature / alpha (sweep.epochs, sweep.data_fraction: 1.0)",
)
SWEEP_ADVICE = (
    "lengthen the sweep (sweep.epochs{epochs}) and let each run see all transfer rows (sweep.data_fraction: 1.0)",
    "use more validation rows (a larger validation split), so differences rise above the noise",
    "sweep fewer, more different settings (e.g. temperatures [1, 4, 8], alphas [0.3, 0.9])",
)


@dataclass(frozen=True)
class Verdict:
    """One plain-words judgement of a run, with the figures behind it and what to try when it is bad."""

    name: str  # "baseline" | "sweep"
    status: str  # baseline: beats / ties / loses; sweep: separated / partly_tied / tied / single
    ok: bool
    summary: str
    advice: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """report.json's entry for this verdict."""
        return asdict(self)

    def lines(self) -> list[str]:
        """The verdict as printed: a headline, then one 'try:' line per piece of advice."""
        head = f"{'OK' if self.ok else 'WARNING'} {self.name}: {self.summary}"
        return [head] + [f"  try: {tip}" for tip in self.advice]


def proportion_noise(p: float, n_rows: int) -> float:
    """One standard error of an accuracy ``p`` measured on ``n_rows`` rows (at least one row's worth)."""
    n = max(int(n_rows), 1)
    p = min(max(p, 0.0), 1.0)
    return max(math.sqrt(p * (1.0 - p) / n), 1.0 / n)


def _noise(score: float, n_rows: int, accuracy: bool) -> float:
    return proportion_noise(score, n_rows) if accuracy else MSE_NOISE * abs(score)


def baseline_verdict(student: float | None, baseline: float | None, n_rows: int, metric: str = "test accuracy",
                     higher_is_better: bool = True, accuracy: bool = True) -> Verdict | None:
    """Student versus the same-size model trained without the teacher; None when either figure is missing."""
    if student is None or baseline is None:
        return None
    gain = (student - baseline) if higher_is_better else (baseline - student)
    noise = _noise(max(student, baseline) if accuracy else student, n_rows, accuracy)
    status = "beats" if gain > 0 else "ties" if gain == 0 else "loses"
    shown = (lambda v: f"{100 * v:.2f} %") if accuracy else (lambda v: f"{v:.4g}")
    delta = f"{100 * gain:+.2f} points" if accuracy else f"{gain:+.4g}"
    words = {"beats": "beats", "ties": "only TIES", "loses": "does NOT beat"}[status]
    summary = (f"the distilled student {words} the same-size baseline trained without the teacher on {metric}: "
               f"{shown(student)} vs {shown(baseline)} ({delta})")
    if abs(gain) < noise and status != "ties":
        summary += f"; the difference is within noise (±{shown(noise) if accuracy else f'{noise:.2g}'})"
    elif status == "loses":
        summary += "; distillation did not pay off on this run"
    figures = {"student": student, "baseline": baseline, "gain": gain, "noise": noise, "metric": metric,
               "n_rows": n_rows}
    return Verdict("baseline", status, status == "beats", summary,
                   [] if status == "beats" else list(BASELINE_ADVICE), figures)


def sweep_verdict(rows: list[dict], n_val: int, epochs: int | None = None) -> Verdict | None:
    """Whether the sweep's distilled runs differ by more than noise on validation (None: no kd runs).

    ``rows`` are report["sweep"] entries (kind, temperature, alpha, val_accuracy or val_neg_mse, chosen).
    """
    runs = [r for r in rows if r.get("kind", "kd") == "kd"]
    accuracy = any(r.get("val_accuracy") is not None for r in runs)
    key = "val_accuracy" if accuracy else "val_neg_mse"
    runs = [r for r in runs if r.get(key) is not None]
    if not runs:
        return None
    scores = [r[key] for r in runs]
    best = max(scores)
    noise = _noise(best, n_val, accuracy)
    tied = [r for r in runs if best - r[key] <= noise]
    chosen = next((r for r in runs if r.get("chosen")), max(runs, key=lambda r: r[key]))
    setting = f"T={chosen.get('temperature'):g} alpha={chosen.get('alpha'):g}"
    shown = (lambda v: f"{100 * v:.2f} %") if accuracy else (lambda v: f"{v:.4g}")
    spread = f"{shown(min(scores))} to {shown(best)}"
    figures = {"runs": len(runs), "tied_with_best": len(tied), "noise": noise, "spread": best - min(scores),
               "score": key, "n_val": n_val, "exact_ties": sum(s == best for s in scores)}
    if len(runs) == 1:
        return Verdict("sweep", "single", True, f"one distilled run ({setting}), nothing to compare", [], figures)
    if len(tied) == len(runs):
        summary = (f"the sweep could NOT tell its {len(runs)} runs apart: every validation score lies within "
                   f"noise (±{shown(noise)}) of the best ({spread}), so {setting} was picked by tie-break "
                   f"(agreement, then list order), not because it is better")
        lengthen = f", now {epochs}; try {2 * epochs}" if epochs else ""
        advice = [tip.format(epochs=lengthen) for tip in SWEEP_ADVICE]
        return Verdict("sweep", "tied", False, summary, advice, figures)
    if len(tied) > 1:
        summary = (f"{setting} was chosen, but {len(tied) - 1} other run(s) of {len(runs)} score within noise "
                   f"(±{shown(noise)}) of it; the sweep separated the rest ({spread})")
        return Verdict("sweep", "partly_tied", True, summary, [], figures)
    summary = f"{setting} beat every other run by more than noise (±{shown(noise)}; {spread})"
    return Verdict("sweep", "separated", True, summary, [], figures)


def classification_verdicts(report: dict) -> dict[str, dict]:
    """Both verdicts of a classification / regression run, from its report dict (report["verdicts"])."""
    dataset = report.get("dataset") or {}
    classification = report.get("task") == "classification"
    quality = "accuracy" if classification else "mse"
    student, baseline = (report.get(v) or {} for v in ("student", "baseline"))
    verdicts = [
        baseline_verdict(student.get(quality), baseline.get(quality), dataset.get("n_test") or 0,
                         metric=f"test {'accuracy' if classification else 'MSE'}",
                         higher_is_better=classification, accuracy=classification),
        sweep_verdict(report.get("sweep") or [], dataset.get("n_val") or 0,
                      ((report.get("config") or {}).get("sweep") or {}).get("epochs")),
    ]
    return {v.name: v.as_dict() for v in verdicts if v is not None}


def embedding_verdicts(metrics: dict, n_test: int) -> dict[str, dict]:
    """The baseline verdict of an embedding run: downstream probe of the student vs the best no-teacher model."""
    student = metrics.get("student") or {}
    others = [metrics[m]["probe_accuracy"] for m in ("baseline", "random")
              if "probe_accuracy" in (metrics.get(m) or {})]
    verdict = baseline_verdict(student.get("probe_accuracy"), max(others) if others else None, n_test,
                               metric="downstream probe accuracy (best of the no-teacher models)")
    return {} if verdict is None else {verdict.name: verdict.as_dict()}


def verdict_lines(verdicts: dict[str, dict]) -> list[str]:
    """Printable lines of report["verdicts"] (bad ones first, so they are not missed)."""
    ordered = sorted(verdicts.values(), key=lambda v: v["ok"])
    return [line for v in ordered for line in Verdict(**v).lines()]
