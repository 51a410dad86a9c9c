"""The rollout state machine: ``step(spec, status, observations, now) -> (status, actions)``.

Pure: no clock, no I/O. The reconciler (``gateway.rollout.reconciler``) observes, calls
:func:`step` when :func:`check_due`, applies the returned actions (``SetWeights``,
``Notify``, ``WriteEvidence``, ``RecordCheck``) and persists the status. Manual commands
(:func:`promote`, :func:`pause`, :func:`resume`, :func:`abort`, :func:`set_weight`) are
pure functions of the same shape.

Roles: the *reference* is the teacher (agreement, KL, output drift are measured against
it); the *stable* variant serves the traffic that is not on the canary (the teacher at
first, then the last promoted student); the *candidate* (``status.student``) is rolled out
and takes its canary share from the stable variant.

Phases: Shadowing (0 % live, shadow only) -> Progressing (step i) -> Guarding (promoted:
the candidate is now the stable variant and stays watched; Promoted when the guard is off),
or RolledBack / Aborted; Paused holds the weights until a person resumes. A passing check
advances one step; ``failure_threshold`` failed checks in a row roll back (in Guarding: to
the variant the promoted student replaced); a step that still waits for data at its
deadline counts as failed; NO_DATA never promotes and never rolls a guarded student back;
a rolled-back student stays where it was put until a person acts.

Example::

    status, actions = start(spec, teacher="teacher", student="student", now=0.0)
    if check_due(spec, status, now):
        obs = source.observe(analysis_window(spec, status, now))
        status, actions = step(spec, status, obs, now)
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import BadRequest
from gateway.rollout.core.actions import Action, Notify, RecordCheck, SetWeights, WriteEvidence
from gateway.rollout.core.gates import CheckVerdict, GateResult, GateStatus, evaluate_gates, verdict
from gateway.rollout.core.notification import notification
from gateway.rollout.core.observations import Observations, Window
from gateway.rollout.core.spec import RolloutSpec


class RolloutPhase(str, enum.Enum):
    SHADOWING = "Shadowing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"   # promoted with the guard off: no more checks
    GUARDING = "Guarding"   # promoted and watched: guard checks may roll it back
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"


ACTIVE_PHASES = frozenset({RolloutPhase.SHADOWING, RolloutPhase.PROGRESSING})  # the canary
CHECKED_PHASES = ACTIVE_PHASES | {RolloutPhase.GUARDING}                         # analysis runs
PROMOTED_PHASES = frozenset({RolloutPhase.PROMOTED, RolloutPhase.GUARDING})


class InvalidCommand(BadRequest):
    """A manual rollout command that does not apply in the current phase (409)."""

    status = 409


@dataclass(frozen=True)
class RolloutStatus:
    """Everything the controller must remember across ticks and restarts.

    ``teacher`` is the reference, ``student`` the candidate, ``stable`` the variant serving
    the non-canary traffic (``""`` = the teacher) and ``previous_stable`` the variant a
    promoted stable student replaced (where a guard rollback returns the traffic).
    """

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
    stable: str = ""
    previous_stable: str = ""
    stable_version: str = ""  # the stable student's version when known ("" = unknown, or the teacher)

    def __post_init__(self) -> None:
        if not self.stable:  # statuses stored before the stable variant existed: the teacher
            object.__setattr__(self, "stable", self.teacher)

    @property
    def candidate(self) -> str:
        """The student being rolled out (after its promotion also the stable variant)."""
        return self.student

    @property
    def reference(self) -> str:
        """What agreement, KL and output drift are measured against: the teacher."""
        return self.teacher

    @property
    def promoted(self) -> bool:
        """True once the candidate is the stable variant (Guarding, Promoted, or paused there)."""
        return self.stable == self.student

    def weights(self) -> dict[str, float]:
        """The split this status stands for: stable 100 - w, candidate w, the teacher 0 unless stable."""
        split = {self.teacher: 0.0, self.stable: round(100.0 - self.weight, 1)}
        split[self.student] = self.weight  # after the promotion the candidate is the stable one
        return split

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["candidate"], data["reference"] = self.candidate, self.reference
        data["phase"] = self.phase.value
        data["paused_from"] = self.paused_from.value if self.paused_from else None
        data["failing"] = [g.to_dict() for g in self.failing]
        data["last_gates"] = [g.to_dict() for g in self.last_gates]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RolloutStatus":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{
            **{k: v for k, v in data.items() if k in names},  # derived keys (candidate, reference) dropped
            "phase": RolloutPhase(data["phase"]),
            "paused_from": RolloutPhase(data["paused_from"]) if data.get("paused_from") else None,
            "failing": tuple(GateResult.from_dict(g) for g in data.get("failing", ())),
            "last_gates": tuple(GateResult.from_dict(g) for g in data.get("last_gates", ())),
        })


Transition = tuple[RolloutStatus, list[Action]]  # what every transition returns


def _step_at_or_below(spec: RolloutSpec, weight: float) -> int:
    return max((i for i, w in enumerate(spec.step_weights()) if w <= weight), default=0)


def _phase_for(spec: RolloutSpec, index: int) -> RolloutPhase:
    return RolloutPhase.SHADOWING if spec.step_weights()[index] == 0 else RolloutPhase.PROGRESSING


def _notify(status: RolloutStatus, event: str, summary: str, now: float) -> Notify:
    return Notify(event, notification(status.to_dict(), event=event, summary=summary, now=now))


def start(spec: RolloutSpec, *, teacher: str, student: str, now: float,
          student_version: str = "", stable: str | None = None, stable_version: str = "") -> Transition:
    """A new rollout of ``student`` at the first step, taking its share from ``stable`` (default: the teacher)."""
    weight = spec.step_weights()[0]
    if not stable or stable == student:
        stable, stable_version = teacher, ""
    status = RolloutStatus(teacher=teacher, student=student, student_version=student_version, stable=stable,
                           stable_version=stable_version,
                           phase=_phase_for(spec, 0), step_index=0, weight=weight, started_at=now,
                           step_started_at=now, updated_at=now, reason=f"rollout started (stable: {stable})")
    return status, [SetWeights(status.weights(), status.reason), _notify(status, "started", status.reason, now)]


def guard_stable(spec: RolloutSpec, *, teacher: str, student: str, now: float, student_version: str = "",
                 previous: str = "") -> Transition:
    """Watch ``student``, already the stable variant, again: a config naming the stable student as
    its candidate (e.g. after another candidate's rollback) guards it instead of re-running its canary.

    It keeps 100 %; a guard rollback returns the traffic to ``previous`` (default: the teacher).
    """
    phase = RolloutPhase.GUARDING if spec.guard.enabled else RolloutPhase.PROMOTED
    reason = f"{student} is the stable variant: guarded again (a rollback returns to {previous or teacher})"
    status = RolloutStatus(teacher=teacher, student=student, student_version=student_version, stable=student,
                           stable_version=student_version, previous_stable=previous or teacher, phase=phase, step_index=len(spec.steps) - 1,
                           weight=100.0, started_at=now, step_started_at=now, updated_at=now, reason=reason)
    return status, [SetWeights(status.weights(), reason), _notify(status, "guarding", reason, now)]


def check_due(spec: RolloutSpec, status: RolloutStatus, now: float) -> bool:
    """True when analysis runs in this phase and its interval passed since the last check."""
    if status.phase not in CHECKED_PHASES:
        return False
    last = status.last_check_at if status.last_check_at is not None else status.step_started_at
    interval = spec.guard.interval_s if status.phase is RolloutPhase.GUARDING else spec.interval_s
    return now - last >= interval


def analysis_window(spec: RolloutSpec, status: RolloutStatus, now: float) -> Window:
    """Since the step (or the guard) began, at most ``lookback_s`` back."""
    start_at = status.step_started_at
    if status.phase is RolloutPhase.GUARDING:
        lookback = spec.guard.lookback_s or spec.guard.interval_s
    else:
        lookback = spec.lookback_s
    if lookback is not None:
        start_at = max(start_at, now - lookback)
    return Window(start_at, now)


def _describe_failures(failing: list[GateResult]) -> str:
    return "; ".join(f"{g.name} failed: {g.detail}" for g in failing)


def step(spec: RolloutSpec, status: RolloutStatus, observations: Observations,
         now: float) -> Transition:
    """One analysis check: advance, wait, count a failure, promote, guard or roll back."""
    if status.phase not in CHECKED_PHASES:
        return status, []
    guarding = status.phase is RolloutPhase.GUARDING
    final = not guarding and status.step_index + 1 == len(spec.steps) - 1
    gates = evaluate_gates(_check_policy(spec, status), observations, final_promotion=final)
    outcome = verdict(gates)
    status = dataclasses.replace(status, last_check_at=now, updated_at=now, last_gates=tuple(gates),
                                 last_verdict=outcome.value)
    failing = [g for g in gates if g.status is GateStatus.FAILED]
    if outcome is CheckVerdict.WAITING and not guarding and now - status.step_started_at >= spec.deadline_s:
        waiting = [g for g in gates if g.status is GateStatus.NO_DATA]
        outcome, failing = CheckVerdict.FAILED, waiting
        reason = "no data before the step deadline: " + "; ".join(f"{g.name}: {g.detail}" for g in waiting)
    else:
        reason = _describe_failures(failing)
    if outcome is CheckVerdict.PASSED:
        new, actions = _guard_passed(status) if guarding else _advance(spec, status, now)
    elif outcome is CheckVerdict.FAILED:
        new, actions = _count_failure(spec, status, failing, reason, now)
    else:
        new, actions = status, []
    decision = new.reason if new is not status else "waiting for data"
    record = RecordCheck(now, status.phase.value, status.step_index, status.weight, outcome.value, decision,
                         tuple(gates), observations.window, observations.to_dict())
    return new, [record, *actions]


def _check_policy(spec: RolloutSpec, status: RolloutStatus) -> RolloutSpec:
    """The spec a check judges with: the guard's sample minimum in Guarding; the stable-agreement
    gate only while another student is the stable variant."""
    if status.phase is RolloutPhase.GUARDING:
        spec = spec.model_copy(update={"min_samples": spec.guard.min_samples})
    if spec.gates.stable_agreement.enabled and status.stable in (status.teacher, status.student):
        off = spec.gates.stable_agreement.model_copy(update={"enabled": False})
        spec = spec.model_copy(update={"gates": spec.gates.model_copy(update={"stable_agreement": off})})
    return spec


def _guard_passed(status: RolloutStatus) -> Transition:
    reason = f"guard passed: {status.stable} keeps 100 %"
    return dataclasses.replace(status, consecutive_failures=0, failing=(), reason=reason), []


def _advance(spec: RolloutSpec, status: RolloutStatus, now: float) -> Transition:
    index = status.step_index + 1
    weight = spec.step_weights()[index]
    if index == len(spec.steps) - 1:
        return _promoted(spec, status, now, "all gates passed at every step")
    reason = f"gates passed at {status.weight:g} %: advanced to {weight:g} %"
    new = dataclasses.replace(status, phase=RolloutPhase.PROGRESSING, step_index=index, weight=weight,
                              step_started_at=now, consecutive_failures=0, reason=reason, failing=())
    return new, [SetWeights(new.weights(), reason)]


def _promoted(spec: RolloutSpec, status: RolloutStatus, now: float, reason: str) -> Transition:
    """The candidate takes 100 % and becomes the stable variant; the one it replaced is kept."""
    previous = status.previous_stable if status.promoted else status.stable
    phase = RolloutPhase.GUARDING if spec.guard.enabled else RolloutPhase.PROMOTED
    new = dataclasses.replace(status, phase=phase, weight=100.0, step_index=len(spec.steps) - 1,
                              stable=status.student, stable_version=status.student_version,
                              previous_stable=previous, step_started_at=now,
                              last_check_at=None, updated_at=now, consecutive_failures=0, paused_from=None,
                              reason=f"promoted to 100 %: {reason} (replacing {previous})", failing=())
    return new, [SetWeights(new.weights(), new.reason), _notify(new, "promoted", new.reason, now),
                 WriteEvidence("promotion", new.reason, now)]


def _demoted(status: RolloutStatus) -> RolloutStatus:
    """A promoted candidate leaving 100 %: the variant it replaced is the stable one again."""
    if not status.promoted:
        return status
    return dataclasses.replace(status, stable=status.previous_stable or status.teacher, previous_stable="",
                               stable_version="")


def _count_failure(spec: RolloutSpec, status: RolloutStatus, failing: list[GateResult], reason: str,
                   now: float) -> Transition:
    failures = status.consecutive_failures + 1
    new = dataclasses.replace(status, consecutive_failures=failures, failing=tuple(failing),
                              reason=f"check failed ({failures}/{spec.failure_threshold}): {reason}")
    if failures < spec.failure_threshold:
        return new, []
    return rollback(spec, new, now, reason)


def rollback(spec: RolloutSpec, status: RolloutStatus, now: float, reason: str) -> Transition:
    """Candidate to 0 % (or one step back) on the stable variant; RolledBack until a person acts.

    A promoted (guarded) student goes to 0 % and the variant it replaced takes 100 % again.
    """
    guard = status.promoted
    zero = guard or spec.rollback_mode == "zero"
    index = 0 if zero else max(status.step_index - 1, 0)
    weight = 0.0 if zero else spec.step_weights()[index]
    status = _demoted(status)
    if guard:
        event, text = "guard_rolled_back", (f"guard rolled {status.student} back from 100 % to 0 %, "
                                            f"{status.stable} serves 100 %: {reason}")
    else:
        event, text = "rolled_back", f"rolled back from {status.weight:g} % to {weight:g} %: {reason}"
    new = dataclasses.replace(status, phase=RolloutPhase.ROLLED_BACK, step_index=index, weight=weight,
                              updated_at=now, step_started_at=now, reason=text, rollbacks=status.rollbacks + 1)
    return new, [SetWeights(new.weights(), text), _notify(new, event, text, now),
                 WriteEvidence("rollback", text, now)]


def realign(spec: RolloutSpec, status: RolloutStatus) -> RolloutStatus:
    """The status under a changed spec: the step index follows the current weight.

    The weight itself never moves on a spec change; the next check decides from there. A
    promoted student is guarded or not as the new spec's ``guard.enabled`` says.
    """
    if status.phase in PROMOTED_PHASES:
        phase = RolloutPhase.GUARDING if spec.guard.enabled else RolloutPhase.PROMOTED
        return dataclasses.replace(status, phase=phase, step_index=len(spec.steps) - 1)
    index = _step_at_or_below(spec, status.weight)
    phase = status.phase
    if phase in ACTIVE_PHASES:
        phase = _phase_for(spec, index)
    return dataclasses.replace(status, step_index=index, phase=phase)


# --- manual commands (the admin API calls these, audits them and persists the result) ---

def promote(spec: RolloutSpec, status: RolloutStatus, now: float, actor: str = "operator") -> Transition:
    """Skip the remaining gates: candidate to 100 %, the stable variant (phase Guarding)."""
    if status.phase in PROMOTED_PHASES:
        raise InvalidCommand("the student is already promoted")
    return _promoted(spec, status, now, f"manual promotion by {actor}")


def pause(status: RolloutStatus, now: float, actor: str = "operator") -> Transition:
    """Hold the current weights; no checks (canary or guard) until :func:`resume`."""
    if status.phase not in CHECKED_PHASES:
        raise InvalidCommand(f"cannot pause a rollout in phase {status.phase.value}")
    reason = f"paused by {actor} at {status.weight:g} %"
    new = dataclasses.replace(status, phase=RolloutPhase.PAUSED, paused_from=status.phase, updated_at=now,
                              reason=reason)
    return new, [_notify(new, "paused", reason, now)]


def resume(spec: RolloutSpec, status: RolloutStatus, now: float, actor: str = "operator") -> Transition:
    """Restart the analysis at the step at or below the current weight, with fresh counters.

    Works from Paused, RolledBack and Aborted (a person decided to try again); at 100 % the
    student is promoted (guarded) again.
    """
    if status.phase in CHECKED_PHASES or status.phase is RolloutPhase.PROMOTED:
        raise InvalidCommand(f"cannot resume a rollout in phase {status.phase.value}")
    weights = spec.step_weights()
    index = _step_at_or_below(spec, status.weight)
    if index == len(weights) - 1:
        return _promoted(spec, status, now, f"resumed at 100 % by {actor}")
    reason = f"resumed by {actor} at {weights[index]:g} %"
    new = dataclasses.replace(_demoted(status), phase=_phase_for(spec, index), step_index=index,
                              weight=weights[index], step_started_at=now, updated_at=now, last_check_at=None,
                              consecutive_failures=0, paused_from=None, reason=reason, failing=())
    return new, [SetWeights(new.weights(), reason), _notify(new, "resumed", reason, now)]


def abort(status: RolloutStatus, now: float, actor: str = "operator") -> Transition:
    """Stop the rollout: candidate to 0 % (the stable variant, or the one it replaced, takes 100 %)."""
    if status.phase is RolloutPhase.ABORTED:
        raise InvalidCommand("the rollout is already aborted")
    reason = f"aborted by {actor} at {status.weight:g} %"
    new = dataclasses.replace(_demoted(status), phase=RolloutPhase.ABORTED, step_index=0, weight=0.0,
                              updated_at=now, paused_from=None, reason=reason)
    return new, [SetWeights(new.weights(), reason), _notify(new, "aborted", reason, now),
                 WriteEvidence("abort", reason, now)]


def set_weight(spec: RolloutSpec, status: RolloutStatus, weight: float, now: float,
               actor: str = "operator") -> Transition:
    """Put the candidate at ``weight`` percent and pause there (resume continues from the step below)."""
    if not 0 <= weight <= 100 or abs(round(weight * 10) - weight * 10) > 1e-6:
        raise InvalidCommand(f"weight {weight} must be within 0..100 in steps of 0.1")
    index = _step_at_or_below(spec, weight)
    reason = f"weight set to {weight:g} % by {actor}"
    paused_from = status.paused_from or (status.phase if status.phase in ACTIVE_PHASES else _phase_for(spec, index))
    new = dataclasses.replace(_demoted(status), phase=RolloutPhase.PAUSED, paused_from=paused_from,
                              weight=float(weight), step_index=index, updated_at=now, reason=reason)
    return new, [SetWeights(new.weights(), reason), _notify(new, "weight_set", reason, now)]
