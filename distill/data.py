"""Data: MNIST-1D (generated offline), scikit-learn digits, or your own .npz / .csv.

Every source ends in one validated ``Dataset`` with a train / validation / test split and an
optional unlabeled transfer set. Problems (shapes, dtypes, NaN/Inf, label range, empty or
mismatched arrays) raise ``DataError`` with a message that says what to fix.

Example:
    >>> ds = load_dataset(DataConfig(source="digits"), seed=0)  # doctest: +SKIP
    >>> ds.feature_shape, ds.n_outputs
    ((64,), 10)
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.config import DataConfig
from distill.errors import DataError

UNLABELED = -1  # label of transfer rows in a combined classification label array


@dataclass
class Dataset:
    """Validated arrays; x are float32 [N, *feature_shape], y int64 (classes) or float32."""

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_unlabeled: np.ndarray
    class_labels: list[str] = field(default_factory=list)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_outputs(self) -> int:
        if self.task == "classification":
            return len(self.class_labels)
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    def sha256(self) -> str:
        """Content hash of every array (the dataset's identity in caches and manifests)."""
        from distill.export import sha256_arrays  # noqa: PLC0415

        return sha256_arrays(self.x_train, self.y_train, self.x_val, self.y_val,
                             self.x_test, self.y_test, self.x_unlabeled)

    def summary(self) -> dict:
        """The report's ``dataset`` entry."""
        return {"name": self.name, "n_train": len(self.x_train), "n_val": len(self.x_val),
                "n_test": len(self.x_test), "n_unlabeled": len(self.x_unlabeled),
                "feature_shape": list(self.feature_shape), "sha256": self.sha256()}


def check_features(x: np.ndarray, what: str, feature_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` as float32 after checking it is numeric, non-empty, finite and shaped like the rest."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{what} must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{what} must be 2-D or more [rows, features...], got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{what} is empty (0 rows)")
    if feature_shape is not None and tuple(x.shape[1:]) != tuple(feature_shape):
        raise DataError(f"{what} has feature shape {tuple(x.shape[1:])}, expected {tuple(feature_shape)} like x")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(len(x), -1))[0])
        raise DataError(f"{what} contains NaN or Inf in {len(rows)} row(s), first at row {int(rows[0])}")
    return x


def check_labels(y: np.ndarray, n_rows: int, what: str, task: str, n_classes: int | None = None) -> np.ndarray:
    """Labels as int64 classes 0..K-1 (classification) or float32 targets (regression)."""
    y = np.asarray(y)
    if y.shape[:1] != (n_rows,):
        raise DataError(f"{what} has {y.shape[0] if y.ndim else 0} labels for {n_rows} rows of inputs")
    if task == "regression":
        if not np.issubdtype(y.dtype, np.number):
            raise DataError(f"{what} must be numeric regression targets, got dtype {y.dtype}")
        y = y.astype(np.float32)
        if not np.isfinite(y).all():
            raise DataError(f"{what} contains NaN or Inf")
        return y
    if y.ndim != 1:
        raise DataError(f"{what} must be 1-D class indices, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"{what} must be integer class indices, got non-integer floats")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what} must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or (n_classes is not None and y.max() >= n_classes):
        top = f"0..{n_classes - 1}" if n_classes else "0 or more"
        raise DataError(f"{what} has labels out of range: min {y.min()}, max {y.max()}, expected {top}")
    return y


def split_rows(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled indices (kept, held_out) with ``fraction`` of the rows held out (at least one)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_held = max(1, int(round(n_rows * fraction)))
    if n_held >= n_rows:
        raise DataError(f"{n_rows} labeled rows are too few to hold out {fraction:.0%} and keep some for training")
    return order[n_held:], order[:n_held]


def build_dataset(name: str, arrays: dict, config: DataConfig, seed: int) -> Dataset:
    """Validate raw arrays and carve the validation (and, if absent, test) split from x/y."""
    task = config.task
    x = check_features(arrays["x"], f"{name}: x")
    shape = x.shape[1:]
    y = check_labels(arrays["y"], len(x), f"{name}: y", task)
    if arrays.get("x_test") is None:
        if arrays.get("y_test") is not None:
            raise DataError(f"{name}: y_test given without x_test")
        keep, test = split_rows(len(x), config.test_fraction, seed + 1)
        x, y, x_test, y_test = x[keep], y[keep], x[test], y[test]
    else:
        if arrays.get("y_test") is None:
            raise DataError(f"{name}: x_test given without y_test")
        x_test = check_features(arrays["x_test"], f"{name}: x_test", shape)
        y_test = check_labels(arrays["y_test"], len(x_test), f"{name}: y_test", task)
    unlabeled = arrays.get("x_unlabeled")
    x_unl = (check_features(unlabeled, f"{name}: x_unlabeled", shape) if unlabeled is not None
             else np.zeros((0, *shape), np.float32))
    labels = _class_labels(y, y_test, name) if task == "classification" else []
    keep, val = split_rows(len(x), config.val_fraction, seed)
    return Dataset(name=name, task=task, x_train=x[keep], y_train=y[keep], x_val=x[val], y_val=y[val],
                   x_test=x_test, y_test=y_test, x_unlabeled=x_unl, class_labels=labels)


def _class_labels(y: np.ndarray, y_test: np.ndarray, name: str) -> list[str]:
    n_classes = int(max(y.max(), y_test.max())) + 1
    if n_classes < 2:
        raise DataError(f"{name}: classification needs at least 2 classes, found {n_classes}")
    missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise DataError(f"{name}: classes {missing} never occur in the training labels (labels must be 0..K-1)")
    return [str(k) for k in range(n_classes)]


def generate_mnist1d(config: DataConfig) -> dict:
    """MNIST-1D from mnist1d's generator, offline (its download helper is never called)."""
    from mnist1d.data import get_dataset_args, make_dataset  # noqa: PLC0415

    settings = config.mnist1d
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = settings.num_samples, settings.seed, settings.train_split
    labeled = make_dataset(args)
    arrays = {"x": labeled["x"], "y": labeled["y"], "x_test": labeled["x_test"], "y_test": labeled["y_test"]}
    if settings.n_unlabeled:
        # The generator balances classes with num_samples // 10 per class; ask for enough.
        args.num_samples, args.seed, args.train_split = max(settings.n_unlabeled, 10), settings.unlabeled_seed, 1.0
        arrays["x_unlabeled"] = make_dataset(args)["x"][: settings.n_unlabeled]
    return arrays


def read_npz(path: Path) -> dict:
    """Arrays x, y and optionally x_test, y_test, x_unlabeled from a user .npz file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read as .npz: {err}") from err
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {missing}; found {sorted(arrays)} "
                        "(expected x, y and optionally x_test, y_test, x_unlabeled)")
    unknown = sorted(set(arrays) - {"x", "y", "x_test", "y_test", "x_unlabeled"})
    if unknown:
        raise DataError(f"{path}: unknown array(s) {unknown}; allowed: x, y, x_test, y_test, x_unlabeled")
    return arrays


def read_csv(path: Path, label_column: str) -> dict:
    """A CSV with a header row: every column but ``label_column`` is a numeric feature."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(f"{path}: no label column '{label_column}'; columns are {header}")
    label_at = header.index(label_column)
    values = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: line {line_no} has {len(row)} fields, the header has {len(header)}")
        try:
            values.append([float(v) for v in row])
        except ValueError as err:
            raise DataError(f"{path}: line {line_no} has a non-numeric value ({err})") from err
    table = np.asarray(values, dtype=np.float64)
    return {"x": np.delete(table, label_at, axis=1), "y": table[:, label_at]}


def load_dataset(config: DataConfig, seed: int = 0) -> Dataset:
    """The dataset ``config`` names, validated and split."""
    if config.source == "mnist1d":
        return build_dataset("mnist1d", generate_mnist1d(config), config, seed)
    if config.source == "digits":
        from sklearn.datasets import load_digits  # noqa: PLC0415

        digits = load_digits()
        # 8x8 images: a cnn2d sees them as images, an MLP flattens them.
        return build_dataset("digits", {"x": digits.images / 16.0, "y": digits.target}, config, seed)
    path = Path(config.path)
    if not path.exists():
        raise DataError(f"data.path {path} does not exist")
    arrays = read_npz(path) if config.source == "npz" else read_csv(path, config.label_column)
    return build_dataset(path.name, arrays, config, seed)
