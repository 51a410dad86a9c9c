"""The rollout controller's metrics through ``ray.serve.metrics`` (scraped as ``ray_kdgate_rollout_*``)."""
from __future__ import annotations

from ray.serve.metrics import Counter

from gateway.rollout.core.gates import GateResult
from gateway.rollout.core.machine import RolloutPhase, RolloutStatus
from gateway.serve.metrics import HeldGauge  # Ray evicts a gauge ~20 s after its last set


class ServeRolloutMetrics:
    """:class:`RolloutMetrics` through ``ray.serve.metrics`` (scraped as ``ray_kdgate_rollout_*``).

    ``kdgate_rollout_phase`` (1 for the current phase), ``kdgate_rollout_weight_ratio``
    (student share 0..1), ``kdgate_rollout_gate_value`` / ``_gate_threshold`` /
    ``_gate_failing`` by gate, ``kdgate_rollout_rollbacks_total`` by reason (failing gates; ``guard:`` before them for a guard rollback),
    ``kdgate_rollout_errors_total`` by stage (observe, set_weights, notify, ...).
    """

    def __init__(self, model: str, student: str):
        self.tags = {"model": model, "variant": student}
        keys = ("model", "variant")
        self.phase = HeldGauge("kdgate_rollout_phase", description="1 for the rollout's current phase.",
                               tag_keys=(*keys, "phase"))
        self.weight = HeldGauge("kdgate_rollout_weight_ratio", description="Student live-traffic share (0..1).",
                                tag_keys=keys)
        self.gate_value = HeldGauge("kdgate_rollout_gate_value", description="Last value of each gate.",
                                    tag_keys=(*keys, "gate"))
        self.gate_threshold = HeldGauge("kdgate_rollout_gate_threshold", description="Threshold of each gate.",
                                        tag_keys=(*keys, "gate"))
        self.gate_failing = HeldGauge("kdgate_rollout_gate_failing", description="1 if the gate failed its last check.",
                                      tag_keys=(*keys, "gate"))
        self.rollbacks = Counter("kdgate_rollout_rollbacks_total", description="Automated rollbacks by reason.",
                                 tag_keys=(*keys, "reason"))
        self.errors = Counter("kdgate_rollout_errors_total", description="Controller errors by stage (retried).",
                              tag_keys=(*keys, "stage"))

    def record_status(self, status: RolloutStatus) -> None:
        for phase in RolloutPhase:
            self.phase.set(1.0 if phase is status.phase else 0.0, {**self.tags, "phase": phase.value})
        self.weight.set(status.weight / 100.0, self.tags)

    def record_gates(self, gates: tuple[GateResult, ...]) -> None:
        for g in gates:
            tags = {**self.tags, "gate": g.name}
            if g.value is not None:
                self.gate_value.set(g.value, tags)
            if g.threshold is not None:
                self.gate_threshold.set(g.threshold, tags)
            self.gate_failing.set(1.0 if g.status.value == "failed" else 0.0, tags)

    def record_rollback(self, reason: str) -> None:
        self.rollbacks.inc(1, {**self.tags, "reason": reason})

    def record_error(self, where: str) -> None:
        self.errors.inc(1, {**self.tags, "stage": where})

    def refresh(self) -> None:
        for gauge in (self.phase, self.weight, self.gate_value, self.gate_threshold, self.gate_failing):
            gauge.refresh()
