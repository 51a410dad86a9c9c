"""Data-free distillation: inputs synthesised from the teacher alone (no real input is read).

Each round optimises batches of random inputs so that the teacher (DeepInversion, Yin et
al. 2020) sees batch statistics matching its BatchNorm running mean/variance, predicts a
drawn target class confidently (targets are balanced over classes, so the pool is diverse),
and the input stays smooth; from the second round on, the inputs are also pushed to where
the current student disagrees with the teacher (the adversarial "competition" term of
Adaptive DeepInversion / DFAD). The student then distils on the teacher's logits for
every synthetic input so far.

Example:
    >>> x = synthesize_batch(teacher, None, (40,), 10, DataFreeConfig(steps=5), torch.Generator())  # doctest: +SKIP
    >>> x.shape  # doctest: +SKIP
    torch.Size([256, 40])
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.config import DataFreeConfig, TrainConfig
from distill.data import UNLABELED
from distill.train import fit, predict


class BatchNormStatistics:
    """Hooks on every BatchNorm of a model: distance of each batch's input statistics to the running ones."""

    def __init__(self, model: nn.Module):
        self.losses: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _hook(self, module, inputs, _output) -> None:
        x = inputs[0]
        dims = [0] + list(range(2, x.dim()))
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        self.losses.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    def pop(self) -> torch.Tensor:
        """Sum of the distances recorded since the last call (zero without BatchNorm layers)."""
        total = torch.stack(self.losses).sum() if self.losses else torch.zeros(())
        self.losses = []
        return total

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def smoothness_prior(x: torch.Tensor) -> torch.Tensor:
    """Total variation along the last axis plus an L2 term: keeps inputs signal-like and bounded."""
    return (x[..., 1:] - x[..., :-1]).abs().mean() + x.pow(2).mean()


def disagreement(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between the two predictive distributions (bounded, symmetric)."""
    p, q = F.softmax(teacher_logits, 1), F.softmax(student_logits, 1)
    m = ((p + q) / 2).clamp_min(1e-8)
    return 0.5 * ((p * (p.clamp_min(1e-8) / m).log()).sum(1) + (q * (q.clamp_min(1e-8) / m).log()).sum(1)).mean()


def synthesis_loss(teacher: nn.Module, student: nn.Module | None, x: torch.Tensor, targets: torch.Tensor,
                   bn: BatchNormStatistics, settings: DataFreeConfig) -> dict[str, torch.Tensor]:
    """Named terms of the synthesis objective (minimised over the inputs ``x``)."""
    logits = teacher(x)
    losses = {"bn": bn.pop(), "confidence": F.cross_entropy(logits, targets), "prior": smoothness_prior(x)}
    total = (settings.bn_weight * losses["bn"] + settings.confidence_weight * losses["confidence"]
             + settings.prior_weight * losses["prior"])
    if student is not None and settings.adversarial_weight > 0:
        losses["disagreement"] = disagreement(logits, student(x))
        total = total - settings.adversarial_weight * losses["disagreement"]
    losses["total"] = total
    return losses


def synthesize_batch(teacher: nn.Module, student: nn.Module | None, feature_shape: tuple[int, ...],
                     n_classes: int, settings: DataFreeConfig, generator: torch.Generator) -> torch.Tensor:
    """One batch of synthetic inputs, optimised with Adam from Gaussian noise."""
    x = torch.randn(settings.batch_size, *feature_shape, generator=generator).requires_grad_(True)
    targets = torch.randperm(settings.batch_size, generator=generator) % n_classes
    optimizer = torch.optim.Adam([x], lr=settings.lr)
    frozen = [teacher] + ([student] if student is not None else [])
    modes = [m.training for m in frozen]
    for model in frozen:
        model.eval().requires_grad_(False)
    bn = BatchNormStatistics(teacher)
    try:
        for _ in range(settings.steps):
            optimizer.zero_grad(set_to_none=True)
            synthesis_loss(teacher, student, x, targets, bn, settings)["total"].backward()
            optimizer.step()
    finally:
        bn.close()
        for model, mode in zip(frozen, modes):
            model.train(mode).requires_grad_(True)
    return x.detach()


def distill_data_free(teacher: nn.Module, student: nn.Module, feature_shape: tuple[int, ...], n_classes: int,
                      settings: DataFreeConfig, student_train: TrainConfig, task: nn.Module, seed: int,
                      on_round: Callable[[int], None] | None = None) -> tuple[nn.Module, np.ndarray]:
    """Train ``student`` in place on synthetic inputs only; returns (student, the synthetic pool)."""
    generator = torch.Generator().manual_seed(seed)
    pool: list[np.ndarray] = []
    per_round = student_train.model_copy(update={"epochs": settings.epochs_per_round})
    for round_index in range(settings.rounds):
        adversary = student if round_index > 0 else None
        for _ in range(-(-settings.samples_per_round // settings.batch_size)):
            pool.append(synthesize_batch(teacher, adversary, feature_shape, n_classes, settings, generator).numpy())
        x = np.concatenate(pool)
        fit(student, x, np.full(len(x), UNLABELED, np.int64), predict(teacher, x), task, per_round,
            seed + round_index)
        if on_round:
            on_round(round_index + 1)
    return student, np.concatenate(pool)


def batchnorm_gap(teacher: nn.Module, x: np.ndarray) -> float:
    """Summed distance of ``x``'s batch statistics to the teacher's running BatchNorm statistics."""
    bn = BatchNormStatistics(teacher)
    try:
        teacher.eval()
        with torch.no_grad():
            teacher(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        return float(bn.pop())
    finally:
        bn.close()
