"""SplitStore: most recent change wins; a re-sent deploy overlay is not a new change."""
import itertools

import pytest

from gateway.rollout.split_store import SplitStore

W = lambda t, s: {"routing": {"weights": {"teacher": t, "student": s}}}  # noqa: E731


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
    assert (latest["overlay"], latest["source"], latest["actor"], latest["at"]) == (W(80, 20), "rollout", "rollout", 102.0)


def test_same_deploy_overlay_again_does_not_override_newer_admin_change(store):
    assert store.record_deploy(W(50, 50)) is not None
    store.record(W(10, 90), source="admin-api", actor="ops")
    assert store.record_deploy(W(50, 50)) is None  # replica restart re-sends user_config
    assert store.latest()["overlay"] == W(10, 90)
    assert store.record_deploy(W(70, 30)) is not None  # an edited file is a new change
    assert store.latest()["source"] == "serve-deploy"


def test_state_survives_a_new_store_on_the_same_file(store):
    store.record(W(10, 90), source="cli", actor="ops")
    again = SplitStore(store.path)
    assert again.latest()["overlay"] == W(10, 90)


def test_unknown_source_is_refused(store):
    with pytest.raises(ValueError, match="unknown change source"):
        store.record({}, source="elsewhere", actor="x")
