"""Model files from object storage: ``s3://``, ``gs://``, ``http(s)://`` or a local path.

A variant's ``model_path`` / ``manifest_path`` may be a URI (fsspec). Before a replica loads
a remote model it is downloaded once into the cache (:func:`cache_dir`, env
``KDGATE_MODEL_CACHE``), verified against the sha256 the artifact's ``manifest.json``
records for that file name, and renamed into place only when the hash matches; the cache is
content-addressed (``models/<sha256>/<file>``), so the next load, another replica on the
node or a restart reuses it without a download. A mismatch is a
:class:`~gateway.core.errors.GatewayConfigError` naming the variant, the URI and both
hashes, so the config that asked for it is refused and the previous one stays in force.
Manifests are small and re-read once per process and URI (artifacts are immutable: publish
a new version under a new prefix). Local paths pass through untouched.

Credentials and endpoints come from the standard environment of each backend (s3fs:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...). kdgate ships
s3fs; ``gs://`` needs ``pip install gcsfs`` (the error says so).

Example::

    local = model_file(config.variant("student"))      # downloads + verifies once
    publish("runs/demo", "s3://models/kdgate/v7")       # what `kdgate publish` does
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import pathlib
import tempfile
import threading
import uuid
from collections import Counter

from gateway.core.errors import GatewayConfigError, GatewayError, ManifestError
from gateway.core.manifest import Manifest, read_manifest

log = logging.getLogger(__name__)

CACHE_ENV = "KDGATE_MODEL_CACHE"
MANIFEST_NAME = "manifest.json"
# Downloads done by this process, per URI (tests count cache hits with it).
downloads: Counter[str] = Counter()
_manifests: dict[str, str] = {}
_lock = threading.Lock()
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelStoreError(GatewayError):
    """A URI cannot be read or written (backend missing, object absent, no credentials)."""


def is_remote(path: str | os.PathLike | None) -> bool:
    """True for a URI with a scheme other than ``file://``.

    >>> is_remote("s3://bucket/m.onnx"), is_remote("/models/m.onnx"), is_remote("file:///m")
    (True, False, False)
    """
    text = str(path or "")
    return "://" in text and not text.startswith("file://")


def cache_dir() -> pathlib.Path:
    """The download cache: ``$KDGATE_MODEL_CACHE``, else ``<tmp>/kdgate-model-cache``."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path(tempfile.gettempdir()) / "kdgate-model-cache")


def sha256_file(path: str | pathlib.Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_manifest(path: str | None) -> str | None:
    """A local path for ``path`` (a manifest): as is, or downloaded once per process."""
    if not is_remote(path):
        return path
    with _lock:
        if path in _manifests and pathlib.Path(_manifests[path]).exists():
            return _manifests[path]
        key = hashlib.sha256(path.encode()).hexdigest()[:24]
        target = cache_dir() / "manifests" / key / MANIFEST_NAME
        try:
            _download(path, target)
        except ModelStoreError as err:
            raise ManifestError(f"manifest {path} unreadable: {err}") from err
        _manifests[path] = str(target)
        return str(target)


def model_file(variant) -> str:
    """The local file to load for a ``VariantConfig``: verified and cached when remote.

    Raises :class:`GatewayConfigError` on ``variants.<name>.model_path`` when the model
    cannot be fetched, the manifest records no sha256 for it, or the hash differs.
    """
    uri = variant.model_path
    if not is_remote(uri):
        return uri
    field = f"variants.{variant.name}.model_path"
    try:
        expected = _expected_sha256(variant)
        target = cache_dir() / "models" / expected / _basename(uri)
        with _lock:
            if not target.exists():
                _download(uri, target, sha256=expected)
    except (ModelStoreError, ManifestError) as err:
        raise GatewayConfigError([(field, f"{uri}: {err}")]) from err
    except _Mismatch as err:
        raise GatewayConfigError([(field, f"variant {variant.name!r} not served: {uri} has sha256 {err.actual}, "
                                          f"the manifest records {expected}")]) from err
    return str(target)


def manifest_uri(variant) -> str:
    """The manifest that vouches for a variant's model: its ``manifest_path``, else the one beside it."""
    if variant.manifest_path:
        return variant.manifest_path
    return variant.model_path.rsplit("/", 1)[0] + "/" + MANIFEST_NAME


def _expected_sha256(variant) -> str:
    source = manifest_uri(variant)
    manifest = read_manifest(local_manifest(source))
    name = _basename(variant.model_path)
    for entry in manifest.models.values():
        for file, digest in ((entry.file, entry.sha256), (entry.int8_file, entry.int8_sha256)):
            if file == name and digest:
                # It names a cache folder: only a real hex digest may (no '../' from a manifest).
                if not _SHA256.fullmatch(digest):
                    raise ManifestError(f"manifest {source}: sha256 of {name} is not 64 hex digits: {digest!r}")
                return digest
    raise ManifestError(f"manifest {source} records no sha256 for {name}; a remote model is served only verified")


class _Mismatch(Exception):
    def __init__(self, actual: str):
        super().__init__(actual)
        self.actual = actual


def _basename(uri: str) -> str:
    return uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _filesystem(uri: str):
    """``(fsspec filesystem, path)`` for ``uri``; a missing backend is a clear error."""
    import fsspec  # noqa: PLC0415  (keeps `import gateway` free of fsspec's backends)

    try:
        # A fresh instance: credentials or endpoint may change between configs.
        return fsspec.core.url_to_fs(uri, skip_instance_cache=True)
    except ImportError as err:
        hint = " (pip install gcsfs for gs://)" if uri.startswith(("gs://", "gcs://")) else ""
        raise ModelStoreError(f"no filesystem for {uri}: {err}{hint}") from err
    except ValueError as err:
        raise ModelStoreError(f"unsupported URI {uri}: {err}; use s3://, gs://, http(s):// or a path") from err


def _download(uri: str, target: pathlib.Path, *, sha256: str | None = None) -> None:
    """Copy ``uri`` to ``target`` atomically (temp file, verify, rename)."""
    fs, path = _filesystem(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        try:
            fs.get_file(path, str(tmp))
        except Exception as err:  # each fsspec backend raises its own types (botocore, aiohttp, OSError)
            raise ModelStoreError(f"cannot download: {type(err).__name__}: {err}") from err
        downloads[uri] += 1
        if sha256 is not None and (actual := sha256_file(tmp)) != sha256:
            raise _Mismatch(actual)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def publish(src: str | pathlib.Path, dest: str) -> list[str]:
    """Upload an artifact folder to ``dest`` (URI or path); return what was written, in order.

    The manifest is validated and every model it lists is checked against its sha256
    first; ``manifest.json`` is written last, so a reader never sees a manifest whose
    models are not there yet.
    """
    src = pathlib.Path(src)
    manifest = read_manifest(src / MANIFEST_NAME)
    _check_models(src, manifest)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p != src / MANIFEST_NAME)
    files.append(src / MANIFEST_NAME)
    fs, root = _filesystem(dest.rstrip("/"))
    written = []
    for file in files:
        relative = file.relative_to(src).as_posix()
        try:
            if "file" in fs.protocol:  # object stores have no folders; a local target needs them
                fs.makedirs(f"{root}/{relative}".rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(file), f"{root}/{relative}")
        except Exception as err:  # botocore / aiohttp / OSError, by backend
            raise ModelStoreError(f"cannot write {dest}/{relative}: {type(err).__name__}: {err}") from err
        written.append(f"{dest.rstrip('/')}/{relative}")
    return written


def _check_models(src: pathlib.Path, manifest: Manifest) -> None:
    for role, entry in manifest.models.items():
        pairs = [(entry.file, entry.sha256), (entry.int8_file, entry.int8_sha256)]
        for name, digest in pairs:
            if not name:
                continue
            file = src / name
            if not file.is_file():
                raise ManifestError(f"{src / MANIFEST_NAME}: models.{role} file {name} is missing")
            if digest and (actual := sha256_file(file)) != digest:
                raise ManifestError(f"{file}: sha256 {actual} differs from the manifest's {digest}")



def with_local_manifests(config):
    """``config`` with each remote ``manifest_path`` replaced by its cached local copy.

    For readers that take a path (the rollout controller's drift reference). A manifest
    that cannot be fetched keeps its URI and is logged: the reader then reports it as it
    reports an unreadable local manifest (its input drift gate has no data).
    """
    variants = []
    for v in config.variants:
        try:
            variants.append(v.model_copy(update={"manifest_path": local_manifest(v.manifest_path)}))
        except ManifestError as err:
            log.warning("%s", err)
            variants.append(v)
    return config.model_copy(update={"variants": variants})
