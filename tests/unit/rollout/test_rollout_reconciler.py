"""The reconciler with fakes for its callables; the store and webhook are real."""
from __future__ import annotations

import http.server
import json
import threading

import pytest
from rollout_fixtures import HEALTHY, LOW_AGREEMENT, STUDENT, TEACHER, FakeClock

from gateway.rollout.core.observations import Window
from gateway.rollout.core.machine import InvalidCommand, RolloutPhase
from gateway.rollout.core.spec import RolloutSpec
from gateway.rollout.notify import WebhookNotifier
from manifest_support import write_manifest_file
from gateway.rollout.reconciler import EvidenceWriter, RolloutReconciler
from gateway.rollout.store import RolloutStore, RolloutStoreError


class ScriptedSource:
    """Answers each observe() with the next scripted observations (or raises them)."""

    def __init__(self, *script):
        self.script, self.windows = list(script), []

    def observe(self, window):
        self.windows.append(window)
        if window.start == window.end:          # the priming read at start-up
            return HEALTHY
        item = self.script.pop(0) if self.script else HEALTHY
        if isinstance(item, Exception):
            raise item
        return item


class Recorder:
    def __init__(self, fail_times=0):
        self.calls, self.fail_times = [], fail_times

    def __call__(self, value):
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("backend unavailable")
        self.calls.append(value)


def make(tmp_path, *script, spec=None, clock=None, set_weights=None, notify=None, version=""):
    spec = spec or RolloutSpec(interval_s=60, min_samples=200, failure_threshold=2,
                               evidence_dir=str(tmp_path / "evidence"))
    clock = clock or FakeClock(0.0)
    weights, notes = set_weights or Recorder(), notify or Recorder()
    rec = RolloutReconciler(spec, RolloutStore(tmp_path / "state.sqlite"), ScriptedSource(*script),
                            weights, teacher=TEACHER, student=STUDENT, student_version=version,
                            notify=notes, evidence=EvidenceWriter(spec.evidence_dir,
                                                                  config={"model_name": "m"},
                                                                  export_disagreements=lambda p: 0),
                            clock=clock)
    return rec, clock, weights, notes


def run_ticks(rec, clock, seconds, every=15):
    """Tick now, then every ``every`` seconds for ``seconds``."""
    rec.tick()
    for _ in range(int(seconds / every)):
        clock.advance(every)
        rec.tick()
    return rec.status


def test_healthy_rollout_promotes_and_writes_evidence(tmp_path):
    rec, clock, weights, notes = make(tmp_path)
    status = run_ticks(rec, clock, 5 * 60)
    assert status.phase is RolloutPhase.GUARDING
    assert [w[STUDENT] for w in weights.calls] == [0.0, 5.0, 10.0, 25.0, 50.0, 100.0]
    assert [n["kdgate"]["event"] for n in notes.calls] == ["started", "promoted"]
    bundle_dir = next((tmp_path / "evidence").iterdir())
    bundle = json.loads((bundle_dir / "evidence.json").read_text())
    assert bundle["kind"] == "promotion" and len(bundle["checks"]) == 5
    assert "agreement" in (bundle_dir / "gates.csv").read_text()


def test_rollback_survives_restart_and_reasserts_zero(tmp_path):
    rec, clock, weights, _ = make(tmp_path, HEALTHY, LOW_AGREEMENT, LOW_AGREEMENT)
    status = run_ticks(rec, clock, 3 * 60)
    assert (status.phase, status.weight) == (RolloutPhase.ROLLED_BACK, 0.0)
    assert "agreement" in status.reason
    # A new controller process on the same state file: still rolled back, weights re-applied.
    rec2, _, weights2, _ = make(tmp_path, clock=clock)
    status2 = rec2.tick()
    assert status2 == rec2.store.load() and status2.phase is RolloutPhase.ROLLED_BACK
    assert weights2.calls == [{TEACHER: 100.0, STUDENT: 0.0}]
    assert run_ticks(rec2, clock, 600).phase is RolloutPhase.ROLLED_BACK   # until a person acts
    assert rec2.command("resume", actor="carol").phase is RolloutPhase.SHADOWING
    assert [e["kind"] for e in rec2.store.events()][-2:] == ["restored", "command:resume"]


def test_new_student_version_starts_a_new_rollout(tmp_path):
    rec, clock, _, _ = make(tmp_path, version="v1")
    run_ticks(rec, clock, 2 * 60)
    assert rec.status.weight == 10.0
    rec2, _, weights2, _ = make(tmp_path, clock=clock, version="v2")
    assert rec2.tick().weight == 0.0 and weights2.calls == [{TEACHER: 100.0, STUDENT: 0.0}]


def test_failures_never_escape_tick_and_are_retried(tmp_path):
    weights = Recorder(fail_times=3)
    rec, clock, weights, notes = make(tmp_path, RuntimeError("prometheus down"), set_weights=weights,
                                      notify=Recorder(fail_times=99))
    status = rec.tick()                              # start: set + immediate re-apply both fail
    assert "set_weights" in status.last_error and weights.calls == []
    clock.advance(15)
    rec.tick()                                       # re-apply fails a third time
    assert weights.calls == []
    clock.advance(15)
    rec.tick()                                       # re-applied now
    assert weights.calls == [{TEACHER: 100.0, STUDENT: 0.0}]
    clock.advance(30)
    status = rec.tick()                              # check due: observation raises
    assert "prometheus down" in status.last_error and status.phase is RolloutPhase.SHADOWING
    clock.advance(60)
    status = rec.tick()                              # retried: healthy, advances; error cleared
    assert status.weight == 5.0 and status.last_error == ""
    kinds = [e.get("where") for e in rec.store.events() if e["kind"] == "error"]
    assert {"set_weights", "observe", "notify"} <= set(kinds)


def test_unusable_store_does_not_crash_tick(tmp_path):
    rec, clock, weights, _ = make(tmp_path)
    (tmp_path / "state.sqlite").write_bytes(b"this is not sqlite" * 100)
    status = rec.tick()
    assert status.last_error and weights.calls == []   # nothing changed without a state


def test_store_refuses_a_directory_path(tmp_path):
    with pytest.raises(RolloutStoreError):
        RolloutStore(tmp_path)


def test_commands_are_validated_and_recorded(tmp_path):
    rec, clock, weights, _ = make(tmp_path)
    rec.tick()
    assert rec.command("set_weight", weight=30, actor="dave").weight == 30.0
    assert weights.calls[-1] == {TEACHER: 70.0, STUDENT: 30.0}
    with pytest.raises(InvalidCommand):
        rec.command("set_weight")
    with pytest.raises(InvalidCommand):
        rec.command("launch")
    assert rec.command("abort").phase is RolloutPhase.ABORTED
    assert RolloutStore(tmp_path / "state.sqlite").load().phase is RolloutPhase.ABORTED


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(500 if b"fail" in body else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_posts_json_to_a_real_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        notify = WebhookNotifier(f"http://127.0.0.1:{server.server_port}/hook", timeout_s=2)
        notify({"text": "rolled back", "alerts": []})
        assert _Hook.received[-1]["text"] == "rolled back"
        with pytest.raises(Exception, match="500"):
            notify({"text": "fail"})
    finally:
        server.shutdown()
        server.server_close()


def test_serve_metrics_accept_every_phase_and_gate(tmp_path):
    # ray.serve.metrics validates tag keys on every call; no Ray cluster is needed for that.
    from gateway.serve.rollout_metrics import ServeRolloutMetrics

    rec, clock, _, _ = make(tmp_path, LOW_AGREEMENT, LOW_AGREEMENT)
    rec.metrics = ServeRolloutMetrics(model="m", student=STUDENT)
    status = run_ticks(rec, clock, 150)
    assert status.phase is RolloutPhase.ROLLED_BACK
    rec.metrics.record_error("observe")


def _gateway_config(tmp_path, **rollout):
    from gateway.core.config import load_gateway_config

    manifest = tmp_path / "manifest.json"
    write_manifest_file(manifest, features=3, reference={"inputs": {"edges": [[0.0]] * 3,
                                                                     "fractions": [[0.5, 0.5]] * 3}})
    return load_gateway_config({
        "model_name": "mnist1d",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": "t.onnx", "usd_per_hour": 3.0},
            {"name": "student-v2", "role": "student", "backend": "onnx", "model_path": "s.onnx", "version": "7",
             "manifest_path": str(manifest), "usd_per_hour": 0.3},
        ],
        "routing": {"weights": {"teacher": 100}},
        "rollout": {"state_path": str(tmp_path / "state.sqlite"), "evidence_dir": str(tmp_path / "ev"), **rollout},
    })


def test_reconciler_from_config_wires_names_versions_and_reference(tmp_path):
    from gateway.core.errors import GatewayConfigError
    from gateway.core.stats import WindowStats
    from gateway.rollout.prometheus_source import PrometheusSource
    from gateway.rollout.controller import reconciler_from_config

    config = _gateway_config(tmp_path)
    weights = Recorder()
    rec = reconciler_from_config(config, set_weights=weights, snapshot=WindowStats().snapshot, clock=FakeClock(0.0))
    status = rec.tick()
    assert (status.teacher, status.student, status.student_version) == ("teacher", "student-v2", "7")
    assert weights.calls == [{"teacher": 100.0, "student-v2": 0.0}]
    assert rec.source.observe(Window(0, 1)).input_reference == [[0.5, 0.5]] * 3
    with pytest.raises(GatewayConfigError, match="snapshots"):
        reconciler_from_config(config, set_weights=weights)
    prom = reconciler_from_config(_gateway_config(tmp_path, source="prometheus", prometheus={"url": "http://p:9090"}),
                                  set_weights=weights)
    assert isinstance(prom.source, PrometheusSource) and prom.source.model == "mnist1d"


def test_update_spec_keeps_the_weight_and_realigns_the_step(tmp_path):
    rec, clock, _, _ = make(tmp_path)
    run_ticks(rec, clock, 3 * 60)
    assert (rec.status.weight, rec.status.step_index) == (25.0, 3)
    rec.update_spec(rec.spec.model_copy(update={"steps": ["shadow", 20, 40, 100]}))
    assert (rec.status.weight, rec.status.step_index) == (25.0, 1)
    status = run_ticks(rec, clock, 60)
    assert status.weight == 40.0          # next step of the new policy


def test_controller_serves_weights_to_replicas_and_rolls_back_a_bad_student(tmp_path):
    import asyncio

    import numpy as np

    from gateway.core.compare import compare_classification
    from gateway.core.stats import PRIMARY, SHADOW, WindowStats
    from gateway.rollout.controller import RolloutController

    config = _gateway_config(tmp_path, interval_s=60, min_samples=50, gates={"input_drift": {"enabled": False}})
    clock = FakeClock(0.0)
    controller = RolloutController(config, clock=clock, notify=lambda payload: None)
    replicas = {"r1": WindowStats(clock=clock), "r2": WindowStats(clock=clock)}
    rng = np.random.default_rng(0)

    def traffic(noise):
        for stats in replicas.values():
            for _ in range(40):
                t = rng.normal(size=(1, 4)) * 3
                s = t + rng.normal(scale=noise, size=t.shape)
                for variant, route, y in (("teacher", PRIMARY, t), ("student-v2", SHADOW, s)):
                    stats.record_request(variant, route, 0.01, True, 1)
                    stats.record_outputs(variant, y.argmax(1))
                stats.record_comparison("teacher", "student-v2", compare_classification(t, s))

    def sync_all():
        return [controller.sync(name, stats.snapshot())["weights"]["student-v2"] for name, stats in replicas.items()]

    assert sync_all() == [0.0, 0.0]                    # from the config until the first tick
    controller.tick()
    seen = []
    for noise in (0.05, 0.05, 5.0, 5.0):
        traffic(noise)
        sync_all()
        clock.advance(60)
        controller.tick()
        seen.append(sync_all())
    assert seen == [[5.0, 5.0], [10.0, 10.0], [10.0, 10.0], [0.0, 0.0]]
    assert controller.sync("r1", {})["phase"] == "RolledBack"
    assert controller.command("resume", actor="erin")["phase"] == "Shadowing"

    async def run_briefly():
        task = asyncio.create_task(controller.run())
        await asyncio.sleep(0.05)
        controller.stop()
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(run_briefly())


def test_evidence_bundle_exports_the_capture_directory(tmp_path):
    import numpy as np

    from gateway.capture import CaptureStore
    from gateway.core.stats import WindowStats
    from gateway.rollout.controller import reconciler_from_config

    config = _gateway_config(tmp_path)
    config = config.model_copy(update={"capture": config.capture.model_copy(update={"dir": str(tmp_path / "cap")})})
    store = CaptureStore(config.capture.dir, max_bytes=10**6, segment_rows=2)
    for i in range(3):
        store.add(np.ones(3, np.float32), np.array([1.0, 0.0]), np.array([0.0, 1.0]), request_id=f"r{i}", t=float(i))
    store.flush()
    rec = reconciler_from_config(config, set_weights=Recorder(), snapshot=WindowStats().snapshot, clock=FakeClock(0.0))
    rec.command("abort", actor="frank")
    bundle_dir = next((tmp_path / "ev").iterdir())
    bundle = json.loads((bundle_dir / "evidence.json").read_text())
    assert bundle["kind"] == "abort" and bundle["disagreements"] == {"path": "disagreements.npz", "rows": 3}
    assert np.load(bundle_dir / "disagreements.npz")["x_unlabeled"].shape == (3, 3)
    assert bundle["config"]["model_name"] == "mnist1d"


def test_the_controller_leaves_out_a_replica_running_another_version_of_the_student(tmp_path):
    """Mid-redeploy, a replica not yet replaced still shadows the old model under the student's
    name: its rows must not count for the new version's gates (seen: agreement 0.90 for a student
    identical to the teacher, as the old corrupted version's rows were mixed in)."""
    from gateway.core.stats import WindowStats
    from gateway.rollout.controller import RolloutController

    config = _gateway_config(tmp_path, interval_s=60, min_samples=50, gates={"input_drift": {"enabled": False}})
    version = config.variant(config.rollout_student).version
    controller = RolloutController(config, clock=FakeClock(0.0), notify=lambda payload: None)
    snapshot = WindowStats(clock=FakeClock(0.0)).snapshot()
    controller.sync("new", {**snapshot, "versions": {config.rollout_student: version}})
    controller.sync("old", {**snapshot, "versions": {config.rollout_student: f"{version}-old"}})
    controller.sync("unversioned", snapshot)   # a snapshot without versions (older replica code) counts
    assert sorted(key.split("@")[0] for key in controller.snapshots.per_replica()) == ["new", "unversioned"]
