"""Temperature x alpha sweep on the validation split, plus the no-teacher baseline.

Each grid point trains a fresh student on a shortened schedule (``sweep.epochs`` over
``sweep.data_fraction`` of the transfer rows); the best on validation is then trained in
full by the pipeline. The baseline (same architecture, labeled rows only, no teacher) is
trained on its full schedule here and reported as a sweep row of kind "baseline".

Example:
    >>> runs = run_sweep(config, ds, soft)  # doctest: +SKIP
    >>> choose_best(runs).temperature  # doctest: +SKIP
    4.0
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from distill.config import DistillConfig, TrainConfig
from distill.data import Dataset
from distill.losses import make_task
from distill.models import build_model
from distill.train import fit, predict, transfer_rows, validation_score


@dataclass
class TeacherOutputs:
    """The teacher's logits for each split (from the soft-label cache)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    unlabeled: np.ndarray


@dataclass
class SweepRun:
    """One trained student of the sweep (or the baseline) and its validation result."""

    kind: str  # "kd" | "baseline"
    temperature: float | None
    alpha: float
    val_score: float
    val_agreement: float | None
    params: int
    model: torch.nn.Module = field(repr=False)
    chosen: bool = False
    epochs: int = 0
    data_fraction: float = 1.0

    def row(self, task: str, latency_ms_batch1: float | None) -> dict:
        """The report's sweep entry for this run."""
        score_key = "val_accuracy" if task == "classification" else "val_neg_mse"
        return {"kind": self.kind, "temperature": self.temperature, "alpha": self.alpha,
                score_key: self.val_score, "val_agreement": self.val_agreement, "params": self.params,
                "latency_ms_batch1": latency_ms_batch1, "chosen": self.chosen, "epochs": self.epochs,
                "data_fraction": self.data_fraction}


def train_student(config: DistillConfig, ds: Dataset, soft: TeacherOutputs | None, temperature: float,
                  alpha: float, epochs: int, fraction: float,
                  on_epoch: Callable[[int, float], None] | None = None) -> torch.nn.Module:
    """A fresh student trained with (temperature, alpha); ``soft`` None trains the baseline."""
    with torch_threads(config.student_threads):
        return _train_student(config, ds, soft, temperature, alpha, epochs, fraction, on_epoch)


@contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch intra-op threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train_student(config: DistillConfig, ds: Dataset, soft: TeacherOutputs | None, temperature: float,
                   alpha: float, epochs: int, fraction: float, on_epoch) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    model = build_model(config.student.architecture, ds.feature_shape, ds.n_outputs)
    if soft is None:
        settings = config.student.baseline_train.model_copy(update={"epochs": epochs})
        return fit(model, ds.x_train, ds.y_train, None, make_task(ds.task), settings, config.seed, on_epoch)
    settings = config.student.train.model_copy(update={"epochs": epochs})
    return distil_model(config, ds, soft, model, make_task(ds.task, temperature, alpha), settings, fraction,
                        on_epoch)


def distil_model(config: DistillConfig, ds: Dataset, soft: TeacherOutputs, model: torch.nn.Module,
                 task: torch.nn.Module, settings: TrainConfig, fraction: float,
                 on_epoch: Callable[[int, float], None] | None = None,
                 extras_for: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None) -> torch.nn.Module:
    """Train ``model`` with ``task`` on the labeled rows plus ``fraction`` of the transfer rows.

    ``extras_for(x)`` may return per-row arrays for the task (e.g. the teacher's features).
    """
    x, y, t = transfer_rows(ds, soft.train, soft.unlabeled, fraction, config.seed)
    extras = extras_for(x) if extras_for else None
    return fit(model, x, y, t, task, settings, config.seed, on_epoch, extras)


def evaluate_run(kind: str, temperature: float | None, alpha: float, model: torch.nn.Module,
                 ds: Dataset, soft: TeacherOutputs, epochs: int, fraction: float) -> SweepRun:
    """Validation score and agreement with the teacher on the validation split."""
    outputs = predict(model, ds.x_val)
    agreement = (float(np.mean(outputs.argmax(1) == soft.val.argmax(1)))
                 if ds.task == "classification" else None)
    return SweepRun(kind=kind, temperature=temperature, alpha=alpha,
                    val_score=validation_score(outputs, ds.y_val, ds.task), val_agreement=agreement,
                    params=sum(p.numel() for p in model.parameters()), model=model, epochs=epochs,
                    data_fraction=fraction)


def run_sweep(config: DistillConfig, ds: Dataset, soft: TeacherOutputs,
              on_run: Callable[[str, int], Callable[[int, float], None]] | None = None) -> list[SweepRun]:
    """Every (temperature, alpha) on the short schedule, then the baseline on its full one.

    ``on_run(label, epochs)`` may return a per-epoch callback (a progress bar per run).
    """
    runs = []
    grid = [(t, a) for t in config.sweep.temperatures for a in config.sweep.alphas]
    for temperature, alpha in grid:
        label = f"sweep T={temperature:g} alpha={alpha:g}"
        callback = on_run(label, config.sweep.epochs) if on_run else None
        model = train_student(config, ds, soft, temperature, alpha, config.sweep.epochs,
                              config.sweep.data_fraction, callback)
        runs.append(evaluate_run("kd", temperature, alpha, model, ds, soft,
                                 config.sweep.epochs, config.sweep.data_fraction))
    epochs = config.student.baseline_train.epochs
    callback = on_run("baseline (no teacher)", epochs) if on_run else None
    baseline = train_student(config, ds, None, 1.0, 0.0, epochs, 1.0, callback)
    runs.append(evaluate_run("baseline", None, 0.0, baseline, ds, soft, epochs, 1.0))
    return runs


def choose_best(runs: list[SweepRun]) -> SweepRun:
    """The distilled run with the best validation score (ties: higher agreement, then order).

    The baseline is never chosen: it is the yardstick the chosen student has to beat.
    """
    candidates = [r for r in runs if r.kind == "kd"]
    best = max(candidates, key=lambda r: (r.val_score, r.val_agreement or 0.0))
    for run in runs:
        run.chosen = run is best
    return best
