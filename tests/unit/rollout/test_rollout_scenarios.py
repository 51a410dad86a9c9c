"""Tick-by-tick rollout scenarios: (seconds later, what the gates see, phase, student weight)."""
from __future__ import annotations

import pytest
from rollout_fixtures import (
    ERRORING, HEALTHY, INPUT_DRIFT, LOW_AGREEMENT, OUTPUT_DRIFT, SLOW, STUDENT, TEACHER, TOO_FEW, make_obs,
)

from gateway.rollout.core import machine as sm
from gateway.rollout.core.machine import Notify, RecordCheck, RolloutPhase, SetWeights, WriteEvidence
from gateway.rollout.core.spec import RolloutSpec

SHADOWING, PROGRESSING, PROMOTED, GUARDING, ROLLED_BACK = (
    RolloutPhase.SHADOWING, RolloutPhase.PROGRESSING, RolloutPhase.PROMOTED, RolloutPhase.GUARDING,
    RolloutPhase.ROLLED_BACK)
SPEC = RolloutSpec(interval_s=60, min_samples=200, failure_threshold=2, deadline_s=300)


def run_table(spec, table, t0=0.0):
    """Drive the state machine through ``table``; assert every row; return all actions."""
    status, actions = sm.start(spec, teacher=TEACHER, student=STUDENT, now=t0)
    now, all_actions = t0, list(actions)
    for i, (later, obs, phase, weight) in enumerate(table):
        now += later
        if sm.check_due(spec, status, now):
            status, actions = sm.step(spec, status, obs, now)
            all_actions += actions
        assert (status.phase, status.weight) == (phase, weight), f"row {i}: {status.reason}"
    return status, all_actions


def weights_set(actions):
    return [a.weights[STUDENT] for a in actions if isinstance(a, SetWeights)]


def test_healthy_student_promotes_through_every_step():
    status, actions = run_table(SPEC, [
        (30, HEALTHY, SHADOWING, 0.0),     # not due yet
        (30, HEALTHY, PROGRESSING, 5.0),
        (60, HEALTHY, PROGRESSING, 10.0),
        (60, HEALTHY, PROGRESSING, 25.0),
        (60, HEALTHY, PROGRESSING, 50.0),
        (60, HEALTHY, GUARDING, 100.0),    # promoted: the student is the stable variant, guarded
    ])
    assert weights_set(actions) == [0.0, 5.0, 10.0, 25.0, 50.0, 100.0]
    assert status.weights() == {TEACHER: 0.0, STUDENT: 100.0}
    assert (status.stable, status.previous_stable) == (STUDENT, TEACHER)
    assert [a.kind for a in actions if isinstance(a, WriteEvidence)] == ["promotion"]
    assert [a.event for a in actions if isinstance(a, Notify)] == ["started", "promoted"]


@pytest.mark.parametrize("bad, gate", [
    (LOW_AGREEMENT, "agreement"), (SLOW, "latency"), (INPUT_DRIFT, "input_drift"),
    (OUTPUT_DRIFT, "output_drift"), (ERRORING, "error_rate"),
])
def test_failing_gate_rolls_back_after_threshold_failures(bad, gate):
    status, actions = run_table(SPEC, [
        (60, HEALTHY, PROGRESSING, 5.0),
        (60, HEALTHY, PROGRESSING, 10.0),
        (60, bad, PROGRESSING, 10.0),   # first failure: still at 10 %
        (60, bad, ROLLED_BACK, 0.0),    # second in a row: rolled back to 0 %
        (60, HEALTHY, ROLLED_BACK, 0.0),  # stays rolled back until a person acts
    ])
    assert [g.name for g in status.failing] == [gate]
    assert status.failing[0].value > status.failing[0].threshold or gate == "agreement"
    assert gate in status.reason and "rolled back from 10 % to 0 %" in status.reason
    assert [a.kind for a in actions if isinstance(a, WriteEvidence)] == ["rollback"]
    rollback_notice = [a for a in actions if isinstance(a, Notify)][-1]
    assert rollback_notice.payload["alerts"][0]["labels"]["severity"] == "critical"


def test_a_passing_check_resets_the_failure_streak():
    status, _ = run_table(SPEC, [
        (60, LOW_AGREEMENT, SHADOWING, 0.0),
        (60, make_obs(n=100), SHADOWING, 0.0),   # waiting (too few samples) keeps the streak
        (60, HEALTHY, PROGRESSING, 5.0),          # passed: streak over, next step
        (60, LOW_AGREEMENT, PROGRESSING, 5.0),
    ])
    assert status.consecutive_failures == 1


def test_too_few_samples_never_promotes_and_fails_at_the_deadline():
    status, actions = run_table(SPEC, [
        (60, TOO_FEW, SHADOWING, 0.0),
        (60, TOO_FEW, SHADOWING, 0.0),
        (60, TOO_FEW, SHADOWING, 0.0),
        (60, TOO_FEW, SHADOWING, 0.0),
        (60, TOO_FEW, SHADOWING, 0.0),      # 300 s: deadline reached, first failure
        (60, TOO_FEW, ROLLED_BACK, 0.0),    # second failure
    ])
    checks = [a for a in actions if isinstance(a, RecordCheck)]
    assert [c.verdict for c in checks] == ["waiting"] * 4 + ["failed"] * 2
    assert "no data before the step deadline" in status.reason
    assert {g.status.value for g in status.failing} == {"no_data"}


def test_lucky_handful_of_samples_does_not_promote():
    lucky = make_obs(n=30, agree=1.0)   # 30/30 agree, but under min_samples
    status, _ = run_table(SPEC.model_copy(update={"min_samples": 20}), [(60, lucky, SHADOWING, 0.0)])
    agreement = next(g for g in status.last_gates if g.name == "agreement")
    assert agreement.status.value == "failed" and agreement.value < 0.9  # Wilson bound 0.886 on 30/30


def test_step_back_rollback_mode_returns_to_previous_step():
    spec = SPEC.model_copy(update={"rollback_mode": "step_back"})
    status, _ = run_table(spec, [
        (60, HEALTHY, PROGRESSING, 5.0),
        (60, HEALTHY, PROGRESSING, 10.0),
        (60, HEALTHY, PROGRESSING, 25.0),
        (60, SLOW, PROGRESSING, 25.0),
        (60, SLOW, ROLLED_BACK, 10.0),
    ])
    assert status.weights() == {TEACHER: 90.0, STUDENT: 10.0}


def test_cost_gate_blocks_only_the_final_promotion():
    spec = SPEC.model_copy(update={"steps": ["shadow", 50, 100]})
    spec.gates.cost.enabled = True
    pricey = make_obs(student_usd=0.8, teacher_usd=1.0)   # ratio 0.8 > 0.5
    status, _ = run_table(spec, [
        (60, pricey, PROGRESSING, 50.0),   # shadow -> 50 %: cost not checked
        (60, pricey, PROGRESSING, 50.0),   # 50 -> 100 %: cost gate fails once
        (60, HEALTHY, GUARDING, 100.0),    # cheap again: promoted (and guarded)
    ])
    assert status.phase is GUARDING


def test_without_the_guard_promoted_is_final():
    spec = SPEC.model_copy(update={"steps": ["shadow", 100]})
    spec.guard.enabled = False
    status, actions = run_table(spec, [
        (60, HEALTHY, PROMOTED, 100.0),
        (600, LOW_AGREEMENT, PROMOTED, 100.0),  # no guard: no more checks
    ])
    assert not [a for a in actions if isinstance(a, RecordCheck) and a.phase == "Promoted"]


def test_lookback_limits_the_window():
    spec = SPEC.model_copy(update={"lookback_s": 120})
    status, _ = sm.start(spec, teacher=TEACHER, student=STUDENT, now=0.0)
    assert sm.analysis_window(spec, status, 60.0).start == 0.0
    assert sm.analysis_window(spec, status, 600.0).start == 480.0
