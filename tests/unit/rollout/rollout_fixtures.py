"""Builders for rollout unit tests: explicit observations and a fake clock."""
from __future__ import annotations

import math

from gateway.rollout.core.observations import LatencyHistogram, Observations, Window

BOUNDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, math.inf)
TEACHER, STUDENT = "teacher", "student"
REFERENCE = [[0.25, 0.25, 0.25, 0.25]] * 3  # 3 features x 4 bins, uniform


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


def histogram_at(latency_s: float, n: int) -> LatencyHistogram:
    """All ``n`` samples in the bucket whose upper bound is the first >= ``latency_s``."""
    slot = next(i for i, b in enumerate(BOUNDS) if latency_s <= b)
    return LatencyHistogram(BOUNDS, tuple(n if i == slot else 0 for i in range(len(BOUNDS))))


def make_obs(n: int = 1000, *, agree: float = 0.97, kl: float = 0.02, student_s: float = 0.004,
             teacher_s: float = 0.02, error_rate: float = 0.0, class_shift: float = 0.0,
             input_shift: float = 0.0, student_route: str = "shadow", student_usd: float = 0.1,
             teacher_usd: float = 1.0, window: Window = Window(0.0, 60.0)) -> Observations:
    """Observations of ``n`` requests per variant with the given properties.

    ``class_shift`` moves that share of the student's predictions from class 0 to class 1;
    ``input_shift`` moves that share of every feature's rows from the first bins to the last.
    """
    teacher_classes = [n // 4] * 4
    moved = int(class_shift * n)
    student_classes = [n // 4 - min(moved, n // 4), n // 4 + min(moved, n // 4), n // 4, n // 4]
    shifted = int(input_shift * n)
    rows = [n // 4] * 4
    row = [rows[0] - min(shifted, n // 4), rows[1], rows[2], rows[3] + min(shifted, n // 4)]
    errors = int(round(error_rate * n))
    return Observations(
        window=window, teacher=TEACHER, student=STUDENT, compared=n, agreements=int(round(agree * n)),
        kl_sum=kl * n, requests={TEACHER: n, STUDENT: n}, errors={TEACHER: 0, STUDENT: errors},
        inferences={TEACHER: n, STUDENT: n - errors}, cost_usd={TEACHER: teacher_usd * n, STUDENT: student_usd * n},
        latency={TEACHER: {"primary": histogram_at(teacher_s, n)},
                 STUDENT: {student_route: histogram_at(student_s, n)}},
        class_counts={TEACHER: teacher_classes, STUDENT: student_classes},
        input_bins=tuple(tuple(row) for _ in REFERENCE), input_reference=REFERENCE,
    )


HEALTHY = make_obs()
TOO_FEW = make_obs(n=40)
LOW_AGREEMENT = make_obs(agree=0.80)
SLOW = make_obs(student_s=0.09)            # 90 ms vs teacher 20 ms x 1.5
INPUT_DRIFT = make_obs(input_shift=0.2)    # 20 % of rows moved between bins
OUTPUT_DRIFT = make_obs(class_shift=0.2)
ERRORING = make_obs(error_rate=0.05)
