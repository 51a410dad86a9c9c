"""RolloutSync: a replica serves only newer changes, never retries one it cannot serve, and a deploy
report that cannot reach the host leaves the decision to the caller."""
import asyncio

import pytest

from gateway.core.errors import BadRequest, GatewayConfigError
from gateway.serve.rollout_host import RolloutSync


class Runtime:
    """Records what was applied; refuses configs marked ``bad``."""

    def __init__(self):
        self.applied = []

    def apply(self, config, *, actor):
        self.applied.append((config["name"], actor))
        if config.get("bad"):
            raise GatewayConfigError([("variants", "not serveable here")])
        return [f"now {config['name']}"]


def row(seq, name, source="admin-api", **config):
    return {"seq": seq, "at": 100.0 + seq, "actor": "ops", "source": source, "config": {"name": name, **config}}


def sync_with(answers):
    async def call(method, *args):
        answer = answers[method]
        if isinstance(answer, Exception):
            raise answer
        return answer

    runtime = Runtime()
    return RolloutSync(call, replica_id="r1", runtime=runtime, snapshot=dict, rollout=False), runtime


def test_only_newer_changes_are_served_and_the_change_in_force_is_named():
    sync, runtime = sync_with({})
    assert sync.apply_change(row(2, "b")) == ["now b"]
    assert sync.apply_change(row(1, "a")) == []          # a late answer from before: ignored
    assert sync.apply_change(row(2, "b")) == []
    assert runtime.applied == [("b", "admin-api")]
    assert sync.change == {"seq": 2, "at": 102.0, "actor": "ops", "source": "admin-api"}


def test_a_change_this_replica_cannot_serve_is_rejected_once_and_the_old_one_stays_named():
    sync, runtime = sync_with({})
    sync.apply_change(row(1, "a"))
    assert sync.apply_change(row(2, "new-variant", bad=True)) == []
    assert sync.apply_change(row(2, "new-variant", bad=True)) == []
    assert [name for name, _ in runtime.applied] == ["a", "new-variant"]
    assert sync.change["seq"] == 1 and "not serveable" in sync.last_rejection


def test_publish_serves_the_recorded_change_before_answering():
    sync, runtime = sync_with({"change": row(5, "c")})
    recorded, changes = asyncio.run(sync.publish({"routing": {}}, source="admin-api", actor="ops"))
    assert (recorded["seq"], changes, sync.seq) == (5, ["now c"], 5)


@pytest.mark.parametrize("answer, reached", [(row(3, "d", "serve-deploy"), True), (None, True),
                                             (BadRequest("rollout controller unavailable", status=503), False)])
def test_deploy_report(answer, reached):
    sync, runtime = sync_with({"deploy": answer})
    assert asyncio.run(sync.report_deploy({"name": "file"})) is reached
    assert runtime.applied == ([("d", "serve-deploy")] if isinstance(answer, dict) else [])
