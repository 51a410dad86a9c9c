"""Export: ONNX with parity check, INT8, Triton model repository, manifest.

Every ONNX file has one input ``input`` [batch, *features] and one output ``logits``
[batch, n_outputs], batch dynamic (docs/artifacts.md). Export always runs the ONNX
checker and an ONNX Runtime vs PyTorch parity check against a declared tolerance.

Example:
    >>> exported = export_onnx(student, out / "student.onnx", x_test)  # doctest: +SKIP
    >>> exported.max_abs_diff <= exported.tolerance  # doctest: +SKIP
    True
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distill.errors import DistillError, ExportError, ParityError
from distill.evaluate import onnx_session
from distill.report import json_safe
from gateway.core.errors import ManifestError
from gateway.core.manifest import FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME, validate_manifest

if TYPE_CHECKING:
    import torch
    from tritonclient.grpc import model_config_pb2

BATCH_AXIS = "batch"
SEQUENCE_AXIS = "sequence"
OPSET = 17
KDGATE_VERSION = "0.1.0"


@dataclass
class OnnxExport:
    """An exported ONNX file and its parity figure against PyTorch."""

    path: Path
    sha256: str
    size_bytes: int
    max_abs_diff: float
    tolerance: float


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_arrays(*arrays: np.ndarray) -> str:
    """Hex SHA-256 over the dtype, shape and bytes of each array, in order.

    Example:
        >>> sha256_arrays(np.zeros(2)) == sha256_arrays(np.zeros(2))
        True
        >>> sha256_arrays(np.zeros(2)) == sha256_arrays(np.zeros((1, 2)))
        False
    """
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _torch_predict(model: "torch.nn.Module", x: np.ndarray, batch_size: int = 1024,
                   dtype: type = np.float32) -> np.ndarray:
    import torch  # noqa: PLC0415

    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size], dtype))
            outputs.append(model(batch).detach().cpu().numpy())
    return np.concatenate(outputs, axis=0)


def onnx_predict(onnx_path: Path | str, x: np.ndarray, batch_size: int = 1024,
                 dtype: type = np.float32) -> np.ndarray:
    """Outputs (logits) of an ONNX model on ``x``, run in batches on the CPU.

    Example:
        >>> onnx_predict("student.onnx", x_test).shape  # doctest: +SKIP
        (1000, 10)
    """
    session = onnx_session(onnx_path, threads=0)  # 0: ONNX Runtime picks; throughput here
    name = session.get_inputs()[0].name
    outputs = []
    try:
        for start in range(0, len(x), batch_size):
            batch = np.ascontiguousarray(x[start:start + batch_size], dtype)
            outputs.append(session.run(None, {name: batch})[0])
    except Exception as err:  # onnxruntime's errors are untyped
        raise ExportError(f"ONNX Runtime failed to run {onnx_path}: {err}") from err
    return np.concatenate(outputs, axis=0)


def check_parity(model: "torch.nn.Module", onnx_path: Path | str, x: np.ndarray,
                 tolerance: float = 1e-4, dtype: type = np.float32) -> float:
    """Max abs difference between PyTorch and ONNX Runtime outputs on ``x``.

    Raises ParityError naming the difference and the tolerance when it is exceeded.

    Example:
        >>> check_parity(student, "student.onnx", x_test, 1e-4)  # doctest: +SKIP
        2.1e-06
    """
    expected = _torch_predict(model, x, dtype=dtype)
    actual = onnx_predict(onnx_path, x, dtype=dtype)
    if expected.shape != actual.shape:
        raise ParityError(f"{onnx_path}: ONNX output shape {actual.shape} != PyTorch {expected.shape}")
    diff = float(np.max(np.abs(expected.astype(np.float64) - actual))) if expected.size else 0.0
    if not diff <= tolerance:  # written this way so NaN fails too
        raise ParityError(f"{onnx_path}: ONNX Runtime differs from PyTorch by max abs {diff:.3g} "
                          f"on {len(x)} rows, more than the tolerance {tolerance:g}")
    return diff


def export_onnx(model: "torch.nn.Module", path: Path | str, parity_x: np.ndarray,
                tolerance: float = 1e-4, dtype: type = np.float32) -> OnnxExport:
    """Export ``model`` to ONNX (opset 17, dynamic batch), check it, and check parity.

    ``dtype`` int64: the input is token ids [batch, sequence], both axes dynamic (text models).

    Example:
        >>> export_onnx(student, Path("out/student.onnx"), x_test).max_abs_diff  # doctest: +SKIP
        1.9e-06
    """
    import onnx  # noqa: PLC0415
    import torch  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    # Two rows, not one, so the exporter cannot specialise the graph to batch 1.
    sample = torch.from_numpy(np.ascontiguousarray(np.asarray(parity_x[:2], dtype)))
    input_axes = {0: BATCH_AXIS, 1: SEQUENCE_AXIS} if dtype == np.int64 else {0: BATCH_AXIS}
    try:
        torch.onnx.export(model, (sample,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: input_axes, OUTPUT_NAME: {0: BATCH_AXIS}})
        onnx.checker.check_model(str(path))
    except Exception as err:  # torch/onnx raise many unrelated types
        raise ExportError(f"ONNX export of {type(model).__name__} to {path} failed: {err}") from err
    diff = check_parity(model, path, parity_x, tolerance, dtype)
    return OnnxExport(path=path, sha256=sha256_file(path), size_bytes=path.stat().st_size,
                      max_abs_diff=diff, tolerance=tolerance)


def quantize_int8(onnx_path: Path | str, out_path: Path | str, per_channel: bool = False) -> Path:
    """INT8 dynamic quantization of the weights (activations quantized at run time).

    Dynamic quantization covers MatMul/Gemm and Conv (as ConvInteger); the caller
    re-evaluates accuracy on the result, because INT8 changes the logits. ``per_channel``:
    one scale per output channel of each weight, not one per tensor (a transformer's
    weights need it: all-MiniLM-L6-v2's held-out cosine with its FP32 self is 0.95 per
    tensor, 0.99 per channel).

    Example:
        >>> quantize_int8(Path("student.onnx"), Path("student.int8.onnx"))  # doctest: +SKIP
        PosixPath('student.int8.onnx')
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    out_path = Path(out_path)
    root_logger = logging.getLogger()
    previous_level = root_logger.level
    # quantize_dynamic logs a "consider pre-processing" warning on the root logger each call.
    root_logger.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel)
    except Exception as err:
        raise ExportError(f"INT8 quantization of {onnx_path} failed: {err}") from err
    finally:
        root_logger.setLevel(previous_level)
    try:
        onnx_session(out_path)  # fail here, not in the gateway, if the result cannot load
    except DistillError as err:
        raise ExportError(f"INT8 model {out_path} does not load: {err}") from err
    return out_path


def _triton_config(name: str, feature_shape: tuple[int, ...], n_outputs: int, max_batch_size: int,
                   preferred_batch_sizes, max_queue_delay_us: int, instance_kind: str,
                   instance_count: int, input_type: str) -> "model_config_pb2.ModelConfig":
    from tritonclient.grpc import model_config_pb2 as pb  # noqa: PLC0415

    config = pb.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    # dims exclude the batch axis: with max_batch_size > 0 Triton adds it itself.
    config.input.add(name=INPUT_NAME, data_type=pb.DataType.Value(input_type), dims=list(feature_shape))
    config.output.add(name=OUTPUT_NAME, data_type=pb.TYPE_FP32, dims=[n_outputs])
    config.dynamic_batching.preferred_batch_size.extend(preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.instance_group.add(count=instance_count, kind=pb.ModelInstanceGroup.Kind.Value(instance_kind))
    return config


def write_triton_model(repo: Path | str, name: str, onnx_path: Path | str,
                       feature_shape: tuple[int, ...], n_outputs: int, max_batch_size: int = 64,
                       preferred_batch_sizes=(8, 32), max_queue_delay_us: int = 500,
                       instance_kind: str = "KIND_CPU", instance_count: int = 1,
                       input_type: str = "TYPE_FP32") -> Path:
    """Write ``repo/name/config.pbtxt`` and ``repo/name/1/model.onnx``; return ``repo/name``.

    The config uses Triton's onnxruntime backend with dynamic batching and is parsed back
    into Triton's own ModelConfig protobuf before this returns. A text model takes token ids:
    ``feature_shape=(-1,)`` (any sequence length) and ``input_type="TYPE_INT64"``.

    Example:
        >>> write_triton_model(Path("out/triton"), "kdgate-student", Path("out/student.onnx"),
        ...                    (40,), 10)  # doctest: +SKIP
        PosixPath('out/triton/kdgate-student')
    """
    from google.protobuf import text_format  # noqa: PLC0415

    too_big = [b for b in preferred_batch_sizes if b > max_batch_size]
    if too_big:
        raise ExportError(f"Triton preferred batch sizes {too_big} exceed max_batch_size {max_batch_size}")
    config = _triton_config(name, tuple(feature_shape), n_outputs, max_batch_size,
                            preferred_batch_sizes, max_queue_delay_us, instance_kind, instance_count, input_type)
    model_dir = Path(repo) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / "1" / "model.onnx")
    config_path = model_dir / "config.pbtxt"
    config_path.write_text(text_format.MessageToString(config))
    parse_triton_config(config_path)
    return model_dir


def parse_triton_config(path: Path | str) -> "model_config_pb2.ModelConfig":
    """Parse a ``config.pbtxt`` into Triton's ModelConfig and check what Triton would reject.

    Raises ExportError naming the file and the problem (syntax, unknown field, missing
    inputs/outputs, a name that differs from the model's folder, a missing model file).

    Example:
        >>> parse_triton_config(Path("out/triton/kdgate-student/config.pbtxt")).platform  # doctest: +SKIP
        'onnxruntime_onnx'
    """
    from google.protobuf import text_format  # noqa: PLC0415
    from tritonclient.grpc import model_config_pb2 as pb  # noqa: PLC0415

    path = Path(path)
    try:
        config = text_format.Parse(path.read_text(), pb.ModelConfig())
    except (OSError, text_format.ParseError) as err:
        raise ExportError(f"Triton config {path} does not parse as ModelConfig: {err}") from err
    problems = _triton_config_problems(config, path)
    if problems:
        raise ExportError(f"Triton config {path} is invalid: " + "; ".join(problems))
    return config


def _triton_config_problems(config: "model_config_pb2.ModelConfig", path: Path) -> list[str]:
    problems = []
    if config.name and config.name != path.parent.name:
        problems.append(f"name '{config.name}' differs from its folder '{path.parent.name}'")
    if not (config.platform or config.backend):
        problems.append("neither platform nor backend is set")
    if not config.input or not config.output:
        problems.append("it needs at least one input and one output")
    for tensor in list(config.input) + list(config.output):
        if not tensor.dims:
            problems.append(f"tensor '{tensor.name}' has no dims")
    preferred = list(config.dynamic_batching.preferred_batch_size)
    if config.max_batch_size and any(b > config.max_batch_size for b in preferred):
        problems.append(f"preferred_batch_size {preferred} exceeds max_batch_size {config.max_batch_size}")
    model_file = path.parent / "1" / (config.default_model_filename or "model.onnx")
    if config.platform == "onnxruntime_onnx" and not model_file.exists():
        problems.append(f"model file {model_file} is missing")
    return problems


def _quantile_reference(values: np.ndarray, n_bins: int) -> dict:
    """Interior quantile edges and the share of rows per bin, per column of ``values``."""
    quantiles = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    edges = np.quantile(values, quantiles, axis=0).T  # [F, n_bins - 1]
    fractions = [np.bincount(np.digitize(values[:, f], edges[f]), minlength=n_bins) / len(values)
                 for f in range(values.shape[1])]
    return {"edges": edges.astype(float).tolist(), "fractions": [f.astype(float).tolist() for f in fractions],
            "rows": int(len(values))}


def reference_stats(x_train: np.ndarray, teacher_test_logits: np.ndarray | None, n_bins: int = 10,
                    task: str = "classification") -> dict:
    """``manifest["reference"]``: per-feature decile bins of the training inputs (and the
    row count behind them) and the teacher's predicted-class shares, the baseline the
    gateway's drift checks compare to.

    Live values are binned with ``numpy.digitize(x, edges)`` (the same call used here),
    so the shares are comparable bin by bin (PSI).

    Example:
        >>> ref = reference_stats(np.arange(100.0).reshape(50, 2), np.eye(2)[[0, 1, 1, 1]])
        >>> len(ref["inputs"]["edges"][0]), ref["outputs"]["class_fractions"]
        (9, [0.25, 0.75])
    """
    x = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), -1)
    if len(x) == 0:
        raise ExportError("reference statistics need at least one training row")
    reference = {"inputs": _quantile_reference(x, n_bins), "outputs": {}}
    if teacher_test_logits is not None:
        logits = np.asarray(teacher_test_logits, dtype=np.float64)
        if task == "regression":
            reference["outputs"] = _quantile_reference(logits.reshape(len(logits), -1), n_bins)
        else:
            counts = np.bincount(logits.argmax(axis=1), minlength=logits.shape[1])
            reference["outputs"] = {"class_fractions": (counts / len(logits)).astype(float).tolist()}
    return reference


def io_spec(feature_shape: tuple[int, ...], n_outputs: int) -> dict:
    """``manifest["input"]`` and ``manifest["output"]`` for the ONNX I/O contract (-1 = batch).

    Example:
        >>> io_spec((40,), 10)["output"]
        {'name': 'logits', 'dtype': 'float32', 'shape': [-1, 10]}
    """
    return {"input": {"name": INPUT_NAME, "dtype": "float32", "shape": [-1, *map(int, feature_shape)]},
            "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, int(n_outputs)]}}


def write_manifest(path: Path | str, manifest: dict) -> Path:
    """Write ``manifest.json`` after validating it against the contract (:class:`gateway.core.manifest.Manifest`).

    ``format_version``, ``kdgate_version`` and ``created_at`` are filled in when absent.

    Example:
        >>> write_manifest(Path("out/manifest.json"), manifest)  # doctest: +SKIP
        PosixPath('out/manifest.json')
    """
    manifest = dict(manifest)
    manifest.setdefault("format_version", FORMAT_VERSION)
    manifest.setdefault("kdgate_version", KDGATE_VERSION)
    manifest.setdefault("created_at", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    manifest = json_safe(manifest)
    try:
        validate_manifest(manifest, where=f"manifest {path}")
    except ManifestError as err:
        raise ExportError(str(err)) from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
