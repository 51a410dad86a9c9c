"""A complete, valid manifest.json for tests (the contract is gateway.core.manifest.Manifest)."""
from __future__ import annotations

import json
import pathlib
from typing import Any


def manifest_dict(features: int = 2, classes: int = 3, **changes: Any) -> dict:
    """A valid classification manifest; ``changes`` replace top-level keys."""
    doc = {
        "format_version": 1, "kdgate_version": "0.1.0", "created_at": "2026-12-02T00:00:00Z",
        "task": "classification", "class_labels": [str(c) for c in range(classes)],
        "input": {"name": "input", "dtype": "float32", "shape": [-1, features]},
        "output": {"name": "logits", "dtype": "float32", "shape": [-1, classes]},
        "models": {"student": {"file": "student.onnx", "sha256": None, "params": 10}},
        "dataset": {}, "hyperparameters": {}, "metrics": {}, "reference": {},
    }
    doc.update(changes)
    return doc


def write_manifest_file(path: pathlib.Path, **kwargs: Any) -> str:
    """Write :func:`manifest_dict` (``kwargs`` as there) to ``path``; returns the path as str."""
    path.write_text(json.dumps(manifest_dict(**kwargs)))
    return str(path)
