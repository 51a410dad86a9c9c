"""report.json and manifest.json of a text classification run (distill/text_classify.py).

The report uses the MNIST-1D path's keys (teacher / student / baseline with accuracy, per-class,
ECE, params, batch-1 latency and ONNX size; retention, agreement, speedup, reductions, sweep),
so report.html and the CLI's summary table render it unchanged; ``per_seed`` and ``acceptance``
are added, as in the embedding task.
"""
from __future__ import annotations

from distill import export as ex
from distill.text_int8 import manifest_int8

TARGETS = {"retention": 0.99, "speedup_batch1": 20.0}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else float(a) / float(b)


def _variant(metrics: dict, params: int, latency_ms: float | None, onnx: dict | None, source: str | None = None) -> dict:
    entry = {**metrics, "params": params, "latency_ms": {"batch1": latency_ms},
             "onnx_size_bytes": (onnx or {}).get("size_bytes"), "max_abs_diff": (onnx or {}).get("max_abs_diff")}
    if onnx:
        entry.update(file=onnx["file"], sha256=onnx["sha256"])
    if source:
        entry["source"] = source
    return entry


def acceptance(report: dict) -> dict:
    """Each classification target of issue 12 with its figure and met / not met (agreement: reported only)."""
    result = {name: {"value": report.get(name), "target": target,
                     "met": None if report.get(name) is None else report[name] >= target}
              for name, target in TARGETS.items()}
    result["agreement"] = {"value": report.get("agreement"), "target": None, "met": None}
    return result


def _int8_variant(record: dict) -> dict:
    """An INT8 record (distill/text_int8.py) under the MNIST-1D INT8 keys, which report.html and the CLI show."""
    return {**{k: v for k, v in record.items() if k not in ("size_bytes", "latency_ms_batch1")},
            "onnx_size_bytes": record["size_bytes"], "latency_ms": {"batch1": record["latency_ms_batch1"]}}


def assemble_report(config, prep, metrics: dict, per_seed: list[dict], sweep: list[dict], chosen: dict,
                    params: dict, exported: dict, timings, int8: dict | None = None) -> dict:
    """The report dict (mean over seeds; the exported first-seed student gives size and latency).

    ``int8``: {name: INT8 record} of the exported models, kept as ``int8`` and under each variant's ``int8``.
    """
    files = {name: {"file": e.path.name, "sha256": e.sha256, "size_bytes": e.size_bytes,
                    "max_abs_diff": e.max_abs_diff, "tolerance": e.tolerance}
             for name, e in exported["exports"].items()}
    latency = exported["latency_ms_batch1"]
    teacher_ms = latency.get("teacher", latency.get("teacher_torch"))
    report = {
        "name": config.name, "task": "classification", "text": True, "config": config.model_dump(mode="json"),
        "dataset": prep.ds.summary(), "class_labels": prep.ds.class_labels,
        "teacher": {**_variant(metrics["teacher"], params["teacher"], teacher_ms, files.get("teacher"),
                               "huggingface"), "identity": prep.teacher.identity,
                    "head": "logistic regression on the labelled train embeddings"},
        "student": {**_variant(metrics["student"], params["student"], latency["student"], files["student"]),
                    "temperature": chosen["temperature"], "alpha": chosen["alpha"],
                    "architecture": config.student.architecture.model_dump()},
        "baseline": _variant(metrics["baseline"], params["student"], None, None),
        "agreement": float(sum(s["agreement"] for s in per_seed) / len(per_seed)),
        "baseline_agreement": float(sum(s["baseline_agreement"] for s in per_seed) / len(per_seed)),
        "speedup_batch1": _ratio(teacher_ms, latency["student"]),
        "size_reduction": _ratio((files.get("teacher") or {}).get("size_bytes"), files["student"]["size_bytes"]),
        "param_reduction": _ratio(params["teacher"], params["student"]),
        "latency_tokens": exported["latency_tokens"], "tokenizer": exported["tokenizer"],
        "teacher_runtime": "onnxruntime" if "teacher" in latency else "torch",
        "parity": {"student_max_abs_diff": files["student"]["max_abs_diff"],
                   "teacher_max_abs_diff": (files.get("teacher") or {}).get("max_abs_diff"),
                   "tolerance": config.export.parity_tolerance},
        "sweep": sweep, "per_seed": per_seed, "seeds": len(per_seed), "timings_s": dict(timings),
        "soft_label_cache": prep.cache,
    }
    for name, record in (int8 or {}).items():
        report[name]["int8"] = _int8_variant(record)
    if int8:
        report["int8"] = int8
    report["retention"] = _ratio(metrics["student"]["accuracy"], metrics["teacher"]["accuracy"])
    report["acceptance"] = acceptance(report)
    return report


def classification_manifest(config, prep, report: dict, exported: dict) -> dict:
    """manifest.json for a text classification student (int64 token ids in, class logits out)."""
    student, teacher = report["student"], report["teacher"]
    n_classes = len(prep.ds.class_labels)
    train = config.student.train
    models = {"student": {"file": student["file"], "sha256": student["sha256"], "params": student["params"],
                          "architecture": student["architecture"]},
              "teacher": {"file": teacher.get("file"), "sha256": teacher.get("sha256"), "params": teacher["params"],
                          "source": "huggingface", "identity": teacher["identity"]}}
    models, int8_metrics = manifest_int8(models, report.get("int8") or {})
    return {
        "task": "classification", "class_labels": prep.ds.class_labels,
        "input": {"name": ex.INPUT_NAME, "dtype": "int64", "shape": [-1, -1]},
        "output": {"name": ex.OUTPUT_NAME, "dtype": "float32", "shape": [-1, n_classes]},
        "models": models,
        "tokenizer": exported["tokenizer"],
        "dataset": {k: report["dataset"][k] for k in ("name", "sha256", "n_train", "n_val", "n_test", "n_unlabeled")},
        "hyperparameters": {"temperature": student["temperature"], "alpha": student["alpha"],
                            "epochs": train.epochs, "batch_size": train.batch_size, "lr": train.lr,
                            "seed": config.seed, "strategy": "kd"},
        "metrics": {"teacher_accuracy": teacher["accuracy"], "student_accuracy": student["accuracy"],
                    "baseline_accuracy": report["baseline"]["accuracy"], "agreement": report["agreement"],
                    "retention": report["retention"], **int8_metrics},
        "reference": {"outputs": {}},
    }
