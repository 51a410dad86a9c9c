"""Distillation strategies on tiny models: schedules, features, progressive, born-again, data-free."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from distill.config import (ArchitectureConfig, DataFreeConfig, DistillConfig, LayerPair, ScheduleConfig,
                            TrainConfig, parse_config)
from distill.data import Dataset
from distill.errors import ConfigError
from distill.losses import ClassificationDistillation
from distill.models import build_model
from distill.strategies.datafree import batchnorm_gap, disagreement, synthesize_batch
from distill.strategies.features import FeatureDistillation, check_pairs, teacher_features
from distill.strategies.runner import run_strategy
from distill.strategies.schedules import Schedule, ScheduledDistillation, schedule_from
from distill.sweep import TeacherOutputs
from distill.teacher import TorchTeacher
from distill.train import fit, predict

SHAPE, CLASSES = (16,), 3
TEACHER = ArchitectureConfig(kind="cnn1d", width=12, depth=2, downsample="pool", hidden=0)
STUDENT = ArchitectureConfig(kind="cnn1d", width=4, depth=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and lose much when other tests share the CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_dataset(seed: int = 0) -> Dataset:
    """Three classes told apart by where a bump sits in a 16-sample signal."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, CLASSES, n)
        x = rng.normal(0, 0.3, (n, *SHAPE)).astype(np.float32)
        x[np.arange(n), 2 + 5 * y] += 2.0
        return x, y.astype(np.int64)

    (xt, yt), (xv, yv), (xs, ys), (xu, _) = split(96), split(32), split(32), split(64)
    return Dataset("tiny", "classification", xt, yt, xv, yv, xs, ys, xu, [str(i) for i in range(CLASSES)])


def tiny_config(teacher_batchnorm: bool = False, **strategy) -> DistillConfig:
    teacher = {**TEACHER.model_dump(), "batchnorm": teacher_batchnorm}
    return DistillConfig.model_validate({
        "teacher": {"architecture": teacher, "train": {"epochs": 3, "batch_size": 32}},
        "student": {"architecture": STUDENT.model_dump(), "train": {"epochs": 2, "batch_size": 32}},
        "strategy": strategy, "threads": 1})


@pytest.fixture(scope="module")
def trained():
    """A tiny teacher trained briefly, and its outputs on every split."""
    torch.manual_seed(0)
    ds = tiny_dataset()
    model = fit(build_model(TEACHER, SHAPE, CLASSES), ds.x_train, ds.y_train, None,
                ClassificationDistillation(), TrainConfig(epochs=8, batch_size=32), seed=0)
    soft = TeacherOutputs(*(predict(model, x) for x in (ds.x_train, ds.x_val, ds.x_test, ds.x_unlabeled)))
    return ds, TorchTeacher(model, "trained:test"), soft


# --- schedules ------------------------------------------------------------------------------------

def test_linear_schedule_values_at_start_middle_and_end():
    decay, growth = Schedule("linear", 8.0, 2.0), Schedule("linear", 0.2, 1.0)
    assert [decay.value(p) for p in (0.0, 0.5, 1.0)] == [8.0, 5.0, 2.0]
    assert [growth.value(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.2, 0.6, 1.0])
    assert Schedule("constant", 4.0).value(0.7) == 4.0 and Schedule("constant", 4.0).is_constant
    assert not decay.is_constant


def test_schedule_start_defaults_to_the_sweep_choice():
    assert schedule_from(ScheduleConfig(shape="linear", end=1.0), 4.0) == Schedule("linear", 4.0, 1.0)
    assert schedule_from(ScheduleConfig(), 0.7).value(1.0) == 0.7


def test_fit_drives_the_schedule_from_start_to_end():
    seen = []
    base = ClassificationDistillation(4.0, 0.9)
    task = ScheduledDistillation(base, Schedule("linear", 4.0, 1.0), Schedule("linear", 0.9, 0.5))
    original = task.set_progress
    task.set_progress = lambda p: (original(p), seen.append((base.temperature, base.alpha)))
    ds = tiny_dataset()
    fit(build_model(STUDENT, SHAPE, CLASSES), ds.x_train, ds.y_train, np.zeros((96, CLASSES), np.float32),
        task, TrainConfig(epochs=2, batch_size=32), seed=0)
    assert seen[0] == pytest.approx((4.0, 0.9)) and seen[-1] == pytest.approx((1.0, 0.5))
    assert len(seen) == 6 and seen[3][0] < seen[2][0]


def test_strategy_config_is_validated_naming_the_field():
    assert DistillConfig().strategy.kind == "kd"  # existing configs keep plain KD
    with pytest.raises(ConfigError, match="features needs at least one entry in features.pairs"):
        parse_config({"strategy": {"kind": "features"}})
    with pytest.raises(ConfigError, match="set teacher.architecture.batchnorm: true"):
        parse_config({"strategy": {"kind": "data_free"}})
    with pytest.raises(ConfigError, match="needs the teacher's network"):
        parse_config({"teacher": {"source": "onnx", "path": "t.onnx"}, "strategy": {"kind": "born_again"}})
    with pytest.raises(ConfigError, match="strategy.schedules: Value error, temperature schedule"):
        parse_config({"strategy": {"schedules": {"temperature": {"start": -1}}}})
    with pytest.raises(ConfigError, match="strategy.kind"):
        parse_config({"strategy": {"kind": "magic"}})


# --- feature matching -----------------------------------------------------------------------------

def _feature_task(teacher, student, pairs, beta=1.0):
    t_shapes, s_shapes = check_pairs(teacher, student, SHAPE, pairs)
    return FeatureDistillation(ClassificationDistillation(), student, pairs, t_shapes, s_shapes, beta)


def test_feature_loss_is_zero_for_identical_features_and_positive_otherwise():
    teacher = build_model(TEACHER, SHAPE, CLASSES).eval()
    pairs = [LayerPair(teacher="features.1", student="features.1"),
             LayerPair(teacher="features.4", student="features.4")]
    x, y = torch.randn(8, *SHAPE), torch.zeros(8, dtype=torch.long)
    targets = {k: torch.from_numpy(v) for k, v in teacher_features(teacher, x.numpy(), [p.teacher for p in pairs]).items()}
    same = copy.deepcopy(teacher)
    task = _feature_task(teacher, same, pairs)
    losses = task(same(x), None, y, **targets)
    assert all(isinstance(p, torch.nn.Identity) for p in task.projections)
    assert float(losses["feature"].detach()) == 0.0 and set(losses) >= {"feature_0", "feature_1", "ce", "total"}
    with torch.no_grad():
        same.features[0].weight.add_(0.1)
    assert float(task(same(x), None, y, **targets)["feature"].detach()) > 1e-4


def test_projections_are_created_where_widths_differ_and_trained(trained):
    ds, teacher, _ = trained
    teacher = teacher.model
    torch.manual_seed(0)
    student = build_model(STUDENT, SHAPE, CLASSES)
    pairs = [LayerPair(teacher="features.4", student="features.3")]  # 12 x 4 <- 4 x 4
    task = _feature_task(teacher, student, pairs, beta=10.0)
    conv = task.projections[0]
    assert isinstance(conv, torch.nn.Conv1d) and (conv.in_channels, conv.out_channels) == (4, 12)
    extras = teacher_features(teacher, ds.x_train, ["features.4"])
    before = conv.weight.detach().clone()
    x = torch.from_numpy(ds.x_train)
    target = torch.from_numpy(extras["feat_0"])
    loss_before = float(task(student(x), None, torch.from_numpy(ds.y_train), feat_0=target)["feature"].detach())
    fit(student, ds.x_train, ds.y_train, None, task, TrainConfig(epochs=15, batch_size=32, lr=1e-2), 0, extras=extras)
    loss_after = float(task(student(x), None, torch.from_numpy(ds.y_train), feat_0=target)["feature"].detach())
    assert not torch.equal(before, conv.weight) and loss_after < 0.7 * loss_before


def test_unknown_layer_names_fail_listing_the_real_ones():
    teacher, student = build_model(TEACHER, SHAPE, CLASSES), build_model(STUDENT, SHAPE, CLASSES)
    with pytest.raises(ConfigError, match="the student has no module 'features.99'.*features.0"):
        check_pairs(teacher, student, SHAPE, [LayerPair(teacher="features.1", student="features.99")])
    with pytest.raises(ConfigError, match="same rank"):
        check_pairs(teacher, student, SHAPE, [LayerPair(teacher="head", student="features.1")])


def test_feature_strategy_trains_a_student_with_projections(trained):
    ds, teacher, soft = trained
    config = tiny_config(kind="features", features={"pairs": [{"teacher": "features.4", "student": "features.3"}]})
    result = run_strategy(config, ds, soft, teacher, 2.0, 0.7)
    assert result.report["pairs"][0]["projection"] == "Conv1d"
    assert [s["stage"] for s in result.report["stages"]] == ["teacher", "student"]
    assert "beats_plain_kd" in result.report and result.report["reference_kd"]["stage"] == "plain KD (reference)"


# --- progressive and born-again -------------------------------------------------------------------

def test_progressive_trains_an_assistant_of_the_configured_size_then_the_student(trained):
    ds, teacher, soft = trained
    assistant = STUDENT.model_copy(update={"width": 8})
    result = run_strategy(tiny_config(kind="progressive", progressive={"assistant": assistant.model_dump()}),
                          ds, soft, teacher, 2.0, 0.7)
    stages = {s["stage"]: s for s in result.report["stages"]}
    assert list(stages) == ["teacher", "assistant", "student"]
    size = lambda arch: sum(p.numel() for p in build_model(arch, SHAPE, CLASSES).parameters())  # noqa: E731
    assert stages["assistant"]["params"] == size(assistant) != size(STUDENT)
    assert stages["student"]["params"] == size(STUDENT) == sum(p.numel() for p in result.student.parameters())
    assert 0.0 <= stages["student"]["accuracy"] <= 1.0


def test_born_again_has_the_teachers_architecture_and_is_compared_with_it(trained):
    ds, teacher, soft = trained
    result = run_strategy(tiny_config(kind="born_again"), ds, soft, teacher, 2.0, 0.7)
    born, original = result.report["stages"][1], result.report["stages"][0]
    assert result.architecture == TEACHER
    assert born["params"] == original["params"] == sum(p.numel() for p in teacher.model.parameters())
    assert result.report["vs_teacher"] == pytest.approx(born["accuracy"] - original["accuracy"])
    assert not any(a is b for a, b in zip(result.student.parameters(), teacher.model.parameters()))


# --- data-free ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bn_teacher():
    """A tiny teacher with BatchNorm, trained briefly (its running statistics are the real data's)."""
    ds = tiny_dataset()
    torch.manual_seed(0)
    return fit(build_model(TEACHER.model_copy(update={"batchnorm": True}), SHAPE, CLASSES), ds.x_train,
               ds.y_train, None, ClassificationDistillation(), TrainConfig(epochs=8, batch_size=32), seed=0)


def test_synthetic_inputs_have_the_data_shape_and_move_towards_the_teachers_statistics(bn_teacher):
    settings = DataFreeConfig(steps=40, batch_size=64, lr=0.1, confidence_weight=0.0, adversarial_weight=0.0)
    x = synthesize_batch(bn_teacher, None, SHAPE, CLASSES, settings, torch.Generator().manual_seed(1))
    noise = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(1))  # where synthesis starts
    assert x.shape == (64, *SHAPE) and torch.isfinite(x).all()
    assert batchnorm_gap(bn_teacher, x.numpy()) < 0.5 * batchnorm_gap(bn_teacher, noise.numpy())
    assert all(p.requires_grad for p in bn_teacher.parameters()) and not bn_teacher.training  # left as found


def test_disagreement_is_zero_for_equal_predictions_and_positive_otherwise():
    logits = torch.randn(5, CLASSES)
    assert float(disagreement(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(disagreement(logits, -logits)) > 0.01


def test_data_free_student_learns_from_the_teacher_without_real_inputs(bn_teacher):
    ds = tiny_dataset()
    soft = TeacherOutputs(*(predict(bn_teacher, x) for x in (ds.x_train, ds.x_val, ds.x_test, ds.x_unlabeled)))
    config = tiny_config(teacher_batchnorm=True, kind="data_free", compare_with_kd=False, data_free={
        "rounds": 2, "samples_per_round": 64, "batch_size": 64, "steps": 20, "epochs_per_round": 3})
    poisoned = copy.copy(ds)
    poisoned.x_train = poisoned.x_unlabeled = np.full_like(ds.x_train, np.nan)  # any real-input use shows
    result = run_strategy(config, poisoned, soft, TorchTeacher(bn_teacher, "t"), 2.0, 0.7)
    assert result.report["real_inputs_used"] == 0 and result.report["synthetic_inputs"] == 128
    assert np.isfinite(predict(result.student, ds.x_test)).all()
    assert result.report["batchnorm_gap"]["synthetic"] < result.report["batchnorm_gap"]["gaussian_noise"]
