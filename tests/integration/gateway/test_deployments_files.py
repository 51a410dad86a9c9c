"""deployments/*.yaml are valid Ray Serve configs whose gateway config validates."""
from __future__ import annotations

import pathlib

import pytest
import yaml

from gateway.core.config import merge_overlay
from gateway.core.config import load_gateway_config

ROOT = pathlib.Path(__file__).resolve().parents[3]
FILES = sorted((ROOT / "deployments").glob("*.yaml"))


def _effective(app: dict):
    overlay = next((d.get("user_config") or {} for d in app.get("deployments", []) if d["name"] == "Gateway"), {})
    return load_gateway_config(merge_overlay(app["args"]["config"], overlay))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_deployments_file_is_a_serve_config_with_a_valid_gateway_config(path):
    from ray.serve.schema import ServeDeploySchema

    document = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(document)
    assert [a.import_path for a in schema.applications] == ["gateway.serve.app:build_app"]
    config = _effective(document["applications"][0])
    models = "runs/bench-text" if path.stem.startswith("text-") else "runs/demo"
    assert config.students[0].colocated and config.students[0].model_path == f"{models}/student.onnx"


def test_the_ready_configs_say_what_their_names_promise():
    apps = {p.stem: yaml.safe_load(p.read_text())["applications"][0] for p in FILES}
    assert {"local", "canary-5", "shadow-only", "text-local"} <= set(apps)
    text = _effective(apps["text-local"])
    assert text.task == "embedding" and text.teacher.batching.enabled and not text.teacher.colocated
    assert {v.manifest_path for v in text.variants} == {"runs/bench-text/manifest.json"}
    assert _effective(apps["canary-5"]).routing.weights["student"] == 5.0
    shadow = _effective(apps["shadow-only"])
    assert shadow.routing.weights["teacher"] == 100.0 and shadow.shadow.fraction > 0
