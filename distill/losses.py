"""Distillation losses as tasks whose forward returns a dict of named losses (timm style).

Classification (Hinton et al. 2015)::

    total = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

The KL term is averaged over every row; the CE term only over labeled rows (label -1 marks a
transfer row the teacher labeled but no person did), so unlabeled rows carry no CE term.
Regression teachers use MSE to the teacher's outputs in place of KL, and MSE to y for CE.

Example:
    >>> task = ClassificationDistillation(temperature=4.0, alpha=0.7)
    >>> losses = task(student_logits, teacher_logits, y)  # doctest: +SKIP
    >>> sorted(losses)  # doctest: +SKIP
    ['ce', 'kd', 'total']
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.data import UNLABELED


def _labeled_mean(per_row: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    """Mean over labeled rows; zero (still differentiable) when a batch has none."""
    if labeled.any():
        return per_row[labeled].mean()
    return per_row.sum() * 0.0


class ClassificationDistillation(nn.Module):
    """KD loss for classifiers; ``teacher_logits`` may be None (plain CE: teacher and baseline)."""

    def __init__(self, temperature: float = 1.0, alpha: float = 0.0):
        super().__init__()
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise ValueError(f"need temperature > 0 and alpha in [0, 1], got {temperature}, {alpha}")
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                y: torch.Tensor) -> dict[str, torch.Tensor]:
        labeled = y != UNLABELED
        ce_rows = F.cross_entropy(student_logits, y.clamp(min=0), reduction="none")
        ce = _labeled_mean(ce_rows, labeled)
        if teacher_logits is None or self.alpha == 0:
            return {"ce": ce, "total": ce}
        t = self.temperature
        log_p_student = F.log_softmax(student_logits / t, dim=1)
        log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
        kl_rows = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
        # T^2 keeps the gradient scale of the soft term independent of T (Hinton et al.).
        kd = kl_rows.mean() * t * t
        return {"kd": kd, "ce": ce, "total": self.alpha * kd + (1 - self.alpha) * ce}


class RegressionDistillation(nn.Module):
    """MSE to the teacher's outputs (all rows) and to the targets (labeled rows only).

    Unlabeled rows are marked by NaN targets, since -1 is a valid regression target.
    """

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor | None,
                y: torch.Tensor) -> dict[str, torch.Tensor]:
        y = y.reshape(student_out.shape)
        labeled = ~torch.isnan(y).any(dim=1)
        mse_rows = ((student_out - torch.nan_to_num(y)) ** 2).mean(dim=1)
        mse = _labeled_mean(mse_rows, labeled)
        if teacher_out is None or self.alpha == 0:
            return {"mse": mse, "total": mse}
        kd = F.mse_loss(student_out, teacher_out)
        return {"kd": kd, "mse": mse, "total": self.alpha * kd + (1 - self.alpha) * mse}


class EmbeddingDistillation(nn.Module):
    """Sentence-embedding distillation: ``1 - cos(student, teacher)`` plus weighted MSE, plus an
    optional label term.

    The MSE is multiplied by the embedding width: for unit vectors ``dim * MSE = 2 - 2 cos``, so
    both terms share one scale and ``mse_weight`` means what it says. Every row, labelled or
    transfer, carries the teacher's embedding. With ``label_weight`` and ``centroids`` (the
    teacher's mean embedding per class, ``[classes, dim]``), a labelled row also pays the
    cross-entropy of its label under logits ``LABEL_SCALE * cos(student, centroid)``: it is pulled
    toward its class's region *of the teacher's space*, so the label sharpens the embedding without
    a head of its own that could take it elsewhere. Transfer rows (label UNLABELED) skip it.
    """

    LABEL_SCALE = 16.0   # cosine logits in [-16, 16]: a confident softmax over a few classes

    def __init__(self, mse_weight: float = 1.0, label_weight: float = 0.0, centroids: np.ndarray | None = None):
        super().__init__()
        self.mse_weight, self.label_weight = mse_weight, label_weight
        self.register_buffer("centroids", None if centroids is None or not label_weight else
                             F.normalize(torch.as_tensor(np.asarray(centroids), dtype=torch.float32), dim=1))

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor,
                y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cosine = (1 - F.cosine_similarity(student_out, teacher_out, dim=1)).mean()
        mse = F.mse_loss(student_out, teacher_out) * student_out.shape[1]
        losses = {"cosine": cosine, "mse": mse, "total": cosine + self.mse_weight * mse}
        labelled = None if self.centroids is None or y is None else y >= 0
        if labelled is not None and bool(labelled.any()):
            logits = self.LABEL_SCALE * F.normalize(student_out[labelled], dim=1) @ self.centroids.T
            losses["label"] = F.cross_entropy(logits, y[labelled])
            losses["total"] = losses["total"] + self.label_weight * losses["label"]
        return losses


def make_task(task: str, temperature: float = 1.0, alpha: float = 0.0) -> nn.Module:
    """The loss module for ``task`` ('classification' or 'regression')."""
    if task == "regression":
        return RegressionDistillation(alpha)
    return ClassificationDistillation(temperature, alpha)
