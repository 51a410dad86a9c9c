"""GatewayRuntime with real ONNX Runtime backends and asyncio callers (no Ray needed).

Remote variants are plain async callables here (what a DeploymentHandle call is to the
runtime), so timeouts, fallbacks and shadow overload can be driven deterministically.
"""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from gateway_support import gateway_config, onnx_reference

from gateway.core.errors import GatewayConfigError
from gateway.observers import Observers
from gateway.runtime import INLINE_MAX_S, GatewayRuntime


def _runtime(models, tmp_path, teacher_caller, **overrides):
    config = gateway_config(models, tmp_path, **overrides)
    runtime = GatewayRuntime(remote_callers={"teacher": teacher_caller}, observers=Observers(metrics=None))
    runtime.apply(config, actor="test")
    return runtime, config


def _onnx_caller(path, *, delay_s=0.0, calls=None):
    """An async caller answering with ``path``'s model; ``calls`` (a list) gets each call's row count."""
    async def call(x):
        if calls is not None:
            calls.append(len(x))
        await asyncio.sleep(delay_s)
        return onnx_reference(path, x)

    return call


def test_invalid_config_is_rejected_audited_and_the_old_one_stays(onnx_models, tmp_path):
    runtime, config = _runtime(onnx_models, tmp_path, _onnx_caller(onnx_models["teacher"]))
    bad = json.loads(json.dumps(config))
    bad["routing"]["weights"] = {"teacher": 50, "student": 60}
    with pytest.raises(GatewayConfigError, match="must sum to 100"):
        runtime.apply(bad, actor="serve-deploy")
    assert runtime.config.routing.weights == {"teacher": 95.0, "student": 5.0}
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert entries[-1]["action"] == "config.rejected" and "must sum to 100" in entries[-1]["new"]["reason"]


def test_a_student_slower_than_its_timeout_falls_back_to_the_teacher(onnx_models, tmp_path):
    config = gateway_config(onnx_models, tmp_path)
    student = config["variants"][1]
    student.update(colocated=False, timeout_s=0.05)
    config["routing"]["weights"] = {"teacher": 0, "student": 100}
    callers = {"teacher": _onnx_caller(onnx_models["teacher"]),
               "student": _onnx_caller(onnx_models["student"], delay_s=1.0)}
    runtime = GatewayRuntime(remote_callers=callers, observers=Observers(metrics=None))
    runtime.apply(config, actor="test")
    x = onnx_models["x"][:2]
    answer = asyncio.run(runtime.answer(x, {}))
    assert answer.fallback and answer.variant == "teacher"
    np.testing.assert_allclose(answer.y, onnx_reference(onnx_models["teacher"], x), rtol=1e-6)
    snapshot = runtime._obs.stats.snapshot()
    assert snapshot["variants"]["student"]["fallbacks"] == 1


def test_a_full_shadow_queue_drops_work_without_slowing_the_caller(onnx_models, tmp_path):
    slow_teacher = _onnx_caller(onnx_models["teacher"], delay_s=0.5)
    runtime, _ = _runtime(
        onnx_models, tmp_path, slow_teacher,
        routing={"weights": {"teacher": 0, "student": 100}},
        # batch_window_s 0: each request is its own shadow job (batches would fit the queue)
        shadow={"fraction": 0.0, "canary_compare_fraction": 1.0, "queue_size": 2, "batch_window_s": 0},
    )
    x = onnx_models["x"][:1]

    async def burst():
        loop = asyncio.get_running_loop()
        start = loop.time()
        answers = []
        for _ in range(10):
            answers.append(await runtime.answer(x, {}))
            await asyncio.sleep(0)  # let the shadow workers run between requests, as under load
        return answers, loop.time() - start

    answers, elapsed = asyncio.run(burst())
    assert all(a.variant == "student" and not a.fallback for a in answers)
    assert elapsed < 0.25  # the caller never waited for the 0.5 s shadow teacher
    drops = runtime._obs.stats.snapshot()["variants"]["teacher"]["shadow_drops"]
    # 2 shadow workers take one job each, 2 more wait in the queue: the other 6 are dropped.
    assert drops == 6


def test_shadow_requests_within_the_window_reach_the_teacher_as_one_batch(onnx_models, tmp_path):
    calls = []
    runtime, _ = _runtime(
        onnx_models, tmp_path, _onnx_caller(onnx_models["teacher"], calls=calls), routing={"weights": {"teacher": 0, "student": 100}},
        shadow={"fraction": 0.0, "canary_compare_fraction": 1.0, "batch_window_s": 0.05, "max_batch_rows": 8},
    )
    xs = [onnx_models["x"][i:i + 1] for i in range(10)] + [onnx_models["x"][10:13]]

    async def traffic():
        answers = [await runtime.answer(x, {}) for x in xs]   # well inside one window
        await asyncio.sleep(0.2)
        return answers

    answers = asyncio.run(traffic())
    # 8 rows went at once (max_batch_rows), the other 2 one-row requests and the 3-row one at the window's end
    assert calls == [8, 5]
    snapshot = runtime._obs.stats.snapshot()
    assert snapshot["variants"]["teacher"]["requests"]["shadow"] == 11   # requests, not model calls
    # each request's latency counted, as a request in a dynamic batch: the batch's time
    assert sum(snapshot["variants"]["teacher"]["latency_counts"]["shadow"]) == 11
    assert snapshot["variants"]["teacher"]["inferences"]["shadow"] == 13
    assert snapshot["comparisons"]["teacher"]["student"]["compared"] == 13
    # each request's rows were compared with the teacher's answer to those very rows
    expected = np.argmax(onnx_reference(onnx_models["teacher"], onnx_models["x"][:13]), axis=1)
    students = np.concatenate([np.argmax(a.y, axis=1) for a in answers])
    agreed = int((expected == students).sum())
    assert snapshot["comparisons"]["teacher"]["student"]["agreements"] == agreed


def test_a_student_in_shadow_is_called_once_per_request_its_latency_is_gate_evidence(onnx_models, tmp_path):
    calls = []
    config = gateway_config(onnx_models, tmp_path)
    config["variants"][1].update(colocated=False)
    config["routing"]["weights"] = {"teacher": 100, "student": 0}
    config["shadow"] = {"fraction": 1.0, "batch_window_s": 0.05}
    runtime = GatewayRuntime(remote_callers={"teacher": _onnx_caller(onnx_models["teacher"]),
                                             "student": _onnx_caller(onnx_models["student"], calls=calls)},
                             observers=Observers(metrics=None))
    runtime.apply(config, actor="test")

    async def traffic():
        for i in range(5):
            await runtime.answer(onnx_models["x"][i:i + 1], {})
        await asyncio.sleep(0.2)

    asyncio.run(traffic())
    assert calls == [1] * 5
    assert sum(runtime._obs.stats.snapshot()["variants"]["student"]["latency_counts"]["shadow"]) == 5


def test_a_redeployed_version_s_window_holds_none_of_the_old_version_s_answers(onnx_models, tmp_path):
    # The student answers in shadow, slowly; a config naming a new student version is swapped in
    # while its shadow work is queued and in flight.
    config = gateway_config(onnx_models, tmp_path)
    config["variants"][1].update(colocated=False, version="s-1")
    config["routing"]["weights"] = {"teacher": 100, "student": 0}
    config["shadow"] = {"fraction": 1.0, "queue_size": 64}
    callers = {"teacher": _onnx_caller(onnx_models["teacher"]),
               "student": _onnx_caller(onnx_models["student"], delay_s=0.2)}
    runtime = GatewayRuntime(remote_callers=callers, observers=Observers(metrics=None))
    runtime.apply(config, actor="test")
    redeployed = json.loads(json.dumps(config))
    redeployed["variants"][1]["version"] = "s-2"
    x = onnx_models["x"][:32]

    async def scenario():
        for _ in range(6):
            await runtime.answer(x, {})
        await asyncio.sleep(0.05)     # two shadow calls in flight, four queued
        runtime.apply(redeployed, actor="serve-deploy")
        await asyncio.sleep(1.0)      # the old version's shadow work drains
        before = json.loads(json.dumps(runtime._obs.stats.snapshot()))
        for _ in range(3):
            await runtime.answer(x, {})
        await asyncio.sleep(1.0)
        return before, runtime._obs.stats.snapshot()

    before, after = asyncio.run(scenario())
    assert sum(before["variants"].get("student", {}).get("class_counts", [])) == 0, before["variants"]
    assert sum(after["variants"]["student"]["class_counts"]) == 3 * 32
    assert after["comparisons"]["teacher"]["student"]["compared"] == 3 * 32
    assert after["variants"]["student"]["shadow_drops"] >= 4     # the queued jobs: superseded


def test_a_colocated_teacher_answers_in_its_own_thread_and_catches_a_failing_student(onnx_models, tmp_path):
    config = gateway_config(onnx_models, tmp_path)
    config["variants"][0].update(colocated=True, threads=1, batching={"enabled": False})
    config["variants"][1].update(colocated=False, timeout_s=0.05)
    config["routing"]["weights"] = {"teacher": 50, "student": 50}
    async def failing_student(x):
        raise RuntimeError("student replica died")

    runtime = GatewayRuntime(remote_callers={"student": failing_student}, observers=Observers(metrics=None))
    runtime.apply(config, actor="test")   # no teacher deployment: the teacher is in this process
    x = onnx_models["x"][:8]
    answers = asyncio.run(_answers(runtime, x, 20))
    assert {a.variant for a in answers} == {"teacher"}          # the student's half fell back
    assert any(a.fallback for a in answers) and any(not a.fallback for a in answers)
    for a in answers:
        np.testing.assert_allclose(a.y, onnx_reference(onnx_models["teacher"], x), rtol=1e-5, atol=1e-6)
    assert runtime._teacher_thread._threads and all(
        t.name.startswith("kdgate-teacher") for t in runtime._teacher_thread._threads)


def test_a_colocated_teacher_faster_than_a_thread_hand_off_runs_inline(onnx_models, tmp_path):
    import threading

    config = gateway_config(onnx_models, tmp_path)
    config["variants"][0].update(colocated=True, threads=1, batching={"enabled": False})
    config["routing"]["weights"] = {"teacher": 100, "student": 0}
    runtime = GatewayRuntime(remote_callers={}, observers=Observers(metrics=None))
    runtime.apply(config, actor="test")
    backend = runtime.state.local["teacher"]
    threads = []
    infer = backend.infer
    backend.infer = lambda x: threads.append(threading.current_thread().name) or infer(x)
    x = onnx_models["x"][:1]
    answers = asyncio.run(_answers(runtime, x, 10))
    print(f"colocated teacher: {runtime._teacher_row_s * 1e6:.0f} us per row, threads {threads}")
    assert threads[0].startswith("kdgate-teacher")              # unknown speed: its own thread
    assert runtime._teacher_row_s * len(x) < INLINE_MAX_S         # this test teacher is that fast
    assert not any(t.startswith("kdgate-teacher") for t in threads[1:])   # then inline
    for a in answers:
        np.testing.assert_allclose(a.y, onnx_reference(onnx_models["teacher"], x), rtol=1e-5, atol=1e-6)
    runtime._teacher_row_s = 1e-3                                 # a slow teacher: back to its thread
    asyncio.run(_answers(runtime, x, 1))
    assert threads[-1].startswith("kdgate-teacher")


def test_each_session_loaded_is_warmed_once_before_its_first_request(onnx_models, tmp_path, monkeypatch):
    from gateway.backends import OnnxBackend

    runs = []
    infer = OnnxBackend.infer
    monkeypatch.setattr(OnnxBackend, "infer", lambda self, x: runs.append((self.model_path, x.shape, x.dtype)) or infer(self, x))
    config = gateway_config(onnx_models, tmp_path)
    config["variants"][0].update(colocated=True, batching={"enabled": False})
    runtime = GatewayRuntime(remote_callers={}, observers=Observers(metrics=None))
    runtime.apply(config, actor="test")
    features = onnx_models["x"].shape[1]
    assert sorted(runs) == sorted((onnx_models[v], (1, features), np.float32) for v in ("teacher", "student"))
    config["routing"]["weights"] = {"teacher": 50, "student": 50}
    runtime.apply(config, actor="test")        # the same files: their warm sessions are kept
    assert len(runs) == 2


def test_a_warm_up_row_follows_the_input_type_and_unnamed_dims(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from gateway.backends import OnnxBackend

    def identity(path, elem_type, dims):
        graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                                  [helper.make_tensor_value_info("input", elem_type, dims)],
                                  [helper.make_tensor_value_info("logits", elem_type, dims)])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
        return OnnxBackend(str(path), device="cpu")

    ids = identity(tmp_path / "ids.onnx", TensorProto.INT64, ["batch", "sequence"])   # a text model's token ids
    assert ids.warm_up() > 0
    flags = identity(tmp_path / "flags.onnx", TensorProto.BOOL, ["batch", 3])          # no warm-up row for it
    assert flags.warm_up() is None
    assert flags.infer(np.ones((2, 3), bool)).all()                                  # still serves


def test_a_model_deployment_session_gets_its_variants_threads(onnx_models):
    from gateway.backends import build_backend
    from gateway.core.config import VariantConfig
    from gateway.serve.app import _backend_fields

    variant = {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": onnx_models["teacher"],
               "manifest_path": None, "device": "cpu", "triton": None, "timeout_s": 1.0, "threads": 2,
               "batching": {"enabled": True}}
    fields = _backend_fields(variant)     # what the model deployment is built from (a change restarts it)
    assert fields["threads"] == 2 and "batching" not in fields
    backend = build_backend(VariantConfig.model_validate(fields))
    assert backend._session.get_session_options().intra_op_num_threads == 2
    x = onnx_models["x"][:3]
    np.testing.assert_allclose(backend.infer(x), onnx_reference(onnx_models["teacher"], x), rtol=1e-5, atol=1e-6)


async def _answers(runtime, x, n):
    return [await runtime.answer(x, {}) for _ in range(n)]
