"""Tick-by-tick lifecycle scenarios: stable, candidate and reference; the Guarding phase.

Each table row is (seconds later, what the gates see, phase, stable variant, split). The
teacher is the reference throughout; v1 and v2 are students rolled out one after another.
"""
from __future__ import annotations

import dataclasses

import pytest
from rollout_fixtures import HEALTHY, INPUT_DRIFT, LOW_AGREEMENT, OUTPUT_DRIFT, TEACHER, TOO_FEW, FakeClock

from gateway.rollout.core import machine as sm
from gateway.rollout.core.machine import (
    InvalidCommand, Notify, RecordCheck, RolloutPhase, RolloutStatus, SetWeights, WriteEvidence,
)
from gateway.rollout.core.spec import RolloutSpec
from gateway.rollout.reconciler import RolloutReconciler
from gateway.rollout.store import RolloutStore

SHADOWING, PROGRESSING, GUARDING, ROLLED_BACK, PAUSED, ABORTED = (
    RolloutPhase.SHADOWING, RolloutPhase.PROGRESSING, RolloutPhase.GUARDING, RolloutPhase.ROLLED_BACK,
    RolloutPhase.PAUSED, RolloutPhase.ABORTED)
V1, V2 = "student-v1", "student-v2"
SPEC = RolloutSpec(steps=["shadow", 10, 50, 100], interval_s=60, min_samples=200, failure_threshold=2,
                   deadline_s=300, guard={"interval_s": 120, "min_samples": 200, "shadow_fraction": 0.02})


def run_table(status, table, now):
    """Drive ``status`` through ``table``; assert each row; return (status, now, all actions)."""
    all_actions = []
    for i, (later, obs, phase, stable, split) in enumerate(table):
        now += later
        if sm.check_due(SPEC, status, now):
            status, actions = sm.step(SPEC, status, obs, now)
            all_actions += actions
        seen = (status.phase, status.stable, status.weights())
        assert seen == (phase, stable, split), f"row {i}: {seen} ({status.reason})"
    return status, now, all_actions


PROMOTE_V1 = [
    (60, HEALTHY, PROGRESSING, TEACHER, {TEACHER: 90.0, V1: 10.0}),
    (60, HEALTHY, PROGRESSING, TEACHER, {TEACHER: 50.0, V1: 50.0}),
    (60, HEALTHY, GUARDING, V1, {TEACHER: 0.0, V1: 100.0}),
]


def promoted_v1():
    status, _ = sm.start(SPEC, teacher=TEACHER, student=V1, now=0.0)
    status, now, _ = run_table(status, PROMOTE_V1, 0.0)
    return status, now


def v2_on(v1_status, now):
    """Rolling out v2 once v1 is stable (what the reconciler does after a redeploy naming v2)."""
    return sm.start(SPEC, teacher=TEACHER, student=V2, now=now, stable=v1_status.stable)[0]


def test_promoted_v1_is_guarded_against_the_teacher_every_guard_interval():
    status, now = promoted_v1()
    assert (status.reference, status.candidate, status.previous_stable) == (TEACHER, V1, TEACHER)
    status, now, actions = run_table(status, [
        (60, HEALTHY, GUARDING, V1, {TEACHER: 0.0, V1: 100.0}),    # not due: the guard interval is 120 s
        (60, HEALTHY, GUARDING, V1, {TEACHER: 0.0, V1: 100.0}),    # guard check passed
        (120, LOW_AGREEMENT, GUARDING, V1, {TEACHER: 0.0, V1: 100.0}),   # one failure (1/2)
        (120, HEALTHY, GUARDING, V1, {TEACHER: 0.0, V1: 100.0}),   # passes again: the count restarts
        (120, LOW_AGREEMENT, GUARDING, V1, {TEACHER: 0.0, V1: 100.0}),
    ], now)
    checks = [a for a in actions if isinstance(a, RecordCheck)]
    assert [(c.phase, c.verdict) for c in checks] == [("Guarding", "passed"), ("Guarding", "failed"),
                                                       ("Guarding", "passed"), ("Guarding", "failed")]
    assert not [a for a in actions if isinstance(a, SetWeights)]
    assert sm.analysis_window(SPEC, status, now + 120).start == now   # one guard interval back


@pytest.mark.parametrize("bad, gate", [(INPUT_DRIFT, "input_drift"), (OUTPUT_DRIFT, "output_drift"),
                                       (LOW_AGREEMENT, "agreement")])
def test_drift_after_promotion_rolls_v1_back_to_the_teacher(bad, gate):
    status, now = promoted_v1()
    status, now, actions = run_table(status, [
        (120, HEALTHY, GUARDING, V1, {TEACHER: 0.0, V1: 100.0}),
        (120, bad, GUARDING, V1, {TEACHER: 0.0, V1: 100.0}),
        (120, bad, ROLLED_BACK, TEACHER, {TEACHER: 100.0, V1: 0.0}),   # the 2nd failure in a row
        (600, HEALTHY, ROLLED_BACK, TEACHER, {TEACHER: 100.0, V1: 0.0}),   # stays until a person acts
    ], now)
    assert gate in status.reason and status.reason.startswith(f"guard rolled {V1} back")
    assert [a.weights for a in actions if isinstance(a, SetWeights)] == [{TEACHER: 100.0, V1: 0.0}]
    assert [a.kind for a in actions if isinstance(a, WriteEvidence)] == ["rollback"]
    [note] = [a for a in actions if isinstance(a, Notify)]
    assert note.event == "guard_rolled_back" and note.payload["alerts"][0]["labels"]["severity"] == "critical"
    assert note.payload["alerts"][0]["labels"]["stable"] == TEACHER
    assert (status.failing[0].name, status.rollbacks, status.previous_stable) == (gate, 1, "")


def test_no_data_in_guarding_never_rolls_back_nor_moves_anything():
    status, now = promoted_v1()
    status, now, actions = run_table(status, [
        (120 * k, TOO_FEW, GUARDING, V1, {TEACHER: 0.0, V1: 100.0}) for k in range(1, 8)   # 28 min, no data
    ], now)
    assert {a.verdict for a in actions if isinstance(a, RecordCheck)} == {"waiting"}
    assert [a for a in actions if not isinstance(a, RecordCheck)] == []
    assert status.consecutive_failures == 0


def test_v2_takes_its_traffic_from_the_stable_v1():
    status, now = promoted_v1()
    status = v2_on(status, now)
    assert (status.phase, status.stable, status.candidate) == (SHADOWING, V1, V2)
    assert status.weights() == {TEACHER: 0.0, V1: 100.0, V2: 0.0}
    run_table(status, [
        (60, HEALTHY, PROGRESSING, V1, {TEACHER: 0.0, V1: 90.0, V2: 10.0}),
        (60, HEALTHY, PROGRESSING, V1, {TEACHER: 0.0, V1: 50.0, V2: 50.0}),
    ], now)


def test_a_failing_v2_is_rolled_back_onto_v1_at_100_percent():
    status, now = promoted_v1()
    status, now, actions = run_table(v2_on(status, now), [
        (60, HEALTHY, PROGRESSING, V1, {TEACHER: 0.0, V1: 90.0, V2: 10.0}),
        (60, LOW_AGREEMENT, PROGRESSING, V1, {TEACHER: 0.0, V1: 90.0, V2: 10.0}),
        (60, LOW_AGREEMENT, ROLLED_BACK, V1, {TEACHER: 0.0, V1: 100.0, V2: 0.0}),   # v1 keeps serving
    ], now)
    assert actions[-3].weights == {TEACHER: 0.0, V1: 100.0, V2: 0.0}
    assert [a.event for a in actions if isinstance(a, Notify)] == ["rolled_back"]


def test_v2_promotion_makes_v2_stable_and_the_guard_returns_to_v1():
    status, now = promoted_v1()
    status, now, _ = run_table(v2_on(status, now), [
        (60, HEALTHY, PROGRESSING, V1, {TEACHER: 0.0, V1: 90.0, V2: 10.0}),
        (60, HEALTHY, PROGRESSING, V1, {TEACHER: 0.0, V1: 50.0, V2: 50.0}),
        (60, HEALTHY, GUARDING, V2, {TEACHER: 0.0, V2: 100.0}),
    ], now)
    assert status.previous_stable == V1
    status, now, actions = run_table(status, [
        (120, INPUT_DRIFT, GUARDING, V2, {TEACHER: 0.0, V2: 100.0}),
        (120, INPUT_DRIFT, ROLLED_BACK, V1, {TEACHER: 0.0, V1: 100.0, V2: 0.0}),   # v1 is stable again
    ], now)
    assert [a.weights for a in actions if isinstance(a, SetWeights)] == [{TEACHER: 0.0, V1: 100.0, V2: 0.0}]


def test_operator_commands_in_guarding():
    status, now = promoted_v1()
    with pytest.raises(InvalidCommand, match="already promoted"):
        sm.promote(SPEC, status, now)
    with pytest.raises(InvalidCommand, match="Guarding"):
        sm.resume(SPEC, status, now)
    paused, _ = sm.pause(status, now)
    assert (paused.phase, paused.paused_from, paused.weights()) == (PAUSED, GUARDING, {TEACHER: 0.0, V1: 100.0})
    assert not sm.check_due(SPEC, paused, now + 3600)        # a paused guard checks nothing
    resumed, _ = sm.resume(SPEC, paused, now)
    assert (resumed.phase, resumed.stable, resumed.previous_stable) == (GUARDING, V1, TEACHER)
    half, actions = sm.set_weight(SPEC, status, 50.0, now)   # v1 leaves 100 %: the teacher is stable again
    assert (half.phase, half.stable, actions[0].weights) == (PAUSED, TEACHER, {TEACHER: 50.0, V1: 50.0})
    aborted, actions = sm.abort(status, now)
    assert (aborted.phase, aborted.stable, actions[0].weights) == (ABORTED, TEACHER, {TEACHER: 100.0, V1: 0.0})


def test_guard_disabled_then_enabled_by_a_spec_change():
    status, _ = promoted_v1()
    off = SPEC.model_copy(update={"guard": SPEC.guard.model_copy(update={"enabled": False})})
    assert sm.realign(off, status).phase is RolloutPhase.PROMOTED
    assert not sm.check_due(off, sm.realign(off, status), 10**9)
    assert sm.realign(SPEC, sm.realign(off, status)).phase is GUARDING


def test_statuses_stored_before_the_stable_variant_existed_read_as_teacher_stable():
    status, _ = sm.start(SPEC, teacher=TEACHER, student=V1, now=0.0)
    old = {k: v for k, v in status.to_dict().items() if k not in ("stable", "previous_stable", "candidate",
                                                                    "reference")}
    restored = RolloutStatus.from_dict(old)
    assert restored == dataclasses.replace(status) and restored.stable == TEACHER


# --- the reconciler: the stable variant survives restarts and redeploys ---

class Source:
    """Answers every window with ``obs`` (the priming read at start-up too)."""

    def __init__(self, obs=HEALTHY):
        self.obs = obs

    def observe(self, window):
        return self.obs


def reconciler(tmp_path, student, clock, obs=HEALTHY, variants=(TEACHER, V1, V2), split=None):
    spec = SPEC.model_copy(update={"evidence_dir": str(tmp_path / "evidence")})
    return RolloutReconciler(spec, RolloutStore(tmp_path / "state.sqlite"), Source(obs),
                             (split if split is not None else {}).update, teacher=TEACHER, student=student,
                             notify=lambda payload: None, clock=clock, variants=variants)


def tick_for(rec, clock, seconds, every=30):
    for _ in range(int(seconds / every)):
        clock.advance(every)
        rec.tick()
    return rec.status


def promoted_by_reconciler(tmp_path, student, clock):
    """A reconciler whose ``student`` went through the canary (3 checks) and is now Guarding."""
    rec = reconciler(tmp_path, student, clock)
    rec.tick()
    tick_for(rec, clock, 4 * 60)
    assert rec.status.phase is GUARDING
    return rec


def test_guarding_survives_a_controller_restart_and_v2_starts_from_v1(tmp_path):
    clock = FakeClock(0.0)
    status = promoted_by_reconciler(tmp_path, V1, clock).status
    assert (status.phase, status.stable) == (GUARDING, V1)
    split = {}
    restarted = reconciler(tmp_path, V1, clock, split=split)   # same config: restored as it was
    assert restarted.tick() == status and split == {TEACHER: 0.0, V1: 100.0}
    status = tick_for(restarted, clock, 120)
    assert status.phase is GUARDING and status.last_verdict == "passed"
    split = {}
    redeployed = reconciler(tmp_path, V2, clock, split=split)   # a new config names v2 as the candidate
    status = redeployed.tick()
    assert (status.phase, status.stable, status.candidate) == (SHADOWING, V1, V2)
    assert split == {TEACHER: 0.0, V1: 100.0, V2: 0.0}
    events = redeployed.store.events()
    assert events[-1]["kind"] == "started" and events[-1]["stable"] == V1


def test_a_stable_variant_removed_from_the_config_gives_way_to_the_teacher(tmp_path):
    clock = FakeClock(0.0)
    assert promoted_by_reconciler(tmp_path, V1, clock).status.stable == V1
    status = reconciler(tmp_path, V2, clock, variants=(TEACHER, V2)).tick()   # v1 no longer deployed
    assert (status.stable, status.weights()) == (TEACHER, {TEACHER: 100.0, V2: 0.0})


def test_a_guarded_student_whose_predecessor_left_the_config_falls_back_to_the_teacher(tmp_path):
    clock = FakeClock(0.0)
    promoted_by_reconciler(tmp_path, V1, clock)
    assert promoted_by_reconciler(tmp_path, V2, clock).status.previous_stable == V1   # v2 promoted over v1
    restored = reconciler(tmp_path, V2, clock, variants=(TEACHER, V2), obs=INPUT_DRIFT)
    assert restored.tick().previous_stable == TEACHER                         # v1 was removed since
    status = tick_for(restored, clock, 2 * 120)
    assert (status.phase, status.weights()) == (ROLLED_BACK, {TEACHER: 100.0, V2: 0.0})


def test_guard_rollback_through_the_reconciler_writes_evidence(tmp_path):
    clock = FakeClock(0.0)
    rec = promoted_by_reconciler(tmp_path, V1, clock)
    rec.source.obs = INPUT_DRIFT
    status = tick_for(rec, clock, 2 * 120)
    assert (status.phase, status.stable, status.weights()) == (ROLLED_BACK, TEACHER, {TEACHER: 100.0, V1: 0.0})
    bundles = sorted(p.name for p in (tmp_path / "evidence").iterdir())
    assert [b.split("-")[1] for b in bundles] == ["promotion", "rollback"]
    history = rec.history()
    assert history["split"] == {TEACHER: 100.0, V1: 0.0}
    assert history["status"]["reference"] == TEACHER and history["status"]["candidate"] == V1


def test_rollout_status_text_names_roles_phase_split_and_last_checks(tmp_path):
    from gateway.rollout.cli import format_status

    clock = FakeClock(0.0)
    rec = promoted_by_reconciler(tmp_path, V1, clock)   # promoted at 3 min
    tick_for(rec, clock, 4 * 60)                        # guard checks at 5 and 7 min
    history = {**rec.history(), "split_in_force": {TEACHER: 0.0, V1: 100.0}}
    text = format_status(history, checks=2)
    lines = text.splitlines()
    assert lines[:5] == ["phase      Guarding", f"candidate  {V1} (version -) at 100 %",
                         f"stable     {V1} (replaced {TEACHER})", f"reference  {TEACHER}",
                         f"split      {TEACHER} 0 %, {V1} 100 %"]
    assert "last 2 checks:" in lines and sum(" Guarding " in line for line in lines) == 2


# --- the optional gate: the candidate's agreement with the stable student ---

STABLE_GATE = SPEC.model_copy(update={"gates": SPEC.gates.model_copy(update={
    "stable_agreement": SPEC.gates.stable_agreement.model_copy(update={"enabled": True, "min_lower_bound": 0.9})})})


def with_stable(obs, agree: float, n: int = 1000):
    return dataclasses.replace(obs, stable_compared=n, stable_agreements=int(agree * n))


def test_stable_agreement_gate_judges_v2_against_v1_only_while_v1_is_stable():
    v1, _ = sm.start(STABLE_GATE, teacher=TEACHER, student=V1, now=0.0)
    status, _ = sm.step(STABLE_GATE, v1, HEALTHY, 60.0)          # the teacher is stable: gate not judged
    assert "stable_agreement" not in {g.name for g in status.last_gates} and status.weight == 10.0
    v2 = sm.start(STABLE_GATE, teacher=TEACHER, student=V2, now=0.0, stable=V1)[0]
    waiting, _ = sm.step(STABLE_GATE, v2, HEALTHY, 60.0)          # no v1/v2 comparisons yet: waits
    assert (waiting.last_verdict, waiting.weight) == ("waiting", 0.0)
    passed, _ = sm.step(STABLE_GATE, v2, with_stable(HEALTHY, 0.97), 60.0)
    assert passed.weight == 10.0
    failed, _ = sm.step(STABLE_GATE, v2, with_stable(HEALTHY, 0.80), 60.0)
    assert failed.failing[0].name == "stable_agreement" and "with the stable student 0.8000" in failed.reason
    guarded, _ = sm.promote(STABLE_GATE, v2, 60.0)                # v2 stable: the guard has no such gate
    assert sm.step(STABLE_GATE, guarded, HEALTHY, 300.0)[0].last_verdict == "passed"


def test_snapshots_give_the_candidates_comparisons_with_the_stable_student():
    from gateway.rollout.core.observations import from_window_snapshot

    pair = {"compared": 200, "agreements": 150, "kl_sum": 1.0}
    snapshot = {"variants": {}, "comparisons": {TEACHER: {V2: pair}, V1: {V2: {"compared": 64, "agreements": 60}}}}
    obs = from_window_snapshot(snapshot, teacher=TEACHER, student=V2)
    assert (obs.compared, obs.stable_compared, obs.stable_agreements) == (200, 64, 60)
    later = from_window_snapshot({**snapshot, "comparisons": {V1: {V2: {"compared": 100, "agreements": 90}}}},
                                 teacher=TEACHER, student=V2)
    assert (later.minus(obs).stable_compared, later.minus(obs).stable_agreements) == (36, 30)
