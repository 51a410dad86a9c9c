"""How close the student's answer is to the teacher's, row by row.

Classification outputs are raw logits (softmax is not in the exported graph, see
docs/artifacts.md); they are turned into probabilities here and compared by top-1
agreement, KL(teacher || student) in nats, Jensen-Shannon distance (base 2, so it lies
in [0, 1]) and the largest absolute probability gap. Regression compares by mean
absolute error, embeddings by cosine similarity; each has a tolerance deciding
``agree``, which is what the capture store and the agreement gate use.

Example::

    comps = compare_classification(teacher_logits, student_logits)
    agreement = sum(c.agree for c in comps) / len(comps)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gateway.core.errors import ComparisonError

PROB_FLOOR = 1e-7  # clip probabilities so a confident wrong student gives a large, finite KL
Task = Literal["classification", "regression", "embedding"]


@dataclass(frozen=True)
class Comparison:
    """One teacher/student pair. Fields that do not apply to the task are None."""

    agree: bool
    kl: float | None = None
    js_distance: float | None = None
    max_prob_gap: float | None = None
    teacher_class: int | None = None
    student_class: int | None = None
    abs_error: float | None = None
    cosine: float | None = None


def _as_pair(teacher: np.ndarray, student: np.ndarray, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(teacher, dtype=np.float64)
    s = np.asarray(student, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t  # one output per row, e.g. regression [n]
    s = s[:, None] if s.ndim == 1 else s
    if t.shape != s.shape or t.ndim != 2:
        raise ComparisonError(f"{what}: teacher shape {t.shape} and student shape {s.shape} differ or are not 2-D")
    if not (np.isfinite(t).all() and np.isfinite(s).all()):
        raise ComparisonError(f"{what}: outputs contain NaN or Inf")
    return t, s


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p_c, q_c = np.clip(p, PROB_FLOOR, 1.0), np.clip(q, PROB_FLOOR, 1.0)
    return np.maximum((p_c * (np.log(p_c) - np.log(q_c))).sum(axis=1), 0.0)


def _js_distance_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (p + q)

    def kl_bits(a: np.ndarray) -> np.ndarray:
        # 0 * log 0 = 0; where a > 0, m >= a / 2 > 0, so no clipping is needed.
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)
        return (a * np.log2(ratio)).sum(axis=1)

    js = 0.5 * kl_bits(p) + 0.5 * kl_bits(q)
    return np.sqrt(np.clip(js, 0.0, 1.0))


def compare_classification(teacher_logits: np.ndarray, student_logits: np.ndarray) -> list[Comparison]:
    """Compare logits ``[n, classes]`` row by row.

    >>> c = compare_classification(np.array([[2.0, 0.0]]), np.array([[2.0, 0.0]]))[0]
    >>> c.agree, c.kl, c.js_distance
    (True, 0.0, 0.0)
    """
    t, s = _as_pair(teacher_logits, student_logits, what="classification")
    p, q = softmax(t), softmax(s)
    t_cls, s_cls = p.argmax(axis=1), q.argmax(axis=1)
    kl, js = _kl_rows(p, q), _js_distance_rows(p, q)
    gap = np.abs(p - q).max(axis=1)
    return [
        Comparison(
            agree=bool(tc == sc), kl=float(k), js_distance=float(j), max_prob_gap=float(g),
            teacher_class=int(tc), student_class=int(sc),
        )
        for tc, sc, k, j, g in zip(t_cls, s_cls, kl, js, gap)
    ]


def compare_regression(teacher: np.ndarray, student: np.ndarray, *, tolerance: float = 0.1) -> list[Comparison]:
    """Compare predictions ``[n]`` or ``[n, outputs]`` by mean absolute error per row.

    >>> compare_regression(np.array([1.0, 2.0]), np.array([1.05, 3.0]), tolerance=0.1)[1].abs_error
    1.0
    """
    t, s = _as_pair(teacher, student, what="regression")
    err = np.abs(t - s).mean(axis=1)
    return [Comparison(agree=bool(e <= tolerance), abs_error=float(e)) for e in err]


def compare_embeddings(teacher: np.ndarray, student: np.ndarray, *, min_cosine: float = 0.95) -> list[Comparison]:
    """Compare embeddings ``[n, dims]`` by cosine similarity (two zero vectors count as 1).

    >>> compare_embeddings(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]]))[0].cosine
    0.0
    """
    t, s = _as_pair(teacher, student, what="embedding")
    norms = np.linalg.norm(t, axis=1) * np.linalg.norm(s, axis=1)
    dots = (t * s).sum(axis=1)
    both_zero = (np.abs(t).sum(axis=1) == 0) & (np.abs(s).sum(axis=1) == 0)
    cos = np.divide(dots, norms, out=np.where(both_zero, 1.0, 0.0), where=norms > 0)
    cos = np.clip(cos, -1.0, 1.0)
    return [Comparison(agree=bool(c >= min_cosine), cosine=float(c)) for c in cos]


def compare_outputs(
    task: Task, teacher: np.ndarray, student: np.ndarray, *,
    regression_tolerance: float = 0.1, embedding_min_cosine: float = 0.95,
) -> list[Comparison]:
    """Dispatch on the gateway's ``task`` (tolerances come from ``ShadowConfig``)."""
    if task == "classification":
        return compare_classification(teacher, student)
    if task == "regression":
        return compare_regression(teacher, student, tolerance=regression_tolerance)
    if task == "embedding":
        return compare_embeddings(teacher, student, min_cosine=embedding_min_cosine)
    raise ComparisonError(f"unknown task {task!r}")
