"""Models from object storage against a real S3 API on loopback (moto's server, boto3 and s3fs).

`kdgate publish` uploads a real artifact folder; the gateway runtime (real ONNX Runtime, no
Ray) loads its student from ``s3://``, fetched once into the cache and verified against the
manifest's sha256; a tampered object is refused with a message naming the variant, the URI
and both hashes, and the previous config stays in force.
"""
from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest
from gateway_support import gateway_config, onnx_reference
from manifest_support import manifest_dict
from typer.testing import CliRunner

from gateway import model_store
from gateway.backends import build_backend
from gateway.core.config import VariantConfig
from gateway.core.errors import GatewayConfigError
from gateway.observers import Observers
from gateway.runtime import GatewayRuntime
from gateway.serve.local import free_port
from kdgate.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "kdgate-models"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and the AWS_* environment s3fs reads; yields a boto3 client."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "kdgate-test", "AWS_SECRET_ACCESS_KEY": "kdgate-test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket=BUCKET)
        yield client
    server.stop()


@pytest.fixture()
def artifact_dir(onnx_models, tmp_path):
    """An artifact folder as `kdgate distill` writes it: models, triton/ and a manifest with sha256s."""
    folder = tmp_path / "artifact"
    (folder / "triton" / "kdgate-student" / "1").mkdir(parents=True)
    models = {}
    for role in ("teacher", "student"):
        shutil.copy(onnx_models[role], folder / f"{role}.onnx")
        models[role] = {"file": f"{role}.onnx", "sha256": model_store.sha256_file(folder / f"{role}.onnx")}
    shutil.copy(onnx_models["student"], folder / "triton" / "kdgate-student" / "1" / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest_dict(features=40, classes=10, models=models)))
    return folder


def _publish(folder, uri: str) -> str:
    result = CliRunner().invoke(app, ["publish", str(folder), uri])
    assert result.exit_code == 0, result.output
    return result.output


def _s3_config(onnx_models, tmp_path, prefix: str) -> dict:
    config = gateway_config(onnx_models, tmp_path)
    student = config["variants"][1]
    student.update(model_path=f"s3://{BUCKET}/{prefix}/student.onnx", manifest_path=f"s3://{BUCKET}/{prefix}/manifest.json")
    return config


def _runtime(onnx_models) -> GatewayRuntime:
    async def teacher(x):
        return onnx_reference(onnx_models["teacher"], x)

    return GatewayRuntime(remote_callers={"teacher": teacher}, observers=Observers(metrics=None))


def test_publish_writes_the_artifact_folder_manifest_last(s3, artifact_dir):
    output = _publish(artifact_dir, f"s3://{BUCKET}/publish/v1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="publish/v1/")["Contents"]}
    assert keys == {"publish/v1/manifest.json", "publish/v1/student.onnx", "publish/v1/teacher.onnx",
                    "publish/v1/triton/kdgate-student/1/model.onnx"}
    lines = [line for line in output.splitlines() if line.startswith("wrote ")]
    assert len(lines) == 4 and lines[-1] == f"wrote s3://{BUCKET}/publish/v1/manifest.json"
    body = s3.get_object(Bucket=BUCKET, Key="publish/v1/student.onnx")["Body"].read()
    assert body == (artifact_dir / "student.onnx").read_bytes()


def test_publish_refuses_a_folder_whose_model_differs_from_its_manifest(s3, artifact_dir):
    shutil.copy(artifact_dir / "teacher.onnx", artifact_dir / "student.onnx")
    result = CliRunner().invoke(app, ["publish", str(artifact_dir), f"s3://{BUCKET}/refused"])
    assert result.exit_code == 2
    assert "student.onnx: sha256" in result.output and "differs from the manifest's" in result.output
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="refused/")


def test_the_runtime_serves_a_student_from_s3_downloaded_once(s3, artifact_dir, onnx_models, tmp_path, monkeypatch):
    monkeypatch.setenv(model_store.CACHE_ENV, str(tmp_path / "cache"))
    _publish(artifact_dir, f"s3://{BUCKET}/serve/v1")
    config = _s3_config(onnx_models, tmp_path, "serve/v1")
    config["routing"]["weights"] = {"teacher": 0, "student": 100}
    uri = config["variants"][1]["model_path"]
    before = model_store.downloads[uri]
    x = onnx_models["x"][:4]
    for _ in range(2):  # two replicas' worth of loads on one node: the second is a cache hit
        runtime = _runtime(onnx_models)
        runtime.apply(config, actor="test")
        answer = asyncio.run(runtime.answer(x, {}))
        assert answer.variant == "student" and not answer.fallback
        np.testing.assert_allclose(answer.y, onnx_reference(onnx_models["student"], x), rtol=1e-6)
    assert model_store.downloads[uri] - before == 1
    cached = list((tmp_path / "cache" / "models").rglob("student.onnx"))
    assert len(cached) == 1 and cached[0].parent.name == model_store.sha256_file(onnx_models["student"])
    assert runtime.state.input_shape == [-1, 40]  # the manifest, fetched from s3://, was read


def test_a_remote_teacher_finds_the_manifest_beside_it(s3, artifact_dir, onnx_models, tmp_path, monkeypatch):
    monkeypatch.setenv(model_store.CACHE_ENV, str(tmp_path / "cache"))
    _publish(artifact_dir, f"s3://{BUCKET}/teacher/v1")
    variant = VariantConfig(name="teacher", role="teacher", backend="onnx", device="cpu",
                            model_path=f"s3://{BUCKET}/teacher/v1/teacher.onnx")
    x = onnx_models["x"][:3]
    np.testing.assert_allclose(build_backend(variant).infer(x), onnx_reference(onnx_models["teacher"], x), rtol=1e-6)


def test_a_tampered_model_is_refused_and_the_previous_config_stays(s3, artifact_dir, onnx_models, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv(model_store.CACHE_ENV, str(tmp_path / "cache"))
    _publish(artifact_dir, f"s3://{BUCKET}/good/v1")
    _publish(artifact_dir, f"s3://{BUCKET}/tampered/v1")
    s3.put_object(Bucket=BUCKET, Key="tampered/v1/student.onnx", Body=(artifact_dir / "teacher.onnx").read_bytes())
    runtime = _runtime(onnx_models)
    runtime.apply(_s3_config(onnx_models, tmp_path, "good/v1"), actor="test")
    # The cache is content-addressed: with the verified bytes of that sha256 at hand nothing is
    # downloaded. A replica with an empty cache (a new node) meets the tampered object:
    monkeypatch.setenv(model_store.CACHE_ENV, str(tmp_path / "node-2-cache"))
    bad = _s3_config(onnx_models, tmp_path, "tampered/v1")
    with pytest.raises(GatewayConfigError) as refused:
        runtime.apply(bad, actor="serve-deploy")
    message = str(refused.value)
    expected = model_store.sha256_file(artifact_dir / "student.onnx")
    actual = model_store.sha256_file(artifact_dir / "teacher.onnx")
    assert "variants.student.model_path" in message and "variant 'student' not served" in message
    assert f"s3://{BUCKET}/tampered/v1/student.onnx has sha256 {actual}" in message
    assert f"the manifest records {expected}" in message
    assert runtime.config.variant("student").model_path == f"s3://{BUCKET}/good/v1/student.onnx"
    x = onnx_models["x"][:2]
    answer = asyncio.run(runtime.answer(x, {"x-kdgate-force-variant": "student"}))
    np.testing.assert_allclose(answer.y, onnx_reference(onnx_models["student"], x), rtol=1e-6)
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert entries[-1]["action"] == "config.rejected" and "not served" in entries[-1]["new"]["reason"]
    assert not list((tmp_path / "node-2-cache").rglob("*.onnx*"))  # the bad download left nothing


def test_a_missing_object_is_a_config_error_naming_it(s3, onnx_models, tmp_path, monkeypatch):
    monkeypatch.setenv(model_store.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(GatewayConfigError, match=r"manifest s3://kdgate-models/absent/v1/manifest.json unreadable"):
        _runtime(onnx_models).apply(_s3_config(onnx_models, tmp_path, "absent/v1"), actor="test")


def test_http_uris_and_a_local_publish_target(artifact_dir, onnx_models, tmp_path, monkeypatch):
    """`kdgate publish` to a folder, served by a plain HTTP server: model_path https?:// works the same."""
    import functools
    import http.server
    import threading

    monkeypatch.setenv(model_store.CACHE_ENV, str(tmp_path / "cache"))
    site = tmp_path / "site"
    _publish(artifact_dir, str(site / "v1"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        variant = VariantConfig(name="teacher", role="teacher", backend="onnx", device="cpu",
                                model_path=f"{base}/teacher.onnx")
        x = onnx_models["x"][:3]
        np.testing.assert_allclose(build_backend(variant).infer(x), onnx_reference(onnx_models["teacher"], x),
                                   rtol=1e-6)
        assert model_store.downloads[f"{base}/teacher.onnx"] == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
