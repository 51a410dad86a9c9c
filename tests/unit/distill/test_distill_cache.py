"""Soft-label cache: the second run with the same teacher and inputs never calls the teacher."""
from __future__ import annotations

import numpy as np
import pytest

from distill.cache import SoftLabelCache


class CountingTeacher:
    """A fake teacher that counts predict calls (a pure unit test of the cache)."""

    def __init__(self, identity="fake:1", scale=1.0):
        self.identity, self.scale, self.calls = identity, scale, 0

    def predict(self, x):
        self.calls += 1
        return np.stack([x.sum(axis=1) * self.scale, -x.sum(axis=1)], axis=1)


class ExplodingTeacher(CountingTeacher):
    def predict(self, x):
        raise AssertionError("the teacher must not run on a cache hit")


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(5000, 4)).astype(np.float32)


def test_second_run_hits_and_does_not_call_teacher(tmp_path, x):
    first = SoftLabelCache(tmp_path).get_or_compute(CountingTeacher(), x)
    assert not first.hit and first.path.exists()
    second = SoftLabelCache(tmp_path).get_or_compute(ExplodingTeacher(), x)
    assert second.hit and second.key == first.key
    np.testing.assert_array_equal(second.logits, first.logits)


def test_teacher_runs_in_chunks_and_progress_counts_rows(tmp_path, x):
    teacher, seen = CountingTeacher(), []
    SoftLabelCache(tmp_path).get_or_compute(teacher, x, on_rows=seen.append)
    assert teacher.calls == 2 and sum(seen) == len(x)


def test_other_teacher_or_other_inputs_miss(tmp_path, x):
    cache = SoftLabelCache(tmp_path)
    base = cache.get_or_compute(CountingTeacher(), x)
    other_teacher = CountingTeacher(identity="fake:2", scale=2.0)
    assert not cache.get_or_compute(other_teacher, x).hit and other_teacher.calls == 2
    changed = x.copy()
    changed[0, 0] += 1e-3
    again = CountingTeacher()
    result = cache.get_or_compute(again, changed)
    assert not result.hit and again.calls == 2 and result.key != base.key


def test_corrupt_entry_is_recomputed(tmp_path, x):
    cache = SoftLabelCache(tmp_path)
    entry = cache.get_or_compute(CountingTeacher(), x)
    entry.path.write_bytes(b"not numpy")
    teacher = CountingTeacher()
    assert not cache.get_or_compute(teacher, x).hit and teacher.calls == 2
