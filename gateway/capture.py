"""Disagreeing teacher/student pairs, kept on disk for the next distillation round.

Pairs are buffered in memory and written ``segment_rows`` at a time as ``.npz``
segment files; past ``max_bytes`` on disk the oldest segments are deleted, so the store
never grows without bound. Several replicas may share one directory: segment names
carry a nanosecond timestamp, the process id and a counter, and sort by age.

``export_npz`` writes the unlabeled transfer set (``x_unlabeled``) plus both outputs,
request ids and times for inspection. ``kdgate distill``'s ``source: npz`` also needs
labeled ``x``/``y`` and refuses other arrays, so with ``base_npz`` (the labeled dataset of
the last round) the export is distill-ready instead: the base's arrays, its
``x_unlabeled`` extended by the captured rows, and nothing else.

Example::

    store = CaptureStore("kdgate-capture", max_bytes=64 * 2**20)
    store.add(x_row, teacher_logits_row, student_logits_row, request_id="r-1", t=time.time())
    store.export_npz("captured.npz")   # -> rows written
"""
from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import Mapping

import numpy as np

from gateway.core.errors import CaptureError

SEGMENT_GLOB = "seg-*.npz"
_ARRAYS = ("x", "teacher", "student", "request_id", "time")


class CaptureStore:
    """A size-bounded rotating set of ``.npz`` segments in one directory (thread-safe)."""

    def __init__(self, directory: str | os.PathLike, *, max_bytes: int, segment_rows: int = 256):
        if max_bytes <= 0 or segment_rows <= 0:
            raise CaptureError("capture: max_bytes and segment_rows must be positive")
        self.dir = pathlib.Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_rows = int(segment_rows)
        self.deleted_segments = 0  # rotated out to keep the bound
        self._lock = threading.Lock()
        self._buffer: dict[str, list] = {name: [] for name in _ARRAYS}
        self._counter = 0
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CaptureError(f"capture: cannot create {self.dir}: {err}") from err

    def add(self, x: np.ndarray, teacher_out: np.ndarray, student_out: np.ndarray,
            request_id: str, t: float | None = None) -> None:
        """Buffer one pair (one input row and both outputs); writes a segment when full."""
        row = {
            "x": np.asarray(x, dtype=np.float32), "teacher": np.asarray(teacher_out, dtype=np.float32),
            "student": np.asarray(student_out, dtype=np.float32),
            "request_id": str(request_id), "time": float(time.time() if t is None else t),
        }
        with self._lock:
            if self._buffer["x"] and self._shape_changed(row):
                self._write_segment()  # a new model or input shape: keep segments homogeneous
            for name in _ARRAYS:
                self._buffer[name].append(row[name])
            if len(self._buffer["x"]) >= self.segment_rows:
                self._write_segment()

    def _shape_changed(self, row: Mapping[str, np.ndarray]) -> bool:
        return any(self._buffer[n][-1].shape != row[n].shape for n in ("x", "teacher", "student"))

    def flush(self) -> None:
        """Write buffered pairs now (before export or shutdown)."""
        with self._lock:
            if self._buffer["x"]:
                self._write_segment()

    def _write_segment(self) -> None:
        arrays = {name: np.stack(self._buffer[name]) if name in ("x", "teacher", "student")
                  else np.asarray(self._buffer[name]) for name in _ARRAYS}
        self._buffer = {name: [] for name in _ARRAYS}
        self._counter += 1
        final = self.dir / f"seg-{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}.npz"
        partial = final.with_suffix(".partial")  # not matched by SEGMENT_GLOB until complete
        try:
            with open(partial, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(partial, final)
        except OSError as err:
            raise CaptureError(f"capture: cannot write {final}: {err}") from err
        self._enforce_bound()

    def _enforce_bound(self) -> None:
        segments = self.segments()
        sizes = [_size(p) for p in segments]
        total = sum(sizes)
        for path, size in zip(segments, sizes):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)  # another replica may have rotated it already
            total -= size
            self.deleted_segments += 1

    def segments(self) -> list[pathlib.Path]:
        """Segment files on disk, oldest first."""
        return sorted(self.dir.glob(SEGMENT_GLOB), key=lambda p: p.name)

    def disk_bytes(self) -> int:
        """Bytes the segments take on disk now."""
        return sum(_size(p) for p in self.segments())

    def export_npz(self, out_path: str | os.PathLike, *, base_npz: str | os.PathLike | None = None) -> int:
        """Flush, then write every stored pair to ``out_path``; returns the rows written."""
        self.flush()
        return export_capture(self.dir, out_path, base_npz=base_npz)


def _size(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _load_segments(directory: pathlib.Path) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {name: [] for name in _ARRAYS}
    for path in sorted(directory.glob(SEGMENT_GLOB), key=lambda p: p.name):
        try:
            with np.load(path, allow_pickle=False) as seg:
                for name in _ARRAYS:
                    parts[name].append(seg[name])
        except FileNotFoundError:
            continue  # rotated away while we read
        except (OSError, ValueError, KeyError) as err:
            raise CaptureError(f"capture: cannot read segment {path}: {err}") from err
    if not parts["x"]:
        raise CaptureError(f"capture: no captured pairs in {directory}")
    try:
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}
    except ValueError as err:
        shapes = sorted({c.shape[1:] for c in parts["x"]})
        raise CaptureError(f"capture: segments hold different input shapes {shapes}; export per model") from err


def export_capture(directory: str | os.PathLike, out_path: str | os.PathLike, *,
                   base_npz: str | os.PathLike | None = None) -> int:
    """Write the pairs stored in ``directory`` as an unlabeled transfer set.

    Arrays: ``x_unlabeled`` (float32 inputs), ``teacher_logits``, ``student_logits``,
    ``request_id`` (str), ``time`` (unix seconds). With ``base_npz`` the output is a
    ``source: npz`` dataset for ``kdgate distill``: the base's arrays with the captured
    rows appended to its ``x_unlabeled`` (the inspection arrays are left out).

    >>> export_capture("kdgate-capture", "captured.npz")  # doctest: +SKIP
    1280
    """
    pairs = _load_segments(pathlib.Path(directory))
    arrays = {
        "x_unlabeled": pairs["x"], "teacher_logits": pairs["teacher"], "student_logits": pairs["student"],
        "request_id": pairs["request_id"], "time": pairs["time"],
    }
    if base_npz is not None:
        arrays = _merged_with_base(pathlib.Path(base_npz), arrays)
    try:
        with open(out_path, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError as err:
        raise CaptureError(f"capture: cannot write {out_path}: {err}") from err
    return int(len(pairs["x"]))


def _merged_with_base(base: pathlib.Path, captured: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        with np.load(base, allow_pickle=False) as data:
            merged = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise CaptureError(f"capture: cannot read base dataset {base}: {err}") from err
    x_new = captured["x_unlabeled"]
    if "x" in merged and merged["x"].shape[1:] != x_new.shape[1:]:
        raise CaptureError(f"capture: captured inputs {x_new.shape[1:]} do not match {base} x {merged['x'].shape[1:]}")
    if "x_unlabeled" in merged:
        x_new = np.concatenate([merged["x_unlabeled"].astype(np.float32), x_new])
    return {**merged, "x_unlabeled": x_new}
