"""The rollout lifecycle on real Ray Serve: the guard after promotion, and v2 rolled out while v1 is stable.

The teacher is the reference; ``v1`` is the teacher's own file (it always agrees), ``v2`` an
unrelated network (it mostly disagrees: a corrupted candidate). Traffic is sticky users
sending N(0, 1) rows, the distribution of the manifests' training reference.
"""
from __future__ import annotations

import threading
import time

import httpx
import pytest
from gateway_support import (
    ADMIN_TOKEN, Traffic, deploy, gateway_config, manifest_with_reference, rollout_history, serve_deploy, wait_for,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
GUARD_INTERVAL_S = 3.0


def lifecycle_config(onnx_models, tmp_path, *, candidate: str, weights: dict, v2_model: str = "student",
                     v2_version: str = "v2-1") -> dict:
    """Teacher (remote), v1 and v2 (colocated); the rollout names ``candidate`` and guards it once promoted."""
    (tmp_path / "token").write_text(ADMIN_TOKEN)
    config = gateway_config(onnx_models, tmp_path, admin={"token_file": str(tmp_path / "token")})
    manifest = manifest_with_reference(onnx_models, tmp_path)
    student = config["variants"].pop(1)
    config["variants"] += [
        {**student, "name": "v1", "model_path": onnx_models["teacher"], "manifest_path": manifest, "version": "v1-1"},
        {**student, "name": "v2", "model_path": onnx_models[v2_model], "manifest_path": manifest,
         "version": v2_version},
    ]
    config["routing"]["weights"] = weights
    config["shadow"] = {"fraction": 1.0, "canary_compare_fraction": 1.0}
    config["rollout"] = {
        "student": candidate, "steps": [50, 100], "interval_s": 1.0, "lookback_s": 4.0, "min_samples": 100,
        "failure_threshold": 2, "deadline_s": 120,
        # PSI over 40 features on a few hundred rows passes 0.25 by chance now and then; the
        # drift injected below moves every feature by 3 standard deviations (PSI >> 1).
        "gates": {"latency": {"enabled": False}, "input_drift": {"max_psi": 0.6}},
        "guard": {"interval_s": GUARD_INTERVAL_S, "min_samples": 100, "shadow_fraction": 0.3},
        "state_path": str(tmp_path / "rollout.sqlite"), "evidence_dir": str(tmp_path / "evidence"),
    }
    return config


def test_drift_after_promotion_makes_the_guard_roll_back_within_two_windows(serve_instance, onnx_models, tmp_path):
    from ray import serve

    config = lifecycle_config(onnx_models, tmp_path, candidate="v1", weights={"teacher": 100})
    deploy(config, name="guard", prefix="/guard")
    url = f"{serve_instance['url']}/guard"
    wait_ready(url)
    traffic = Traffic(url)
    try:
        guarding = wait_for(url, lambda h: h["status"]["phase"] == "Guarding")
        assert guarding["status"]["stable"] == "v1" and guarding["split"] == {"teacher": 0.0, "v1": 100.0}
        first_guard_check = guarding["status"]["last_check_at"]
        # Drift right after a guard check, so the next guard window sees only drifted inputs.
        checked = wait_for(url, lambda h: h["status"]["last_check_at"] not in (None, first_guard_check)
                           and h["status"]["phase"] == "Guarding", timeout_s=6 * GUARD_INTERVAL_S)
        traffic.shift[0], drift_at = 3.0, time.time()
        history = wait_for(url, lambda h: h["status"]["phase"] == "RolledBack", timeout_s=10 * GUARD_INTERVAL_S)
        time.sleep(1.0)   # traffic goes on after the rollback: still no failure
        split = httpx.get(f"{url}/admin/split", headers=AUTH, timeout=10).json()["weights"]
    finally:
        traffic.end()
        serve.delete("guard")
    status = history["status"]
    guard_checks = [c for c in history["checks"] if c["phase"] == "Guarding"]
    before = [c for c in guard_checks if c["at"] < drift_at]
    after = [c for c in guard_checks if c["at"] >= drift_at]
    print(f"guard: {len(before)} checks before the drift ({[c['verdict'] for c in before]}), rolled back "
          f"{status['updated_at'] - drift_at:.2f} s after it (guard interval {GUARD_INTERVAL_S:g} s) at check "
          f"{len(after)} after it; {len(traffic.sent)} requests, {len(traffic.failures)} failed")
    assert checked["status"]["last_verdict"] in ("passed", "waiting") and before
    assert {c["verdict"] for c in before} <= {"passed", "waiting"}       # healthy traffic: no false alarm
    assert [c["verdict"] for c in after] == ["failed", "failed"]        # rolled back at the 2nd window
    assert status["stable"] == "teacher" and status["reason"].startswith("guard rolled v1 back")
    assert "input_drift" in status["reason"], status["reason"]
    assert split == {"teacher": 100.0, "v1": 0.0, "v2": 0.0}
    # The teacher answered the guard's share of v1's live traffic in shadow (not all of it).
    observed = [c["observations"] for c in after]
    compared, rows = sum(o["compared"] for o in observed), sum(sum(o["input_bins"][0]) for o in observed)
    assert 0 < compared < 0.6 * rows, (compared, rows)
    assert traffic.failures == []
    assert {p.name.split("-")[1] for p in (tmp_path / "evidence").iterdir()} == {"promotion", "rollback"}


class SplitPoller:
    """Every 0.2 s, the split a replica serves (``split_in_force``), from a thread.

    A corrupted candidate's canary can be rolled back within one check, while the test is still
    inside the blocking redeploy, so a poll only after it would miss the canary's split.
    """

    def __init__(self, url: str):
        self.url, self.splits, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.splits.append(rollout_history(self.url)["split_in_force"])
            except (httpx.HTTPError, ValueError, KeyError):
                pass   # a replica being replaced: the next poll reaches the other
            time.sleep(0.2)

    def end(self) -> list[dict]:
        self.stop.set()
        self.thread.join()
        return self.splits


def redeploy(config: dict) -> None:
    """``serve deploy`` of the app with 2 Gateway replicas, as deployments/*.yaml run it.

    Serve replaces a changed deployment's replicas one at a time: with 2, one always serves.
    With 1, the only one stops before its successor is up (~40 s on a loaded 2-core machine),
    and requests meanwhile fail.
    """
    serve_deploy(config, name="lifecycle", prefix="/lifecycle", deployments=[
        {"name": "Gateway", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1}}])


def test_v2_takes_its_traffic_from_the_stable_v1_and_a_rollback_leaves_v1_at_100(
        serve_instance, onnx_models, tmp_path):
    from ray import serve

    redeploy(lifecycle_config(onnx_models, tmp_path, candidate="v1", weights={"teacher": 100}))
    url = f"{serve_instance['url']}/lifecycle"
    wait_ready(url)
    traffic = Traffic(url)
    try:
        wait_for(url, lambda h: h["status"]["phase"] == "Guarding", traffic=traffic)
        # The replica that answered serves v1 at 100 %; the other follows within a sync period
        # (0.5 s). A poll before then would see v1's last canary step, which is not v2's rollout.
        wait_for(url, lambda h: h["split_in_force"] == {"teacher": 0.0, "v1": 100.0, "v2": 0.0}, traffic=traffic)
        time.sleep(1.5)
        # A new config names v2 as the candidate (v1 serves everything, as the file now says).
        poller = SplitPoller(url)
        redeploy(lifecycle_config(onnx_models, tmp_path, candidate="v2", weights={"v1": 100}))
        wait_ready(url)
        rolled_back = wait_for(url, lambda h: h["status"]["phase"] == "RolledBack", traffic=traffic)
        splits = poller.end()
        time.sleep(1.5)   # replicas sync within a second
        after_rollback = httpx.get(f"{url}/admin/split", headers=AUTH, timeout=10).json()["weights"]
        # A fixed v2 (a new version that agrees) is rolled out next: its promotion makes it stable.
        redeploy(lifecycle_config(onnx_models, tmp_path, candidate="v2", weights={"v1": 100},
                                  v2_model="teacher", v2_version="v2-2"))
        wait_ready(url)
        promoted = wait_for(url, lambda h: h["status"]["phase"] == "Guarding", traffic=traffic)
    finally:
        traffic.end()
        serve.delete("lifecycle")
    status = rolled_back["status"]
    assert (status["candidate"], status["stable"], status["reference"]) == ("v2", "v1", "teacher")
    assert "agreement" in status["reason"], status["reason"]
    assert {"teacher": 0.0, "v1": 50.0, "v2": 50.0} in splits, splits[-5:]   # v2's canary came from v1
    assert all(s["teacher"] == 0.0 for s in splits), splits
    assert after_rollback == {"teacher": 0.0, "v1": 100.0, "v2": 0.0}
    final = promoted["status"]
    assert (final["stable"], final["previous_stable"], final["student_version"]) == ("v2", "v1", "v2-2")
    assert promoted["split"] == {"teacher": 0.0, "v2": 100.0}   # every other variant: 0
    print(f"v2 rollout from a stable v1: {len(traffic.sent)} requests, {len(traffic.failures)} failed")
    assert traffic.failures == []


def _shadow_comparisons(onnx_models, tmp_path, config: dict, requests: int = 5) -> dict:
    """Compared rows per (reference, student) pair after ``requests`` answers of a runtime (no Ray)."""
    import asyncio

    from gateway_support import onnx_reference

    from gateway.observers import Observers
    from gateway.runtime import GatewayRuntime

    async def teacher(x):
        return onnx_reference(onnx_models["teacher"], x)

    runtime = GatewayRuntime(remote_callers={"teacher": teacher}, observers=Observers(metrics=None))
    runtime.apply(config, actor="test")

    async def run():
        for _ in range(requests):
            await runtime.answer(onnx_models["x"][:4], {})
        await asyncio.sleep(0.5)   # the shadow workers finish

    asyncio.run(run())
    comparisons = runtime._obs.stats.snapshot()["comparisons"]
    return {(ref, student): pair["compared"] for ref, pairs in comparisons.items() for student, pair in pairs.items()}


def test_shadow_compares_the_candidate_and_a_guarded_student_with_the_teacher(onnx_models, tmp_path):
    # v1 stable at 100 %, v2 the candidate in its shadow step: both are compared with the teacher.
    config = lifecycle_config(onnx_models, tmp_path, candidate="v2", weights={"v1": 100})
    config["shadow"] = {"fraction": 1.0, "canary_compare_fraction": 0.0}
    both = _shadow_comparisons(onnx_models, tmp_path, config)
    assert both[("teacher", "v1")] == both[("teacher", "v2")] == both[("v1", "v2")] > 0   # v2 vs v1 too
    # v1 promoted (the rollout's student at 100 %): the teacher answers the guard's share only.
    config = lifecycle_config(onnx_models, tmp_path, candidate="v1", weights={"v1": 100})
    config["shadow"] = {"fraction": 0.0, "canary_compare_fraction": 1.0}
    config["rollout"]["guard"]["shadow_fraction"] = 0.0
    assert _shadow_comparisons(onnx_models, tmp_path, config) == {}
    config["rollout"]["guard"]["shadow_fraction"] = 1.0
    assert _shadow_comparisons(onnx_models, tmp_path, config)[("teacher", "v1")] > 0
    config["rollout"]["guard"] = {"enabled": False}   # no guard: the canary's share as before
    assert _shadow_comparisons(onnx_models, tmp_path, config)[("teacher", "v1")] > 0


def test_the_traffic_worker_counts_a_dropped_connection_and_keeps_sending():
    # What a single Gateway replica's redeploy did under load: one request got "Server disconnected
    # without sending a response", which ended the worker, and the rollout then saw no traffic.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class DropsTheFirst(BaseHTTPRequestHandler):
        seen = 0

        def do_POST(self):  # noqa: N802 -- http.server's name
            self.rfile.read(int(self.headers["content-length"]))
            DropsTheFirst.seen += 1
            if DropsTheFirst.seen == 1:
                self.close_connection = True   # no response at all
                return
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), DropsTheFirst)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    traffic = Traffic(f"http://127.0.0.1:{server.server_port}")
    try:
        deadline = time.monotonic() + 10
        while len(traffic.sent) < 5 and traffic.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert traffic.thread.is_alive(), traffic.describe()
    finally:
        traffic.end()
        server.shutdown()
    assert len(traffic.sent) >= 5 and len(traffic.failures) == 1, traffic.describe()
    assert traffic.failures[0][0] == "RemoteProtocolError"
