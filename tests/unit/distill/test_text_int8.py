"""INT8 of the text tasks, pure parts: records, manifest fields, printed lines, quantizing an ONNX file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from distill.export import export_onnx, onnx_predict, sha256_file
from distill.text_int8 import QUANTIZATION, int8_lines, int8_record, int8_records, manifest_int8, quantize_exports
from gateway.core.manifest import validate_manifest
from tests.manifest_support import manifest_dict

QUANTIZED = {"file": "student.int8.onnx", "sha256": "a" * 64, "size_bytes": 300, "latency_ms_batch1": 0.05}


def test_record_keeps_the_fp32_figures_and_the_change_of_every_number_both_have():
    fp32 = {"accuracy": 0.95, "agreement": 0.97, "size_bytes": 1200, "latency_ms_batch1": 0.08,
            "per_class": {"ham": 0.96}, "worst_class": {"label": "spam", "accuracy": 0.9}}
    record = int8_record(QUANTIZED, {"accuracy": 0.94, "agreement": 0.96, "per_class": {"ham": 0.95},
                                     "flag": True}, fp32)
    assert record["file"] == "student.int8.onnx" and record["accuracy"] == 0.94 and record["fp32"] == fp32
    assert record["change"] == pytest.approx({"accuracy": -0.01, "agreement": -0.01, "size_bytes": -900,
                                              "latency_ms_batch1": -0.03})
    assert record["fp32"] is not fp32  # a copy: the report never aliases the caller's dict


def test_records_judge_each_int8_file_against_its_own_fp32_model(tmp_path):
    class Export:  # the two fields of distill.export.OnnxExport that a record reads
        def __init__(self, size_bytes):
            self.size_bytes = size_bytes

    exported = {"exports": {"student": Export(1000), "teacher": Export(90_000)},
                "latency_ms_batch1": {"student": 0.1, "teacher": 40.0},
                "int8": {"student": dict(QUANTIZED), "teacher": {**QUANTIZED, "file": "teacher.int8.onnx",
                                                                   "size_bytes": 23_000, "latency_ms_batch1": 20.0}}}
    seen = []
    judge = lambda path: seen.append(path) or {"mean_cosine": 0.99}  # noqa: E731
    records = int8_records(exported, tmp_path, {"student": {"mean_cosine": 0.6}, "teacher": {"mean_cosine": 1.0}},
                           judge)
    assert seen == [tmp_path / "student.int8.onnx", tmp_path / "teacher.int8.onnx"]
    assert records["teacher"]["fp32"] == {"mean_cosine": 1.0, "size_bytes": 90_000, "latency_ms_batch1": 40.0}
    assert records["teacher"]["change"]["mean_cosine"] == pytest.approx(-0.01)
    assert records["student"]["change"]["size_bytes"] == -700
    assert int8_records({**exported, "int8": {}}, tmp_path, {}, judge) == {}


def test_manifest_fields_name_each_int8_file_and_flatten_the_figures_and_stay_valid():
    record = int8_record(QUANTIZED, {"mean_cosine": 0.61, "per_class": {"ham": 1.0}}, {"mean_cosine": 0.62})
    models, metrics = manifest_int8({"student": {"file": "student.onnx", "sha256": "b" * 64},
                                     "teacher": {"file": "teacher.onnx"}}, {"student": record})
    assert models["student"] == {"file": "student.onnx", "sha256": "b" * 64, "int8_file": "student.int8.onnx",
                                 "int8_sha256": "a" * 64}
    assert models["teacher"] == {"file": "teacher.onnx"}  # no INT8 record: unchanged
    assert metrics == {"student_int8_size_bytes": 300, "student_int8_latency_ms_batch1": 0.05,
                       "student_int8_mean_cosine": 0.61}
    manifest = manifest_dict()
    manifest["models"] = models
    manifest["metrics"].update(metrics)
    parsed = validate_manifest(manifest)
    assert parsed.models["student"].int8_file == "student.int8.onnx"
    assert manifest_int8({"student": {"file": "s.onnx"}}, {}) == ({"student": {"file": "s.onnx"}}, {})


def test_printed_lines_show_fp32_then_int8_per_model_and_nothing_without_int8():
    record = int8_record({**QUANTIZED, "size_bytes": 25_000_000, "latency_ms_batch1": 21.5},
                         {"mean_cosine": 0.9912}, {"mean_cosine": 1.0, "size_bytes": 90_000_000,
                                                   "latency_ms_batch1": 43.0})
    lines = int8_lines({"teacher": record}, ("mean_cosine", "probe_accuracy"))
    assert len(lines) == 2 and lines[0].startswith("INT8")
    assert lines[1] == ("  teacher: 90,000,000 -> 25,000,000 bytes, batch-1 43.0000 -> 21.5000 ms, "
                        "mean_cosine 1.0000 -> 0.9912")  # a figure it lacks is left out
    assert int8_lines({}, ("mean_cosine",)) == []


def test_quantize_exports_writes_a_smaller_int8_copy_that_answers_like_the_fp32_model(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8)).eval()
    x = np.random.default_rng(0).normal(size=(32, 64)).astype(np.float32)
    exported = export_onnx(model, tmp_path / "student.onnx", x)
    quantized = quantize_exports({"student": exported}, tmp_path)
    path = tmp_path / "student.int8.onnx"
    assert quantized == {"student": {"file": path.name, "sha256": sha256_file(path),
                                     "size_bytes": Path(path).stat().st_size, "quantization": QUANTIZATION}}
    assert quantized["student"]["size_bytes"] < exported.size_bytes / 2
    scales = [list(init.dims) for init in onnx.load(str(path)).graph.initializer if init.name.endswith("_scale")]
    assert [256] in scales and [8] in scales  # one scale per output channel of each weight
    fp32, int8 = onnx_predict(exported.path, x), onnx_predict(path, x)
    assert np.abs(int8 - fp32).max() < 0.1 * np.abs(fp32).max()
