"""Tiny text students over the teacher's tokenizer, trained from scratch.

``ConvTokens`` adds a residual convolution over neighbouring tokens (word order) before the mean.

``BagOfTokens``: token ids -> a row of a small token table (the ``vocab_size`` most frequent
tokens of the training texts; the rest share one row) -> masked mean -> MLP (plus a linear
skip) -> L2-normalised embedding of the teacher's width. One int64 input (padding = the
tokenizer's pad id, so the mask needs no second tensor) and one output, like every kdgate model.

Example:
    >>> vocab = select_vocabulary(ids_train, teacher_vocab=30522, size=8000, pad_id=0)  # doctest: +SKIP
    >>> student = BagOfTokens(vocab, dim=64, hidden=256, out_dim=384, pad_id=0)  # doctest: +SKIP
    >>> student(torch.from_numpy(ids_test)).shape  # doctest: +SKIP
    torch.Size([200, 384])
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from distill.config import ArchitectureConfig

PAD_ROW, OTHER_ROW = 0, 1  # token table rows for padding and for every token outside the vocabulary
EVAL_BATCH = 512


def select_vocabulary(ids: np.ndarray, teacher_vocab: int, size: int, pad_id: int) -> np.ndarray:
    """int64 [teacher_vocab] map: token id -> table row (the ``size - 2`` most frequent tokens get their own).

    Frequency ties break by token id, so the map is deterministic for the same texts.
    """
    counts = np.bincount(ids[ids != pad_id].ravel(), minlength=teacher_vocab)
    counts[pad_id] = 0
    seen = np.flatnonzero(counts)
    order = seen[np.lexsort((seen, -counts[seen]))][:max(0, size - 2)]
    mapping = np.full(teacher_vocab, OTHER_ROW, np.int64)
    mapping[order] = np.arange(2, 2 + len(order))
    mapping[pad_id] = PAD_ROW
    return mapping


class BagOfTokens(nn.Module):
    """Mean of learned token vectors -> MLP + linear skip -> unit vector (see the module docstring)."""

    def __init__(self, vocabulary: np.ndarray, dim: int, hidden: int, out_dim: int, pad_id: int):
        super().__init__()
        self.pad_id = pad_id
        # A buffer, not a parameter: it is fixed by the training texts (exported as a Gather table).
        self.register_buffer("vocabulary", torch.from_numpy(np.asarray(vocabulary, np.int64)))
        rows = int(self.vocabulary.max()) + 1
        self.table = nn.Embedding(rows, dim, padding_idx=PAD_ROW)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.skip = nn.Linear(dim, out_dim, bias=False)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        """Masked mean of the token vectors [batch, dim]."""
        mask = (ids != self.pad_id).unsqueeze(-1).to(self.table.weight.dtype)
        vectors = self.table(self.vocabulary[ids]) * mask
        return vectors.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled(ids)
        return F.normalize(self.mlp(pooled) + self.skip(pooled), dim=-1)


class ConvTokens(BagOfTokens):
    """BagOfTokens plus a residual 1-D convolution over neighbouring token vectors before the mean.

    The bag of tokens is blind to word order; the convolution lets each token see ``kernel_size``
    neighbours (negations, phrases). Its weights start at zero, so a token-initialised student
    starts exactly where BagOfTokens does and training adds the order-aware part.
    """

    def __init__(self, vocabulary: np.ndarray, dim: int, hidden: int, out_dim: int, pad_id: int,
                 kernel_size: int = 3):
        super().__init__(vocabulary, dim, hidden, out_dim, pad_id)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).unsqueeze(-1).to(self.table.weight.dtype)
        vectors = self.table(self.vocabulary[ids]) * mask
        mixed = vectors + F.gelu(self.conv(vectors.transpose(1, 2))).transpose(1, 2) * mask
        return mixed.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class WithClassifier(nn.Module):
    """A text model plus a linear head: the no-teacher baseline learns the labels through it."""

    def __init__(self, body: nn.Module, width: int, n_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(width, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(ids))


def build_text_student(arch: ArchitectureConfig, ids_train: np.ndarray, teacher_vocab: int,
                       out_dim: int, pad_id: int) -> BagOfTokens:
    """The configured text student (``width``: token vector size, ``hidden``: MLP units).

    ``conv_tokens`` adds the order-aware convolution (``kernel_size`` tokens, made odd) to the bag.
    """
    vocabulary = select_vocabulary(ids_train, teacher_vocab, arch.vocab_size, pad_id)
    hidden = arch.hidden or 4 * arch.width
    if arch.kind == "conv_tokens":
        return ConvTokens(vocabulary, arch.width, hidden, out_dim, pad_id, arch.kernel_size | 1)
    return BagOfTokens(vocabulary, arch.width, hidden, out_dim, pad_id)


def table_tokens(model: BagOfTokens) -> np.ndarray:
    """The token id of each own row of the student's table (rows 2..), in row order."""
    vocabulary = model.vocabulary.numpy()
    own = np.flatnonzero(vocabulary >= 2)
    return own[np.argsort(vocabulary[own])]


@torch.no_grad()
def init_from_token_vectors(model: BagOfTokens, vectors: np.ndarray) -> None:
    """Start from the teacher's embedding of every table token on its own (vocabulary distillation).

    ``vectors`` [rows - 2, out_dim] are in ``table_tokens`` order. Their top ``dim`` principal
    directions become the skip projection and their coordinates the table, and the MLP's last
    layer starts at zero: the untrained student already outputs the (projected) mean of its
    tokens' teacher vectors, and training on whole texts corrects the rest.
    """
    vectors = np.asarray(vectors, np.float64)
    dim = model.table.embedding_dim
    _, _, components = np.linalg.svd(vectors, full_matrices=False)
    basis = components[:dim]  # [dim, out_dim], orthonormal rows
    coords = vectors @ basis.T
    model.table.weight[2:2 + len(coords)] = torch.from_numpy(coords).float()
    model.table.weight[OTHER_ROW] = torch.from_numpy(coords.mean(axis=0)).float()
    model.table.weight[PAD_ROW] = 0.0
    model.skip.weight.copy_(torch.from_numpy(basis.T).float())
    model.mlp[-1].weight.zero_()
    model.mlp[-1].bias.zero_()


@torch.no_grad()
def init_from_context_vectors(model: BagOfTokens, vectors: np.ndarray, counts: np.ndarray) -> None:
    """Start the table from the teacher's in-context token vectors (their frequency-weighted PCA).

    ``vectors`` [rows - 1, out_dim] are the teacher's mean last hidden state of each table token
    (``table_tokens`` order), then of all other tokens (the shared row); ``counts`` their occurrences.
    The table gets their centred coordinates on the top ``dim`` principal directions, weighted by
    frequency so that common tokens are kept best; the head is left to ``fit_linear_head``.
    """
    vectors, counts = np.asarray(vectors, np.float64), np.asarray(counts, np.float64)
    weights = counts / max(counts.sum(), 1.0)
    centre = weights @ vectors
    _, _, components = np.linalg.svd((vectors - centre) * np.sqrt(weights)[:, None], full_matrices=False)
    coords = (vectors - centre) @ components[:model.table.embedding_dim].T
    model.table.weight[2:2 + len(coords) - 1] = torch.from_numpy(coords[:-1]).float()
    model.table.weight[OTHER_ROW] = torch.from_numpy(coords[-1]).float()
    model.table.weight[PAD_ROW] = 0.0


@torch.no_grad()
def fit_linear_head(model: BagOfTokens, ids: np.ndarray, targets: np.ndarray, ridge: float) -> None:
    """Set the skip projection and output bias to the ridge regression of ``targets`` on the pooled vectors.

    Closed form (float64), ``ridge`` per row: the untrained student is then the best linear read-out
    of its token table, and the MLP (last layer zeroed) and training add the rest.
    """
    model.eval()
    tensor = torch.from_numpy(np.ascontiguousarray(ids, np.int64))
    pooled = torch.cat([model.pooled(tensor[i:i + EVAL_BATCH]) for i in range(0, len(tensor), EVAL_BATCH)])
    design = np.c_[pooled.double().numpy(), np.ones(len(pooled))]
    gram = design.T @ design + ridge * len(design) * np.eye(design.shape[1])
    solution = np.linalg.solve(gram, design.T @ np.asarray(targets, np.float64))
    model.skip.weight.copy_(torch.from_numpy(solution[:-1].T).float())
    model.mlp[-1].weight.zero_()
    model.mlp[-1].bias.copy_(torch.from_numpy(solution[-1]).float())


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters (the fixed vocabulary map is a buffer and is not counted)."""
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def embed_ids(model: nn.Module, ids: np.ndarray) -> np.ndarray:
    """float32 outputs of ``model`` on token ids, in batches (eval mode, no autograd)."""
    model.eval()
    tensor = torch.from_numpy(np.ascontiguousarray(ids, np.int64))
    return torch.cat([model(tensor[i:i + EVAL_BATCH]) for i in range(0, len(tensor), EVAL_BATCH)]).numpy()
