"""Turn trained models into the artifacts of docs/artifacts.md and the report dict.

Exports teacher, student and baseline to ONNX (parity-checked), measures each variant on
the test set through ONNX Runtime (what ships is what is measured), writes INT8, the
Triton repository and manifest.json, and assembles the report the renderer reads.

Example:
    >>> variants = export_and_evaluate(config, ds, teacher, soft, student, baseline, out, reporter)  # doctest: +SKIP
    >>> variants["student"]["accuracy"]  # doctest: +SKIP
    0.95
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distill import evaluate as ev
from distill import export as ex
from distill.config import DistillConfig
from distill.data import Dataset
from distill.errors import ExportError
from distill.models import describe

STUDENT_TRITON_NAME = "kdgate-student"
TEACHER_TRITON_NAME = "kdgate-teacher"


def quality_metrics(outputs: np.ndarray, ds: Dataset) -> dict:
    """Test-set metrics of one variant's outputs."""
    if ds.task == "regression":
        return ev.regression_metrics(outputs.reshape(len(ds.y_test), -1), ds.y_test.reshape(len(ds.y_test), -1))
    return ev.classification_metrics(outputs, ds.y_test, ds.class_labels)


def copy_onnx_with_contract_names(src: Path, dst: Path) -> Path:
    """Copy a user's ONNX teacher, renaming its I/O to ``input`` / ``logits`` (the contract)."""
    import onnx  # noqa: PLC0415

    try:
        model = onnx.load(str(src))
        graph = model.graph
        rename = {graph.input[0].name: ex.INPUT_NAME, graph.output[0].name: ex.OUTPUT_NAME}
        for node in graph.node:
            node.input[:] = [rename.get(name, name) for name in node.input]
            node.output[:] = [rename.get(name, name) for name in node.output]
        graph.input[0].name, graph.output[0].name = ex.INPUT_NAME, ex.OUTPUT_NAME
        del graph.output[1:]
        for value in (graph.input[0], graph.output[0]):  # the contract's dynamic batch axis
            value.type.tensor_type.shape.dim[0].dim_param = ex.BATCH_AXIS
        onnx.checker.check_model(model)
        onnx.save(model, str(dst))
    except Exception as err:  # onnx raises many unrelated types
        raise ExportError(f"cannot copy the ONNX teacher {src} to {dst}: {err}") from err
    return dst


def measure_onnx(path: Path, ds: Dataset) -> dict:
    """Test metrics of an ONNX file plus its size (latency is measured later, interleaved)."""
    outputs = ex.onnx_predict(path, ds.x_test)
    return {**quality_metrics(outputs, ds), "outputs": outputs, "onnx_size_bytes": ev.file_size_bytes(path)}


def measure_latencies(paths: dict[str, Path], x: np.ndarray, repeats: int, rounds: int = 3) -> dict:
    """ONNX Runtime latency per file: the lowest of ``rounds`` medians, variants interleaved.

    Other processes share this CPU; interleaving spreads their load over every variant
    alike, and the best median of a few rounds is the least disturbed one.
    """
    best: dict[str, dict[str, float]] = {}
    per_round = max(5, repeats // rounds)
    for _ in range(rounds):
        for name, path in paths.items():
            measured = ev.onnx_latency_ms(path, x, repeats=per_round)
            best[name] = {k: min(v, best.get(name, {}).get(k, v)) for k, v in measured.items()}
    return best


def export_torch_variant(name: str, model, ds: Dataset, config: DistillConfig, out_dir: Path) -> dict:
    """Export, parity-check and measure a torch model (teacher, student or baseline)."""
    exported = ex.export_onnx(model, out_dir / f"{name}.onnx", ds.x_test, config.export.parity_tolerance)
    result = measure_onnx(exported.path, ds)
    result.update(params=ev.count_params(model), sha256=exported.sha256, max_abs_diff=exported.max_abs_diff,
                  file=exported.path.name,
                  torch_latency_ms=ev.torch_latency_ms(model, ds.x_test, repeats=config.export.latency_repeats))
    return result


def teacher_variant(teacher, soft, ds: Dataset, config: DistillConfig, out_dir: Path) -> dict:
    """The teacher's measurements; a black-box teacher has only its test outputs."""
    if teacher.source == "trained":
        result = export_torch_variant("teacher", teacher.model, ds, config, out_dir)
    elif teacher.source == "onnx":
        path = copy_onnx_with_contract_names(teacher.path, out_dir / "teacher.onnx")
        result = measure_onnx(path, ds)
        result.update(file=path.name, sha256=ex.sha256_file(path), params=onnx_param_count(path),
                      max_abs_diff=float(np.max(np.abs(result["outputs"] - soft.test))))
    else:  # black box: no model, so nothing to count, time or export
        result = {**quality_metrics(soft.test, ds), "outputs": soft.test, "params": None, "latency_ms": None,
                  "torch_latency_ms": None, "onnx_size_bytes": None}
    return {**result, "source": teacher.source, "identity": teacher.identity}


def onnx_param_count(path: Path) -> int:
    """Number of weights stored in an ONNX file's initializers."""
    import onnx  # noqa: PLC0415

    return int(sum(np.prod(init.dims) for init in onnx.load(str(path)).graph.initializer))


def int8_variant(student_path: Path, ds: Dataset, out_dir: Path) -> dict:
    """INT8 dynamic quantization of the student, re-evaluated on the test set."""
    path = ex.quantize_int8(student_path, out_dir / "student.int8.onnx")
    result = measure_onnx(path, ds)
    result.pop("outputs")
    return {**result, "file": path.name, "sha256": ex.sha256_file(path)}


def write_triton(out_dir: Path, ds: Dataset, config: DistillConfig, variants: dict) -> None:
    repo = out_dir / "triton"
    names = {"student": STUDENT_TRITON_NAME, "teacher": TEACHER_TRITON_NAME}
    for variant, name in names.items():
        if variants.get(variant, {}).get("file"):
            ex.write_triton_model(repo, name, out_dir / variants[variant]["file"], ds.feature_shape,
                                  ds.n_outputs, max_batch_size=config.export.max_batch_size,
                                  preferred_batch_sizes=[b for b in (8, 32) if b <= config.export.max_batch_size])


def export_and_evaluate(config: DistillConfig, ds: Dataset, teacher, soft, student, baseline, out_dir: Path,
                        reporter) -> dict:
    """Every variant exported and measured: {"teacher", "student", "baseline"} dicts."""
    variants = {"teacher": teacher_variant(teacher, soft, ds, config, out_dir),
                "student": export_torch_variant("student", student, ds, config, out_dir),
                "baseline": export_torch_variant("baseline", baseline, ds, config, out_dir)}
    files = {name: out_dir / v["file"] for name, v in variants.items() if v.get("file")}
    if config.export.int8:
        variants["student"]["int8"] = int8_variant(out_dir / "student.onnx", ds, out_dir)
        files["int8"] = out_dir / variants["student"]["int8"]["file"]
    for name, latency in measure_latencies(files, ds.x_test, config.export.latency_repeats).items():
        (variants["student"]["int8"] if name == "int8" else variants[name])["latency_ms"] = latency
    if config.export.triton:
        write_triton(out_dir, ds, config, variants)
    reporter.log(f"export: ONNX files, {'INT8, ' if config.export.int8 else ''}"
                 f"{'triton/, ' if config.export.triton else ''}parity checked in {out_dir}")
    return variants


def _ratio(numerator, denominator) -> float | None:
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)


def _public(variant: dict) -> dict:
    """A variant's report entry: everything but the raw test outputs."""
    return {k: v for k, v in variant.items() if k != "outputs"}


def headline(ds: Dataset, config: DistillConfig, variants: dict) -> dict:
    """Retention, agreement, speedup, size and parameter reduction, cost per million."""
    teacher, student = variants["teacher"], variants["student"]
    b1 = lambda v: (v.get("latency_ms") or {}).get("batch1")  # noqa: E731
    b64 = lambda v: (v.get("latency_ms") or {}).get("batch64")  # noqa: E731
    costs = {"teacher": b64(teacher) and ev.cost_per_million(b64(teacher), config.cost.teacher_usd_per_hour),
             "student": ev.cost_per_million(b64(student), config.cost.student_usd_per_hour)}
    if student.get("int8"):
        costs["student_int8"] = ev.cost_per_million(b64(student["int8"]), config.cost.student_usd_per_hour)
    classification = ds.task == "classification"
    return {
        "retention": _ratio(student.get("accuracy"), teacher.get("accuracy")) if classification else None,
        "agreement": ev.agreement(student["outputs"], teacher["outputs"]) if classification else None,
        "speedup_batch1": _ratio(b1(teacher), b1(student)),
        "size_reduction": _ratio(teacher.get("onnx_size_bytes"), student.get("onnx_size_bytes")),
        "param_reduction": _ratio(teacher.get("params"), student.get("params")),
        "cost_per_million_usd": costs,
        "parity": {"student_max_abs_diff": student.get("max_abs_diff"),
                   "teacher_max_abs_diff": teacher.get("max_abs_diff"),
                   "baseline_max_abs_diff": variants["baseline"].get("max_abs_diff"),
                   "tolerance": config.export.parity_tolerance},
    }


def build_report(config: DistillConfig, ds: Dataset, soft, runs, best, strategy, variants: dict,
                 labels, timings: dict, out_dir: Path) -> dict:
    """The report dict (keys listed in docs/artifacts.md); also writes manifest.json.

    ``strategy`` is the StrategyResult that trained the exported student.
    """
    from distill.strategies.runner import strategy_rows  # noqa: PLC0415

    latency = {kind: (variants[kind].get("latency_ms") or {}).get("batch1") for kind in ("student", "baseline")}
    report = {
        "name": config.name, "config": config.model_dump(mode="json"), "dataset": ds.summary(),
        "task": ds.task, "class_labels": ds.class_labels,
        "teacher": _public(variants["teacher"]),
        "student": {**_public(variants["student"]), "temperature": best.temperature, "alpha": best.alpha,
                    "architecture": describe(strategy.architecture, strategy.student)},
        "baseline": _public(variants["baseline"]),
        **headline(ds, config, variants),
        "sweep": [run.row(ds.task, latency["baseline" if run.kind == "baseline" else "student"]) for run in runs],
        "timings_s": dict(timings),
        "soft_label_cache": {"hit": labels.hit, "key": labels.key, "path": str(labels.path)},
        "strategy": strategy.report,
    }
    report["strategies"] = strategy_rows(report)
    report["manifest"] = str(ex.write_manifest(out_dir / "manifest.json", run_manifest(config, ds, soft, report)))
    return report


def run_manifest(config: DistillConfig, ds: Dataset, soft, report: dict) -> dict:
    """The run's manifest.json content: lineage and serving metadata for the gateway (docs/artifacts.md)."""
    student, teacher = report["student"], report["teacher"]
    models = {"student": {"file": student["file"], "sha256": student["sha256"], "params": student["params"],
                          "architecture": student["architecture"]},
              "teacher": {"file": teacher.get("file"), "sha256": teacher.get("sha256"),
                          "params": teacher.get("params"), "source": teacher["source"],
                          "identity": teacher["identity"]}}
    if student.get("int8"):
        models["student"].update(int8_file=student["int8"]["file"], int8_sha256=student["int8"]["sha256"])
    manifest = {
        "task": ds.task,
        "input": {"name": ex.INPUT_NAME, "dtype": "float32", "shape": [-1, *ds.feature_shape]},
        "output": {"name": ex.OUTPUT_NAME, "dtype": "float32", "shape": [-1, ds.n_outputs]},
        "class_labels": ds.class_labels, "models": models,
        "dataset": {k: report["dataset"][k] for k in ("name", "sha256", "n_train", "n_val", "n_test", "n_unlabeled")},
        "hyperparameters": {"temperature": student["temperature"], "alpha": student["alpha"],
                            "epochs": config.student.train.epochs, "batch_size": config.student.train.batch_size,
                            "lr": config.student.train.lr, "seed": config.seed,
                            "strategy": config.strategy.kind},
        "metrics": {"teacher_accuracy": teacher.get("accuracy"), "student_accuracy": student.get("accuracy"),
                    "baseline_accuracy": report["baseline"].get("accuracy"), "agreement": report["agreement"],
                    "retention": report["retention"], "student_mse": student.get("mse")},
        "reference": ex.reference_stats(ds.x_train, soft.test, task=ds.task),
    }
    return manifest
