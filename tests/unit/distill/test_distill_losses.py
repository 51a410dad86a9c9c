"""The distillation loss pinned to its definition (Hinton et al. 2015)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.data import UNLABELED
from distill.losses import ClassificationDistillation, RegressionDistillation


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g), torch.tensor([0, 1, 2, 3, 4, 0])


def _kl(teacher, student, t):
    return F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean")


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_alpha_one_is_t_squared_kl(logits, temperature):
    student, teacher, y = logits
    losses = ClassificationDistillation(temperature, alpha=1.0)(student, teacher, y)
    expected = temperature ** 2 * _kl(teacher, student, temperature)
    assert torch.allclose(losses["total"], expected, atol=1e-6)
    assert torch.allclose(losses["kd"], expected, atol=1e-6)


def test_alpha_zero_is_plain_cross_entropy(logits):
    student, teacher, y = logits
    losses = ClassificationDistillation(8.0, alpha=0.0)(student, teacher, y)
    assert torch.allclose(losses["total"], F.cross_entropy(student, y), atol=1e-6)


def test_mixture_weights_both_terms(logits):
    student, teacher, y = logits
    losses = ClassificationDistillation(2.0, alpha=0.7)(student, teacher, y)
    expected = 0.7 * 4.0 * _kl(teacher, student, 2.0) + 0.3 * F.cross_entropy(student, y)
    assert torch.allclose(losses["total"], expected, atol=1e-6)


def test_unlabeled_rows_carry_no_ce_term(logits):
    student, teacher, y = logits
    y_partly = y.clone()
    y_partly[3:] = UNLABELED
    losses = ClassificationDistillation(4.0, alpha=0.5)(student, teacher, y_partly)
    assert torch.allclose(losses["ce"], F.cross_entropy(student[:3], y[:3]), atol=1e-6)
    # The CE gradient never reaches unlabeled rows when alpha = 0 ...
    student_param = student.clone().requires_grad_(True)
    ClassificationDistillation(4.0, alpha=0.0)(student_param, teacher, y_partly)["total"].backward()
    assert torch.all(student_param.grad[3:] == 0) and torch.any(student_param.grad[:3] != 0)
    # ... and a batch of only unlabeled rows has CE zero and the distillation term alone.
    all_unlabeled = torch.full_like(y, UNLABELED)
    only = ClassificationDistillation(4.0, alpha=0.5)(student, teacher, all_unlabeled)
    assert float(only["ce"]) == 0.0
    assert torch.allclose(only["total"], 0.5 * 16.0 * _kl(teacher, student, 4.0), atol=1e-6)


def test_regression_uses_mse_to_teacher_and_labeled_targets():
    student = torch.tensor([[1.0], [2.0], [3.0]])
    teacher = torch.tensor([[0.0], [2.0], [5.0]])
    y = torch.tensor([1.5, float("nan"), 3.0])
    losses = RegressionDistillation(alpha=0.5)(student, teacher, y)
    assert torch.isclose(losses["kd"], torch.tensor((1 + 0 + 4) / 3))
    assert torch.isclose(losses["mse"], torch.tensor((0.25 + 0.0) / 2))
    assert torch.isclose(losses["total"], 0.5 * losses["kd"] + 0.5 * losses["mse"])


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError):
        ClassificationDistillation(0.0, 0.5)
    with pytest.raises(ValueError):
        ClassificationDistillation(1.0, 1.5)
