"""The manifest contract: one typed model for distill (writer) and gateway (reader)."""
from __future__ import annotations

import json

import pytest

from gateway.core.errors import ManifestError
from gateway.core.manifest import read_manifest, validate_manifest


def _manifest(**changes) -> dict:
    doc = {
        "format_version": 1, "kdgate_version": "0.1.0", "created_at": "2026-12-02T00:00:00Z",
        "task": "classification", "class_labels": ["a", "b", "c"],
        "input": {"name": "input", "dtype": "float32", "shape": [-1, 2]},
        "output": {"name": "logits", "dtype": "float32", "shape": [-1, 3]},
        "models": {"student": {"file": "student.onnx", "sha256": "ab", "params": 10}},
        "dataset": {}, "hyperparameters": {}, "metrics": {},
        "reference": {"inputs": {"edges": [[0.0], [0, 1]], "fractions": [[0.5, 0.5], [0.3, 0.3, 0.4]]}},
        "calibration": {"file": "calibration.json"},   # a newer writer's section is kept
    }
    doc.update(changes)
    return doc


def test_reads_edges_classes_and_keeps_unknown_sections(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(_manifest()))
    manifest = read_manifest(path)
    assert manifest.input_edges == [[0.0], [0.0, 1.0]]
    assert manifest.n_classes == 3
    assert manifest.model_dump()["calibration"] == {"file": "calibration.json"}


def test_regression_has_no_classes_and_no_reference_means_no_edges():
    manifest = validate_manifest(_manifest(task="regression", class_labels=None, reference={}))
    assert manifest.n_classes is None and manifest.input_edges is None


@pytest.mark.parametrize("changes, problem", [
    ({"models": {}}, "'models' needs a 'student' entry"),
    ({"class_labels": None}, "classification needs 'class_labels'"),
    ({"input": {"name": "x", "shape": [-1, 2]}}, "'input.name' must be 'input'"),
    ({"task": "ranking"}, "task"),
])
def test_contract_violations_are_named(changes, problem):
    with pytest.raises(ManifestError, match=problem):
        validate_manifest(_manifest(**changes))


def test_missing_key_and_unreadable_file_are_named(tmp_path):
    doc = _manifest()
    del doc["reference"]
    with pytest.raises(ManifestError, match="missing key 'reference'"):
        validate_manifest(doc)
    with pytest.raises(ManifestError, match="unreadable"):
        read_manifest(tmp_path / "absent.json")
