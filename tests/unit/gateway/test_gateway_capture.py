"""CaptureStore: the disk bound holds under many adds; export round-trips."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.capture import CaptureStore, export_capture
from gateway.core.errors import CaptureError

FEATURES, CLASSES = 40, 10


def _pair(rng: np.random.Generator):
    return rng.normal(size=FEATURES), rng.normal(size=CLASSES), rng.normal(size=CLASSES)


def test_bound_holds_under_many_adds(tmp_path):
    rng = np.random.default_rng(0)
    store = CaptureStore(tmp_path / "cap", max_bytes=20_000, segment_rows=16)
    for i in range(2_000):
        store.add(*_pair(rng), request_id=f"r{i}", t=float(i))
        assert store.disk_bytes() <= 20_000
    assert store.deleted_segments > 0
    # The newest pairs survive rotation; the oldest were dropped.
    store.flush()
    out = tmp_path / "out.npz"
    rows = store.export_npz(out)
    with np.load(out) as data:
        times = data["time"]
    assert 0 < rows < 2_000
    assert times.max() == 1999.0 and times.min() > 0.0
    assert np.all(np.diff(times) > 0)


def test_export_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    store = CaptureStore(tmp_path / "cap", max_bytes=10_000_000, segment_rows=4)
    pairs = [_pair(rng) for _ in range(10)]  # 2 full segments + 2 buffered rows
    for i, (x, t, s) in enumerate(pairs):
        store.add(x, t, s, request_id=f"req-{i}", t=100.0 + i)
    out = tmp_path / "captured.npz"
    assert store.export_npz(out) == 10
    with np.load(out, allow_pickle=False) as data:
        assert data["x_unlabeled"].dtype == np.float32
        np.testing.assert_allclose(data["x_unlabeled"], np.stack([p[0] for p in pairs]), rtol=1e-6)
        np.testing.assert_allclose(data["teacher_logits"], np.stack([p[1] for p in pairs]), rtol=1e-6)
        np.testing.assert_allclose(data["student_logits"], np.stack([p[2] for p in pairs]), rtol=1e-6)
        assert list(data["request_id"]) == [f"req-{i}" for i in range(10)]
        np.testing.assert_array_equal(data["time"], 100.0 + np.arange(10))


def test_a_second_store_on_the_same_dir_sees_the_segments(tmp_path):
    rng = np.random.default_rng(2)
    first = CaptureStore(tmp_path, max_bytes=10_000_000, segment_rows=2)
    for i in range(4):
        first.add(*_pair(rng), request_id=str(i))
    assert export_capture(tmp_path, tmp_path / "a.npz") == 4


def test_export_with_base_dataset_appends_to_its_transfer_set(tmp_path):
    rng = np.random.default_rng(3)
    base = tmp_path / "base.npz"
    np.savez(base, x=rng.normal(size=(6, FEATURES)).astype(np.float32), y=np.arange(6),
             x_unlabeled=rng.normal(size=(5, FEATURES)).astype(np.float32))
    store = CaptureStore(tmp_path / "cap", max_bytes=10_000_000)
    for i in range(3):
        store.add(*_pair(rng), request_id=str(i))
    out = tmp_path / "merged.npz"
    assert store.export_npz(out, base_npz=base) == 3
    with np.load(out) as data:
        # distill's `source: npz` refuses arrays other than x, y, x_test, y_test, x_unlabeled.
        assert sorted(data.files) == ["x", "x_unlabeled", "y"]
        assert data["x"].shape == (6, FEATURES) and list(data["y"]) == list(range(6))
        assert data["x_unlabeled"].shape == (8, FEATURES)


def test_empty_store_and_mismatched_base_are_errors(tmp_path):
    store = CaptureStore(tmp_path / "cap", max_bytes=1_000_000)
    with pytest.raises(CaptureError, match="no captured pairs"):
        store.export_npz(tmp_path / "x.npz")
    base = tmp_path / "base.npz"
    np.savez(base, x=np.zeros((2, 3), dtype=np.float32), y=np.zeros(2))
    store.add(np.zeros(FEATURES), np.zeros(CLASSES), np.zeros(CLASSES), request_id="r")
    with pytest.raises(CaptureError, match="do not match"):
        store.export_npz(tmp_path / "x.npz", base_npz=base)


def test_shape_change_starts_a_new_segment_and_export_names_it(tmp_path):
    store = CaptureStore(tmp_path, max_bytes=10_000_000, segment_rows=100)
    store.add(np.zeros(4), np.zeros(2), np.zeros(2), request_id="a")
    store.add(np.zeros(5), np.zeros(2), np.zeros(2), request_id="b")
    store.flush()
    assert len(store.segments()) == 2
    with pytest.raises(CaptureError, match="different input shapes"):
        store.export_npz(tmp_path / "x.npz")


def test_bad_limits_are_rejected(tmp_path):
    with pytest.raises(CaptureError, match="positive"):
        CaptureStore(tmp_path, max_bytes=0)


def test_a_segment_larger_than_the_bound_is_not_kept(tmp_path):
    store = CaptureStore(tmp_path, max_bytes=500, segment_rows=1)
    store.add(np.zeros(FEATURES), np.zeros(CLASSES), np.zeros(CLASSES), request_id="r")
    assert store.disk_bytes() == 0 and store.deleted_segments == 1
