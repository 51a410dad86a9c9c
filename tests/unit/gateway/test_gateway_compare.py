"""Answer comparison: known values for agreement, KL, JS distance, gaps, errors, cosine."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.core.compare import (
    compare_classification,
    compare_embeddings,
    compare_outputs,
    compare_regression,
    softmax,
)
from gateway.core.errors import ComparisonError


def _logits_of(probs) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64))


def test_identical_logits_agree_with_zero_divergence():
    logits = np.random.default_rng(0).normal(size=(5, 10))
    for c in compare_classification(logits, logits.copy()):
        assert c.agree
        assert c.kl == pytest.approx(0.0, abs=1e-12)
        assert c.js_distance == pytest.approx(0.0, abs=1e-6)
        assert c.max_prob_gap == pytest.approx(0.0, abs=1e-12)
        assert c.teacher_class == c.student_class


def test_shifted_logits_are_the_same_distribution():
    logits = np.array([[1.0, 2.0, 3.0]])
    c = compare_classification(logits, logits + 100.0)[0]
    assert c.kl == pytest.approx(0.0, abs=1e-12)


def test_disjoint_one_hot_has_js_distance_one():
    teacher = np.array([[60.0, -60.0]])
    student = np.array([[-60.0, 60.0]])
    c = compare_classification(teacher, student)[0]
    assert not c.agree
    assert (c.teacher_class, c.student_class) == (0, 1)
    assert c.js_distance == pytest.approx(1.0, abs=1e-6)
    assert c.max_prob_gap == pytest.approx(1.0, abs=1e-6)
    # Clipping keeps KL finite: ln(1 / PROB_FLOOR) ~ 16.1 nats.
    assert math.isfinite(c.kl) and c.kl == pytest.approx(-math.log(1e-7), rel=1e-3)


def test_kl_and_js_known_values():
    p, q = [0.5, 0.5], [0.9, 0.1]
    c = compare_classification(_logits_of([p]), _logits_of([q]))[0]
    assert c.kl == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), rel=1e-9)
    m = [0.7, 0.3]
    js_bits = 0.5 * sum(a * math.log2(a / b) for a, b in zip(p, m)) + 0.5 * sum(
        a * math.log2(a / b) for a, b in zip(q, m)
    )
    assert c.js_distance == pytest.approx(math.sqrt(js_bits), rel=1e-9)
    assert c.max_prob_gap == pytest.approx(0.4)
    assert c.agree  # argmax of [0.5, 0.5] is class 0, as for q


def test_kl_is_teacher_to_student_not_symmetric():
    p, q = _logits_of([[0.8, 0.2]]), _logits_of([[0.3, 0.7]])
    forward = compare_classification(p, q)[0].kl
    backward = compare_classification(q, p)[0].kl
    assert forward == pytest.approx(0.8 * math.log(0.8 / 0.3) + 0.2 * math.log(0.2 / 0.7))
    assert forward != pytest.approx(backward)


def test_softmax_is_stable_for_huge_logits():
    probs = softmax(np.array([[1000.0, 0.0], [-1000.0, -1000.0]]))
    assert np.allclose(probs, [[1.0, 0.0], [0.5, 0.5]])


def test_regression_abs_error_and_tolerance():
    comps = compare_regression(np.array([1.0, 2.0, -3.0]), np.array([1.05, 3.0, -3.0]), tolerance=0.1)
    assert [c.abs_error for c in comps] == pytest.approx([0.05, 1.0, 0.0])
    assert [c.agree for c in comps] == [True, False, True]
    assert comps[0].kl is None
    multi = compare_regression(np.array([[0.0, 0.0]]), np.array([[1.0, 3.0]]))[0]
    assert multi.abs_error == pytest.approx(2.0)


def test_embedding_cosine_known_values():
    t = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    s = np.array([[2.0, 0.0], [-1.0, -1.0], [0.0, 3.0], [0.0, 0.0]])
    comps = compare_embeddings(t, s, min_cosine=0.9)
    assert [c.cosine for c in comps] == pytest.approx([1.0, -1.0, 0.0, 1.0])
    assert [c.agree for c in comps] == [True, False, False, True]


def test_mismatched_or_non_finite_outputs_are_errors():
    with pytest.raises(ComparisonError, match="differ"):
        compare_classification(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ComparisonError, match="NaN or Inf"):
        compare_classification(np.zeros((1, 3)), np.array([[0.0, np.nan, 1.0]]))


def test_compare_outputs_dispatches_on_task():
    t, s = np.array([[0.0, 1.0]]), np.array([[0.0, 1.2]])
    assert compare_outputs("classification", t, s)[0].kl is not None
    assert compare_outputs("regression", t, s, regression_tolerance=0.05)[0].agree is False
    assert compare_outputs("embedding", t, s, embedding_min_cosine=0.99)[0].agree is True
    with pytest.raises(ComparisonError, match="unknown task"):
        compare_outputs("ranking", t, s)
