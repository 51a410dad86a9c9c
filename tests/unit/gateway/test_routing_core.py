"""Routing: weighted split share, sticky keys never flip back as the weight rises."""
from __future__ import annotations

import random

import pytest

from gateway.core.routing import choose_variant, key_hash_unit, should_sample

N = 20_000
TOLERANCE = 0.005  # the acceptance: 5 % +- 0.5 %


def _split(student_percent: float) -> dict[str, float]:
    return {"teacher": 100.0 - student_percent, "student": student_percent}


def test_random_draws_give_the_student_its_share():
    rng = random.Random(7)
    picks = [choose_variant(_split(5), sticky_key=None, draw=rng.random()) for _ in range(N)]
    share = picks.count("student") / N
    assert abs(share - 0.05) <= TOLERANCE


def test_draw_boundaries_follow_cumulative_weights():
    weights = {"teacher": 90.0, "a": 0.0, "b": 10.0}
    assert choose_variant(weights, sticky_key=None, draw=0.0) == "teacher"
    assert choose_variant(weights, sticky_key=None, draw=0.8999) == "teacher"
    assert choose_variant(weights, sticky_key=None, draw=0.9) == "b"
    assert choose_variant(weights, sticky_key=None, draw=0.999999) == "b"


def test_zero_weight_is_never_chosen_and_all_zero_is_an_error():
    assert {choose_variant(_split(0), sticky_key=f"u{i}", draw=0.5) for i in range(500)} == {"teacher"}
    assert {choose_variant(_split(100), sticky_key=None, draw=i / 500) for i in range(500)} == {"student"}
    with pytest.raises(ValueError, match="positive weight"):
        choose_variant({"teacher": 0, "student": 0}, sticky_key=None, draw=0.1)


@pytest.mark.parametrize("percent", [5, 10, 25, 50])
def test_sticky_key_shares_match_weights(percent):
    keys = [f"user-{i}" for i in range(N)]
    share = sum(choose_variant(_split(percent), sticky_key=k, draw=0.0) == "student" for k in keys) / N
    # Binomial standard deviation at 50 % over 20,000 keys is 0.35 %; allow about 3 sigma.
    assert abs(share - percent / 100) <= 0.01


def test_sticky_keys_only_move_towards_the_student_as_weight_rises():
    keys = [f"user-{i}" for i in range(N)]
    on_student: set[str] = set()
    for percent in [5, 10, 25, 50, 100]:
        now = {k for k in keys if choose_variant(_split(percent), sticky_key=k, draw=0.0) == "student"}
        assert on_student <= now, f"{len(on_student - now)} keys moved back to the teacher at {percent} %"
        assert len(now) > len(on_student)
        on_student = now
    assert on_student == set(keys)


def test_sticky_choice_ignores_draw_and_is_stable():
    weights = _split(25)
    first = [choose_variant(weights, sticky_key=f"k{i}", draw=0.0) for i in range(200)]
    again = [choose_variant(weights, sticky_key=f"k{i}", draw=0.99) for i in range(200)]
    assert first == again


def test_hash_is_stable_across_processes():
    # A pinned value: Python's salted hash() would differ between processes and replicas.
    assert key_hash_unit("user-1", "student") == pytest.approx(0.7942517622021755, abs=1e-15)
    values = [key_hash_unit(f"user-{i}", "student") for i in range(2000)]
    assert all(0.0 < v < 1.0 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.03


def test_should_sample_share():
    rng = random.Random(3)
    hits = sum(should_sample(0.1, rng.random()) for _ in range(N))
    assert abs(hits / N - 0.1) <= 0.01
    assert not should_sample(0.0, 0.0)
    assert should_sample(1.0, 0.999999)
