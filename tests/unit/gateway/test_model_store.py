"""gateway.model_store on fsspec's in-memory filesystem (a real fsspec backend, no server).

The same code paths as s3:// (tests/integration/gateway/test_model_store_s3.py runs them
against a real S3 API): publish, fetch once into the content-addressed cache, verify the
sha256, refuse a mismatch naming variant, URI and both hashes.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import uuid

import fsspec
import pytest
from manifest_support import manifest_dict

from distill.cli import _run_to
from gateway import model_store
from gateway.core.config import VariantConfig
from gateway.core.errors import GatewayConfigError, ManifestError

STUDENT, INT8, TEACHER = b"student-bytes", b"int8-bytes", b"teacher-bytes"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _folder(root: pathlib.Path, *, student_sha: str | None = _sha(STUDENT)) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in (("student.onnx", STUDENT), ("student.int8.onnx", INT8), ("teacher.onnx", TEACHER)):
        (root / name).write_bytes(data)
    (root / "triton" / "kdgate-student" / "1").mkdir(parents=True)
    (root / "triton" / "kdgate-student" / "1" / "model.onnx").write_bytes(STUDENT)
    models = {"student": {"file": "student.onnx", "sha256": student_sha, "int8_file": "student.int8.onnx",
                          "int8_sha256": _sha(INT8)},
              "teacher": {"file": "teacher.onnx", "sha256": _sha(TEACHER)}}
    (root / "manifest.json").write_text(json.dumps(manifest_dict(models=models)))
    return root


@pytest.fixture()
def remote(tmp_path, monkeypatch):
    """A fresh memory:// prefix and an empty cache."""
    monkeypatch.setenv(model_store.CACHE_ENV, str(tmp_path / "cache"))
    return f"memory://kdgate-{uuid.uuid4().hex[:8]}/v1"


def _variant(uri: str, **changes) -> VariantConfig:
    return VariantConfig(**{"name": "student", "role": "student", "backend": "onnx", "model_path": uri, **changes})


def test_local_paths_pass_through_and_uris_are_remote():
    assert model_store.model_file(_variant("/models/student.onnx")) == "/models/student.onnx"
    assert model_store.local_manifest("rel/manifest.json") == "rel/manifest.json"
    assert [model_store.is_remote(p) for p in ("s3://b/k", "https://h/m.onnx", "/m.onnx", "file:///m")] == \
        [True, True, False, False]


def test_publish_then_fetch_once_verified(tmp_path, remote):
    written = model_store.publish(_folder(tmp_path / "art"), remote)
    assert written[-1] == f"{remote}/manifest.json" and f"{remote}/triton/kdgate-student/1/model.onnx" in written
    for name, data in (("student.onnx", STUDENT), ("student.int8.onnx", INT8)):
        uri = f"{remote}/{name}"
        first = model_store.model_file(_variant(uri))
        assert pathlib.Path(first).read_bytes() == data and pathlib.Path(first).parent.name == _sha(data)
        assert model_store.model_file(_variant(uri)) == first  # a cache hit
        assert model_store.downloads[uri] == 1


def test_a_tampered_object_is_refused_naming_variant_uri_and_hashes(tmp_path, remote):
    model_store.publish(_folder(tmp_path / "art"), remote)
    with fsspec.open(f"{remote}/student.onnx", "wb") as handle:
        handle.write(b"tampered")
    with pytest.raises(GatewayConfigError) as refused:
        model_store.model_file(_variant(f"{remote}/student.onnx", manifest_path=f"{remote}/manifest.json"))
    assert (f"variants.student.model_path: variant 'student' not served: {remote}/student.onnx has sha256 "
            f"{_sha(b'tampered')}, the manifest records {_sha(STUDENT)}") in str(refused.value)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != "manifest.json"]


def test_a_remote_model_without_a_recorded_sha256_is_not_served(tmp_path, remote):
    model_store.publish(_folder(tmp_path / "art", student_sha=None), remote)
    with pytest.raises(GatewayConfigError, match="records no sha256 for student.onnx"):
        model_store.model_file(_variant(f"{remote}/student.onnx"))


def test_missing_backends_and_objects_are_named(remote):
    with pytest.raises(GatewayConfigError, match=r"pip install gcsfs for gs://"):
        model_store.model_file(_variant("gs://bucket/v1/student.onnx"))
    with pytest.raises(GatewayConfigError, match=r"unsupported URI nope://b/manifest.json: .*use s3://, gs://, http\(s\):// or a path"):
        model_store.model_file(_variant("nope://b/student.onnx"))
    with pytest.raises(GatewayConfigError, match=rf"manifest {remote}/manifest.json unreadable: cannot download"):
        model_store.model_file(_variant(f"{remote}/student.onnx"))


def test_publish_to_a_local_folder_creates_its_subfolders(tmp_path):
    written = model_store.publish(_folder(tmp_path / "art"), str(tmp_path / "out" / "v1"))
    assert len(written) == 5 and written[-1] == str(tmp_path / "out" / "v1" / "manifest.json")
    assert (tmp_path / "out" / "v1" / "triton" / "kdgate-student" / "1" / "model.onnx").read_bytes() == STUDENT


def test_publish_checks_the_folder_first(tmp_path, remote):
    folder = _folder(tmp_path / "art")
    (folder / "student.onnx").write_bytes(b"other")
    with pytest.raises(ManifestError, match="student.onnx: sha256 .* differs from the manifest's"):
        model_store.publish(folder, remote)
    (folder / "student.onnx").unlink()
    with pytest.raises(ManifestError, match="models.student file student.onnx is missing"):
        model_store.publish(folder, remote)
    assert not fsspec.filesystem("memory").exists(remote.removeprefix("memory://"))


def test_distill_out_uri_publishes_the_folder_it_wrote(tmp_path, remote):
    seen = []

    def run(folder: pathlib.Path) -> None:  # what the pipeline does: fill the folder it is given
        seen.append(folder)
        _folder(folder)

    _run_to(remote, run)
    assert not seen[0].exists()  # the temporary folder is gone, its content published
    assert model_store.model_file(_variant(f"{remote}/teacher.onnx", role="teacher", name="teacher"))
    local = tmp_path / "local-out"
    _run_to(str(local), run)
    assert seen[1] == local and (local / "manifest.json").exists()


def test_rollout_readers_get_local_manifests_and_keep_an_unreachable_uri(tmp_path, remote):
    from gateway.core.config import load_gateway_config

    model_store.publish(_folder(tmp_path / "art"), remote)
    config = load_gateway_config({
        "model_name": "m", "routing": {"weights": {"teacher": 100}},
        "variants": [{"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": "/m/t.onnx",
                      "manifest_path": f"{remote}-absent/manifest.json"},
                     {"name": "student", "role": "student", "backend": "onnx", "model_path": f"{remote}/student.onnx",
                      "manifest_path": f"{remote}/manifest.json"}]})
    local = model_store.with_local_manifests(config)
    assert local.teacher.manifest_path == f"{remote}-absent/manifest.json"
    manifest = pathlib.Path(local.variant("student").manifest_path)
    assert manifest.is_file() and json.loads(manifest.read_text())["models"]["student"]["sha256"] == _sha(STUDENT)
    assert config.variant("student").manifest_path == f"{remote}/manifest.json"  # the config itself is unchanged


def test_a_manifest_hash_that_is_not_a_digest_is_refused(tmp_path, remote):
    folder = _folder(tmp_path / "art")
    document = json.loads((folder / "manifest.json").read_text())
    document["models"]["teacher"]["sha256"] = "../../escape"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{remote}/manifest.json".removeprefix("memory://"), json.dumps(document).encode())
    fs.pipe(f"{remote}/teacher.onnx".removeprefix("memory://"), TEACHER)
    with pytest.raises(GatewayConfigError, match=r"sha256 of teacher.onnx is not 64 hex digits: '../../escape'"):
        model_store.model_file(_variant(f"{remote}/teacher.onnx", role="teacher", name="teacher"))
    assert not (tmp_path / "escape").exists()
