"""Models from object storage against a real S3 API on loopback (moto's server, boto3 and s3fs).

`kdgate publish` uploads a real artifact folder; the gateway runtime (real ONNX Runtime, no
Ray) loads its student from ``s3://``, fetched once into the cache and verified against the
manifest's sha256; a tampered object is refused with a message naming the variant, the URI
and both hashes, and the previous config stays in force. The same end to end: a real
`kdgate serve` (its own Ray Serve, in a subprocess with the AWS_* environment) serving both
models from ``s3://``.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections import Counter

import httpx
import numpy as np
import pytest
import yaml
from gateway_support import ADMIN_TOKEN, gateway_config, onnx_reference, serve_command, serve_env, wait_ready
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


@contextlib.contextmanager
def _s3_gets():
    """A Counter of the GET requests moto's S3 server answers while the block runs, by ``bucket/key``.

    The server runs in this process (a thread); werkzeug logs one line per request, and s3fs
    fetches a small object with one GET, so the count is the number of downloads by any process.
    """
    gets: Counter[str] = Counter()

    class Recorder(logging.Handler):
        def emit(self, record):
            method, _, rest = str(record.args[0] if record.args else "").partition(" ")
            if method == "GET":
                gets[rest.split(" ", 1)[0].split("?", 1)[0].lstrip("/")] += 1

    logger, handler = logging.getLogger("werkzeug"), Recorder()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield gets
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def _kdgate_serve(config_path, port: int, env: dict, log):
    """``kdgate serve`` in its own session; SIGINT at the end (SIGKILL to the group if it hangs)."""
    proc = subprocess.Popen(serve_command(config_path, port), env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _version_with_student(src, dest, model: str):
    """A copy of the artifact folder ``src`` whose student is ``model`` (manifest sha256 updated)."""
    shutil.copytree(src, dest)
    shutil.copy(model, dest / "student.onnx")
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["models"]["student"]["sha256"] = model_store.sha256_file(model)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _predict(url: str, x: np.ndarray, variant: str) -> np.ndarray:
    response = httpx.post(f"{url}/v1/models/mnist1d:predict", json={"instances": x.tolist()},
                          headers={"x-kdgate-force-variant": variant}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-kdgate-variant"] == variant
    return np.asarray(response.json()["predictions"], dtype=np.float32)


def test_kdgate_serve_answers_from_models_on_s3_and_refuses_a_tampered_object(s3, artifact_dir, onnx_models,
                                                                              tmp_path):
    v1, v2 = f"s3://{BUCKET}/e2e/v1", f"s3://{BUCKET}/e2e/v2"
    _publish(artifact_dir, v1)
    # v2 is a new version whose student is another model (the teacher's file): its sha256 is not in
    # the content-addressed cache, so the gateway must download it (same bytes would be a cache hit).
    _publish(_version_with_student(artifact_dir, tmp_path / "artifact-v2", onnx_models["teacher"]), v2)
    s3.put_object(Bucket=BUCKET, Key="e2e/v2/student.onnx", Body=(artifact_dir / "student.onnx").read_bytes())
    expected, actual = (model_store.sha256_file(onnx_models[role]) for role in ("teacher", "student"))

    (tmp_path / "token").write_text(ADMIN_TOKEN)
    config = gateway_config(onnx_models, tmp_path, admin={"token_file": str(tmp_path / "token")})
    for variant in config["variants"]:
        variant.update(model_path=f"{v1}/{variant['name']}.onnx", manifest_path=f"{v1}/manifest.json")
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**serve_env(), model_store.CACHE_ENV: str(tmp_path / "cache")}  # serve_env() has the AWS_* of `s3`
    port, log = free_port(), tmp_path / "serve.log"
    url, auth = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {ADMIN_TOKEN}"}
    x = onnx_models["x"][:8]
    with _s3_gets() as gets, _kdgate_serve(path, port, env, log) as proc:
        started = time.monotonic()
        try:
            wait_ready(url, timeout_s=240, proc=proc)
        except RuntimeError as err:
            raise AssertionError(log.read_text()[-3000:]) from err
        ready_s = time.monotonic() - started
        for role in ("teacher", "student"):
            np.testing.assert_allclose(_predict(url, x, role), onnx_reference(onnx_models[role], x),
                                       rtol=1e-5, atol=1e-6)
        at_ready = Counter(gets)

        tampered = copy.deepcopy(config["variants"])
        tampered[1].update(model_path=f"{v2}/student.onnx", manifest_path=f"{v2}/manifest.json", version="s2")
        put_started = time.monotonic()
        refused = httpx.put(f"{url}/admin/config", json={"variants": tampered}, headers=auth, timeout=120)
        refusal_s = time.monotonic() - put_started
        assert refused.status_code == 422, refused.text
        message = refused.json()["error"]
        assert "variants.student.model_path" in message and "variant 'student' not served" in message
        assert f"{v2}/student.onnx has sha256 {actual}, the manifest records {expected}" in message

        in_force = httpx.get(f"{url}/admin/config", headers=auth, timeout=30).json()["config"]
        assert in_force["variants"][1]["model_path"] == f"{v1}/student.onnx"
        assert in_force["variants"][1]["version"] == "s1"
        np.testing.assert_allclose(_predict(url, x, "student"), onnx_reference(onnx_models["student"], x),
                                   rtol=1e-5, atol=1e-6)

    models = tmp_path / "cache" / "models"
    key = f"{BUCKET}/e2e"
    # Each model was downloaded once, by the process that loads it; the tampered object once, then refused.
    assert at_ready[f"{key}/v1/student.onnx"] == 1 and at_ready[f"{key}/v1/teacher.onnx"] == 1
    assert gets[f"{key}/v2/student.onnx"] == 1
    assert sorted(p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file()) == sorted(
        [f"{actual}/student.onnx", f"{model_store.sha256_file(onnx_models['teacher'])}/teacher.onnx"])
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    rejected = [e for e in entries if e["action"] == "config.rejected"]
    assert rejected and "not served" in rejected[-1]["new"]["reason"]
    sizes = {role: os.path.getsize(onnx_models[role]) for role in ("teacher", "student")}
    print(f"kdgate serve ready {ready_s:.1f} s after start with teacher and student from {v1} "
          f"(GETs at readiness: {dict(sorted(at_ready.items()))}; model bytes {sizes}); "
          f"{len(x)} rows per variant equal to ONNX Runtime's; tampered {v2}/student.onnx refused in "
          f"{refusal_s:.2f} s (GETs of it: {gets[f'{key}/v2/student.onnx']}) with 422: {message}")
