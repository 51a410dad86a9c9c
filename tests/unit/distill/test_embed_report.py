"""report.html of the embedding task renders report.json's figures, with or without optional parts."""
from __future__ import annotations

from distill.embed_report import render_embedding_html


def test_embedding_page_shows_every_model_the_targets_and_the_verdicts():
    report = {
        "task": "embedding", "dataset": {"name": "spam", "n_train": 10, "n_test": 5},
        "teacher_identity": "huggingface:abc", "tokenizer": {"max_length": 48}, "latency_tokens": 31,
        "params": {"teacher": 1000, "student": 10},
        "metrics": {"teacher": {"mean_cosine": 1.0, "topk_overlap": 1.0, "probe_accuracy": 0.9},
                    "student": {"mean_cosine": 0.8123, "topk_overlap": 0.5, "probe_accuracy": 0.88},
                    "baseline": {"mean_cosine": 0.1, "topk_overlap": 0.2, "probe_accuracy": 0.87}},
        "latency_ms_batch1": {"teacher": 8.0, "student": 0.01},
        "acceptance": {"mean_cosine": {"value": 0.8123, "target": 0.9, "met": False}},
        "verdicts": {"baseline": {"name": "baseline", "ok": True, "summary": "beats the baseline"}},
        "timings_s": {"total": 3.0},
    }
    page = render_embedding_html(report)
    assert "0.8123" in page and "NOT met" in page and "beats the baseline" in page and "31 tokens" in page
    assert "distilled student" in page and "same size, trained on the labels" in page and "untrained" not in page
    assert "INT8" not in page   # no int8 section without report["int8"]
