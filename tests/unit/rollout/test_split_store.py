"""SplitStore / SharedConfig: most recent change wins; a re-sent deploy is not a new change."""
import itertools

import pytest

from gateway.core.config import merge_overlay
from gateway.core.errors import BadRequest, InvalidInput
from gateway.rollout.split_store import SharedConfig, SplitStore

BASE = {"model_name": "digits", "routing": {"weights": {"teacher": 50, "student": 50}},
        "variants": [{"name": role, "role": role, "backend": "onnx", "model_path": f"{role}.onnx",
                      "colocated": role == "student"} for role in ("teacher", "student")]}


def W(t, s):  # noqa: N802 -- reads like the split it builds
    return merge_overlay(BASE, {"routing": {"weights": {"teacher": t, "student": s}}})


def split(row):
    return {k: float(v) for k, v in row["config"]["routing"]["weights"].items()}


@pytest.fixture
def store(tmp_path):
    ticks = itertools.count(100)
    return SplitStore(tmp_path / "state" / "split.sqlite", clock=lambda: float(next(ticks)))


def test_most_recent_change_wins_whichever_way_it_came(store):
    assert store.latest() is None
    store.record_deploy(W(50, 50))
    store.record(W(90, 10), source="admin-api", actor="ops")
    store.record(W(80, 20), source="rollout", actor="rollout")
    latest = store.latest()
    assert (latest["config"], latest["source"], latest["actor"], latest["at"]) == (W(80, 20), "rollout", "rollout", 102.0)
    assert latest["seq"] == 3


def test_same_deploy_again_does_not_override_newer_admin_change(store):
    assert store.record_deploy(W(50, 50)) is not None
    store.record(W(10, 90), source="admin-api", actor="ops")
    assert store.record_deploy(W(50, 50)) is None  # replica restart re-sends the same file
    assert store.latest()["config"] == W(10, 90)
    assert store.record_deploy(W(70, 30)) is not None  # an edited file is a new change
    assert store.latest()["source"] == "serve-deploy"


def test_state_survives_a_new_store_on_the_same_file(store):
    store.record(W(10, 90), source="cli", actor="ops")
    again = SplitStore(store.path)
    assert again.latest()["config"] == W(10, 90)


def test_applications_sharing_a_file_keep_their_own_changes(store):
    store.record(W(10, 90), source="admin-api", actor="ops")
    other = SplitStore(store.path, scope="other-app")
    assert other.latest() is None and other.record_deploy(W(10, 90)) is not None
    assert store.latest()["source"] == "admin-api"


def test_unknown_source_is_refused(store):
    with pytest.raises(ValueError, match="unknown change source"):
        store.record({}, source="elsewhere", actor="x")


def test_admin_overlays_merge_into_the_config_in_force_and_survive_a_restart(store):
    shared = SharedConfig(store, BASE)
    assert shared.latest is None
    shared.deploy(BASE)
    shared.change({"shadow": {"fraction": 0.25}}, source="admin-api", actor="ops")
    row = shared.change({"routing": {"weights": {"teacher": 90, "student": 10}}}, source="admin-api", actor="ops")
    assert split(row) == {"teacher": 90.0, "student": 10.0}
    assert row["config"]["shadow"]["fraction"] == 0.25  # the earlier overlay is kept
    restarted = SharedConfig(SplitStore(store.path), BASE)
    assert restarted.deploy(BASE) == row                 # a redeploy of the same file: no new change


def test_an_invalid_overlay_is_a_422_naming_the_field_and_records_nothing(store):
    shared = SharedConfig(store, BASE)
    with pytest.raises(InvalidInput, match="routing.weights.nobody"):
        shared.change({"routing": {"weights": {"teacher": 90, "nobody": 10}}}, source="admin-api", actor="ops")
    assert store.latest() is None


def test_under_a_rollout_only_the_rollout_moves_the_split(store):
    shared = SharedConfig(store, BASE, rollout_owns_weights=True)
    first = shared.set_weights({"teacher": 100.0, "student": 0.0})
    assert (first["source"], split(first)) == ("rollout", {"teacher": 100.0, "student": 0.0})
    assert shared.set_weights({"teacher": 100, "student": 0}) == first   # unchanged: no new row
    with pytest.raises(BadRequest) as refused:
        shared.change({"routing": {"weights": {"teacher": 0, "student": 100}}}, source="admin-api", actor="ops")
    assert refused.value.status == 409
    deployed = shared.deploy(W(0, 100))          # the file's split does not override the rollout's
    assert deployed["source"] == "serve-deploy" and split(deployed) == {"teacher": 100.0}
    shared.set_weights({"teacher": 90, "student": 10})
    assert shared.deploy(W(0, 100))["source"] == "rollout"   # same file again: nothing new


def test_a_control_replica_with_an_old_view_cannot_undo_a_newer_deploy(store):
    # During a redeploy the old and the new control replica both write the same file.
    old_host = SharedConfig(store, BASE, rollout_owns_weights=True)
    old_host.deploy(BASE)
    new_files = merge_overlay(BASE, {"variants": [{**BASE["variants"][0]},
                                                  {**BASE["variants"][1], "model_path": "student-v2.onnx"}]})
    new_host = SharedConfig(SplitStore(store.path), new_files, rollout_owns_weights=True)
    new_host.deploy(new_files)
    row = old_host.set_weights({"teacher": 100, "student": 0})   # the old generation's last step
    assert split(row) == {"teacher": 100.0, "student": 0.0}
    assert row["config"]["variants"][1]["model_path"] == "student-v2.onnx"   # the new deploy stays


def test_reads_follow_another_writer_within_the_cache_age(store):
    now = [0.0]
    reader = SharedConfig(store, BASE, max_age_s=0.25, clock=lambda: now[0])
    writer = SharedConfig(SplitStore(store.path), BASE)
    row = writer.change({"shadow": {"fraction": 0.5}}, source="admin-api", actor="ops")
    assert reader.latest is None          # cached for up to 0.25 s
    now[0] = 0.3
    assert reader.latest == row
