"""Temperature and alpha schedules: constant, or linear from a start to an end value.

A schedule maps training progress (0 at the first step, 1 at the last) to a value.
``ScheduledDistillation`` wraps a classification KD task and moves its temperature and
alpha as ``fit`` reports progress, so any strategy's loss can be scheduled.

Example:
    >>> Schedule("linear", 4.0, 1.0).value(0.5)
    2.5
    >>> Schedule("constant", 4.0).value(0.9)
    4.0
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill.config import ScheduleConfig, SchedulesConfig


@dataclass(frozen=True)
class Schedule:
    """A value over training progress in [0, 1]."""

    shape: str
    start: float
    end: float | None = None

    def value(self, progress: float) -> float:
        if self.shape == "constant" or self.end is None:
            return self.start
        progress = min(1.0, max(0.0, progress))
        return self.start + (self.end - self.start) * progress

    @property
    def is_constant(self) -> bool:
        return self.shape == "constant" or self.end is None or self.end == self.start

    def describe(self) -> dict:
        return {"shape": self.shape, "start": self.start, "end": self.end if self.shape == "linear" else self.start}


def schedule_from(config: ScheduleConfig, default_start: float) -> Schedule:
    """The configured schedule; a missing start takes the sweep's choice, a missing end the start."""
    start = config.start if config.start is not None else default_start
    end = config.end if config.end is not None else start
    return Schedule(config.shape, float(start), float(end))


def schedules_from(config: SchedulesConfig, temperature: float, alpha: float) -> tuple[Schedule, Schedule]:
    """(temperature schedule, alpha schedule) around the sweep's chosen (temperature, alpha)."""
    return schedule_from(config.temperature, temperature), schedule_from(config.alpha, alpha)


class ScheduledDistillation(nn.Module):
    """A KD task whose ``temperature`` and ``alpha`` follow schedules (``fit`` calls set_progress)."""

    def __init__(self, task: nn.Module, temperature: Schedule, alpha: Schedule):
        super().__init__()
        self.task, self.temperature, self.alpha = task, temperature, alpha
        self.set_progress(0.0)

    def set_progress(self, progress: float) -> None:
        if hasattr(self.task, "temperature"):
            self.task.temperature = self.temperature.value(progress)
        self.task.alpha = self.alpha.value(progress)

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return self.task(*args, **kwargs)
