"""Demo setup: gate calibration, stage configs that the gateway accepts, the corrupted student."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from gateway.core.config import load_gateway_config
from kdgate.demo.setup import (
    STAGES, DemoModels, base_dataset, calibrated_gates, offline_agreement, perturb_onnx, redistill_config,
    shift_features, stage_config,
)


def test_gates_are_set_just_below_the_offline_agreement():
    gates = calibrated_gates({"agreement": 0.94, "kl": 0.14})
    assert gates["agreement"]["min_lower_bound"] == pytest.approx(0.88)
    assert gates["kl"]["max_mean"] == pytest.approx(0.26)
    assert calibrated_gates({"agreement": 0.3, "kl": 1.0})["agreement"]["min_lower_bound"] == 0.5


@pytest.mark.parametrize("stage", STAGES, ids=[s.key for s in STAGES])
def test_stage_configs_validate_as_gateway_configs(stage, tmp_path):
    models = DemoModels.from_dir(tmp_path)
    students = {name: tmp_path / f"{name}.onnx" for name in ("v1", "v2", "v3")}
    config = stage_config(stage, models, students=students, gates=calibrated_gates({"agreement": 0.9, "kl": 0.1}),
                          workdir=tmp_path, token_file=tmp_path / "token", interval_s=2,
                          manifests={"v3": tmp_path / "v3" / "manifest.json"})
    parsed = load_gateway_config(config)
    assert parsed.rollout_student == stage.variant
    assert [s.name for s in parsed.students] == [*stage.others, stage.variant]
    assert parsed.rollout.steps == list(stage.steps) and parsed.rollout.interval_s == 2
    assert parsed.routing.sticky_header is None and parsed.rollout.gates.cost.enabled
    assert parsed.rollout.gates.input_drift.enabled is (stage.key != "v3")
    assert parsed.effective_weights()[stage.serving] == 100.0
    assert parsed.rollout.state_path == str(tmp_path / "rollout.sqlite")   # one state: the stable carries over
    if stage.key == "v3":
        assert parsed.variant("v3").manifest_path == str(tmp_path / "v3" / "manifest.json")


def test_the_stages_tell_the_lifecycle():
    assert [(s.variant, s.expect, s.expect_stable) for s in STAGES] == [
        ("v1", "Guarding", "v1"), ("v2", "RolledBack", "v1"), ("v1", "RolledBack", "teacher"),
        ("v3", "Guarding", "v3")]


def test_drift_moves_every_second_feature_by_its_std():
    x = np.random.default_rng(0).normal(size=(500, 6)).astype(np.float32)
    moved = shift_features(x, 1.0) - x
    assert np.allclose(moved[:, ::2], x[:, ::2].std(axis=0), atol=1e-5) and not moved[:, 1::2].any()


def test_v3_redistills_the_demo_student_on_the_captured_transfer_set(tmp_path):
    from distill.config import parse_config

    config_path = pathlib.Path(__file__).resolve().parents[3] / "deployments" / "demo" / "distill-mnist1d.yaml"
    models = DemoModels.from_dir(tmp_path)
    config = parse_config(redistill_config(config_path, models, tmp_path / "data.npz", epochs=3))
    assert config.data.source == "npz" and config.teacher.source == "onnx"
    assert config.teacher.path == models.teacher and config.student.train.epochs == 3
    assert len(config.sweep.temperatures) == len(config.sweep.alphas) == 1
    recipe = parse_config(redistill_config(config_path, models, tmp_path / "data.npz"))
    assert recipe.student.train.epochs == 12 and recipe.student.baseline_train.epochs == 1   # the demo recipe's


def test_base_dataset_is_a_distill_npz_dataset(tmp_path):
    tiny = pathlib.Path(__file__).resolve().parents[3] / "distill" / "configs" / "tiny.yaml"
    with np.load(base_dataset(tiny, tmp_path / "base.npz")) as data:
        assert sorted(data.files) == ["x", "x_test", "x_unlabeled", "y", "y_test"]
        assert len(data["x"]) == len(data["y"]) and data["x"].shape[1:] == data["x_unlabeled"].shape[1:]


def test_perturbed_copy_keeps_the_contract_but_disagrees(tmp_path):
    import torch

    from distill.export import export_onnx

    x = np.random.default_rng(0).normal(size=(256, 40)).astype(np.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(40, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    export_onnx(net, tmp_path / "student.onnx", x[:16])
    bad = perturb_onnx(tmp_path / "student.onnx", tmp_path / "bad.onnx", noise=1.0)
    same = offline_agreement(tmp_path / "student.onnx", tmp_path / "student.onnx", x)
    worse = offline_agreement(tmp_path / "student.onnx", bad, x)
    assert same["agreement"] == 1.0 and same["kl"] == pytest.approx(0.0, abs=1e-6)
    assert worse["agreement"] < 0.8 and worse["kl"] > 0.05
    assert DemoModels.from_dir(pathlib.Path(tmp_path)).missing() == ["teacher.onnx", "manifest.json",
                                                                     "demo-traffic.npy"]
