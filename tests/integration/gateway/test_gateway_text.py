"""Text traffic on real Ray Serve: the pretrained MiniLM teacher (ONNX Runtime, its own deployment,
dynamic batching) and a tiny distilled text student (colocated), tokenised inside the gateway.

tritonclient.http sends BYTES tensors and gets the teacher's embeddings; V1 takes strings; bad
texts are 4xx naming the problem; shadow compares by cosine; a rollout passes its gates with
the distilled student and rolls a corrupted one back. Artifacts: the session's ``text_models``.
"""
from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from gateway_support import ADMIN_TOKEN, deploy, wait_ready
from text_support import corpus_texts, text_gateway_config

from distill.export import onnx_predict
from gateway.text import Tokenizer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _ids(models: dict, texts: list[str]) -> np.ndarray:
    info = models["report"]["tokenizer"]
    return Tokenizer(str(models["dir"] / info["file"]), info["max_length"], info["pad_id"]).encode(tuple(texts))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def traffic(text_models) -> dict:
    """Real emails, and the cosine the shadow calls agreement: the distilled student's own 10th
    percentile on them (a tiny, briefly trained student: its cosines spread widely), so it agrees
    on about 90 % of the rows, while the corrupted copy must agree on hardly any."""
    texts = corpus_texts(64)
    ids = _ids(text_models, texts)
    teacher = onnx_predict(text_models["teacher"], ids, dtype=np.int64)
    good = _cosines(teacher, onnx_predict(text_models["student"], ids, dtype=np.int64))
    bad = _cosines(teacher, onnx_predict(text_models["corrupt"], ids, dtype=np.int64))
    threshold = float(np.quantile(good, 0.1))
    assert (bad >= threshold).mean() < 0.2, (threshold, np.quantile(bad, [0.5, 0.9]))  # else rollback proves nothing
    return {"texts": texts, "ids": ids, "teacher": teacher, "min_cosine": threshold, "cosines": good}


def test_tritonclient_bytes_v1_strings_and_bad_texts_on_real_serve(app_factory, serve_instance, text_models,
                                                                    traffic, tmp_path):
    import tritonclient.http as triton_http

    config = text_gateway_config(text_models, tmp_path, shadow={
        "fraction": 1.0, "canary_compare_fraction": 1.0, "embedding_min_cosine": traffic["min_cosine"]})
    url = app_factory("text", config)
    texts = traffic["texts"][:3]
    client = triton_http.InferenceServerClient(url.removeprefix("http://"), network_timeout=30)
    meta = client.get_model_metadata("minilm")
    assert meta["inputs"][0]["datatype"] == "BYTES"
    for binary in (True, False):  # Triton's binary BYTES encoding, then JSON strings
        tensor = triton_http.InferInput("input", [3, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_), binary_data=binary)
        result = client.infer("minilm", [tensor], outputs=[triton_http.InferRequestedOutput("logits")])
        np.testing.assert_allclose(result.as_numpy("logits"), traffic["teacher"][:3], atol=1e-4)
    client.close()
    # V1 strings, the student forced: the gateway tokenised with the student's tokenizer.
    answer = httpx.post(f"{url}/v1/models/minilm:predict", json={"instances": texts},
                        headers={"x-kdgate-force-variant": "student"}, timeout=30)
    assert answer.status_code == 200 and answer.headers["x-kdgate-variant"] == "student", answer.text
    expected = onnx_predict(text_models["student"], _ids(text_models, texts), dtype=np.int64)
    np.testing.assert_allclose(np.array(answer.json()["predictions"]), expected, atol=1e-5)
    bad_utf8 = b'{"inputs":[{"name":"input","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":6}}]}'
    refused = {
        "utf8": httpx.post(f"{url}/v2/models/minilm/infer", content=bad_utf8 + b"\x02\x00\x00\x00\xc3\x28",
                           headers={"inference-header-content-length": str(len(bad_utf8))}, timeout=30),
        "empty": httpx.post(f"{url}/v1/models/minilm:predict", json={"instances": ["ok", " "]}, timeout=30),
        "long": httpx.post(f"{url}/v1/models/minilm:predict", json={"instances": ["x" * 2049]}, timeout=30),
        "floats": httpx.post(f"{url}/v1/models/minilm:predict", json={"instances": [[0.1, 0.2]]}, timeout=30),
        "batch": httpx.post(f"{url}/v1/models/minilm:predict", json={"instances": ["a"] * 17}, timeout=30),
    }
    got = {k: (r.status_code, r.json()["error"]) for k, r in refused.items()}
    assert got["utf8"][0] == 422 and "text 0 is not valid UTF-8" in got["utf8"][1], got
    assert got["empty"][0] == 422 and "text 1 is empty" in got["empty"][1], got
    assert got["long"][0] == 413 and "max_text_bytes" in got["long"][1], got
    assert got["floats"][0] == 422 and "not a string" in got["floats"][1], got
    assert got["batch"][0] == 413 and "max_batch_rows" in got["batch"][1], got
    # Shadow: the teacher answered the traffic, the student was compared with it by cosine.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pair = httpx.get(f"{url}/admin/stats", headers=AUTH, timeout=10).json()["comparisons"].get("teacher", {})
        if pair.get("student", {}).get("compared", 0) >= 9:
            break
        time.sleep(0.3)
    # Each of the 3 texts compared 3 times (two teacher answers, one forced student answer).
    pair, expected = pair["student"], traffic["cosines"][:3]
    assert pair["compared"] == 9 and pair["agreements"] == 3 * int((expected >= traffic["min_cosine"]).sum()), pair
    assert pair["cosine_sum"] / 9 == pytest.approx(expected.mean(), abs=1e-3), pair


def _send(url: str, texts: list[str], stop: threading.Event, failures: list, sent: list) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            start = (4 * len(sent)) % (len(texts) - 4)
            response = client.post(f"{url}/v1/models/minilm:predict", json={"instances": texts[start:start + 4]},
                                   headers={"x-user-id": f"u{len(sent) % 20}"})
            sent.append(response.headers.get("x-kdgate-variant"))
            if response.status_code != 200:
                failures.append((response.status_code, response.text[:200]))


def _rollout(text_models, traffic, tmp_path, name: str, student: str, serve_instance, until) -> tuple[dict, list, list]:
    """Deploy a text gateway with a rollout of ``student``, send traffic until ``until(status)``.

    Returns the last status, every status polled, and the failed requests."""
    from ray import serve

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "token").write_text(ADMIN_TOKEN)
    config = text_gateway_config(text_models, tmp_path, admin={"token_file": str(tmp_path / "token")})
    config["variants"][1]["model_path"] = student
    config["shadow"] = {"fraction": 1.0, "canary_compare_fraction": 1.0,
                        "embedding_min_cosine": traffic["min_cosine"], "timeout_s": 20.0}
    config["rollout"] = {
        "steps": ["shadow", 10, 50, 100], "interval_s": 1.0, "min_samples": 24, "failure_threshold": 2,
        "deadline_s": 120, "state_path": str(tmp_path / f"{name}.sqlite"), "evidence_dir": str(tmp_path / name),
        "gates": {"kl": {"enabled": False}, "output_drift": {"enabled": False}, "input_drift": {"enabled": False},
                  "latency": {"enabled": False}, "agreement": {"min_lower_bound": 0.6}},
    }
    deploy(config, name=name, prefix=f"/{name}")
    url = f"{serve_instance['url']}/{name}"
    wait_ready(url)
    stop, failures, sent, seen = threading.Event(), [], [], []
    worker = threading.Thread(target=_send, args=(url, traffic["texts"], stop, failures, sent))
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/admin/rollout", headers=AUTH, timeout=10).json()["status"]
            seen.append(status)
            if until(status):
                break
            time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
        serve.delete(name)
    return status, seen, failures + [s for s in sent if s is None]


def test_a_text_canary_passes_its_gates_and_a_corrupted_text_student_is_rolled_back(
        serve_instance, text_models, traffic, tmp_path):
    status, seen, failures = _rollout(text_models, traffic, tmp_path / "good", "textgood", text_models["student"],
                                      serve_instance, lambda s: s["weight"] >= 50.0 or s["phase"] == "RolledBack")
    agreement = {g["status"] for s in seen for g in s["last_gates"] if g["name"] == "agreement"}
    assert status["weight"] == 50.0 and 10.0 in [s["weight"] for s in seen], (
        status["phase"], status["reason"], status["last_gates"])
    assert "passed" in agreement and "failed" not in agreement, agreement
    assert failures == []
    status, seen, failures = _rollout(text_models, traffic, tmp_path / "bad", "textbad", text_models["corrupt"],
                                      serve_instance, lambda s: s["phase"] == "RolledBack")
    assert status["phase"] == "RolledBack" and status["weight"] == 0.0, (status["phase"], status["last_gates"])
    assert "agreement" in status["reason"], status["reason"]
    assert max(s["weight"] for s in seen) < 50.0 and failures == []


def test_the_text_triton_repository_and_the_triton_backend_take_token_ids(text_models, triton_for, app_factory,
                                                                          tmp_path):
    """The distilled folder's triton/ entries take INT64 ids of any length; a text student behind a real
    Triton server answers V1 strings through the gateway (tokenised there, sent as INT64) as ONNX Runtime."""
    from distill.export import parse_triton_config
    from tritonclient.grpc import model_config_pb2

    from gateway.backends import TritonBackend

    for name in ("kdgate-student", "kdgate-teacher"):
        config = parse_triton_config(text_models["dir"] / "triton" / name / "config.pbtxt")
        (tensor,) = config.input
        assert (model_config_pb2.DataType.Name(tensor.data_type), list(tensor.dims)) == ("TYPE_INT64", [-1]), tensor
    width = int(config.output[0].dims[0])
    assert width == onnx_predict(text_models["teacher"], _ids(text_models, ["hi"]), dtype=np.int64).shape[1]
    ids = _ids(text_models, corpus_texts(8))
    server = triton_for(text_models["student"], model="kdgate-student", input_dtype=np.int64, input_shape=(-1,),
                        output_width=width)
    expected = onnx_predict(text_models["student"], ids, dtype=np.int64)
    backend = TritonBackend(server["http"], "kdgate-student", timeout_s=10.0)
    np.testing.assert_allclose(backend.infer(ids), expected, rtol=1e-5, atol=1e-5)
    config = text_gateway_config(text_models, tmp_path)
    student = config["variants"][1]
    student.update(backend="triton", colocated=False, model_path=None, timeout_s=10.0,
                   triton={"url": server["http"], "model_name": "kdgate-student"})
    url = app_factory("texttriton", config)
    answer = httpx.post(f"{url}/v1/models/minilm:predict", json={"instances": corpus_texts(8)},
                        headers={"x-kdgate-force-variant": "student"}, timeout=30)
    assert answer.status_code == 200 and answer.headers["x-kdgate-variant"] == "student", answer.text
    np.testing.assert_allclose(np.array(answer.json()["predictions"]), expected, rtol=1e-4, atol=1e-5)
