"""Demo setup: gate calibration, stage configs that the gateway accepts, the corrupted student."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from gateway.core.config import load_gateway_config
from kdgate.demo.setup import (
    BAD_STAGE, GOOD_STAGE, DemoModels, calibrated_gates, offline_agreement, perturb_onnx, stage_config,
)


def test_gates_are_set_just_below_the_offline_agreement():
    gates = calibrated_gates({"agreement": 0.94, "kl": 0.14})
    assert gates["agreement"]["min_lower_bound"] == pytest.approx(0.88)
    assert gates["kl"]["max_mean"] == pytest.approx(0.26)
    assert calibrated_gates({"agreement": 0.3, "kl": 1.0})["agreement"]["min_lower_bound"] == 0.5


@pytest.mark.parametrize("stage", [GOOD_STAGE, BAD_STAGE])
def test_stage_configs_validate_as_gateway_configs(stage, tmp_path):
    models = DemoModels.from_dir(tmp_path)
    config = stage_config(stage, models, student_path=tmp_path / "s.onnx", gates=calibrated_gates(
        {"agreement": 0.9, "kl": 0.1}), workdir=tmp_path, token_file=tmp_path / "token", interval_s=2)
    parsed = load_gateway_config(config)
    assert parsed.rollout_student == stage.variant
    assert parsed.rollout.steps == list(stage.steps) and parsed.rollout.interval_s == 2
    assert parsed.routing.sticky_header is None and parsed.rollout.gates.cost.enabled
    assert parsed.effective_weights() == {"teacher": 100.0, stage.variant: 0.0}


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
