"""Training loop shared by teacher, students and the no-teacher baseline.

AdamW with a one-cycle learning-rate schedule: it reaches good accuracy in few epochs,
which matters on a 2-core CPU. The loss is a distillation task from distill.losses, so
the same loop trains with soft labels (alpha > 0) or plain labels (teacher_logits None).

Example:
    >>> model = fit(build_model(arch, (40,), 10), x, y, None, make_task("classification"),
    ...             TrainConfig(epochs=5), seed=0)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from distill.config import TrainConfig
from distill.data import UNLABELED, Dataset

EVAL_BATCH = 4096


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, teacher_logits: np.ndarray | None,
        task: nn.Module, settings: TrainConfig, seed: int,
        on_epoch: Callable[[int, float], None] | None = None,
        extras: dict[str, np.ndarray] | None = None) -> nn.Module:
    """Train ``model`` in place on (x, y[, teacher_logits]) and return it in eval mode.

    Labels of transfer rows are UNLABELED (classification) or NaN (regression); the task
    gives them the distillation term only. ``on_epoch(epoch, mean_total_loss)`` reports progress.
    Tasks with parameters of their own (feature projections) are optimised with the model;
    ``extras`` are per-row arrays passed to the task by name (e.g. teacher features), and a
    task with ``set_progress(fraction)`` hears how far training is (temperature/alpha schedules).
    """
    generator = torch.Generator().manual_seed(seed)
    xs, ys, ts = _tensor(x), _tensor(y), _tensor(teacher_logits)
    per_row = {name: _tensor(values) for name, values in (extras or {}).items()}
    n_rows = len(xs)
    batch = min(settings.batch_size, n_rows)
    steps_per_epoch = -(-n_rows // batch)
    total_steps = settings.epochs * steps_per_epoch
    optimizer, schedule = _optimizer(list(model.parameters()) + list(task.parameters()), settings, total_steps)
    set_progress = getattr(task, "set_progress", None)
    model.train()
    for epoch in range(settings.epochs):
        order = torch.randperm(n_rows, generator=generator)
        total = 0.0
        for step, start in enumerate(range(0, n_rows, batch)):
            rows = order[start:start + batch]
            if set_progress:
                set_progress((epoch * steps_per_epoch + step) / max(1, total_steps - 1))
            losses = task(model(xs[rows]), None if ts is None else ts[rows], ys[rows],
                          **{name: values[rows] for name, values in per_row.items()})
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            schedule.step()
            total += float(losses["total"].detach()) * len(rows)
        if on_epoch:
            on_epoch(epoch, total / n_rows)
    return model.eval()


def _optimizer(parameters: list, settings: TrainConfig, total_steps: int):
    """AdamW with a one-cycle learning-rate schedule over ``total_steps``."""
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=total_steps)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Model outputs for ``x`` in large batches (eval mode, no autograd)."""
    model.eval()
    xs = _tensor(np.asarray(x, np.float32))
    return torch.cat([model(xs[i:i + EVAL_BATCH]) for i in range(0, len(xs), EVAL_BATCH)]).numpy()


def validation_score(outputs: np.ndarray, y: np.ndarray, task: str) -> float:
    """Higher is better: accuracy (classification) or negative MSE (regression)."""
    if task == "regression":
        return -float(np.mean((outputs.reshape(y.shape[0], -1) - y.reshape(y.shape[0], -1)) ** 2))
    return float(np.mean(outputs.argmax(axis=1) == y))


def transfer_rows(ds: Dataset, train_soft: np.ndarray, unlabeled_soft: np.ndarray, fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labeled train rows plus (a ``fraction`` of) the transfer rows, with teacher outputs.

    Transfer rows get label UNLABELED (classification) or NaN targets (regression).
    """
    n_unlabeled = len(ds.x_unlabeled)
    keep = np.arange(n_unlabeled)
    if fraction < 1.0 and n_unlabeled:  # fraction 0: the labeled rows alone
        count = max(1, int(n_unlabeled * fraction)) if fraction > 0 else 0
        keep = np.random.default_rng(seed).permutation(n_unlabeled)[:count]
    if ds.task == "regression":
        filler = np.full((len(keep), *ds.y_train.shape[1:]), np.nan, np.float32)
    else:
        filler = np.full(len(keep), UNLABELED, np.int64)
    x = np.concatenate([ds.x_train, ds.x_unlabeled[keep]])
    y = np.concatenate([ds.y_train, filler])
    soft = np.concatenate([train_soft, unlabeled_soft[keep]]).astype(np.float32)
    return x, y, soft
