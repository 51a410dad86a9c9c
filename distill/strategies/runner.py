"""Train the final student with the strategy the config names; measure every stage.

``run_strategy`` returns the model to export plus report data: one entry per stage
(teacher, assistant, student, ...) with its test score, parameter count and training time,
and strategy-specific details. For every kind but plain KD, a plain-KD student with the same
(temperature, alpha) is trained too (not exported) so the report can say whether the
strategy beat it.

Example:
    >>> result = run_strategy(config, ds, soft, teacher, 4.0, 0.7)  # doctest: +SKIP
    >>> [s["stage"] for s in result.stages]  # doctest: +SKIP
    ['teacher', 'assistant', 'student']
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from distill.config import ArchitectureConfig, DistillConfig
from distill.data import Dataset
from distill.losses import make_task
from distill.models import build_model
from distill.strategies.datafree import batchnorm_gap, distill_data_free
from distill.strategies.features import FeatureDistillation, check_pairs, teacher_features
from distill.strategies.schedules import Schedule, ScheduledDistillation, schedules_from
from distill.sweep import TeacherOutputs, distil_model, torch_threads, train_student
from distill.train import predict, validation_score

Progress = Callable[[str, int], Callable[[int, float], None] | None]


@dataclass
class Context:
    """What every strategy needs: config, data, teacher outputs and the chosen schedules."""

    config: DistillConfig
    ds: Dataset
    soft: TeacherOutputs
    teacher: object
    temperature: Schedule
    alpha: Schedule
    progress: Progress

    def task(self, alpha: Schedule | None = None) -> nn.Module:
        """The KD loss at the schedules' start; wrapped to follow them when they move."""
        alpha = alpha or self.alpha
        base = make_task(self.ds.task, self.temperature.start, alpha.start)
        if self.temperature.is_constant and alpha.is_constant:
            return base
        return ScheduledDistillation(base, self.temperature, alpha)

    def fresh(self, arch: ArchitectureConfig, seed_offset: int = 0) -> nn.Module:
        """A newly initialised network (seeded like the pipeline's students)."""
        torch.manual_seed(self.config.seed + seed_offset)
        return build_model(arch, self.ds.feature_shape, self.ds.n_outputs)

    def stage(self, name: str, model: nn.Module | None, seconds: float | None, **extra) -> dict:
        """A stage's report entry: test score (accuracy or negative MSE), params, training time."""
        outputs = self.soft.test if model is None else predict(model, self.ds.x_test)
        key = "accuracy" if self.ds.task == "classification" else "neg_mse"
        params = None if model is None else sum(p.numel() for p in model.parameters())
        return {"stage": name, key: validation_score(outputs, self.ds.y_test, self.ds.task), "params": params,
                "train_s": None if seconds is None else round(seconds, 3), **extra}


@dataclass
class StrategyResult:
    """The model to export, its architecture, and the report's ``strategy`` entry."""

    student: nn.Module
    architecture: ArchitectureConfig
    report: dict = field(default_factory=dict)


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def _teacher_stage(ctx: Context) -> dict:
    model = getattr(ctx.teacher, "model", None)
    return ctx.stage("teacher", model, None)


def run_kd(ctx: Context) -> tuple[nn.Module, ArchitectureConfig, list[dict], dict]:
    """Plain KD (Hinton et al.), with the configured temperature/alpha schedules."""
    config = ctx.config
    student, seconds = _timed(_distil_student, ctx, ctx.task(), "final student")
    return student, config.student.architecture, [_teacher_stage(ctx), ctx.stage("student", student, seconds)], {}


def _distil_student(ctx: Context, task: nn.Module, label: str, soft: TeacherOutputs | None = None,
                    extras_for=None) -> nn.Module:
    config = ctx.config
    settings = config.student.train
    with torch_threads(config.student_threads):
        return distil_model(config, ctx.ds, soft or ctx.soft, ctx.fresh(config.student.architecture), task,
                            settings, 1.0, ctx.progress(label, settings.epochs), extras_for)


def run_features(ctx: Context) -> tuple[nn.Module, ArchitectureConfig, list[dict], dict]:
    """KD plus intermediate-layer matching through learned projections."""
    config, settings = ctx.config, ctx.config.strategy.features
    student = ctx.fresh(config.student.architecture)
    t_shapes, s_shapes = check_pairs(ctx.teacher.model, student, ctx.ds.feature_shape, settings.pairs)
    task = FeatureDistillation(ctx.task(), student, settings.pairs, t_shapes, s_shapes, settings.beta)
    names = [pair.teacher for pair in settings.pairs]
    start = time.perf_counter()
    with torch_threads(config.student_threads):
        distil_model(config, ctx.ds, ctx.soft, student, task, config.student.train, 1.0,
                     ctx.progress("feature matching student", config.student.train.epochs),
                     lambda x: teacher_features(ctx.teacher.model, x, names))
    task.recorder.close()
    pairs = [{"teacher": p.teacher, "student": p.student, "teacher_shape": list(t), "student_shape": list(s),
              "projection": type(proj).__name__} for p, t, s, proj in zip(settings.pairs, t_shapes, s_shapes,
                                                                           task.projections)]
    stages = [_teacher_stage(ctx), ctx.stage("student", student, time.perf_counter() - start)]
    return student, config.student.architecture, stages, {"beta": settings.beta, "pairs": pairs}


def assistant_architecture(config: DistillConfig) -> ArchitectureConfig:
    """The configured assistant, or the student's architecture at twice its width."""
    given = config.strategy.progressive.assistant
    student = config.student.architecture
    return given or student.model_copy(update={"width": min(4096, 2 * student.width)})


def relabel(model: nn.Module, ds: Dataset) -> TeacherOutputs:
    """A trained model's outputs on every split: the next stage's soft labels."""
    return TeacherOutputs(*(predict(model, x) for x in (ds.x_train, ds.x_val, ds.x_test, ds.x_unlabeled)))


def run_progressive(ctx: Context) -> tuple[nn.Module, ArchitectureConfig, list[dict], dict]:
    """Teacher -> assistant -> student (Mirzadeh et al. 2020, teacher-assistant KD)."""
    config = ctx.config
    arch = assistant_architecture(config)
    settings = config.strategy.progressive.train or config.student.train
    start = time.perf_counter()
    with torch_threads(config.student_threads):
        assistant = distil_model(config, ctx.ds, ctx.soft, ctx.fresh(arch), ctx.task(), settings, 1.0,
                                 ctx.progress("assistant", settings.epochs))
        assistant_soft = relabel(assistant, ctx.ds)
    assistant_s = time.perf_counter() - start
    student, seconds = _timed(_distil_student, ctx, ctx.task(), "student (from assistant)", assistant_soft)
    stages = [_teacher_stage(ctx), ctx.stage("assistant", assistant, assistant_s),
              ctx.stage("student", student, seconds)]
    return student, config.student.architecture, stages, {"assistant_architecture": arch.model_dump()}


def run_born_again(ctx: Context) -> tuple[nn.Module, ArchitectureConfig, list[dict], dict]:
    """The teacher's architecture, from scratch, on the teacher's soft labels (Furlanello et al. 2018)."""
    config, settings = ctx.config, ctx.config.strategy.born_again
    train = settings.train or config.teacher.train
    start = time.perf_counter()
    with torch_threads(config.threads):
        # Another seed than the teacher's: same architecture, but not the teacher's starting weights.
        fresh = ctx.fresh(config.teacher.architecture, seed_offset=1)
        model = distil_model(config, ctx.ds, ctx.soft, fresh, ctx.task(), train,
                             settings.transfer_fraction, ctx.progress("born-again student", train.epochs))
    stages = [_teacher_stage(ctx), ctx.stage("born-again", model, time.perf_counter() - start)]
    gain = None
    if stages[0].get("accuracy") is not None:
        gain = stages[1]["accuracy"] - stages[0]["accuracy"]
    return model, config.teacher.architecture, stages, {"vs_teacher": gain,
                                                        "transfer_fraction": settings.transfer_fraction}


def run_data_free(ctx: Context) -> tuple[nn.Module, ArchitectureConfig, list[dict], dict]:
    """Student distilled on inputs synthesised from the teacher; no real input is used."""
    config, settings = ctx.config, ctx.config.strategy.data_free
    teacher, student = ctx.teacher.model, ctx.fresh(config.student.architecture)
    task = ctx.task(alpha=Schedule("constant", 1.0))  # no labels: the distillation term is all there is
    advance = ctx.progress("data-free rounds", settings.rounds)
    start = time.perf_counter()
    with torch_threads(config.threads):
        _, pool = distill_data_free(teacher, student, ctx.ds.feature_shape, ctx.ds.n_outputs, settings,
                                    config.student.train, task, config.seed,
                                    (lambda r: advance(r - 1, 0.0)) if advance else None)
    seconds = time.perf_counter() - start
    noise = np.random.default_rng(config.seed).standard_normal(pool.shape).astype(np.float32)
    gaps = {"synthetic": batchnorm_gap(teacher, pool), "real_train": batchnorm_gap(teacher, ctx.ds.x_train),
            "gaussian_noise": batchnorm_gap(teacher, noise)}
    details = {"synthetic_inputs": len(pool), "real_inputs_used": 0, "batchnorm_gap": gaps}
    return student, config.student.architecture, [_teacher_stage(ctx), ctx.stage("student", student, seconds)], details


RUNNERS = {"kd": run_kd, "features": run_features, "progressive": run_progressive,
           "born_again": run_born_again, "data_free": run_data_free}


def _reference_kd(ctx: Context) -> dict:
    """A plain-KD student (constant temperature/alpha, student schedule): the bar to beat."""
    config = ctx.config
    model, seconds = _timed(train_student, config, ctx.ds, ctx.soft, ctx.temperature.start, ctx.alpha.start,
                            config.student.train.epochs, 1.0, ctx.progress("plain KD (reference)",
                                                                           config.student.train.epochs))
    return ctx.stage("plain KD (reference)", model, seconds)


def run_strategy(config: DistillConfig, ds: Dataset, soft: TeacherOutputs, teacher, temperature: float,
                 alpha: float, progress: Progress | None = None) -> StrategyResult:
    """Train the final student with ``config.strategy`` around the sweep's (temperature, alpha)."""
    t_schedule, a_schedule = schedules_from(config.strategy.schedules, temperature, alpha)
    ctx = Context(config, ds, soft, teacher, t_schedule, a_schedule, progress or (lambda label, total: None))
    kind = config.strategy.kind
    student, arch, stages, details = RUNNERS[kind](ctx)
    report = {"kind": kind, "schedules": {"temperature": t_schedule.describe(), "alpha": a_schedule.describe()},
              "stages": stages, **details}
    if kind != "kd" and config.strategy.compare_with_kd:
        report["reference_kd"] = _reference_kd(ctx)
        report.update(compare(stages[-1], report["reference_kd"]))
    return StrategyResult(student, arch, report)


def compare(final: dict, reference: dict) -> dict:
    """Difference of the strategy's final model to plain KD, and whether it beat it."""
    key = "accuracy" if "accuracy" in final else "neg_mse"
    if final.get(key) is None or reference.get(key) is None:
        return {}
    gain = final[key] - reference[key]
    return {"vs_plain_kd": gain, "beats_plain_kd": bool(gain > 0)}


def check_strategy(config: DistillConfig, ds: Dataset) -> None:
    """Fail before any training when feature pairs name layers the networks do not have."""
    if config.strategy.kind != "features":
        return
    teacher = build_model(config.teacher.architecture, ds.feature_shape, ds.n_outputs)
    student = build_model(config.student.architecture, ds.feature_shape, ds.n_outputs)
    check_pairs(teacher, student, ds.feature_shape, config.strategy.features.pairs)


def strategy_rows(report: dict) -> list[dict]:
    """Flat rows for the report's Strategies table: every stage, the plain-KD reference, the baseline."""
    strategy = report["strategy"]
    teacher_accuracy = (report.get("teacher") or {}).get("accuracy")
    rows = []
    for stage in strategy["stages"] + ([strategy["reference_kd"]] if strategy.get("reference_kd") else []):
        row = {"model": stage["stage"], "test accuracy": stage.get("accuracy"), "params": stage["params"],
               "train_s": stage["train_s"]}
        if teacher_accuracy and stage.get("accuracy") is not None:
            row["retention"] = stage["accuracy"] / teacher_accuracy
        rows.append(row)
    rows[-1 if not strategy.get("reference_kd") else -2]["model"] += f" ({strategy['kind']}, exported)"
    baseline = report.get("baseline") or {}
    if baseline.get("accuracy") is not None:
        rows.append({"model": "baseline (no teacher)", "test accuracy": baseline["accuracy"],
                     "params": baseline.get("params"),
                     "retention": baseline["accuracy"] / teacher_accuracy if teacher_accuracy else None})
    return rows
