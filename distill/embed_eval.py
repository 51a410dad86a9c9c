"""How close a student's sentence embeddings come to the teacher's, and how useful they are.

Three figures, each computed the same way for every model (teacher, student, baselines):
mean cosine with the teacher's embedding of the same held-out text; nearest-neighbour
agreement (the share of each text's top-k neighbours among the held-out texts that the
teacher's embeddings and the model's embeddings have in common); and a downstream probe
(logistic regression fitted on the model's embeddings of the labelled train texts, accuracy
on the held-out texts).

Example:
    >>> a = np.eye(3, dtype=np.float32)
    >>> round(mean_cosine(a, a), 6), topk_overlap(a, a, k=1)
    (1.0, 1.0)
"""
from __future__ import annotations

import numpy as np

PROBE_C = 10.0  # inverse regularisation; the same for every model, so only the embeddings differ
PROBE_MAX_ITER = 2000


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of ``a`` with row i of ``b``."""
    return np.sum(_unit(a) * _unit(b), axis=1)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean row-wise cosine similarity."""
    return float(np.mean(cosine_rows(a, b)))


def topk_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Mean |top-k(reference) ∩ top-k(candidate)| / k over rows; neighbours exclude the row itself."""
    n = len(reference)
    k = min(k, n - 1)
    if k < 1:
        raise ValueError("nearest-neighbour overlap needs at least 2 rows")
    overlaps = []
    for emb in (reference, candidate):
        sims = _unit(emb) @ _unit(emb).T
        np.fill_diagonal(sims, -np.inf)
        overlaps.append(np.argpartition(-sims, k - 1, axis=1)[:, :k])
    shared = [len(set(a) & set(b)) for a, b in zip(*overlaps)]
    return float(np.mean(shared) / k)


def probe_accuracy(train_emb: np.ndarray, y_train: np.ndarray, test_emb: np.ndarray, y_test: np.ndarray,
                   seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression fitted on ``train_emb`` (the downstream probe)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    probe = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER, random_state=seed)
    probe.fit(np.asarray(train_emb, np.float64), y_train)
    return float(np.mean(probe.predict(np.asarray(test_emb, np.float64)) == y_test))


def embedding_metrics(train_emb: np.ndarray, test_emb: np.ndarray, teacher_test: np.ndarray,
                      y_train: np.ndarray | None, y_test: np.ndarray | None, top_k: int) -> dict:
    """The three figures for one model (probe only when labels exist)."""
    result = {"mean_cosine": mean_cosine(test_emb, teacher_test),
              "topk_overlap": topk_overlap(teacher_test, test_emb, top_k)}
    if y_train is not None and len(np.unique(y_train)) > 1:
        result["probe_accuracy"] = probe_accuracy(train_emb, y_train, test_emb, y_test)
    return result
