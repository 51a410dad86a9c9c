"""INT8 for the text tasks: the exported ONNX models quantized, re-evaluated and recorded.

The MNIST-1D path's INT8 (``export.int8``, :func:`distill.export.quantize_int8`: dynamic
quantization of the weights) applied to ``student.onnx`` and ``teacher.onnx`` of the embedding
and text classification tasks. Each ``<name>.int8.onnx`` is judged on the held-out texts its
FP32 model was judged on; its record keeps the FP32 model's same figures next to its own, and
the change, so a quality drop is in plain sight (docs/artifacts.md).

Example:
    >>> record = int8_record({"file": "student.int8.onnx", "sha256": "ab", "size_bytes": 300},
    ...                      {"mean_cosine": 0.60}, {"mean_cosine": 0.64, "size_bytes": 1000})
    >>> round(record["change"]["mean_cosine"], 2), record["change"]["size_bytes"]
    (-0.04, -700)
"""
from __future__ import annotations

from collections.abc import Callable
from numbers import Real
from pathlib import Path

from distill import export as ex

QUANTIZATION = "dynamic, int8 weights per channel"
INT8_BATCH = 64  # rows per ONNX Runtime call when an INT8 model re-runs the held-out texts (a transformer teacher)


def quantize_exports(exports: dict[str, ex.OnnxExport], out_dir: Path) -> dict[str, dict]:
    """``<name>.int8.onnx`` next to each exported model, weights per channel (the MiniLM teacher keeps
    its embeddings far better so): {name: {"file", "sha256", "size_bytes", "quantization"}}."""
    quantized = {}
    for name, exported in exports.items():
        path = ex.quantize_int8(exported.path, Path(out_dir) / f"{name}.int8.onnx", per_channel=True)
        quantized[name] = {"file": path.name, "sha256": ex.sha256_file(path), "size_bytes": path.stat().st_size,
                           "quantization": QUANTIZATION}
    return quantized


def int8_records(exported: dict, out_dir: Path, fp32_figures: dict[str, dict],
                 judge: Callable[[Path], dict]) -> dict[str, dict]:
    """{name: record} of the INT8 models in ``exported`` (``export_models``' result; {} without INT8):
    ``judge(path)`` gives an INT8 model's quality figures, ``fp32_figures[name]`` its FP32 model's."""
    records = {}
    for name, quantized in exported["int8"].items():
        fp32 = {**fp32_figures[name], "size_bytes": exported["exports"][name].size_bytes,
                "latency_ms_batch1": exported["latency_ms_batch1"][name]}
        records[name] = int8_record(quantized, judge(Path(out_dir) / quantized["file"]), fp32)
    return records


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def int8_record(quantized: dict, figures: dict, fp32: dict) -> dict:
    """An INT8 model's entry: its file, size, latency and quality ``figures``; ``fp32``, the FP32
    model's same figures; ``change``, INT8 minus FP32 for every number both have."""
    mine = {**quantized, **figures}
    change = {key: mine[key] - value for key, value in fp32.items() if _number(value) and _number(mine.get(key))}
    return {**mine, "fp32": dict(fp32), "change": change}


def manifest_int8(models: dict[str, dict], int8: dict[str, dict]) -> tuple[dict[str, dict], dict[str, float]]:
    """The manifest's ``models`` with ``int8_file`` / ``int8_sha256`` added from the INT8 records
    {name: record}, and the records' top-level numbers as metrics ``<name>_int8_<figure>``.

    Example:
        >>> manifest_int8({"student": {"file": "s.onnx"}},
        ...               {"student": {"file": "s.int8.onnx", "sha256": "ab", "size_bytes": 9, "fp32": {}}})
        ({'student': {'file': 's.onnx', 'int8_file': 's.int8.onnx', 'int8_sha256': 'ab'}}, {'student_int8_size_bytes': 9})
    """
    models = {name: {**entry, **({"int8_file": int8[name]["file"], "int8_sha256": int8[name]["sha256"]}
                                 if name in int8 else {})} for name, entry in models.items()}
    metrics = {f"{name}_int8_{key}": value for name, record in int8.items()
               for key, value in record.items() if _number(value)}
    return models, metrics


def int8_lines(int8: dict[str, dict], figures: tuple[str, ...]) -> list[str]:
    """Printed lines of INT8 records: per model FP32 -> INT8 for size, batch-1 latency and ``figures``.

    Example:
        >>> int8_lines({"student": {"size_bytes": 300, "latency_ms_batch1": 0.1, "accuracy": 0.9,
        ...                         "fp32": {"size_bytes": 1000, "latency_ms_batch1": 0.2, "accuracy": 0.95}}},
        ...            ("accuracy",))[1]
        '  student: 1,000 -> 300 bytes, batch-1 0.2000 -> 0.1000 ms, accuracy 0.9500 -> 0.9000'
    """
    if not int8:
        return []
    lines = ["INT8 (dynamic quantization; the exported first-seed models, same held-out texts), FP32 -> INT8:"]
    for name, record in int8.items():
        fp32 = record["fp32"]
        cells = [f"{fp32['size_bytes']:,} -> {record['size_bytes']:,} bytes",
                 f"batch-1 {fp32['latency_ms_batch1']:.4f} -> {record['latency_ms_batch1']:.4f} ms"]
        cells += [f"{key} {fp32[key]:.4f} -> {record[key]:.4f}" for key in figures if key in record and key in fp32]
        lines.append(f"  {name}: " + ", ".join(cells))
    return lines
