"""kdgate's Prometheus alerts, built from the same PromQL as the dashboard.

:func:`alert_rules` returns the rules for a set of :class:`AlertThresholds`;
:func:`prometheus_rule` wraps them in a prometheus-operator ``PrometheusRule``
(``k8s/base/prometheusrule.yaml`` is its output) and :func:`rules_file` in a plain
Prometheus rules file (what ``promtool check rules`` and a bare Prometheus read).

Example::

    >>> [r["alert"] for r in alert_rules(AlertThresholds())][:2]
    ['KdgateRollbackHappened', 'KdgateAgreementLow']
    >>> rules_file(AlertThresholds())["groups"][0]["name"]
    'kdgate'
"""
from __future__ import annotations

import dataclasses

from kdgate.ops import promql as q

GROUP = "kdgate"
ALL_MODELS = 'model!=""'


@dataclasses.dataclass(frozen=True)
class AlertThresholds:
    """When each alert fires; the defaults are the production policy in ``k8s/``."""

    teacher: str = "teacher"          # variant name of the teacher (every other variant is a student)
    window: str = "10m"               # range of the rate()/increase() windows
    min_agreement: float = 0.9        # share of compared rows whose top-1 class matches the teacher
    min_compared_per_s: float = 0.1   # agreement is only judged with at least this comparison rate
    student_p99_slo_s: float = 0.1    # student p99 answer latency SLO, seconds
    max_shadow_drops_per_s: float = 0.05
    max_fallback_ratio: float = 0.01  # fallbacks / the student's primary requests
    hold: str = "5m"                  # `for:` of the non-critical alerts

    def __post_init__(self) -> None:
        if not 0 < self.min_agreement < 1:
            raise ValueError(f"min_agreement must be in (0, 1), got {self.min_agreement}")
        for name in ("min_compared_per_s", "student_p99_slo_s", "max_shadow_drops_per_s", "max_fallback_ratio"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def _rule(name: str, expr: str, hold: str, severity: str, summary: str, description: str) -> dict:
    return {"alert": name, "expr": expr, "for": hold, "labels": {"severity": severity, "team": "ml-platform"},
            "annotations": {"summary": summary, "description": description,
                            "dashboard": f"/d/kdgate?var-model={{{{ $labels.model }}}}"}}


def _rollback(t: AlertThresholds) -> dict:
    phase = q.latest(q.ROLLOUT_PHASE, ALL_MODELS, 'phase="RolledBack"')  # set once, then evicted by Ray
    rolled_back = f"max by (model, variant) ({phase}) == 1"
    return _rule("KdgateRollbackHappened", rolled_back, "0m", "critical",
                 "Rollout of {{ $labels.variant }} ({{ $labels.model }}) was rolled back",
                 "The rollout controller moved the student to its rollback weight after failing gates (a guard "
                 "rollback after its promotion gives 100 % back to the variant it replaced); it stays "
                 "RolledBack until a person acts (the alert clears when the phase changes, or after an hour "
                 "without news). Read `kdgate rollout status` and the evidence bundle.")


def _agreement(t: AlertThresholds) -> dict:
    by = ("model", "variant")
    agreement = q.ratio(q.COMPARISONS, 'outcome="agree"', ALL_MODELS, by, t.window)
    volume = q.rate_sum(q.COMPARISONS, by, t.window, ALL_MODELS)
    return _rule("KdgateAgreementLow", f"({agreement} < {t.min_agreement:g}) and ({volume} >= {t.min_compared_per_s:g})",
                 t.hold, "warning",
                 "Student {{ $labels.variant }} agrees with the teacher on {{ $value | humanizePercentage }} of rows",
                 f"Top-1 agreement over {t.window} is below {t.min_agreement:.0%}. Disagreements are captured; "
                 "consider lowering the student's weight (`kdgate rollout set-weight 0`).")


def _latency(t: AlertThresholds) -> dict:
    p99 = q.quantile(0.99, q.LATENCY, ("model", "variant"), t.window, ALL_MODELS, f'variant!="{t.teacher}"')
    return _rule("KdgateStudentLatencyHigh", f"{p99} > {t.student_p99_slo_s:g}", t.hold, "warning",
                 "Student {{ $labels.variant }} p99 is {{ $value | humanizeDuration }}",
                 f"The student's p99 answer latency over {t.window} is above the {t.student_p99_slo_s:g} s SLO.")


def _shadow_drops(t: AlertThresholds) -> dict:
    # "superseded": a redeploy replaced the model the queued work was for; expected, not a fault.
    drops = q.rate_sum(q.SHADOW_DROPPED, ("model", "variant", "reason"), t.window, ALL_MODELS,
                       'reason!="superseded"')
    return _rule("KdgateShadowDrops", f"{drops} > {t.max_shadow_drops_per_s:g}", t.hold, "warning",
                 "Shadow work for {{ $labels.variant }} is dropped ({{ $labels.reason }})",
                 "The shadow queue is full or shadow answers time out: comparisons (agreement, KL) are "
                 "based on fewer samples. Raise shadow.queue_size or lower shadow.fraction.")


def _fallbacks(t: AlertThresholds) -> dict:
    by = ("model", "variant")
    fallbacks = q.rate_sum(q.FALLBACKS, by, t.window, ALL_MODELS)
    primary = q.rate_sum(q.REQUESTS, by, t.window, ALL_MODELS, 'route="primary"')
    return _rule("KdgateFallbacksRising", f"{fallbacks} / {primary} > {t.max_fallback_ratio:g}", t.hold, "warning",
                 "{{ $value | humanizePercentage }} of {{ $labels.variant }}'s requests fall back to the teacher",
                 "The student fails or times out and the teacher answers instead (callers still get answers, "
                 "at the teacher's cost and latency).")


def alert_rules(thresholds: AlertThresholds) -> list[dict]:
    """Every alert rule: rollback, agreement, student p99, shadow drops, fallbacks."""
    return [build(thresholds) for build in (_rollback, _agreement, _latency, _shadow_drops, _fallbacks)]


def rules_file(thresholds: AlertThresholds, *, interval: str = "30s") -> dict:
    """A plain Prometheus rules file (``groups:``), evaluated every ``interval``."""
    return {"groups": [{"name": GROUP, "interval": interval, "rules": alert_rules(thresholds)}]}


def prometheus_rule(thresholds: AlertThresholds, *, name: str = "kdgate") -> dict:
    """The same rules as a prometheus-operator ``PrometheusRule``."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kdgate", "release": "prometheus"}},
            "spec": rules_file(thresholds)}
