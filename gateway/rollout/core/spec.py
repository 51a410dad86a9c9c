"""The rollout policy: one pydantic model, embedded in the gateway config as ``rollout:``.

A rollout moves live traffic from the *stable* variant (the teacher at first, then the last
promoted student) to the *candidate* student through ``steps`` (percent of live traffic for
the candidate; ``"shadow"`` = 0 % live, the student only answers in shadow).
Every ``interval_s`` the controller checks the gates over the traffic seen since the step
began; a passing check with enough samples advances one step, ``failure_threshold`` failing
checks in a row roll the student back. The move to the last step (100 %) is the promotion;
the promoted student becomes the stable one and is guarded from then on (``guard``).
Agreement, KL and output drift are always measured against the teacher (the *reference*).

Example (YAML under the gateway config)::

    rollout:
      student: student-v2
      steps: [shadow, 5, 25, 100]
      interval_s: 30
      min_samples: 300
      gates:
        agreement: {min_lower_bound: 0.92}
        latency: {max_p99_s: 0.05, max_ratio_to_teacher: 1.0}
        cost: {enabled: true, max_ratio_to_teacher: 0.5}
      guard: {shadow_fraction: 0.02, interval_s: 60, min_samples: 200}
      webhook_url: https://hooks.slack.com/services/T000/B000/XXX
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SHADOW = "shadow"
Step = float | Literal["shadow"]
DEFAULT_STEPS: tuple[Step, ...] = (SHADOW, 5.0, 10.0, 25.0, 50.0, 100.0)


def _forbid_extra() -> ConfigDict:
    return ConfigDict(extra="forbid")


class AgreementGate(BaseModel):
    """Top-1 agreement with the teacher, judged on the Wilson lower confidence bound."""

    model_config = _forbid_extra()
    enabled: bool = Field(True, description="Check this gate.")
    min_lower_bound: float = Field(
        0.9, gt=0, lt=1, description="The Wilson lower bound of the agreement rate must be >= this."
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="Two-sided confidence level of the Wilson interval."
    )


class StableAgreementGate(AgreementGate):
    """Top-1 agreement of the candidate with the stable student (e.g. v2 with v1), Wilson lower bound.

    Judged only while the stable variant is a student, on the rows it served that were also
    mirrored to the candidate (``shadow.fraction`` of them; the embedded source only).
    """

    enabled: bool = Field(False, description="Check this gate while a student is the stable variant.")


class KLGate(BaseModel):
    """Mean KL(teacher || student) over compared samples."""

    model_config = _forbid_extra()
    enabled: bool = Field(True, description="Check this gate.")
    max_mean: float = Field(0.15, gt=0, description="Mean KL divergence (nats) must be <= this.")


class LatencyGate(BaseModel):
    """Student tail latency: absolute SLO and relative to the teacher."""

    model_config = _forbid_extra()
    enabled: bool = Field(True, description="Check this gate.")
    quantile: float = Field(0.99, gt=0.5, lt=1, description="Latency quantile compared (0.99 = p99).")
    max_p99_s: float | None = Field(
        0.5, gt=0, description="Student latency quantile must be <= this many seconds (None: no SLO)."
    )
    max_ratio_to_teacher: float | None = Field(
        1.5, gt=0, description="Student quantile must be <= this x the teacher's (None: not checked)."
    )


class ErrorRateGate(BaseModel):
    """Share of the student's requests (live and shadow) that failed."""

    model_config = _forbid_extra()
    enabled: bool = Field(True, description="Check this gate.")
    max_rate: float = Field(0.01, ge=0, lt=1, description="Student error rate must be <= this.")
    min_requests: int = Field(
        50, ge=1, description="Student requests needed before the rate is judged (at most the rollout's "
        "min_samples, which counts rows: one request may carry many rows)."
    )


class OutputDriftGate(BaseModel):
    """Student vs teacher predicted-class distribution on the same traffic.

    Fails only when the shift is both material (PSI above ``max_psi``) and significant
    (chi-square p-value below ``alpha``): chi-square alone flags negligible shifts on
    large samples, PSI alone is noisy on small ones.
    """

    model_config = _forbid_extra()
    enabled: bool = Field(True, description="Check this gate.")
    max_psi: float = Field(0.2, gt=0, description="Population stability index must be <= this.")
    alpha: float = Field(0.01, gt=0, lt=1, description="Chi-square significance level.")


class InputDriftGate(BaseModel):
    """Live inputs vs the training reference in the student's manifest.json, per feature.

    A feature has drifted when its chi-square test against the reference bins is
    significant after a Bonferroni correction over all features and its PSI exceeds
    ``max_psi``; the gate fails when any feature has drifted. ``family_alpha`` bounds the
    chance that a check of healthy traffic fails (docs/rollout-gates.md, loadtests/bench_drift_false_alarms.py).
    """

    model_config = _forbid_extra()
    enabled: bool = Field(True, description="Check this gate (needs the manifest's reference).")
    max_psi: float = Field(
        0.25, gt=0, description="Effect-size floor: a feature counts as drifted only when its PSI exceeds this."
    )
    family_alpha: float = Field(
        1e-3, gt=0, lt=1,
        description="Chance that a check of healthy traffic flags any feature (each feature's chi-square "
                    "p-value must be below family_alpha / features).",
    )
    min_expected: float = Field(
        5.0, gt=0, description="Adjacent reference bins are merged until each expects at least this many live rows."
    )
    report_worst: int = Field(3, ge=1, description="How many of the worst features to name.")


class CostGate(BaseModel):
    """Cost per inference, checked only before the final promotion to 100 %."""

    model_config = _forbid_extra()
    enabled: bool = Field(False, description="Check this gate before promoting to 100 %.")
    max_ratio_to_teacher: float = Field(
        0.5, gt=0, description="Student cost per inference must be <= this x the teacher's."
    )


class GatesSpec(BaseModel):
    """All analysis gates; a check passes only when every enabled gate passes."""

    model_config = _forbid_extra()
    agreement: AgreementGate = Field(default_factory=AgreementGate, description="Agreement gate.")
    stable_agreement: StableAgreementGate = Field(
        default_factory=StableAgreementGate, description="Agreement with the stable student (off by default)."
    )
    kl: KLGate = Field(default_factory=KLGate, description="Mean KL divergence gate.")
    latency: LatencyGate = Field(default_factory=LatencyGate, description="Latency gate.")
    error_rate: ErrorRateGate = Field(default_factory=ErrorRateGate, description="Error-rate gate.")
    output_drift: OutputDriftGate = Field(
        default_factory=OutputDriftGate, description="Output (predicted-class) drift gate."
    )
    input_drift: InputDriftGate = Field(default_factory=InputDriftGate, description="Input drift gate.")
    cost: CostGate = Field(default_factory=CostGate, description="Cost gate for the final promotion.")


class GuardSpec(BaseModel):
    """Watching the promoted (stable) student for as long as it serves: the Guarding phase.

    The teacher answers ``shadow_fraction`` of the stable student's live requests in shadow;
    every ``interval_s`` the same gates as the canary judge the last ``lookback_s`` of
    traffic, and ``failure_threshold`` failed checks in a row roll the student back to the
    variant it replaced. A gate without ``min_samples`` waits: no data never rolls back.
    """

    model_config = _forbid_extra()
    enabled: bool = Field(True, description="Guard the promoted student (phase Guarding); false: Promoted, unwatched.")
    shadow_fraction: float = Field(
        0.02, ge=0, le=1, description="Share of the stable student's live requests also answered by the teacher."
    )
    interval_s: float = Field(60.0, gt=0, description="Seconds between guard checks.")
    lookback_s: float | None = Field(
        None, gt=0, description="A guard check judges this many seconds back (None: one interval)."
    )
    min_samples: int = Field(
        200, ge=1, description="Samples (comparisons, requests, input rows) a gate needs to judge in a guard check."
    )


class PrometheusSpec(BaseModel):
    """Where the production observation source reads the gateway's metrics."""

    model_config = _forbid_extra()
    url: str = Field(..., description="Prometheus base URL, e.g. http://prometheus:9090.")
    timeout_s: float = Field(5.0, gt=0, description="Timeout of one HTTP query.")
    selector: str = Field(
        "", description='Extra label matchers added to every query, e.g. application="kdgate".'
    )


class RolloutSpec(BaseModel):
    """Progressive rollout policy of one student (see the module docstring for an example)."""

    model_config = _forbid_extra()
    student: str | None = Field(
        None, description="The candidate: the student rolled out (required with several students; it takes "
                          "its traffic from the stable variant: the teacher, or the last promoted student)."
    )
    steps: list[Step] = Field(
        default_factory=lambda: list(DEFAULT_STEPS),
        description='Student live-traffic percent per step; "shadow" (0 % live) may come first; ends at 100.',
    )
    interval_s: float = Field(60.0, gt=0, description="Seconds between analysis checks.")
    lookback_s: float | None = Field(
        None, gt=0, description="A check looks at most this far back (None: since the step began)."
    )
    min_samples: int = Field(
        200, ge=1, description="Samples (comparisons, requests, input rows) a gate needs to judge."
    )
    failure_threshold: int = Field(
        2, ge=1, description="Consecutive failed checks that roll the student back."
    )
    deadline_s: float = Field(
        900.0, gt=0, description="A step still without enough data after this long counts as failed."
    )
    rollback_mode: Literal["zero", "step_back"] = Field(
        "zero", description="On rollback: student weight to 0 %, or back to the previous step."
    )
    gates: GatesSpec = Field(default_factory=GatesSpec, description="Analysis gates.")
    guard: GuardSpec = Field(default_factory=GuardSpec, description="Checks of the student after its promotion.")
    source: Literal["embedded", "prometheus"] = Field(
        "embedded", description="Observations from in-process aggregates or from Prometheus."
    )
    prometheus: PrometheusSpec | None = Field(
        None, description="Prometheus connection (required when source is prometheus)."
    )
    webhook_url: str | None = Field(
        None, description="Alertmanager/Slack-compatible webhook posted on phase changes."
    )
    webhook_timeout_s: float = Field(2.0, gt=0, description="Timeout of one webhook POST.")
    evidence_dir: str = Field(
        "runs/rollout-evidence", description="Directory of evidence bundles (rollback, promotion)."
    )
    state_path: str = Field(
        "runs/rollout-state.sqlite", description="SQLite file holding the rollout status (a volume on k8s)."
    )

    @field_validator("steps")
    @classmethod
    def _steps_increase_to_100(cls, steps: list[Step]) -> list[Step]:
        if not steps:
            raise ValueError("steps must not be empty")
        if SHADOW in steps[1:]:
            raise ValueError('"shadow" may only be the first step')
        weights = [0.0 if s == SHADOW else float(s) for s in steps]
        for w in weights[1:] if steps[0] == SHADOW else weights:
            if not 0 < w <= 100:
                raise ValueError(f"step weight {w} is outside (0, 100]")
            if abs(round(w * 10) - w * 10) > 1e-6:
                raise ValueError(f"step weight {w} is finer than 0.1 %")
        if any(b <= a for a, b in zip(weights, weights[1:])):
            raise ValueError(f"steps must strictly increase, got {steps}")
        if weights[-1] != 100:
            raise ValueError("the last step must be 100 (the promotion)")
        return steps

    @model_validator(mode="after")
    def _prometheus_needs_url(self) -> "RolloutSpec":
        if self.source == "prometheus" and self.prometheus is None:
            raise ValueError("source 'prometheus' needs a 'prometheus: {url: ...}' section")
        return self

    def step_weights(self) -> list[float]:
        """Student percent per step (``"shadow"`` -> 0.0).

        >>> RolloutSpec().step_weights()
        [0.0, 5.0, 10.0, 25.0, 50.0, 100.0]
        """
        return [0.0 if s == SHADOW else float(s) for s in self.steps]
