"""Content-addressed cache of teacher soft labels (and of trained teacher weights).

Soft labels are the teacher's raw logits for a set of inputs, stored under
sha256(teacher identity, inputs). Temperature is applied at training time, so one entry
serves a whole temperature x alpha sweep, and a second run with the same teacher and data
never calls the teacher.

Example:
    >>> cache = SoftLabelCache(Path(".kdgate-cache"))
    >>> labels = cache.get_or_compute(teacher, x)  # doctest: +SKIP
    >>> labels.hit  # True on the second run  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from distill.errors import TeacherError
from distill.export import sha256_arrays

log = logging.getLogger(__name__)
CHUNK_ROWS = 4096  # rows per teacher call: large batches are fast, and progress still moves


class Predictor(Protocol):
    """What the cache needs of a teacher."""

    identity: str

    def predict(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class SoftLabels:
    """Teacher logits for some inputs and where they came from."""

    logits: np.ndarray
    hit: bool
    key: str
    path: Path


def content_key(*parts: str) -> str:
    """sha256 over string parts (identities, hashes), the name of a cache entry."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def atomic_save(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half an entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class SoftLabelCache:
    """Soft labels on disk under ``root/soft_labels/<key>.npy``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def key(self, teacher: Predictor, x: np.ndarray) -> str:
        return content_key("soft-labels-v1", teacher.identity, sha256_arrays(np.asarray(x, np.float32)))

    def path(self, key: str) -> Path:
        return self.root / "soft_labels" / f"{key}.npy"

    def get_or_compute(self, teacher: Predictor, x: np.ndarray,
                       on_rows: Callable[[int], None] | None = None) -> SoftLabels:
        """The teacher's logits for ``x``, from disk when this teacher already labeled ``x``.

        ``on_rows(n)`` is called as rows are labeled (for a progress bar).
        """
        x = np.asarray(x, np.float32)
        key = self.key(teacher, x)
        path = self.path(key)
        if path.exists():
            try:
                logits = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                log.warning("soft-label cache entry %s is unreadable (%s); recomputing", path, err)
            else:
                if len(logits) == len(x):
                    log.info("soft-label cache hit %s: teacher not run", key[:12])
                    if on_rows:
                        on_rows(len(x))
                    return SoftLabels(logits, hit=True, key=key, path=path)
        logits = self._run_teacher(teacher, x, on_rows)
        atomic_save(path, lambda tmp: np.save(tmp, logits))
        log.info("soft-label cache miss %s: teacher labeled %d rows", key[:12], len(x))
        return SoftLabels(logits, hit=False, key=key, path=path)

    @staticmethod
    def _run_teacher(teacher: Predictor, x: np.ndarray, on_rows) -> np.ndarray:
        chunks = []
        for start in range(0, len(x), CHUNK_ROWS):
            out = np.asarray(teacher.predict(x[start:start + CHUNK_ROWS]), np.float32)
            if out.ndim != 2 or len(out) != len(x[start:start + CHUNK_ROWS]):
                raise TeacherError(f"teacher returned shape {out.shape} for {len(x[start:start + CHUNK_ROWS])} rows; "
                                   "expected [rows, outputs]")
            chunks.append(out)
            if on_rows:
                on_rows(len(out))
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
