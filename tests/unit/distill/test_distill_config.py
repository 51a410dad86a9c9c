"""Config validation fails before training, naming each bad field."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import DistillConfig, load_config, parse_config
from distill.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_shipped_configs_are_valid():
    config = load_config(ROOT / "distill/configs/mnist1d.yaml")
    assert config.data.mnist1d.num_samples == 5000 and config.data.mnist1d.n_unlabeled > 0
    assert config.sweep.temperatures == [1, 2, 4, 8, 16] and config.sweep.alphas == [0.5, 0.7, 0.9]
    load_config(ROOT / "distill/configs/tiny.yaml")


def test_defaults_are_the_issue_sweep():
    config = DistillConfig()
    assert config.sweep.temperatures == [1, 2, 4, 8, 16] and config.sweep.alphas == [0.5, 0.7, 0.9]


@pytest.mark.parametrize("document, field, words", [
    ({"sweep": {"temperatures": [0, 2]}}, "sweep", "temperatures must all be > 0"),
    ({"sweep": {"alphas": [1.5]}}, "sweep", "alphas must all lie in [0, 1]"),
    ({"student": {"train": {"epochs": 0}}}, "student.train.epochs", "greater than or equal to 1"),
    ({"teacher": {"architecture": {"kind": "transformer"}}}, "teacher.architecture.kind", "cnn1d"),
    ({"data": {"source": "npz"}}, "data", "needs 'path'"),
    ({"teacher": {"source": "onnx"}}, "teacher", "needs 'path'"),
    ({"studnet": {}}, "studnet", "unknown field"),
    ({"export": {"int8": "maybe"}}, "export.int8", "boolean"),
])
def test_bad_field_is_named(document, field, words):
    with pytest.raises(ConfigError) as info:
        parse_config(document, "c.yaml")
    message = str(info.value)
    assert message.startswith("c.yaml: invalid config:")
    assert f"  {field}: " in message and words in message


def test_every_problem_gets_its_own_line():
    with pytest.raises(ConfigError) as info:
        parse_config({"seed": "x", "sweep": {"epochs": 0}}, "c.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and lines[1].startswith("  seed:") and lines[2].startswith("  sweep.epochs:")


def test_yaml_syntax_error_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sweep: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "data.npz").write_bytes(b"")
    path = tmp_path / "c.yaml"
    path.write_text("data: {source: npz, path: data.npz}\n")
    assert load_config(path).data.path == tmp_path / "data.npz"


def test_every_field_has_a_description():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)
    walk(DistillConfig)
