"""Export: ONNX round trip and parity, INT8, Triton config, reference statistics, manifest."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from distill.errors import ExportError, ParityError
from distill.export import (check_parity, export_onnx, io_spec, onnx_predict, parse_triton_config,
                            quantize_int8, reference_stats, sha256_arrays, sha256_file,
                            write_manifest, write_triton_model)


class TinyCnn(torch.nn.Module):
    """A 1-D CNN small enough for unit tests; same I/O as the real students."""

    def __init__(self, features: int = 16, classes: int = 4):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4 * features, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x.unsqueeze(1))).flatten(1))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    return TinyCnn(), x


def test_onnx_round_trip_matches_torch_with_dynamic_batch(tiny, tmp_path):
    model, x = tiny
    exported = export_onnx(model, tmp_path / "student.onnx", x)
    assert exported.max_abs_diff <= exported.tolerance == 1e-4
    assert exported.size_bytes == (tmp_path / "student.onnx").stat().st_size
    assert exported.sha256 == sha256_file(exported.path)
    graph = onnx.load(str(exported.path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for rows in (1, 7, 50):  # batch sizes other than the export sample's
        np.testing.assert_allclose(onnx_predict(exported.path, x[:rows]), expected[:rows], atol=1e-5)


def test_parity_check_fails_for_a_perturbed_model(tiny, tmp_path):
    model, x = tiny
    exported = export_onnx(model, tmp_path / "student.onnx", x)
    with torch.no_grad():
        model.head.bias.add_(0.01)
    with pytest.raises(ParityError, match=r"max abs 0\.01.*tolerance 0\.0001"):
        check_parity(model, exported.path, x, tolerance=1e-4)
    assert check_parity(model, exported.path, x, tolerance=0.1) == pytest.approx(0.01, rel=1e-3)


def test_int8_file_is_produced_and_runs(tiny, tmp_path):
    model, x = tiny
    exported = export_onnx(model, tmp_path / "student.onnx", x)
    int8 = quantize_int8(exported.path, tmp_path / "student.int8.onnx")
    assert int8.exists() and int8.stat().st_size > 0
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert ops & {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}  # really quantized
    logits = onnx_predict(int8, x)
    assert logits.shape == (50, 4) and np.isfinite(logits).all()


def test_quantize_translates_errors(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match="INT8"):
        quantize_int8(tmp_path / "bad.onnx", tmp_path / "out.onnx")


def test_triton_model_repository_parses_as_model_config(tiny, tmp_path):
    model, x = tiny
    exported = export_onnx(model, tmp_path / "student.onnx", x)
    model_dir = write_triton_model(tmp_path / "triton", "kdgate-student", exported.path, (16,), 4)
    assert (model_dir / "1" / "model.onnx").read_bytes() == exported.path.read_bytes()
    config = parse_triton_config(model_dir / "config.pbtxt")
    assert (config.name, config.platform, config.max_batch_size) == ("kdgate-student", "onnxruntime_onnx", 64)
    assert list(config.input[0].dims) == [16] and list(config.output[0].dims) == [4]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.instance_group[0].kind == config.instance_group[0].KIND_CPU


@pytest.mark.parametrize("broken, problem", [
    ('name: "kdgate-student"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
     'input [ { name: "input" data_type: TYPE_FP32 dims: [ 16 ] }', "does not parse"),
    ('name: "kdgate-student"\nplatform: "onnxruntime_onnx"\nmax_batch_sise: 64\n', "max_batch_sise"),
    ('name: "kdgate-student"\nplatform: "onnxruntime_onnx"\n'
     'input [ { name: "input" data_type: TYPE_FP33 dims: [ 16 ] } ]\n', "TYPE_FP33"),
    ('name: "other"\nplatform: "onnxruntime_onnx"\n'
     'input [ { name: "input" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
     'output [ { name: "logits" data_type: TYPE_FP32 dims: [ 4 ] } ]\n', "differs from its folder"),
    ('name: "kdgate-student"\nplatform: "onnxruntime_onnx"\n', "at least one input"),
])
def test_broken_triton_config_fails_with_a_clear_error(tmp_path, broken, problem):
    model_dir = tmp_path / "kdgate-student"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(b"")
    (model_dir / "config.pbtxt").write_text(broken)
    with pytest.raises(ExportError, match=problem) as caught:
        parse_triton_config(model_dir / "config.pbtxt")
    assert "config.pbtxt" in str(caught.value)


def test_triton_rejects_preferred_batch_above_max(tiny, tmp_path):
    model, x = tiny
    exported = export_onnx(model, tmp_path / "student.onnx", x)
    with pytest.raises(ExportError, match="exceed max_batch_size"):
        write_triton_model(tmp_path / "triton", "s", exported.path, (16,), 4, max_batch_size=16,
                           preferred_batch_sizes=(8, 32))


def test_reference_stats_deciles_and_class_shares():
    x = np.random.default_rng(1).normal(size=(1000, 3, 2))  # multi-dim inputs are flattened
    logits = np.eye(4)[[0] * 5 + [1] * 3 + [3] * 2]
    reference = reference_stats(x, logits)
    edges, fractions = reference["inputs"]["edges"], reference["inputs"]["fractions"]
    assert len(edges) == len(fractions) == 6
    assert all(len(e) == 9 and e == sorted(e) for e in edges)
    np.testing.assert_allclose(fractions, 0.1, atol=0.002)  # deciles: a tenth of rows per bin
    assert reference["outputs"]["class_fractions"] == [0.5, 0.3, 0.0, 0.2]
    json.dumps(reference)  # plain JSON types only
    assert reference_stats(x, None)["outputs"] == {}


def test_sha256_arrays_depends_on_content_shape_and_order():
    a, b = np.arange(4.0), np.arange(4.0)[::-1]
    assert sha256_arrays(a, b) == sha256_arrays(a.copy(), b.copy())
    assert sha256_arrays(a, b) != sha256_arrays(b, a)
    assert sha256_arrays(a) != sha256_arrays(a.reshape(2, 2))
    assert sha256_arrays(a) != sha256_arrays(a.astype(np.float32))


def _manifest() -> dict:
    return {
        "task": "classification",
        **io_spec((16,), 4),
        "class_labels": ["0", "1", "2", "3"],
        "models": {"student": {"file": "student.onnx", "sha256": "ab", "params": np.int64(140)}},
        "dataset": {"name": "tiny", "sha256": "cd", "n_train": 50, "n_test": 50},
        "hyperparameters": {"temperature": 4.0, "alpha": 0.7},
        "metrics": {"student_accuracy": np.float32(0.5)},
        "reference": {"inputs": {"edges": [], "fractions": []}, "outputs": {}},
    }


def test_manifest_has_required_keys_and_is_json(tmp_path):
    path = write_manifest(tmp_path / "manifest.json", _manifest())
    written = json.loads(path.read_text())
    for key in ("format_version", "kdgate_version", "created_at", "task", "input", "output",
                "class_labels", "models", "dataset", "hyperparameters", "metrics", "reference"):
        assert key in written
    assert written["format_version"] == 1 and written["created_at"].endswith("Z")
    assert written["models"]["student"]["params"] == 140
    assert written["input"] == {"name": "input", "dtype": "float32", "shape": [-1, 16]}


@pytest.mark.parametrize("drop, problem", [("reference", "missing key 'reference'"),
                                           ("class_labels", "class_labels"),
                                           ("models", "missing key 'models'")])
def test_manifest_missing_key_is_named(tmp_path, drop, problem):
    manifest = _manifest()
    del manifest[drop]
    with pytest.raises(ExportError, match=problem):
        write_manifest(tmp_path / "manifest.json", manifest)
    assert not (tmp_path / "manifest.json").exists()
