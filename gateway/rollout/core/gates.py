"""Analysis gates: each reads :class:`Observations` and returns a :class:`GateResult`.

A gate answers ``no_data`` when it has fewer than ``min_samples`` of what it judges, so a
handful of samples neither promotes nor rolls back. A check passes only when every
enabled gate passed; one failed gate fails it; otherwise it waits (see :func:`verdict`).

Example::

    >>> from gateway.rollout.core.observations import Observations, Window
    >>> obs = Observations(Window(0, 60), "teacher", "student", compared=1000, agreements=960)
    >>> agreement_gate(obs, AgreementGate(min_lower_bound=0.9), min_samples=200).status
    <GateStatus.PASSED: 'passed'>
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

from gateway.rollout.core.drift import (
    chi_square_two_sample, chi_square_vs_reference, psi, psi_per_feature, wilson_lower_bound,
)
from gateway.core.stats import PRIMARY, SHADOW  # the routes the request path publishes
from gateway.rollout.core.observations import Observations
from gateway.rollout.core.spec import (
    AgreementGate, CostGate, ErrorRateGate, InputDriftGate, KLGate, LatencyGate, OutputDriftGate, RolloutSpec,
    StableAgreementGate,
)


class GateStatus(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    NO_DATA = "no_data"


class CheckVerdict(str, enum.Enum):
    PASSED = "passed"    # every enabled gate passed
    FAILED = "failed"    # at least one gate failed
    WAITING = "waiting"  # nothing failed, but some gate has too little data


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome: ``value`` is compared with ``threshold``; ``detail`` says it in words."""

    name: str
    status: GateStatus
    value: float | None = None
    threshold: float | None = None
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status is GateStatus.PASSED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GateResult":
        return cls(**{**data, "status": GateStatus(data["status"])})


def _no_data(name: str, threshold: float | None, have: float, need: int, what: str) -> GateResult:
    return GateResult(name, GateStatus.NO_DATA, None, threshold, f"{int(have)} of {need} {what} needed")


def _judge(name: str, value: float, threshold: float, ok: bool, detail: str) -> GateResult:
    return GateResult(name, GateStatus.PASSED if ok else GateStatus.FAILED, value, threshold, detail)


def _agreement_bound(name: str, label: str, agreements: float, compared: float, gate, min_samples: int,
                     what: str) -> GateResult:
    """Wilson lower bound of ``agreements / compared`` >= ``gate.min_lower_bound``."""
    if compared < min_samples:
        return _no_data(name, gate.min_lower_bound, compared, min_samples, what)
    lower = wilson_lower_bound(agreements, compared, gate.confidence)
    detail = (f"{label} {agreements / compared:.4f} on {int(compared)} samples, "
              f"{gate.confidence:.0%} lower bound {lower:.4f}")
    return _judge(name, lower, gate.min_lower_bound, lower >= gate.min_lower_bound, detail)


def agreement_gate(obs: Observations, gate: AgreementGate, min_samples: int) -> GateResult:
    """Wilson lower bound of the top-1 agreement rate (with the teacher) >= ``min_lower_bound``."""
    return _agreement_bound("agreement", "agreement", obs.agreements, obs.compared, gate, min_samples,
                            "compared samples")


def stable_agreement_gate(obs: Observations, gate: StableAgreementGate, min_samples: int) -> GateResult:
    """Wilson lower bound of the candidate's top-1 agreement with the stable student >= ``min_lower_bound``."""
    return _agreement_bound("stable_agreement", "agreement with the stable student", obs.stable_agreements,
                            obs.stable_compared, gate, min_samples, "samples compared with the stable student")


def kl_gate(obs: Observations, gate: KLGate, min_samples: int) -> GateResult:
    """Mean KL(teacher || student) <= ``max_mean``."""
    if obs.compared < min_samples:
        return _no_data("kl", gate.max_mean, obs.compared, min_samples, "compared samples")
    kl = obs.kl_mean
    return _judge("kl", kl, gate.max_mean, kl <= gate.max_mean, f"mean KL {kl:.4f} nats on {obs.compared} samples")


def _student_route(obs: Observations, min_samples: int) -> str | None:
    """Live latency when the student has enough live traffic, else its shadow latency."""
    for route in (PRIMARY, SHADOW):
        if obs.latency_histogram(obs.student, route).total >= min_samples:
            return route
    return None


def latency_gate(obs: Observations, gate: LatencyGate, min_samples: int) -> GateResult:
    """Student latency quantile <= the SLO and <= ratio x the teacher's (primary route)."""
    route = _student_route(obs, min_samples)
    limits = [gate.max_p99_s] if gate.max_p99_s is not None else []
    teacher_q = None
    if gate.max_ratio_to_teacher is not None:
        teacher_hist = obs.latency_histogram(obs.teacher, PRIMARY)
        if teacher_hist.total < min_samples:
            teacher_hist = obs.latency_histogram(obs.teacher)
        if teacher_hist.total >= min_samples:
            teacher_q = teacher_hist.quantile(gate.quantile)
            limits.append(gate.max_ratio_to_teacher * teacher_q)
    threshold = min(limits) if limits else None
    if route is None:
        have = obs.latency_histogram(obs.student).total
        return _no_data("latency", threshold, have, min_samples, "student latency samples")
    if gate.max_ratio_to_teacher is not None and teacher_q is None:
        have = obs.latency_histogram(obs.teacher).total
        return _no_data("latency", threshold, have, min_samples, "teacher latency samples")
    q = obs.latency_quantile(obs.student, gate.quantile, route)
    pct = f"p{gate.quantile * 100:g}"
    detail = f"student {pct} {q * 1e3:.2f} ms ({route})"
    if gate.max_p99_s is not None:
        detail += f", SLO {gate.max_p99_s * 1e3:.2f} ms"
    if teacher_q is not None:
        detail += f", teacher {pct} {teacher_q * 1e3:.2f} ms x {gate.max_ratio_to_teacher:g}"
    if threshold is None:
        return GateResult("latency", GateStatus.PASSED, q, None, detail + " (no limit set)")
    return _judge("latency", q, threshold, q <= threshold, detail)


def error_rate_gate(obs: Observations, gate: ErrorRateGate, min_samples: int) -> GateResult:
    """Student failures / student requests (live and shadow) <= ``max_rate``."""
    n = obs.requests.get(obs.student, 0)
    need = min(min_samples, gate.min_requests)  # min_samples counts rows; a request may carry many
    if n < need:
        return _no_data("error_rate", gate.max_rate, n, need, "student requests")
    rate = obs.error_rate(obs.student)
    detail = f"{int(obs.errors.get(obs.student, 0))} errors in {int(n)} student requests"
    return _judge("error_rate", rate, gate.max_rate, rate <= gate.max_rate, detail)


def output_drift_gate(obs: Observations, gate: OutputDriftGate, min_samples: int) -> GateResult:
    """Student vs teacher predicted-class shares: fails when PSI > max and chi-square p < alpha."""
    student = list(obs.class_counts.get(obs.student, ()))
    teacher = list(obs.class_counts.get(obs.teacher, ()))
    # Counts grow with the largest class seen: a class one variant never predicted counts 0.
    n_classes = max(len(student), len(teacher))
    student += [0] * (n_classes - len(student))
    teacher += [0] * (n_classes - len(teacher))
    have = min(sum(student), sum(teacher))
    if have < min_samples or n_classes < 2:
        return _no_data("output_drift", gate.max_psi, have, min_samples, "predictions per variant")
    value = psi(teacher, student)
    stat, p_value = chi_square_two_sample(student, teacher)
    ok = value <= gate.max_psi or p_value >= gate.alpha
    detail = (f"class PSI {value:.4f}, chi-square {stat:.1f} (p={p_value:.3g}, alpha {gate.alpha:g}); "
              f"predicted classes {obs.student} {student} vs {obs.teacher} {teacher}")
    return _judge("output_drift", value, gate.max_psi, ok, detail)


def input_drift_gate(obs: Observations, gate: InputDriftGate, min_samples: int) -> GateResult:
    """Live inputs vs the manifest reference, per feature, with a controlled false-alarm rate.

    A feature has drifted when its chi-square test against the reference
    (:func:`chi_square_vs_reference`) is significant after a Bonferroni correction over
    all features (p < ``family_alpha`` / features) *and* its PSI exceeds ``max_psi``: the
    first keeps the chance of a false alarm per check below ``family_alpha`` however many
    features there are, the second ignores shifts too small to matter on large windows.
    The gate fails when at least one feature has drifted; ``value`` is the worst PSI.
    """
    if obs.input_reference is None:
        return GateResult("input_drift", GateStatus.NO_DATA, None, gate.max_psi, "no reference statistics")
    if obs.input_rows < min_samples:
        return _no_data("input_drift", gate.max_psi, obs.input_rows, min_samples, "input rows")
    per_feature = psi_per_feature(obs.input_reference, obs.input_bins)
    judged = [(v, f, chi_square_vs_reference(obs.input_reference[f], obs.input_bins[f],
                                             obs.input_reference_rows, gate.min_expected)[2])
              for f, v in enumerate(per_feature) if v is not None]
    per_test_alpha = gate.family_alpha / max(1, len(judged))
    drifted = [f for v, f, p in judged if p < per_test_alpha and v > gate.max_psi]
    ranked = sorted(judged, reverse=True)
    worst = ", ".join(f"feature {f}: {v:.3f} (p={p:.2g})" for v, f, p in ranked[: gate.report_worst])
    detail = (f"worst PSI on {int(obs.input_rows)} rows: {worst}; {len(drifted)} of {len(judged)} features "
              f"drifted (chi-square p < {gate.family_alpha:g}/{len(judged)} and PSI > {gate.max_psi:g})")
    return _judge("input_drift", ranked[0][0], gate.max_psi, not drifted, detail)


def cost_gate(obs: Observations, gate: CostGate) -> GateResult:
    """Student cost per inference <= ``max_ratio_to_teacher`` x the teacher's."""
    student, teacher = obs.cost_per_inference(obs.student), obs.cost_per_inference(obs.teacher)
    if student is None or teacher is None or teacher <= 0:
        return GateResult("cost", GateStatus.NO_DATA, None, gate.max_ratio_to_teacher, "no cost for both variants")
    ratio = student / teacher
    detail = f"student ${student:.3g}/inference vs teacher ${teacher:.3g} (ratio {ratio:.3f})"
    return _judge("cost", ratio, gate.max_ratio_to_teacher, ratio <= gate.max_ratio_to_teacher, detail)


def evaluate_gates(spec: RolloutSpec, obs: Observations, *, final_promotion: bool = False) -> list[GateResult]:
    """Every enabled gate of ``spec`` on ``obs``; the cost gate only before the final promotion."""
    g, n = spec.gates, spec.min_samples
    checks = [
        (g.agreement.enabled, lambda: agreement_gate(obs, g.agreement, n)),
        (g.stable_agreement.enabled, lambda: stable_agreement_gate(obs, g.stable_agreement, n)),
        (g.kl.enabled, lambda: kl_gate(obs, g.kl, n)),
        (g.latency.enabled, lambda: latency_gate(obs, g.latency, n)),
        (g.error_rate.enabled, lambda: error_rate_gate(obs, g.error_rate, n)),
        (g.output_drift.enabled, lambda: output_drift_gate(obs, g.output_drift, n)),
        (g.input_drift.enabled, lambda: input_drift_gate(obs, g.input_drift, n)),
        (g.cost.enabled and final_promotion, lambda: cost_gate(obs, g.cost)),
    ]
    return [run() for enabled, run in checks if enabled]


def verdict(results: list[GateResult]) -> CheckVerdict:
    """FAILED if any gate failed, PASSED if all passed, otherwise WAITING (some no_data)."""
    if any(r.status is GateStatus.FAILED for r in results):
        return CheckVerdict.FAILED
    if all(r.passed for r in results):
        return CheckVerdict.PASSED
    return CheckVerdict.WAITING
