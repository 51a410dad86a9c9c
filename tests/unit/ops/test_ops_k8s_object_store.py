"""k8s with models in object storage: publish, set the URI (`kdgate ops generate --models-uri`), apply.

The generated serveConfigV2 points every model and manifest at the published URI (and
validates); every Ray container can read object-storage credentials from the optional
``kdgate-object-store`` Secret and caches models on its writable ``/tmp``.
"""
from __future__ import annotations

import pytest
import yaml
from k8s_fixtures import OVERLAYS, ROOT, of_kind, ray_pod_templates, render
from typer.testing import CliRunner

from kdgate.cli import app
from kdgate.ops import generate
from kdgate.ops.k8s import k8s_serve_config, parse_serve_config_v2

URI = "s3://models/kdgate/v7"


@pytest.mark.parametrize("profile", ("cpu", "gpu"))
def test_models_uri_replaces_the_models_volume(profile):
    document = k8s_serve_config(ROOT / generate.SOURCE, profile=profile, models_uri=URI + "/")
    (config,) = parse_serve_config_v2(yaml.safe_dump(document))
    paths = [p for v in config.variants for p in (v.model_path, v.manifest_path) if p]
    assert paths and all(p.startswith(URI + "/") and p.count("//") == 1 for p in paths)
    assert {p.rsplit("/", 1)[1] for p in paths} >= {"teacher.onnx", "manifest.json"}


def test_uris_in_the_source_stay_as_they_are(tmp_path):
    document = yaml.safe_load((ROOT / generate.SOURCE).read_text())
    variants = document["applications"][0]["args"]["config"]["variants"]
    variants[0]["model_path"] = "gs://other/teacher/v3/teacher.onnx"
    source = tmp_path / "deploy.yaml"
    source.write_text(yaml.safe_dump(document))
    (config,) = parse_serve_config_v2(yaml.safe_dump(k8s_serve_config(source, profile="cpu")))
    assert config.teacher.model_path == "gs://other/teacher/v3/teacher.onnx"
    assert all(v.model_path.startswith("/models/") for v in config.students)


def test_ops_generate_writes_the_uri_into_both_overlays(tmp_path):
    for path in ("deployments/canary-5.yaml",):
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).write_text((ROOT / path).read_text())
    result = CliRunner().invoke(app, ["ops", "generate", "--root", str(tmp_path), "--models-uri", URI])
    assert result.exit_code == 0, result.output
    for profile in ("cpu", "gpu"):
        patch = yaml.safe_load((tmp_path / generate.serve_config_patch_path(profile)).read_text())
        (config,) = parse_serve_config_v2(patch["spec"]["serveConfigV2"])
        assert config.teacher.model_path == f"{URI}/teacher.onnx"
    assert generate.check(tmp_path, URI) == [] and generate.check(tmp_path) != []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_container_gets_the_object_store_secret_and_a_writable_cache(overlay):
    for pod in ray_pod_templates(of_kind(render(overlay), "RayService")[0]):
        (container,) = pod["spec"]["containers"]
        assert {"secretRef": {"name": "kdgate-object-store", "optional": True}} in container["envFrom"]
        cache = next(e["value"] for e in container["env"] if e["name"] == "KDGATE_MODEL_CACHE")
        writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
        assert any(cache.startswith(mount + "/") for mount in writable)
