"""Data validation: each problem raises DataError saying what is wrong."""
from __future__ import annotations

import numpy as np
import pytest

from distill.config import DataConfig
from distill.data import build_dataset, load_dataset, read_csv
from distill.errors import DataError


def _arrays(n=60, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, features)), "y": np.arange(n) % classes}


def _build(arrays, **config):
    return build_dataset("user.npz", arrays, DataConfig(**config), seed=0)


def test_valid_arrays_split_into_train_val_test():
    ds = _build(_arrays(100), val_fraction=0.1, test_fraction=0.2)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (72, 8, 20)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.class_labels == ["0", "1", "2"] and ds.feature_shape == (8,)
    assert len(ds.x_unlabeled) == 0
    # No row is in two splits.
    rows = {r.tobytes() for r in np.concatenate([ds.x_train, ds.x_val, ds.x_test])}
    assert len(rows) == 100


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.update(x=np.zeros((0, 8))), "empty"),
    (lambda a: a.update(x=np.zeros(60)), "2-D"),
    (lambda a: a.update(x=np.array([["a"] * 8] * 60)), "numeric"),
    (lambda a: a["x"].__setitem__((5, 2), np.nan), "NaN or Inf in 1 row(s), first at row 5"),
    (lambda a: a["x"].__setitem__((7, 0), np.inf), "NaN or Inf"),
    (lambda a: a.update(y=a["y"][:50]), "50 labels for 60 rows"),
    (lambda a: a.update(y=a["y"] - 1), "out of range"),
    (lambda a: a.update(y=a["y"] + 0.5), "integer class indices"),
    (lambda a: a.update(y=np.zeros(60, int)), "at least 2 classes"),
    (lambda a: a.update(x_test=np.zeros((5, 7)), y_test=np.zeros(5, int)), "feature shape (7,), expected (8,)"),
    (lambda a: a.update(x_test=np.zeros((5, 8))), "x_test given without y_test"),
    (lambda a: a.update(x_unlabeled=np.full((4, 8), np.nan)), "x_unlabeled contains NaN"),
])
def test_bad_arrays_raise_data_error_naming_the_problem(mutate, message):
    arrays = _arrays()
    mutate(arrays)
    with pytest.raises(DataError, match=None) as info:
        _build(arrays)
    assert message in str(info.value)


def test_missing_class_in_training_labels_is_named():
    arrays = _arrays()
    arrays["y"] = np.where(arrays["y"] == 1, 2, arrays["y"])
    with pytest.raises(DataError, match=r"classes \[1\] never occur"):
        _build(arrays)


def test_regression_targets_are_floats():
    arrays = _arrays()
    arrays["y"] = np.linspace(0, 1, 60)
    ds = _build(arrays, task="regression")
    assert ds.y_train.dtype == np.float32 and ds.n_outputs == 1 and ds.class_labels == []


def test_npz_needs_x_and_y(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, features=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"missing array\(s\) \['x', 'y'\]"):
        load_dataset(DataConfig(source="npz", path=path))


def test_npz_unknown_arrays_are_refused(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, **_arrays(), x_tset=np.zeros((3, 8)))
    with pytest.raises(DataError, match="unknown array.*x_tset"):
        load_dataset(DataConfig(source="npz", path=path))


def test_csv_with_label_column(tmp_path):
    path = tmp_path / "data.csv"
    rows = ["a,label,b"] + [f"{i},{i % 2},{-i}" for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    ds = load_dataset(DataConfig(source="csv", path=path), seed=1)
    assert ds.feature_shape == (2,) and ds.class_labels == ["0", "1"]
    assert set(np.abs(ds.x_train[:, 0] + ds.x_train[:, 1]).tolist()) == {0.0}  # label column removed


def test_csv_problems_are_named(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="no label column 'label'"):
        read_csv(path, "label")
    path.write_text("a,label\n1,0\nx,1\n")
    with pytest.raises(DataError, match="line 3 has a non-numeric value"):
        read_csv(path, "label")


def test_digits_are_images_with_ten_classes():
    ds = load_dataset(DataConfig(source="digits"))
    assert ds.feature_shape == (8, 8) and ds.n_outputs == 10
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_mnist1d_generated_offline_with_transfer_set():
    ds = load_dataset(DataConfig(source="mnist1d", mnist1d={"num_samples": 200, "n_unlabeled": 50}))
    assert ds.feature_shape == (40,)
    assert len(ds.x_train) + len(ds.x_val) == 160 and len(ds.x_test) == 40
    assert len(ds.x_unlabeled) == 50
    labeled = {r.tobytes() for r in ds.x_train}
    assert not any(r.tobytes() in labeled for r in ds.x_unlabeled)
