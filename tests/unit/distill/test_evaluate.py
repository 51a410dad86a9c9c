"""Evaluation metrics on hand-made arrays, latency and cost on a tiny model."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from distill.errors import DistillError
from distill.evaluate import (agreement, classification_metrics, cost_per_million, count_params,
                              expected_calibration_error, median_ms, onnx_latency_ms,
                              regression_metrics, softmax, torch_latency_ms)
from distill.export import export_onnx


def test_softmax_rows_sum_to_one_and_temperature_flattens():
    logits = np.array([[4.0, 0.0, -2.0], [1000.0, 0.0, 0.0]])
    p1, p4 = softmax(logits), softmax(logits, temperature=4.0)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0)
    assert np.isfinite(p1).all()  # large logits do not overflow
    assert p4[0, 0] < p1[0, 0]
    with pytest.raises(DistillError):
        softmax(logits, temperature=0)


def test_classification_metrics_accuracy_per_class_and_worst_class():
    labels = ["cat", "dog", "eel"]
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 0, 2, 2, 0, 1])  # cat 2/2, dog 1/2, eel 2/4
    metrics = classification_metrics(np.eye(3)[pred] * 5, y, labels)
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["per_class"] == {"cat": 1.0, "dog": 0.5, "eel": 0.5}
    assert metrics["worst_class"]["accuracy"] == 0.5
    assert metrics["worst_class"]["label"] in ("dog", "eel")


def test_class_without_test_rows_is_none_and_never_worst():
    metrics = classification_metrics(np.eye(3)[[0, 1]], np.array([0, 0]), ["a", "b", "c"])
    assert metrics["per_class"] == {"a": 0.5, "b": None, "c": None}
    assert metrics["worst_class"] == {"label": "a", "accuracy": 0.5}


def test_ece_known_case():
    # Two bins used: conf 0.9 (acc 0.5, gap 0.4) and conf 0.6 (acc 1.0, gap 0.4), equal weight.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.4)
    # Perfectly calibrated: confidence 1 and always right.
    assert expected_calibration_error(np.eye(2)[[0, 1]], np.array([0, 1])) == pytest.approx(0.0)


def test_ece_in_classification_metrics_matches_softmax_of_logits():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(200, 4)), rng.integers(0, 4, 200)
    metrics = classification_metrics(logits, y, list("abcd"))
    assert metrics["ece"] == pytest.approx(expected_calibration_error(softmax(logits), y))
    assert 0 < metrics["ece"] < 1


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(DistillError, match="2 class labels"):
        classification_metrics(np.zeros((2, 3)), np.array([0, 1]), ["a", "b"])
    with pytest.raises(DistillError, match="rows"):
        classification_metrics(np.zeros((2, 2)), np.array([0, 1, 1]), ["a", "b"])
    with pytest.raises(DistillError):
        agreement(np.zeros((2, 3)), np.zeros((3, 3)))


def test_agreement_counts_equal_top1():
    a = np.array([[3, 1, 0], [0, 2, 1], [0, 0, 1], [1, 0, 0]])
    b = np.array([[9, 0, 0], [0, 0, 5], [0, 0, 2], [0, 1, 0]])
    assert agreement(a, b) == pytest.approx(0.5)
    assert agreement(a, a) == 1.0


def test_regression_metrics():
    assert regression_metrics(np.array([1.0, 2.0, 5.0]), np.array([1.0, 0.0, 1.0])) == {
        "mse": pytest.approx(20 / 3), "mae": pytest.approx(2.0)}


def test_cost_per_million_scales_with_latency_and_price():
    # 64 rows in 64 ms = 1 ms per row; 1e6 rows = 1000 s = 1/3.6 h.
    assert cost_per_million(64.0, 3.6) == pytest.approx(1.0)
    assert cost_per_million(32.0, 3.6) == pytest.approx(0.5)
    assert cost_per_million(64.0, 7.2) == pytest.approx(2.0)
    assert cost_per_million(1.0, 3.6, batch=1) == pytest.approx(1.0)


def test_count_params_and_latency_of_a_tiny_model(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    assert count_params(model) == 8 * 4 + 4 + 4 * 3 + 3
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)  # fewer rows than 64: tiled
    exported = export_onnx(model, tmp_path / "m.onnx", x)
    ort_ms = onnx_latency_ms(exported.path, x, repeats=5)
    torch_ms = torch_latency_ms(model, x, repeats=5)
    threads = torch.get_num_threads()
    for result in (ort_ms, torch_ms):
        assert set(result) == {"batch1", "batch64"}
        assert all(v > 0 for v in result.values())
    assert torch.get_num_threads() == threads  # restored after measuring with one thread


def test_median_ms_ignores_a_round_slowed_by_another_process():
    calls = []

    def run():
        calls.append(1)
        if len(calls) <= 10:  # the whole first round happens during a burst of contention
            time.sleep(0.005)

    assert median_ms(run, repeats=30, warmup=0, rounds=3, min_round_seconds=0) < 1.0
    assert len(calls) == 30


def test_median_ms_stretches_fast_rounds_to_a_minimum_duration():
    calls = []
    median_ms(lambda: calls.append(1), repeats=2, warmup=0, rounds=2, min_round_seconds=0.01)
    assert len(calls) > 100  # a no-op measured over 2 x 10 ms, not twice
