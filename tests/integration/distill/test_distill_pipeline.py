"""End to end on tiny settings: artifacts, report keys, cache reuse, bring-your-own teacher."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from distill.config import load_config
from distill.errors import TeacherError
from distill.export import sha256_file
from distill.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[3]
REPORT_KEYS = {"config", "dataset", "task", "class_labels", "teacher", "student", "baseline", "retention",
               "agreement", "speedup_batch1", "size_reduction", "param_reduction", "cost_per_million_usd",
               "parity", "sweep", "timings_s", "soft_label_cache"}
VARIANT_KEYS = {"accuracy", "params", "latency_ms", "torch_latency_ms", "onnx_size_bytes", "per_class", "ece"}


def _tiny(tmp_path: Path):
    config = load_config(ROOT / "distill/configs/tiny.yaml")
    config.cache_dir = tmp_path / "cache"
    return config


def test_pipeline_writes_every_artifact_and_reuses_the_cache(tmp_path):
    config = _tiny(tmp_path)
    first = run_pipeline(config, tmp_path / "run1")
    out = tmp_path / "run1"
    for name in ("report.json", "report.html", "manifest.json", "student.onnx", "student.int8.onnx",
                 "teacher.onnx", "triton/kdgate-student/config.pbtxt", "triton/kdgate-student/1/model.onnx",
                 "triton/kdgate-teacher/config.pbtxt"):
        assert (out / name).exists(), name
    assert len(list((out / "plots").glob("*.png"))) == 3
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    for variant in ("teacher", "student", "baseline"):
        assert VARIANT_KEYS <= set(report[variant]), variant
        assert 0.0 <= report[variant]["accuracy"] <= 1.0
    assert {"temperature", "alpha", "int8"} <= set(report["student"])
    assert len(report["sweep"]) == 2 + 1 and sum(r["chosen"] for r in report["sweep"]) == 1
    assert {"temperature", "alpha", "val_accuracy", "params", "latency_ms_batch1", "kind"} <= set(report["sweep"][0])
    assert {"teacher", "soft_labels", "sweep", "final", "export", "total"} <= set(report["timings_s"])
    assert report["parity"]["student_max_abs_diff"] <= report["parity"]["tolerance"]
    assert report["soft_label_cache"]["hit"] is False
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"] == {"name": "input", "dtype": "float32", "shape": [-1, 40]}
    assert manifest["models"]["teacher"]["source"] == "trained"
    assert manifest["dataset"]["sha256"] == report["dataset"]["sha256"]
    assert len(manifest["reference"]["inputs"]["edges"]) == 40
    for role, file, key in (("student", "student.onnx", "sha256"), ("student", "student.int8.onnx", "int8_sha256"),
                            ("teacher", "teacher.onnx", "sha256")):  # what a gateway verifies a fetched model with
        assert manifest["models"][role][key] == sha256_file(out / file), file

    second = run_pipeline(config, tmp_path / "run2")
    assert second["soft_label_cache"]["hit"] is True
    assert second["soft_label_cache"]["key"] == first["soft_label_cache"]["key"]
    assert second["teacher"]["identity"] == first["teacher"]["identity"]
    assert second["timings_s"]["teacher"] < first["timings_s"]["teacher"]


def _user_data_and_onnx_teacher(tmp_path: Path) -> tuple[Path, Path, dict]:
    """What a user brings: digits as an .npz, and a teacher trained elsewhere, as ONNX."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]
    unlabeled = np.clip(x[train] + rng.normal(0, 0.05, x[train].shape), 0, 1).astype(np.float32)
    data = tmp_path / "my_data.npz"
    np.savez(data, x=x[train], y=y[train], x_test=x[test], y_test=y[test], x_unlabeled=unlabeled)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    teacher = tmp_path / "my_teacher.onnx"
    # Names other than the kdgate contract's, as a model from elsewhere would have.
    torch.onnx.export(net.eval(), (xt[:2],), str(teacher), input_names=["features"], output_names=["scores"],
                      dynamic_axes={"features": {0: "n"}, "scores": {0: "n"}}, dynamo=False)
    arrays = {"x": np.concatenate([x, unlabeled]), "net": net}
    return data, teacher, arrays


def _write_config(tmp_path: Path, teacher: dict, data: Path) -> Path:
    document = {"name": "byo", "cache_dir": str(tmp_path / "cache"),
                "data": {"source": "npz", "path": data.name},
                "teacher": teacher,
                "student": {"architecture": {"kind": "mlp", "width": 12, "depth": 1},
                            "train": {"epochs": 15, "batch_size": 128},
                            "baseline_train": {"epochs": 30, "batch_size": 128}},
                "sweep": {"temperatures": [2, 4], "alphas": [0.7], "epochs": 5},
                "export": {"latency_repeats": 20}}
    path = tmp_path / "byo.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_bring_your_own_npz_and_onnx_teacher_via_the_cli(tmp_path):
    data, teacher, _ = _user_data_and_onnx_teacher(tmp_path)
    config = _write_config(tmp_path, {"source": "onnx", "path": teacher.name}, data)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "kdgate.cli", "distill", str(config), "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "report.html" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["source"] == "onnx" and report["teacher"]["accuracy"] > 0.9
    assert report["student"]["accuracy"] > 0.8 and report["student"]["params"] < report["teacher"]["params"]
    assert report["dataset"]["n_unlabeled"] == 1400
    import onnxruntime as ort

    for name in ("student.onnx", "teacher.onnx"):
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["input"]
        assert [o.name for o in session.get_outputs()] == ["logits"]
    assert report["parity"]["teacher_max_abs_diff"] < 1e-4


def test_black_box_teacher_from_probabilities(tmp_path):
    import torch

    data, _, arrays = _user_data_and_onnx_teacher(tmp_path)
    with torch.no_grad():
        probs = torch.softmax(arrays["net"](torch.from_numpy(arrays["x"])), 1).numpy()
    logits_file = tmp_path / "bought_labels.npz"
    np.savez(logits_file, x=arrays["x"], logits=probs)
    config = load_config(_write_config(tmp_path, {"source": "logits", "path": logits_file.name,
                                                  "outputs": "probabilities"}, data))
    report = run_pipeline(config, tmp_path / "out")
    assert report["teacher"]["source"] == "logits" and report["teacher"]["params"] is None
    assert report["student"]["accuracy"] > 0.8
    assert not (tmp_path / "out" / "teacher.onnx").exists()
    assert (tmp_path / "out" / "student.onnx").exists() and (tmp_path / "out" / "manifest.json").exists()


def test_black_box_teacher_missing_rows_is_named(tmp_path):
    data, _, arrays = _user_data_and_onnx_teacher(tmp_path)
    logits_file = tmp_path / "partial.npz"
    np.savez(logits_file, x=arrays["x"][:100], logits=np.zeros((100, 10), np.float32))
    config = load_config(_write_config(tmp_path, {"source": "logits", "path": logits_file.name}, data))
    with pytest.raises(TeacherError, match="has no teacher output for"):
        run_pipeline(config, tmp_path / "out")


def test_regression_teacher_distils_with_mse(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = (np.sin(x[:, 0]) + x[:, 1] * x[:, 2]).astype(np.float32)
    data = tmp_path / "reg.npz"
    np.savez(data, x=x, y=y, x_unlabeled=rng.normal(size=(800, 6)).astype(np.float32))
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump({
        "cache_dir": str(tmp_path / "cache"), "data": {"source": "npz", "path": "reg.npz", "task": "regression"},
        "teacher": {"architecture": {"kind": "mlp", "width": 64, "depth": 2},
                    "train": {"epochs": 40, "batch_size": 64, "lr": 0.003}},
        "student": {"architecture": {"kind": "mlp", "width": 8, "depth": 1}, "train": {"epochs": 10},
                    "baseline_train": {"epochs": 20}},
        "sweep": {"temperatures": [1], "alphas": [0.5, 0.9], "epochs": 3},
        "export": {"latency_repeats": 10}}))
    report = run_pipeline(load_config(path), tmp_path / "out")
    assert report["task"] == "regression" and report["class_labels"] == []
    assert report["teacher"]["mse"] < float(np.var(y))  # the teacher learned something
    assert {"mse", "mae"} <= set(report["student"]) and report["agreement"] is None
    assert all("val_neg_mse" in run for run in report["sweep"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["task"] == "regression" and manifest["output"]["shape"] == [-1, 1]
