"""Feature matching (FitNets, Romero et al. 2015): intermediate layers, matched by module name.

For each (teacher layer, student layer) pair the student's feature map is mapped to the
teacher's width by a learned 1x1 projection (only where the widths differ, so identical
features give exactly zero loss), the longer map is average-pooled to the shorter one, and
the mean squared difference is added to the KD loss with weight ``beta``::

    total = kd_total + beta * mean_over_pairs(MSE(project(student_feature), teacher_feature))

The teacher is frozen and training has no augmentation, so its features are computed once
per row (``teacher_features``) and handed to ``fit`` as per-row extras.

Example:
    >>> task = FeatureDistillation(kd_task, student, pairs, widths)  # doctest: +SKIP
    >>> sorted(task(student(x), t_logits, y, feat_0=t_feats))  # doctest: +SKIP
    ['ce', 'feature', 'feature_0', 'kd', 'total']
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.config import LayerPair
from distill.errors import ConfigError

EXTRA_PREFIX = "feat_"


def module_by_name(model: nn.Module, name: str, role: str) -> nn.Module:
    """The named submodule, or a ConfigError listing the names that exist."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        choices = ", ".join(n for n in modules if n)
        raise ConfigError(f"strategy.features.pairs: {role} has no module '{name}'; it has: {choices}")
    return modules[name]


class FeatureRecorder:
    """Forward hooks that keep the latest output of named modules."""

    def __init__(self, model: nn.Module, names: list[str], role: str):
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [module_by_name(model, name, role).register_forward_hook(self._keep(name))
                        for name in names]

    def _keep(self, name: str):
        def hook(_module, _inputs, output):
            self.outputs[name] = output
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def align(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the longer of two [batch, channels, *spatial] maps to the other's spatial size."""
    if student.dim() <= 2 or student.shape[2:] == teacher.shape[2:]:
        return student, teacher
    pool = F.adaptive_avg_pool1d if student.dim() == 3 else F.adaptive_avg_pool2d
    if student.shape[2:].numel() > teacher.shape[2:].numel():
        return pool(student, teacher.shape[2:]), teacher
    return student, pool(teacher, student.shape[2:])


def projection(student_width: int, teacher_width: int, dims: int) -> nn.Module:
    """Identity when widths agree; otherwise a learned linear map over channels (1x1 conv)."""
    if student_width == teacher_width:
        return nn.Identity()
    if dims == 2:
        return nn.Linear(student_width, teacher_width, bias=False)
    conv = nn.Conv1d if dims == 3 else nn.Conv2d
    return conv(student_width, teacher_width, kernel_size=1, bias=False)


class FeatureDistillation(nn.Module):
    """KD task plus feature matching; needs ``feat_<i>`` teacher features per pair as keyword args."""

    def __init__(self, kd_task: nn.Module, student: nn.Module, pairs: list[LayerPair],
                 teacher_shapes: list[tuple[int, ...]], student_shapes: list[tuple[int, ...]], beta: float):
        super().__init__()
        self.kd_task, self.beta = kd_task, beta
        self.student_names = [pair.student for pair in pairs]
        self.recorder = FeatureRecorder(student, self.student_names, "the student")
        self.projections = nn.ModuleList(
            projection(s[0], t[0], len(s) + 1) for s, t in zip(student_shapes, teacher_shapes))

    def set_progress(self, progress: float) -> None:
        if hasattr(self.kd_task, "set_progress"):
            self.kd_task.set_progress(progress)

    def feature_losses(self, teacher_features: list[torch.Tensor]) -> list[torch.Tensor]:
        losses = []
        for name, project, target in zip(self.student_names, self.projections, teacher_features):
            student, target = align(project(self.recorder.outputs[name]), target)
            losses.append(F.mse_loss(student, target))
        return losses

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, y: torch.Tensor,
                **teacher_features: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = dict(self.kd_task(student_logits, teacher_logits, y))
        targets = [teacher_features[f"{EXTRA_PREFIX}{i}"] for i in range(len(self.student_names))]
        per_pair = self.feature_losses(targets)
        for index, loss in enumerate(per_pair):
            losses[f"feature_{index}"] = loss
        losses["feature"] = torch.stack(per_pair).mean()
        losses["total"] = losses["total"] + self.beta * losses["feature"]
        return losses


@torch.no_grad()
def teacher_features(teacher: nn.Module, x: np.ndarray, names: list[str], batch: int = 2048) -> dict[str, np.ndarray]:
    """The teacher's named feature maps for every row of ``x``, as ``feat_<i>`` arrays."""
    recorder = FeatureRecorder(teacher, names, "the teacher")
    teacher.eval()
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    try:
        for start in range(0, len(x), batch):
            teacher(torch.from_numpy(np.ascontiguousarray(x[start:start + batch], np.float32)))
            for index, name in enumerate(names):
                chunks[index].append(recorder.outputs[name].numpy())
    finally:
        recorder.close()
    return {f"{EXTRA_PREFIX}{i}": np.concatenate(parts) for i, parts in enumerate(chunks)}


@torch.no_grad()
def feature_shapes(model: nn.Module, feature_shape: tuple[int, ...], names: list[str], role: str) -> list[tuple]:
    """Per-row shape of each named module's output (one probe forward pass in eval mode)."""
    recorder = FeatureRecorder(model, names, role)
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(2, *feature_shape))
        return [tuple(recorder.outputs[name].shape[1:]) for name in names]
    finally:
        recorder.close()
        model.train(was_training)


def check_pairs(teacher: nn.Module, student: nn.Module, feature_shape: tuple[int, ...],
                pairs: list[LayerPair]) -> tuple[list[tuple], list[tuple]]:
    """Teacher and student feature shapes per pair; ConfigError for unknown names or ranks that differ."""
    t_shapes = feature_shapes(teacher, feature_shape, [p.teacher for p in pairs], "the teacher")
    s_shapes = feature_shapes(student, feature_shape, [p.student for p in pairs], "the student")
    for pair, t, s in zip(pairs, t_shapes, s_shapes):
        if len(t) != len(s):
            raise ConfigError(f"strategy.features.pairs: teacher {pair.teacher} gives shape {list(t)} but student "
                              f"{pair.student} gives {list(s)}; matched layers need the same rank")
    return t_shapes, s_shapes
