"""Text in the gateway: texts in requests, token ids for the models.

A variant whose ``manifest.json`` says its input is text (``input.dtype`` int64 and a
``tokenizer`` entry, docs/artifacts.md) takes texts: V2 ``BYTES`` tensors (JSON strings or
Triton's binary encoding, 4-byte little-endian length + UTF-8 bytes per element) and V1
``{"instances": ["text", ...]}``. The ingress checks the texts (:func:`check_texts`: batch
size, empty, over-long, invalid UTF-8 -> 4xx naming the row) and keeps them as a
:class:`TextBatch`; each variant's ``tokenizer.json`` (the ``tokenizers`` library, Rust),
loaded from its artifact folder and verified against the manifest's sha256, turns them into
the int64 ids that variant's model takes, just before the call. Teacher and student may
carry different tokenizers; when they carry the same file the ids are computed once.

Example::

    models = load_text_models(config)              # None for a float (tensor) gateway
    batch = check_texts([b"hello", "world"], max_rows=64, max_text_bytes=4096)
    ids = models.ids("teacher", batch)             # int64 [2, longest], padded with pad_id
"""
from __future__ import annotations

import logging
import pathlib
import struct
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from gateway.core.errors import GatewayConfigError, InvalidInput, MalformedRequest, ManifestError, PayloadTooLarge
from gateway.core.manifest import Manifest, read_manifest
from gateway.model_store import is_remote, local_manifest, manifest_uri, sha256_file

log = logging.getLogger(__name__)

BYTES = "BYTES"
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class TextBatch:
    """The checked texts of one request; ids per tokenizer are computed once and kept here."""

    texts: tuple[str, ...]
    _ids: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.texts)


class Tokenizer:
    """One ``tokenizer.json``: texts -> int64 ids ``[rows, longest]`` right-padded with ``pad_id``.

    Texts longer than ``max_length`` tokens are truncated, as the model was trained (the
    byte limit of the request, not the token count, decides what is refused).
    """

    def __init__(self, path: str, max_length: int, pad_id: int):
        from tokenizers import Tokenizer as RustTokenizer  # noqa: PLC0415 (float gateways never load it)

        self.path, self.max_length, self.pad_id = path, max_length, pad_id
        self._tokenizer = RustTokenizer.from_file(path)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)

    def encode(self, texts: tuple[str, ...], width: int | None = None) -> np.ndarray:
        """int64 ids, one row per text, ``width`` columns (default: the longest row)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        width = width or max((len(e.ids) for e in encodings), default=1)
        ids = np.full((len(encodings), width), self.pad_id, np.int64)
        for row, enc in enumerate(encodings):
            ids[row, :len(enc.ids)] = enc.ids
        return ids


@lru_cache(maxsize=16)
def _load_tokenizer(path: str, sha256: str, max_length: int, pad_id: int) -> Tokenizer:
    """Load once per process and file content; the sha256 in the key makes a changed file reload."""
    return Tokenizer(path, max_length, pad_id)


class TextModels:
    """The tokenizer of every variant of a text gateway; see the module docstring."""

    def __init__(self, tokenizers: dict[str, Tokenizer]):
        self.tokenizers = tokenizers

    def ids(self, variant: str, batch: TextBatch) -> np.ndarray:
        """``variant``'s model input for ``batch`` (cached on the batch per tokenizer file)."""
        tokenizer = self.tokenizers[variant]
        key = (tokenizer.path, tokenizer.max_length)
        if key not in batch._ids:
            batch._ids[key] = tokenizer.encode(batch.texts)
        return batch._ids[key]

    def capture_rows(self, variant: str, batch: TextBatch) -> np.ndarray:
        """Ids padded to ``max_length``, so captured rows of every request have one shape."""
        tokenizer = self.tokenizers[variant]
        return tokenizer.encode(batch.texts, width=tokenizer.max_length)


def text_manifest(variant) -> tuple[Manifest, pathlib.Path] | None:
    """The variant's manifest and its folder when it declares a text input, else None."""
    if not (variant.manifest_path or variant.model_path):
        return None  # a Triton variant without a manifest: a tensor model
    source = manifest_uri(variant)
    if is_remote(source):
        # The tokenizer must sit beside a local manifest; remote text artifacts are not served yet.
        manifest = read_manifest(local_manifest(source))
        if manifest.tokenizer is not None:
            raise GatewayConfigError([(f"variants.{variant.name}.manifest_path",
                                       f"{source}: text models are served from a local artifact folder only")])
        return None
    path = pathlib.Path(source)
    if not path.is_file():
        return None
    manifest = read_manifest(path)
    if manifest.tokenizer is None or manifest.input.dtype != "int64":
        return None
    return manifest, path.parent


def variant_tokenizer(variant) -> Tokenizer | None:
    """The verified tokenizer of a text variant (None for a tensor variant).

    A missing file or a sha256 other than the manifest's is a :class:`GatewayConfigError`
    naming the variant: the config is refused, the previous one stays in force.
    """
    try:
        found = text_manifest(variant)
    except ManifestError as err:
        log.warning("%s; variant %s treated as a tensor model", err, variant.name)
        return None
    if found is None:
        return None
    manifest, folder = found
    info, where = manifest.tokenizer, f"variants.{variant.name}.manifest_path"
    file = folder / info.file
    if not file.is_file():
        raise GatewayConfigError([(where, f"tokenizer {file} is missing (the manifest names it)")])
    actual = sha256_file(file)
    if actual != info.sha256:
        raise GatewayConfigError([(where, f"tokenizer {file} has sha256 {actual}, the manifest records {info.sha256}")])
    try:
        return _load_tokenizer(str(file), actual, info.max_length, info.pad_id)
    except Exception as err:  # tokenizers raises a bare Exception on a bad file
        raise GatewayConfigError([(where, f"tokenizer {file} does not load: {err}")]) from err


def load_text_models(config) -> TextModels | None:
    """Tokenizers of a gateway whose variants take text; None when none does.

    Every variant must agree: a mix of text and tensor variants cannot answer the same
    request, so it is refused naming both groups.
    """
    found = {v.name: variant_tokenizer(v) for v in config.variants}
    text = sorted(n for n, t in found.items() if t is not None)
    if not text:
        return None
    tensor = sorted(set(found) - set(text))
    if tensor:
        raise GatewayConfigError([("variants", f"{', '.join(text)} take text but {', '.join(tensor)} take "
                                               "tensors; every variant of a gateway must take the same input")])
    return TextModels(found)


def variant_pad_id(variant) -> int | None:
    """The pad id a text variant's batches are padded with (None for a tensor variant)."""
    tokenizer = variant_tokenizer(variant)
    return None if tokenizer is None else tokenizer.pad_id


def concat_rows(xs: list[np.ndarray], pad_id: int | None) -> np.ndarray:
    """Requests' batches as one; token id rows of different lengths are right-padded with ``pad_id``."""
    widths = {x.shape[1] for x in xs if x.ndim == 2}
    if pad_id is None or len(widths) <= 1:
        return np.concatenate(xs)
    width = max(widths)
    return np.concatenate([np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=pad_id) for x in xs])


# ----- request parsing -------------------------------------------------------------------
def check_texts(raw: list, *, max_rows: int, max_text_bytes: int) -> TextBatch:
    """Texts (str or UTF-8 bytes) as a :class:`TextBatch`; every unusable one is a 4xx naming its row."""
    if not raw:
        raise InvalidInput("empty batch: the request holds no texts")
    if len(raw) > max_rows:
        raise PayloadTooLarge(f"batch of {len(raw)} texts is over the limit of {max_rows} (limits.max_batch_rows)")
    texts = []
    for row, item in enumerate(raw):
        data = _utf8(item, row)
        if len(data) > max_text_bytes:
            raise PayloadTooLarge(f"text {row} is {len(data)} bytes of UTF-8, over the limit of "
                                  f"{max_text_bytes} (limits.max_text_bytes)")
        text = data.decode("utf-8")
        if not text.strip():
            raise InvalidInput(f"text {row} is empty; send at least one non-blank character per text")
        texts.append(text)
    return TextBatch(tuple(texts))


def _utf8(item: object, row: int) -> bytes:
    if isinstance(item, str):
        try:
            return item.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate from a JSON "\ud800" escape
            raise InvalidInput(f"text {row} is not valid UTF-8: {err.reason} at character {err.start}") from err
    if isinstance(item, bytes):
        try:
            item.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidInput(f"text {row} is not valid UTF-8: {err.reason} at byte {err.start}") from err
        return item
    raise InvalidInput(f"text {row} is a {type(item).__name__}, not a string; this model takes text")


def decode_bytes_tensor(binary: bytes, count: int) -> list[bytes]:
    """Triton's binary BYTES encoding (4-byte little-endian length, then the bytes) -> ``count`` elements."""
    items, at = [], 0
    for row in range(count):
        if at + 4 > len(binary):
            raise InvalidInput(f"BYTES tensor: element {row} of {count} is missing (binary data ends at byte {at})")
        (size,) = _LENGTH.unpack_from(binary, at)
        if at + 4 + size > len(binary):
            raise InvalidInput(f"BYTES tensor: element {row} declares {size} bytes, only {len(binary) - at - 4} follow")
        items.append(binary[at + 4:at + 4 + size])
        at += 4 + size
    if at != len(binary):
        raise InvalidInput(f"BYTES tensor: {len(binary) - at} bytes left after {count} elements")
    return items


def text_rows(shape: tuple[int, ...]) -> int:
    """Rows of a BYTES input of ``shape`` ``[n]`` or ``[n, 1]`` (one text per row)."""
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return shape[0]
    raise InvalidInput(f"wrong shape: a BYTES input is [batch] or [batch, 1] (one text per row), got {list(shape)}")


def json_texts(data: object, count: int) -> list:
    """The strings of a V2 JSON ``data`` list (flat, or one-element rows) holding ``count`` texts."""
    if not isinstance(data, list):
        raise MalformedRequest(f"'data' of a BYTES input must be a list of strings, got {type(data).__name__}")
    flat = [row[0] if isinstance(row, list) and len(row) == 1 else row for row in data]
    if len(flat) != count:
        raise InvalidInput(f"wrong shape: {len(flat)} texts in 'data' do not fill the shape's {count} rows")
    return flat
