"""Observations from real WindowStats snapshots, and the embedded source's windows."""
from __future__ import annotations

import numpy as np
import pytest
from rollout_fixtures import FakeClock

from gateway.core.compare import compare_classification
from gateway.rollout.core.observations import EmbeddedSource, ReplicaSnapshots, Window, from_window_snapshot
from gateway.core.stats import PRIMARY, SHADOW, WindowStats, histogram_quantile

EDGES = [[-0.5, 0.0, 0.5]] * 2
REFERENCE = {"reference": {"inputs": {"edges": EDGES, "fractions": [[0.25] * 4] * 2}}}


def record_traffic(stats, n, *, rng, agree_noise=0.05, latency_s=0.003, x_shift=0.0):
    """n requests: teacher primary, student shadow, compared, with inputs and outputs."""
    for _ in range(n):
        teacher = rng.normal(size=(1, 5))
        student = teacher + agree_noise * rng.normal(size=(1, 5))
        stats.record_request("teacher", PRIMARY, 0.02, True, 1)
        stats.record_request("student", SHADOW, latency_s, True, 1)
        stats.record_busy("teacher", 0.02)
        stats.record_busy("student", latency_s)
        stats.record_comparison("teacher", "student", compare_classification(teacher, student))
        stats.record_outputs("teacher", teacher.argmax(1))
        stats.record_outputs("student", student.argmax(1))
        stats.record_inputs("teacher", rng.normal(size=(1, 2)) * 0.7 + x_shift)


def test_from_window_snapshot_reads_every_counter():
    rng, stats = np.random.default_rng(0), WindowStats(input_edges=EDGES, clock=FakeClock())
    record_traffic(stats, 300, rng=rng)
    stats.record_request("student", SHADOW, 0.5, False, 1)
    obs = from_window_snapshot(stats.snapshot(), REFERENCE, usd_per_hour={"teacher": 3.6, "student": 0.36})
    assert (obs.teacher, obs.student, obs.compared) == ("teacher", "student", 300)
    assert 0.8 < obs.agreement_rate <= 1.0 and obs.kl_mean > 0
    assert obs.requests == {"teacher": 300, "student": 301} and obs.errors["student"] == 1
    assert obs.input_rows == 300 and obs.input_reference == [[0.25] * 4] * 2
    assert sum(obs.class_counts["student"]) == 300
    snap_counts = stats.snapshot()["variants"]["student"]["latency_counts"][SHADOW]
    assert obs.latency_quantile("student", 0.99, SHADOW) == pytest.approx(histogram_quantile(snap_counts, 0.99))
    assert obs.cost_per_inference("student") == pytest.approx(0.36 / 3600 * (300 * 0.003 + 0) / 300)


def test_pair_must_be_named_when_ambiguous():
    stats = WindowStats(clock=FakeClock())
    with pytest.raises(ValueError, match="name the teacher"):
        from_window_snapshot(stats.snapshot())


def test_embedded_source_subtracts_the_reading_at_the_window_start():
    rng, clock = np.random.default_rng(1), FakeClock(0.0)
    a, b = WindowStats(input_edges=EDGES, clock=clock), WindowStats(input_edges=EDGES, clock=clock)
    source = EmbeddedSource(lambda: {"a": a.snapshot(), "b": b.snapshot()},
                            teacher="teacher", student="student", reference=REFERENCE)
    assert source.observe(Window(0, 0)).compared == 0        # first reading: the baseline
    record_traffic(a, 100, rng=rng)
    record_traffic(b, 50, rng=rng)
    assert source.observe(Window(0, 60)).compared == 150      # two replicas merged
    record_traffic(a, 70, rng=rng)
    assert source.observe(Window(60, 120)).compared == 70     # only what came after 60 s
    assert source.observe(Window(0, 120)).compared == 220     # the whole step again
    later = source.observe(Window(60, 180))
    assert later.compared == 70 and later.input_rows == 70


def test_embedded_source_survives_a_stats_reset():
    rng, stats = np.random.default_rng(2), WindowStats(clock=FakeClock())
    source = EmbeddedSource(stats.snapshot, teacher="teacher", student="student")
    source.observe(Window(0, 0))
    record_traffic(stats, 80, rng=rng)
    source.observe(Window(0, 60))
    stats.reset()
    record_traffic(stats, 30, rng=rng)
    after_reset = source.observe(Window(60, 120))
    assert after_reset.compared == 0 and not after_reset.has_negative_counts()   # waits, never negative
    record_traffic(stats, 20, rng=rng)
    assert source.observe(Window(120, 180)).compared == 20     # counted from the reset on


def test_replica_snapshots_count_each_replica_in_its_window():
    rng, clock = np.random.default_rng(4), FakeClock(0.0)
    a, b = WindowStats(clock=clock), WindowStats(clock=clock)
    replicas = ReplicaSnapshots()
    source = EmbeddedSource(replicas.per_replica, teacher="teacher", student="student")
    record_traffic(a, 40, rng=rng)
    replicas.report("a", a.snapshot())
    assert source.observe(Window(0, 10)).compared == 40    # a's stats began inside the window
    clock.advance(60)
    record_traffic(a, 5, rng=rng)
    record_traffic(b, 10, rng=rng)                          # b: history from before this window...
    replicas.report("a", a.snapshot())
    replicas.report("b", b.snapshot())
    assert source.observe(Window(30, 60)).compared == 5    # ...is never counted; a only since 10 s
    clock.advance(60)
    a.reset()                                               # a restarted its stats at 120 s
    record_traffic(a, 7, rng=rng)
    record_traffic(b, 3, rng=rng)
    replicas.report("a", a.snapshot())
    replicas.report("b", b.snapshot())
    assert source.observe(Window(60, 120)).compared == 10  # 7 from a's new stats, 3 from b
    assert len(replicas.per_replica()) == 3                 # a (old lifetime), a (new), b


def test_controller_restart_does_not_count_old_history():
    rng, clock = np.random.default_rng(5), FakeClock(0.0)
    stats = WindowStats(clock=clock)
    record_traffic(stats, 90, rng=rng)                      # traffic before the controller started
    clock.advance(100)
    source = EmbeddedSource(stats.snapshot, teacher="teacher", student="student")
    assert source.observe(Window(50, 100)).compared == 0   # first reading: no baseline yet
    record_traffic(stats, 12, rng=rng)
    assert source.observe(Window(50, 160)).compared == 12  # counted from the first reading on


def test_shifted_inputs_show_as_input_drift():
    from gateway.rollout.core.gates import input_drift_gate
    from gateway.rollout.core.spec import InputDriftGate

    rng, stats = np.random.default_rng(3), WindowStats(input_edges=EDGES, clock=FakeClock())
    record_traffic(stats, 400, rng=rng, x_shift=1.0)
    obs = from_window_snapshot(stats.snapshot(), REFERENCE)
    assert not input_drift_gate(obs, InputDriftGate(max_psi=0.25), 200).passed
