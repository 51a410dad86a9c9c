"""A config naming the stable student as its candidate again (after another candidate's rollback)
guards it at 100 % instead of re-running its canary from the teacher."""
from __future__ import annotations

from rollout_fixtures import HEALTHY, INPUT_DRIFT, LOW_AGREEMENT, TEACHER, FakeClock
from test_rollout_lifecycle import GUARDING, ROLLED_BACK, V1, V2, promoted_by_reconciler, reconciler, tick_for


def test_v1_named_again_after_v2_rolled_back_is_guarded_and_a_guard_rollback_returns_to_the_teacher(tmp_path):
    clock = FakeClock(0.0)
    promoted_by_reconciler(tmp_path, V1, clock)
    v2 = reconciler(tmp_path, V2, clock, obs=LOW_AGREEMENT)
    v2.tick()
    status = tick_for(v2, clock, 4 * 60)
    assert (status.phase, status.stable, status.weights()) == (ROLLED_BACK, V1, {TEACHER: 0.0, V1: 100.0, V2: 0.0})
    split = {}
    again = reconciler(tmp_path, V1, clock, variants=(TEACHER, V1), split=split)   # v2 removed, v1 named
    status = again.tick()
    assert (status.phase, status.candidate, status.stable, status.previous_stable) == (GUARDING, V1, V1, TEACHER)
    assert split == {TEACHER: 0.0, V1: 100.0}
    assert again.store.events()[-1]["kind"] == "started"
    assert tick_for(again, clock, 120).last_verdict == "passed"
    again.source.obs = INPUT_DRIFT
    status = tick_for(again, clock, 2 * 120)
    assert (status.phase, status.stable, split) == (ROLLED_BACK, TEACHER, {TEACHER: 100.0, V1: 0.0})
    assert status.reason.startswith(f"guard rolled {V1} back")


def test_a_candidate_that_never_was_stable_still_starts_its_canary(tmp_path):
    clock = FakeClock(0.0)
    promoted_by_reconciler(tmp_path, V1, clock)
    status = reconciler(tmp_path, V2, clock, obs=HEALTHY).tick()
    assert (status.phase.value, status.stable, status.weight) == ("Shadowing", V1, 0.0)


def test_a_new_version_of_the_stable_student_goes_through_its_canary(tmp_path):
    from test_rollout_lifecycle import SPEC, Source

    from gateway.rollout.reconciler import RolloutReconciler
    from gateway.rollout.store import RolloutStore

    clock = FakeClock(0.0)

    def rec(student, version):
        spec = SPEC.model_copy(update={"evidence_dir": str(tmp_path / "evidence")})
        return RolloutReconciler(spec, RolloutStore(tmp_path / "state.sqlite"), Source(LOW_AGREEMENT if student == V2
                                 else HEALTHY), {}.update, teacher=TEACHER, student=student, student_version=version,
                                 notify=lambda p: None, clock=clock, variants=(TEACHER, V1, V2))

    v1 = rec(V1, "1")
    v1.tick()
    assert tick_for(v1, clock, 4 * 60).stable_version == "1"
    v2 = rec(V2, "1")
    assert v2.tick().stable_version == "1"            # v2 knows which v1 it takes traffic from
    assert tick_for(v2, clock, 4 * 60).phase is ROLLED_BACK
    assert rec(V1, "2").tick().phase.value == "Shadowing"   # a new v1 model: canary from the teacher
