"""Teachers: trained here from a built-in architecture, an ONNX file, or precomputed logits.

Every teacher has an ``identity`` (a content hash: the soft-label cache key and the
manifest's lineage), a ``source`` ("trained" | "onnx" | "logits") and ``predict(x)`` that
returns raw logits (or regression outputs) as float32 [rows, outputs].

Example:
    >>> teacher = OnnxTeacher(Path("my_teacher.onnx"), feature_shape=(40,))  # doctest: +SKIP
    >>> teacher.predict(x[:2]).shape  # doctest: +SKIP
    (2, 10)
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from distill.cache import atomic_save, content_key
from distill.config import TeacherConfig
from distill.data import Dataset, check_features
from distill.errors import DataError, TeacherError
from distill.export import sha256_arrays, sha256_file

log = logging.getLogger(__name__)


def probabilities_to_logits(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities: softmax(log p / T) is p sharpened or softened, as logits would be."""
    probs = np.asarray(probs, np.float64)
    if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise TeacherError("teacher outputs declared as probabilities must be >= 0 and sum to 1 per row")
    return np.log(np.clip(probs, 1e-12, None)).astype(np.float32)


class TorchTeacher:
    """A teacher network trained here (kept as a torch module for export)."""

    source = "trained"

    def __init__(self, model, identity: str):
        self.model = model.eval()
        self.identity = identity

    def predict(self, x: np.ndarray) -> np.ndarray:
        from distill.train import predict  # noqa: PLC0415

        return predict(self.model, x)


class OnnxTeacher:
    """An existing teacher model in an ONNX file, run with ONNX Runtime."""

    source = "onnx"

    def __init__(self, path: Path, feature_shape: tuple[int, ...], outputs: str = "logits", threads: int = 2):
        from distill.evaluate import onnx_session  # noqa: PLC0415

        self.path = Path(path)
        if not self.path.exists():
            raise TeacherError(f"teacher.path {self.path} does not exist")
        try:
            self.session = onnx_session(self.path, threads=threads)
        except Exception as err:
            raise TeacherError(f"teacher ONNX file {self.path} cannot be loaded: {err}") from err
        inputs, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outs) < 1:
            raise TeacherError(f"teacher ONNX file {self.path} must have exactly one input "
                               f"(has {len(inputs)}) and at least one output (has {len(outs)})")
        declared = tuple(inputs[0].shape[1:])
        if len(declared) != len(feature_shape) or any(
                isinstance(d, int) and d != f for d, f in zip(declared, feature_shape)):
            raise TeacherError(f"teacher ONNX input shape {list(inputs[0].shape)} does not fit data rows "
                               f"of shape {list(feature_shape)}")
        self.input_name, self.output_name = inputs[0].name, outs[0].name
        # Models exported without a dynamic batch axis accept only that many rows per call.
        self.fixed_batch = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else None
        self.outputs = outputs
        self.identity = "onnx:" + sha256_file(self.path)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.fixed_batch:
            pad = -len(x) % self.fixed_batch
            padded = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
            chunks = [self._run(padded[i:i + self.fixed_batch]) for i in range(0, len(padded), self.fixed_batch)]
            out = np.concatenate(chunks)[: len(x)]
        else:
            out = self._run(x)
        return probabilities_to_logits(out) if self.outputs == "probabilities" else out

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run([self.output_name], {self.input_name: x})[0]
        except Exception as err:  # onnxruntime raises untyped errors
            raise TeacherError(f"teacher ONNX file {self.path} failed on inputs {x.shape}: {err}") from err
        return np.asarray(out, np.float32).reshape(len(x), -1)


class LogitsTeacher:
    """Black-box teacher: outputs bought or computed elsewhere, looked up by input row.

    The .npz holds ``x`` [rows, *features] and ``logits`` [rows, outputs] (or probabilities,
    per ``teacher.outputs``), covering every row kdgate asks about: train, test and
    transfer rows, in any order (rows are matched by content, so splits do not matter).
    """

    source = "logits"
    model = None

    def __init__(self, path: Path, feature_shape: tuple[int, ...], outputs: str = "logits"):
        self.path = Path(path)
        if not self.path.exists():
            raise TeacherError(f"teacher.path {self.path} does not exist")
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as err:
            raise TeacherError(f"{self.path}: cannot read as .npz: {err}") from err
        if "x" not in arrays or "logits" not in arrays:
            raise TeacherError(f"{self.path}: needs arrays 'x' and 'logits'; found {sorted(arrays)}")
        try:
            x = check_features(arrays["x"], f"{self.path}: x", feature_shape)
        except DataError as err:
            raise TeacherError(str(err)) from err
        logits = np.asarray(arrays["logits"], np.float32).reshape(len(arrays["logits"]), -1)
        if len(logits) != len(x) or not np.isfinite(logits).all():
            raise TeacherError(f"{self.path}: 'logits' must be finite with one row per row of 'x' "
                               f"({len(logits)} vs {len(x)})")
        if outputs == "probabilities":
            logits = probabilities_to_logits(logits)
        self.table = {row.tobytes(): out for row, out in zip(x, logits)}
        self.identity = "logits:" + sha256_file(self.path)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        rows = [self.table.get(row.tobytes()) for row in x]
        missing = sum(r is None for r in rows)
        if missing:
            raise TeacherError(f"{self.path} has no teacher output for {missing} of {len(x)} input rows "
                               "(it must cover train, test and transfer rows)")
        return np.stack(rows)


def train_teacher(config: TeacherConfig, ds: Dataset, cache_root: Path, seed: int,
                  on_epoch: Callable[[int, float], None] | None = None) -> tuple[TorchTeacher, bool]:
    """Train the built-in teacher, or load its weights when this exact run was done before.

    Returns (teacher, loaded_from_cache). The weights are keyed by architecture, schedule,
    seed and dataset hash, so a second run skips training and its soft labels hit the cache.
    """
    import torch  # noqa: PLC0415

    from distill.losses import make_task  # noqa: PLC0415
    from distill.models import build_model  # noqa: PLC0415
    from distill.train import fit  # noqa: PLC0415

    # batchnorm joined the architecture later; leaving it out when off keeps older cache keys valid.
    architecture = config.architecture.model_dump(exclude={"batchnorm"} if not config.architecture.batchnorm else None)
    recipe = json.dumps({"architecture": architecture, "train": config.train.model_dump(),
                         "seed": seed, "task": ds.task, "outputs": ds.n_outputs}, sort_keys=True)
    path = Path(cache_root) / "teachers" / f"{content_key('teacher-v1', recipe, ds.sha256())}.pt"
    torch.manual_seed(seed)
    model = build_model(config.architecture, ds.feature_shape, ds.n_outputs)
    loaded = path.exists()
    if loaded:
        model.load_state_dict(torch.load(path, weights_only=True))
        log.info("teacher weights loaded from cache %s: training skipped", path.name[:12])
        if on_epoch:
            on_epoch(config.train.epochs - 1, float("nan"))
    else:
        fit(model, ds.x_train, ds.y_train, None, make_task(ds.task), config.train, seed, on_epoch)
        atomic_save(path, lambda tmp: torch.save(model.state_dict(), tmp))
    weights = [p.detach().numpy() for p in model.state_dict().values()]
    return TorchTeacher(model, "trained:" + sha256_arrays(*weights)), loaded


def load_teacher(config: TeacherConfig, ds: Dataset):
    """An external teacher (source onnx or logits)."""
    if config.source == "onnx":
        return OnnxTeacher(config.path, ds.feature_shape, config.outputs)
    if config.source == "logits":
        return LogitsTeacher(config.path, ds.feature_shape, config.outputs)
    raise TeacherError(f"teacher source '{config.source}' is trained, not loaded")
