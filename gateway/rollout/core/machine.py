"""The rollout state machine: ``step(spec, status, observations, now) -> (status, actions)``.

Pure: no clock, no I/O. The reconciler (``gateway.rollout.reconciler``) observes, calls
:func:`step` when :func:`check_due`, applies the returned actions (``SetWeights``,
``Notify``, ``WriteEvidence``, ``RecordCheck``) and persists the status. Manual commands
(:func:`promote`, :func:`pause`, :func:`resume`, :func:`abort`, :func:`set_weight`) are
pure functions of the same shape.

Phases: Shadowing (0 % live, shadow only) -> Progressing (step i) -> Promoted, or
RolledBack / Aborted; Paused holds the weights until a person resumes. A passing check
advances one step; ``failure_threshold`` failed checks in a row roll back; a step that
still waits for data at its deadline counts as failed; NO_DATA never promotes; a
rolled-back student stays where it was put until a person acts.

Example::

    status, actions = start(spec, teacher="teacher", student="student", now=0.0)
    if check_due(spec, status, now):
        obs = source.observe(analysis_window(spec, status, now))
        status, actions = step(spec, status, obs, now)
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import BadRequest
from gateway.rollout.core.gates import CheckVerdict, GateResult, GateStatus, evaluate_gates, verdict
from gateway.rollout.core.observations import Observations, Window
from gateway.rollout.core.spec import RolloutSpec


class RolloutPhase(str, enum.Enum):
    SHADOWING = "Shadowing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"


ACTIVE_PHASES = frozenset({RolloutPhase.SHADOWING, RolloutPhase.PROGRESSING})


class InvalidCommand(BadRequest):
    """A manual rollout command that does not apply in the current phase (409)."""

    status = 409


@dataclass(frozen=True)
class RolloutStatus:
    """Everything the controller must remember across ticks and restarts."""

    teacher: str
    student: str
    phase: RolloutPhase
    step_index: int
    weight: float  # the student's live-traffic percent
    started_at: float
    step_started_at: float
    updated_at: float
    student_version: str = ""
    last_check_at: float | None = None
    consecutive_failures: int = 0
    paused_from: RolloutPhase | None = None
    reason: str = ""
    failing: tuple[GateResult, ...] = ()
    last_gates: tuple[GateResult, ...] = ()
    last_verdict: str | None = None
    rollbacks: int = 0
    last_error: str = ""  # the last observation/apply error (the next tick retries)

    def weights(self) -> dict[str, float]:
        """The traffic split this status stands for (percent per variant)."""
        return {self.teacher: round(100.0 - self.weight, 1), self.student: self.weight}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["phase"] = self.phase.value
        data["paused_from"] = self.paused_from.value if self.paused_from else None
        data["failing"] = [g.to_dict() for g in self.failing]
        data["last_gates"] = [g.to_dict() for g in self.last_gates]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RolloutStatus":
        return cls(**{
            **data,
            "phase": RolloutPhase(data["phase"]),
            "paused_from": RolloutPhase(data["paused_from"]) if data.get("paused_from") else None,
            "failing": tuple(GateResult.from_dict(g) for g in data.get("failing", ())),
            "last_gates": tuple(GateResult.from_dict(g) for g in data.get("last_gates", ())),
        })


@dataclass(frozen=True)
class SetWeights:
    """Set the live traffic split (percent per variant; other variants keep 0)."""

    weights: dict[str, float]
    reason: str


@dataclass(frozen=True)
class Notify:
    """Post ``payload`` (Alertmanager- and Slack-compatible JSON) to the webhook."""

    event: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class WriteEvidence:
    """Write an evidence bundle (gate values over time, config, recent disagreements)."""

    kind: str  # rollback | promotion | abort
    reason: str
    at: float


@dataclass(frozen=True)
class RecordCheck:
    """Append one analysis check to the history (for evidence and the timeline)."""

    at: float
    phase: str
    step_index: int
    weight: float
    verdict: str
    decision: str
    gates: tuple[GateResult, ...]
    window: Window
    observations: dict[str, Any] = field(default_factory=dict)


Action = SetWeights | Notify | WriteEvidence | RecordCheck
Transition = tuple[RolloutStatus, list[Action]]  # what every transition returns


SEVERITY = {"rolled_back": "critical", "aborted": "warning"}
RESOLVED_EVENTS = frozenset({"promoted", "resumed"})


def _rfc3339(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")


def notification(status: dict[str, Any], *, event: str, summary: str, now: float) -> dict[str, Any]:
    """Webhook body readable by Alertmanager receivers (``alerts``, ``status``) and Slack (``text``).

    >>> body = notification({"student": "s", "teacher": "t", "phase": "RolledBack", "weight": 0.0},
    ...                     event="rolled_back", summary="agreement failed", now=0.0)
    >>> body["alerts"][0]["labels"]["alertname"], body["text"][:31]
    ('KdgateRolloutRolledBack', ':rotating_light: kdgate rollout')
    """
    severity = SEVERITY.get(event, "info")
    state = "resolved" if event in RESOLVED_EVENTS else "firing"
    alertname = "KdgateRollout" + "".join(part.capitalize() for part in event.split("_"))
    labels = {"alertname": alertname, "severity": severity, "variant": status["student"],
              "teacher": status["teacher"], "phase": status["phase"]}
    icon = {"critical": ":rotating_light:", "warning": ":warning:"}.get(severity, ":information_source:")
    text = (f"{icon} kdgate rollout of {status['student']} ({event}): {summary} "
            f"[phase {status['phase']}, student weight {status['weight']:g} %]")
    alert = {"status": state, "labels": labels,
             "annotations": {"summary": summary, "description": text},
             "startsAt": _rfc3339(now), "endsAt": _rfc3339(now) if state == "resolved" else "0001-01-01T00:00:00Z",
             "generatorURL": "", "fingerprint": f"kdgate-{status['student']}-{event}"}
    return {"version": "4", "groupKey": f"kdgate-rollout-{status['student']}", "status": state,
            "receiver": "kdgate", "groupLabels": {"alertname": alertname}, "commonLabels": labels,
            "commonAnnotations": alert["annotations"], "externalURL": "", "alerts": [alert],
            "text": text, "kdgate": {"event": event, "status": status}}


def _step_at_or_below(spec: RolloutSpec, weight: float) -> int:
    return max((i for i, w in enumerate(spec.step_weights()) if w <= weight), default=0)


def _phase_for(spec: RolloutSpec, index: int) -> RolloutPhase:
    return RolloutPhase.SHADOWING if spec.step_weights()[index] == 0 else RolloutPhase.PROGRESSING


def _notify(status: RolloutStatus, event: str, summary: str, now: float) -> Notify:
    return Notify(event, notification(status.to_dict(), event=event, summary=summary, now=now))


def start(spec: RolloutSpec, *, teacher: str, student: str, now: float,
          student_version: str = "") -> Transition:
    """A new rollout at the first step (the weights are set to it)."""
    weight = spec.step_weights()[0]
    status = RolloutStatus(teacher=teacher, student=student, student_version=student_version,
                           phase=_phase_for(spec, 0), step_index=0, weight=weight, started_at=now,
                           step_started_at=now, updated_at=now, reason="rollout started")
    return status, [SetWeights(status.weights(), "rollout started"), _notify(status, "started", "rollout started", now)]


def check_due(spec: RolloutSpec, status: RolloutStatus, now: float) -> bool:
    """True when the rollout is active and ``interval_s`` passed since the last check."""
    if status.phase not in ACTIVE_PHASES:
        return False
    last = status.last_check_at if status.last_check_at is not None else status.step_started_at
    return now - last >= spec.interval_s


def analysis_window(spec: RolloutSpec, status: RolloutStatus, now: float) -> Window:
    """Since the step began, at most ``lookback_s`` back."""
    start_at = status.step_started_at
    if spec.lookback_s is not None:
        start_at = max(start_at, now - spec.lookback_s)
    return Window(start_at, now)


def _describe_failures(failing: list[GateResult]) -> str:
    return "; ".join(f"{g.name} failed: {g.detail}" for g in failing)


def step(spec: RolloutSpec, status: RolloutStatus, observations: Observations,
         now: float) -> Transition:
    """One analysis check: advance, wait, count a failure, promote or roll back."""
    if status.phase not in ACTIVE_PHASES:
        return status, []
    final = status.step_index + 1 == len(spec.steps) - 1
    gates = evaluate_gates(spec, observations, final_promotion=final)
    outcome = verdict(gates)
    status = dataclasses.replace(status, last_check_at=now, updated_at=now, last_gates=tuple(gates),
                                 last_verdict=outcome.value)
    failing = [g for g in gates if g.status is GateStatus.FAILED]
    if outcome is CheckVerdict.WAITING and now - status.step_started_at >= spec.deadline_s:
        waiting = [g for g in gates if g.status is GateStatus.NO_DATA]
        outcome, failing = CheckVerdict.FAILED, waiting
        reason = "no data before the step deadline: " + "; ".join(f"{g.name}: {g.detail}" for g in waiting)
    else:
        reason = _describe_failures(failing)
    if outcome is CheckVerdict.PASSED:
        new, actions = _advance(spec, status, now)
    elif outcome is CheckVerdict.FAILED:
        new, actions = _count_failure(spec, status, failing, reason, now)
    else:
        new, actions = status, []
    decision = new.reason if new is not status else "waiting for data"
    record = RecordCheck(now, status.phase.value, status.step_index, status.weight, outcome.value, decision,
                         tuple(gates), observations.window, observations.to_dict())
    return new, [record, *actions]


def _advance(spec: RolloutSpec, status: RolloutStatus, now: float) -> Transition:
    index = status.step_index + 1
    weight = spec.step_weights()[index]
    if index == len(spec.steps) - 1:
        return _promoted(status, now, "all gates passed at every step")
    reason = f"gates passed at {status.weight:g} %: advanced to {weight:g} %"
    new = dataclasses.replace(status, phase=RolloutPhase.PROGRESSING, step_index=index, weight=weight,
                              step_started_at=now, consecutive_failures=0, reason=reason, failing=())
    return new, [SetWeights(new.weights(), reason)]


def _promoted(status: RolloutStatus, now: float, reason: str) -> Transition:
    new = dataclasses.replace(status, phase=RolloutPhase.PROMOTED, weight=100.0, step_started_at=now,
                              updated_at=now, consecutive_failures=0, paused_from=None,
                              reason=f"promoted to 100 %: {reason}", failing=())
    return new, [SetWeights(new.weights(), new.reason), _notify(new, "promoted", new.reason, now),
                 WriteEvidence("promotion", new.reason, now)]


def _count_failure(spec: RolloutSpec, status: RolloutStatus, failing: list[GateResult], reason: str,
                   now: float) -> Transition:
    failures = status.consecutive_failures + 1
    new = dataclasses.replace(status, consecutive_failures=failures, failing=tuple(failing),
                              reason=f"check failed ({failures}/{spec.failure_threshold}): {reason}")
    if failures < spec.failure_threshold:
        return new, []
    return rollback(spec, new, now, reason)


def rollback(spec: RolloutSpec, status: RolloutStatus, now: float, reason: str) -> Transition:
    """Student to 0 % (or one step back); RolledBack until a person acts."""
    index = 0 if spec.rollback_mode == "zero" else max(status.step_index - 1, 0)
    weight = 0.0 if spec.rollback_mode == "zero" else spec.step_weights()[index]
    text = f"rolled back from {status.weight:g} % to {weight:g} %: {reason}"
    new = dataclasses.replace(status, phase=RolloutPhase.ROLLED_BACK, step_index=index, weight=weight,
                              updated_at=now, step_started_at=now, reason=text, rollbacks=status.rollbacks + 1)
    return new, [SetWeights(new.weights(), text), _notify(new, "rolled_back", text, now),
                 WriteEvidence("rollback", text, now)]


def realign(spec: RolloutSpec, status: RolloutStatus) -> RolloutStatus:
    """The status under a changed spec: the step index follows the current weight.

    The weight itself never moves on a spec change; the next check decides from there.
    """
    if status.phase is RolloutPhase.PROMOTED:
        return status
    index = _step_at_or_below(spec, status.weight)
    phase = status.phase
    if phase in ACTIVE_PHASES:
        phase = _phase_for(spec, index)
    return dataclasses.replace(status, step_index=index, phase=phase)


# --- manual commands (the admin API calls these, audits them and persists the result) ---

def promote(spec: RolloutSpec, status: RolloutStatus, now: float, actor: str = "operator") -> Transition:
    """Skip the remaining gates: student to 100 %, phase Promoted."""
    if status.phase is RolloutPhase.PROMOTED:
        raise InvalidCommand("the student is already promoted")
    return _promoted(status, now, f"manual promotion by {actor}")


def pause(status: RolloutStatus, now: float, actor: str = "operator") -> Transition:
    """Hold the current weights; no checks until :func:`resume`."""
    if status.phase not in ACTIVE_PHASES:
        raise InvalidCommand(f"cannot pause a rollout in phase {status.phase.value}")
    reason = f"paused by {actor} at {status.weight:g} %"
    new = dataclasses.replace(status, phase=RolloutPhase.PAUSED, paused_from=status.phase, updated_at=now,
                              reason=reason)
    return new, [_notify(new, "paused", reason, now)]


def resume(spec: RolloutSpec, status: RolloutStatus, now: float, actor: str = "operator") -> Transition:
    """Restart the analysis at the step at or below the current weight, with fresh counters.

    Works from Paused, RolledBack and Aborted (a person decided to try again).
    """
    if status.phase in ACTIVE_PHASES or status.phase is RolloutPhase.PROMOTED:
        raise InvalidCommand(f"cannot resume a rollout in phase {status.phase.value}")
    weights = spec.step_weights()
    index = _step_at_or_below(spec, status.weight)
    if index == len(weights) - 1:
        return _promoted(status, now, f"resumed at 100 % by {actor}")
    reason = f"resumed by {actor} at {weights[index]:g} %"
    new = dataclasses.replace(status, phase=_phase_for(spec, index), step_index=index, weight=weights[index],
                              step_started_at=now, updated_at=now, last_check_at=None, consecutive_failures=0,
                              paused_from=None, reason=reason, failing=())
    return new, [SetWeights(new.weights(), reason), _notify(new, "resumed", reason, now)]


def abort(status: RolloutStatus, now: float, actor: str = "operator") -> Transition:
    """Stop the rollout: student to 0 %, phase Aborted."""
    if status.phase is RolloutPhase.ABORTED:
        raise InvalidCommand("the rollout is already aborted")
    reason = f"aborted by {actor} at {status.weight:g} %"
    new = dataclasses.replace(status, phase=RolloutPhase.ABORTED, step_index=0, weight=0.0, updated_at=now,
                              paused_from=None, reason=reason)
    return new, [SetWeights(new.weights(), reason), _notify(new, "aborted", reason, now),
                 WriteEvidence("abort", reason, now)]


def set_weight(spec: RolloutSpec, status: RolloutStatus, weight: float, now: float,
               actor: str = "operator") -> Transition:
    """Put the student at ``weight`` percent and pause there (resume continues from the step below)."""
    if not 0 <= weight <= 100 or abs(round(weight * 10) - weight * 10) > 1e-6:
        raise InvalidCommand(f"weight {weight} must be within 0..100 in steps of 0.1")
    index = _step_at_or_below(spec, weight)
    reason = f"weight set to {weight:g} % by {actor}"
    paused_from = status.paused_from or (status.phase if status.phase in ACTIVE_PHASES else _phase_for(spec, index))
    new = dataclasses.replace(status, phase=RolloutPhase.PAUSED, paused_from=paused_from, weight=float(weight),
                              step_index=index, updated_at=now, reason=reason)
    return new, [SetWeights(new.weights(), reason), _notify(new, "weight_set", reason, now)]
