"""Evaluation: accuracy, calibration, agreement, size, latency and cost.

Metrics take numpy arrays and return plain dicts and floats, so they serialise straight
into ``report.json`` and can be tested on hand-made arrays. Latency is measured on ONNX
Runtime's CPU provider (what the gateway serves) and, for comparison, on PyTorch eager.

Example:
    >>> import numpy as np
    >>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    >>> classification_metrics(logits, np.array([0, 1, 1]), ["a", "b"])["accuracy"]
    0.6666666666666666
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from distill.errors import DistillError

if TYPE_CHECKING:  # torch is heavy; only the functions that need it import it
    import torch

ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, numerically stable.

    Example:
        >>> softmax(np.array([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    if temperature <= 0:
        raise DistillError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check_logits_labels(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits)
    y = np.asarray(y).reshape(-1)
    if logits.ndim != 2:
        raise DistillError(f"logits must be 2-D [rows, classes], got shape {logits.shape}")
    if logits.shape[0] != y.shape[0]:
        raise DistillError(f"logits have {logits.shape[0]} rows but labels have {y.shape[0]}")
    if logits.shape[0] == 0:
        raise DistillError("cannot evaluate on zero rows")
    return logits, y.astype(np.int64)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins.

    ECE = sum over bins of (rows in bin / rows) * |accuracy in bin - mean confidence in bin|.

    Example:
        >>> probs = np.array([[0.9, 0.1], [0.9, 0.1]])
        >>> round(expected_calibration_error(probs, np.array([0, 1])), 6)  # conf 0.9, acc 0.5
        0.4
    """
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    # Bin i holds confidences in (edge_i, edge_i+1]; confidence 0 cannot occur for a softmax.
    bin_index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bin_index == b
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            ece += in_bin.mean() * gap
    return float(ece)


def classification_metrics(logits: np.ndarray, y: np.ndarray, class_labels: list[str]) -> dict:
    """Accuracy, per-class accuracy, the worst class and ECE (15 bins).

    Classes without any test row get ``None`` in ``per_class`` and cannot be the worst.

    Example:
        >>> logits = np.eye(3)[[0, 1, 0]]  # the third row (class z) is predicted as x
        >>> m = classification_metrics(logits, np.array([0, 1, 2]), ["x", "y", "z"])
        >>> m["worst_class"]
        {'label': 'z', 'accuracy': 0.0}
    """
    logits, y = _check_logits_labels(logits, y)
    if logits.shape[1] != len(class_labels):
        raise DistillError(
            f"logits have {logits.shape[1]} classes but {len(class_labels)} class labels were given")
    pred = logits.argmax(axis=1)
    per_class: dict[str, float | None] = {}
    for index, label in enumerate(class_labels):
        rows = y == index
        per_class[str(label)] = float((pred[rows] == index).mean()) if rows.any() else None
    scored = {k: v for k, v in per_class.items() if v is not None}
    worst_label = min(scored, key=scored.__getitem__)
    return {
        "accuracy": float((pred == y).mean()),
        "per_class": per_class,
        "worst_class": {"label": worst_label, "accuracy": scored[worst_label]},
        "ece": expected_calibration_error(softmax(logits), y),
    }


def agreement(a_logits: np.ndarray, b_logits: np.ndarray) -> float:
    """Share of rows on which two models predict the same top-1 class.

    Example:
        >>> agreement(np.array([[1, 0], [0, 1]]), np.array([[1, 0], [1, 0]]))
        0.5
    """
    a, b = np.asarray(a_logits), np.asarray(b_logits)
    if a.shape != b.shape:
        raise DistillError(f"cannot compare logits of shapes {a.shape} and {b.shape}")
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    """Mean squared and mean absolute error.

    Example:
        >>> regression_metrics(np.array([1.0, 3.0]), np.array([1.0, 1.0]))
        {'mse': 2.0, 'mae': 1.0}
    """
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(pred.shape)
    err = pred - y
    return {"mse": float((err**2).mean()), "mae": float(np.abs(err).mean())}


def count_params(model: "torch.nn.Module") -> int:
    """Number of parameters (trainable or not) of a torch module."""
    return int(sum(p.numel() for p in model.parameters()))


def file_size_bytes(path: Path | str) -> int:
    """Size of a file on disk, e.g. an exported ONNX model."""
    return Path(path).stat().st_size


def _batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` rows of ``x``, tiled when ``x`` has fewer rows."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] == 0:
        raise DistillError("latency needs at least one input row")
    reps = -(-batch // x.shape[0])
    tiled = np.concatenate([x] * reps, axis=0) if reps > 1 else x
    return np.ascontiguousarray(tiled[:batch])


def _round_median_ms(run: Callable[[], Any], calls: int, min_seconds: float) -> float:
    """Median of one round: at least ``calls`` calls and at least ``min_seconds`` of wall time."""
    times: list[float] = []
    round_start = time.perf_counter()
    while len(times) < calls or (time.perf_counter() - round_start < min_seconds and len(times) < 100_000):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def median_ms(run: Callable[[], Any], repeats: int, warmup: int | None = None, rounds: int = 5,
              min_round_seconds: float = 0.05) -> float:
    """Median wall time of ``run()`` in milliseconds, after a warm-up, robust to a busy machine.

    The ``repeats`` calls are split into ``rounds``; each round lasts at least
    ``min_round_seconds`` (a 10 µs model would otherwise be measured within 2 ms, all of
    it inside one burst of another process's work) and yields its median; the result is
    the lowest round median, i.e. the latency when the model has the core to itself.

    Example:
        >>> median_ms(lambda: sum(range(100)), repeats=20) > 0
        True
    """
    if repeats < 1 or rounds < 1:
        raise DistillError(f"repeats and rounds must be >= 1, got {repeats} and {rounds}")
    for _ in range(warmup if warmup is not None else max(3, repeats // 10)):
        run()
    calls = -(-repeats // rounds)
    return min(_round_median_ms(run, calls, min_round_seconds) for _ in range(rounds))


def onnx_session(onnx_path: Path | str, threads: int = 1):
    """An ONNX Runtime CPU session; ``threads`` bounds intra-op parallelism.

    One thread by default: numbers are then stable on a shared machine and comparable
    between teacher and student (a replica typically gets one core).
    """
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise DistillError(f"ONNX Runtime cannot load {onnx_path}: {err}") from err


def onnx_latency_ms(onnx_path: Path | str, x: np.ndarray, batch_sizes=(1, 64), repeats: int = 200,
                    threads: int = 1) -> dict[str, float]:
    """Median ONNX Runtime CPU latency per call at each batch size (see ``median_ms``).

    Example:
        >>> onnx_latency_ms("student.onnx", x_test)  # doctest: +SKIP
        {'batch1': 0.03, 'batch64': 0.4}
    """
    session = onnx_session(onnx_path, threads)
    input_name = session.get_inputs()[0].name
    result = {}
    for batch in batch_sizes:
        feed = {input_name: _batch_of(x, batch)}
        result[f"batch{batch}"] = median_ms(lambda: session.run(None, feed), repeats)
    return result


def torch_latency_ms(model: "torch.nn.Module", x: np.ndarray, batch_sizes=(1, 64),
                     repeats: int = 200, threads: int = 1) -> dict[str, float]:
    """Median PyTorch eager CPU latency per call (``no_grad``, eval mode), for comparison.

    Example:
        >>> torch_latency_ms(student, x_test)  # doctest: +SKIP
        {'batch1': 0.05, 'batch64': 0.5}
    """
    import torch  # noqa: PLC0415

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    try:
        result = {}
        with torch.no_grad():
            for batch in batch_sizes:
                tensor = torch.from_numpy(_batch_of(x, batch))
                result[f"batch{batch}"] = median_ms(lambda: model(tensor), repeats)
        return result
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)


def cost_per_million(latency_ms_batch64: float, usd_per_hour: float, batch: int = 64) -> float:
    """Dollars per million inferences for a replica billed ``usd_per_hour``.

    A replica that answers a batch of ``batch`` rows in ``latency_ms_batch64`` spends
    latency / batch per row, so one million rows cost that many hours times the rate.

    Example:
        >>> round(cost_per_million(64.0, 3.6, batch=64), 6)  # 1 ms per row -> 1000 s per 1e6
        1.0
    """
    if batch < 1:
        raise DistillError(f"batch must be >= 1, got {batch}")
    seconds_per_row = latency_ms_batch64 / 1000.0 / batch
    return float(seconds_per_row * 1e6 / 3600.0 * usd_per_hour)
