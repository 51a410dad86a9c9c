"""Drift statistics and gates against known values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from rollout_fixtures import HEALTHY, make_obs

from gateway.rollout.core import drift, gates
from gateway.rollout.core.gates import CheckVerdict, GateResult, GateStatus
from gateway.rollout.core.observations import LatencyHistogram
from gateway.rollout.core.spec import ErrorRateGate, LatencyGate, OutputDriftGate, RolloutSpec


def test_wilson_interval_matches_newcombe_1998():
    # Newcombe (1998), Stat. Med. 17:857, table I: 81/263 -> 0.2553 to 0.3662; 0/10 -> 0 to 0.2775.
    lo, hi = drift.wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    assert tuple(round(v, 4) for v in drift.wilson_interval(0, 10)) == (0.0, 0.2775)
    assert drift.wilson_lower_bound(0, 0) == 0.0
    with pytest.raises(ValueError):
        drift.wilson_interval(11, 10)


def test_wilson_bound_rewards_more_evidence():
    assert drift.wilson_lower_bound(10, 10) < drift.wilson_lower_bound(950, 1000) < 0.95


def test_psi_known_value_and_symmetry_of_identical():
    assert drift.psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.1 * math.log(1.2) - 0.1 * math.log(0.8))
    assert drift.psi([10, 10, 10], [1, 1, 1]) == pytest.approx(0.0)
    assert math.isfinite(drift.psi([0.5, 0.5], [1.0, 0.0]))   # empty bin floored, not infinite
    with pytest.raises(ValueError):
        drift.psi([1, 1], [1, 1, 1])


def test_chi_square_known_value():
    stat, p = drift.chi_square_two_sample([10, 20], [20, 10])
    assert stat == pytest.approx(20 / 3) and p == pytest.approx(0.009823, abs=1e-6)
    assert drift.chi_square_two_sample([5, 0], [7, 0]) == (0.0, 1.0)   # one category: nothing to test


def test_bin_counts_and_psi_per_feature():
    x = np.array([[0.0, 5.0], [1.5, 5.0], [3.0, 5.0], [3.0, -1.0]])
    counts = drift.bin_counts(x, [[1.0, 2.0], [0.0, 4.0]])
    assert counts == [[1, 1, 2], [1, 0, 3]]
    assert drift.psi_per_feature([[1 / 3] * 3, [1 / 3] * 3], [[1, 1, 1], [0, 0, 0]]) == [pytest.approx(0.0), None]


def test_latency_histogram_quantile_matches_prometheus_interpolation():
    hist = LatencyHistogram((0.01, 0.02, math.inf), (50, 50, 0))
    assert hist.quantile(0.5) == pytest.approx(0.01)
    assert hist.quantile(0.75) == pytest.approx(0.015)
    assert LatencyHistogram((0.01, math.inf), (0, 5)).quantile(0.99) == 0.01   # +Inf bucket -> last bound
    assert LatencyHistogram((0.01,), (0,)).quantile(0.5) is None


def test_latency_gate_prefers_live_route_and_names_both_limits():
    obs = make_obs(student_route="primary", student_s=0.004)
    result = gates.latency_gate(obs, LatencyGate(max_p99_s=0.5, max_ratio_to_teacher=1.5), 200)
    assert result.passed and "(primary)" in result.detail
    assert result.threshold == pytest.approx(1.5 * obs.latency_quantile("teacher", 0.99, "primary"))
    slo = gates.latency_gate(obs, LatencyGate(max_p99_s=0.001, max_ratio_to_teacher=None), 200)
    assert slo.status is GateStatus.FAILED and slo.threshold == 0.001


def test_output_drift_needs_both_material_and_significant_shift():
    small = make_obs(n=400, class_shift=0.2)   # large PSI on few samples
    gate = OutputDriftGate(max_psi=0.2, alpha=1e-30)
    result = gates.output_drift_gate(small, gate, 200)
    assert result.value > 0.2 and result.passed   # PSI high but not significant at alpha 1e-30
    assert not gates.output_drift_gate(small, OutputDriftGate(max_psi=0.2, alpha=0.01), 200).passed


def test_output_drift_judges_class_vectors_of_different_lengths():
    # A student that never predicted the highest class in a window has a shorter count vector
    # (the lists grow with the largest class seen); that must not leave the gate without data.
    obs = make_obs()
    teacher = list(obs.class_counts["teacher"])
    student = list(obs.class_counts["student"])[:-1]
    short = obs.__class__(**{**obs.__dict__, "class_counts": {"teacher": teacher, "student": student}})
    result = gates.output_drift_gate(short, OutputDriftGate(), 200)
    assert result.status is not GateStatus.NO_DATA, result.detail


def test_error_rate_counts_requests_not_rows():
    # 162 requests of 32 rows each: 5184 rows passed every row-counting gate, and the error-rate
    # gate waited for 240 *requests* (min_samples) forever on a loaded machine.
    obs = make_obs(n=5184)
    batched = obs.__class__(**{**obs.__dict__, "requests": {"teacher": 162, "student": 162},
                               "errors": {"teacher": 0, "student": 0}})
    assert gates.error_rate_gate(batched, ErrorRateGate(), 240).passed
    few = obs.__class__(**{**obs.__dict__, "requests": {"teacher": 20, "student": 20}})
    assert gates.error_rate_gate(few, ErrorRateGate(), 240).status is GateStatus.NO_DATA
    assert gates.error_rate_gate(few, ErrorRateGate(min_requests=10), 240).status is not GateStatus.NO_DATA


def test_input_drift_names_the_worst_features():
    result = gates.input_drift_gate(make_obs(input_shift=0.2), RolloutSpec().gates.input_drift, 200)
    assert result.status is GateStatus.FAILED and "feature 0" in result.detail
    no_ref = gates.input_drift_gate(make_obs().__class__(**{**HEALTHY.__dict__, "input_reference": None}),
                                    RolloutSpec().gates.input_drift, 200)
    assert no_ref.status is GateStatus.NO_DATA


def test_cost_gate_compares_cost_per_inference():
    spec = RolloutSpec().gates.cost
    assert gates.cost_gate(make_obs(student_usd=0.1, teacher_usd=1.0), spec).value == pytest.approx(0.1)
    assert gates.cost_gate(make_obs(student_usd=0.6, teacher_usd=1.0), spec).status is GateStatus.FAILED
    assert gates.cost_gate(make_obs(teacher_usd=0.0), spec).status is GateStatus.NO_DATA


def test_evaluate_gates_skips_disabled_and_cost_unless_final():
    spec = RolloutSpec()
    spec.gates.kl.enabled = False
    spec.gates.cost.enabled = True
    names = [g.name for g in gates.evaluate_gates(spec, HEALTHY)]
    assert "kl" not in names and "cost" not in names
    assert "cost" in [g.name for g in gates.evaluate_gates(spec, HEALTHY, final_promotion=True)]


@pytest.mark.parametrize("statuses, expected", [
    (["passed", "passed"], CheckVerdict.PASSED),
    (["passed", "no_data"], CheckVerdict.WAITING),
    (["no_data", "failed"], CheckVerdict.FAILED),
])
def test_verdict(statuses, expected):
    assert gates.verdict([GateResult(f"g{i}", GateStatus(s)) for i, s in enumerate(statuses)]) is expected
