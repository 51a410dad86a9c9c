"""Manual commands: pause/resume, promote, abort, set_weight, and what each refuses."""
from __future__ import annotations

import pytest
from rollout_fixtures import HEALTHY, LOW_AGREEMENT, STUDENT, TEACHER

from gateway.rollout.core import machine as sm
from gateway.rollout.core.machine import InvalidCommand, RolloutPhase, SetWeights
from gateway.rollout.core.spec import RolloutSpec

SPEC = RolloutSpec(interval_s=60, min_samples=200, failure_threshold=2)


def started(now=0.0):
    return sm.start(SPEC, teacher=TEACHER, student=STUDENT, now=now)[0]


def advance(status, obs, now):
    assert sm.check_due(SPEC, status, now)
    return sm.step(SPEC, status, obs, now)[0]


def test_pause_holds_weights_and_skips_checks_until_resume():
    status = advance(started(), HEALTHY, 60)                   # 5 %
    status, actions = sm.pause(status, 70, actor="alice")
    assert status.phase is RolloutPhase.PAUSED and status.weight == 5.0
    assert not any(isinstance(a, SetWeights) for a in actions)
    assert not sm.check_due(SPEC, status, 10_000)              # no checks while paused
    status, actions = sm.resume(SPEC, status, 500, actor="alice")
    assert (status.phase, status.weight, status.step_started_at) == (RolloutPhase.PROGRESSING, 5.0, 500)
    assert not sm.check_due(SPEC, status, 559) and sm.check_due(SPEC, status, 560)
    assert "alice" in status.reason


def test_rolled_back_student_stays_until_resume_restarts_from_shadow():
    status = started()
    for now in (60, 120, 180):
        status = advance(status, HEALTHY if now == 60 else LOW_AGREEMENT, now)
    assert (status.phase, status.weight) == (RolloutPhase.ROLLED_BACK, 0.0)
    assert not sm.check_due(SPEC, status, 10_000)
    status, _ = sm.resume(SPEC, status, 200)
    assert (status.phase, status.weight, status.consecutive_failures) == (RolloutPhase.SHADOWING, 0.0, 0)


def test_promote_skips_the_gates():
    status, actions = sm.promote(SPEC, started(), 10, actor="bob")
    assert (status.phase, status.weight) == (RolloutPhase.GUARDING, 100.0)
    assert [a.weights for a in actions if isinstance(a, SetWeights)] == [{TEACHER: 0.0, STUDENT: 100.0}]
    with pytest.raises(InvalidCommand):
        sm.promote(SPEC, status, 20)
    with pytest.raises(InvalidCommand):
        sm.resume(SPEC, status, 20)


def test_abort_sets_zero_and_refuses_pause():
    status = advance(started(), HEALTHY, 60)
    status, actions = sm.abort(status, 70)
    assert (status.phase, status.weight) == (RolloutPhase.ABORTED, 0.0)
    assert any(a.event == "aborted" for a in actions if isinstance(a, sm.Notify))
    with pytest.raises(InvalidCommand, match="Aborted"):
        sm.pause(status, 80)


def test_set_weight_pauses_there_and_resume_continues_from_the_step_below():
    status, actions = sm.set_weight(SPEC, started(), 17.5, 10)
    assert (status.phase, status.weight) == (RolloutPhase.PAUSED, 17.5)
    assert [a.weights for a in actions if isinstance(a, SetWeights)] == [{TEACHER: 82.5, STUDENT: 17.5}]
    status, _ = sm.resume(SPEC, status, 20)
    assert (status.phase, status.weight) == (RolloutPhase.PROGRESSING, 10.0)


@pytest.mark.parametrize("weight", [-1, 100.5, 12.34])
def test_set_weight_rejects_bad_weights(weight):
    with pytest.raises(InvalidCommand) as err:
        sm.set_weight(SPEC, started(), weight, 10)
    assert err.value.status == 409


def test_status_round_trips_through_dict():
    status = advance(advance(started(), HEALTHY, 60), LOW_AGREEMENT, 120)
    assert status.failing and status.last_gates
    assert sm.RolloutStatus.from_dict(status.to_dict()) == status
