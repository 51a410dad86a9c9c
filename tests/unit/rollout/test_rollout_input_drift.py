"""The input-drift gate's false-alarm control: chi-square per feature, Bonferroni, PSI floor."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from distill.export import reference_stats
from gateway.core.manifest import InputReference
from gateway.core.stats import WindowStats
from gateway.rollout.core import drift
from gateway.rollout.core.gates import GateStatus, input_drift_gate
from gateway.rollout.core.observations import EmbeddedSource, Observations, Window, from_window_snapshot
from gateway.rollout.core.spec import InputDriftGate, RolloutSpec

FEATURES, TRAIN_ROWS = 40, 3600
DEFAULT = RolloutSpec().gates.input_drift
MIN_SAMPLES = RolloutSpec().min_samples


def training_reference(rng: np.random.Generator) -> dict:
    """Decile reference of a finite N(0, 1) training set, as ``kdgate distill`` writes it."""
    return reference_stats(rng.normal(size=(TRAIN_ROWS, FEATURES)), None)


def observe(reference: dict, x: np.ndarray) -> Observations:
    """Rows ``x`` through the gateway's WindowStats, judged against ``reference``."""
    stats_ = WindowStats(input_edges=reference["inputs"]["edges"])
    stats_.record_inputs("student", x)
    return from_window_snapshot(stats_.snapshot(), {"reference": reference}, teacher="teacher", student="student")


def null_failures(gate: InputDriftGate, windows: int, rows: int, seed: int) -> int:
    """Failing checks over healthy windows: fresh rows from the training distribution."""
    rng = np.random.default_rng(seed)
    reference = training_reference(rng)
    return sum(input_drift_gate(observe(reference, rng.normal(size=(rows, FEATURES))), gate, MIN_SAMPLES).status
               is GateStatus.FAILED for _ in range(windows))


def test_merge_sparse_bins_pools_small_bins_with_their_neighbours():
    assert drift.merge_sparse_bins([0.1] * 10, 200, 5) == [[b] for b in range(10)]
    assert drift.merge_sparse_bins([0.01, 0.01, 0.48, 0.48, 0.02], 100, 5) == [[0, 1, 2], [3, 4]]
    assert drift.merge_sparse_bins([0.5, 0.5], 4, 5) == [[0, 1]]   # too few rows for two groups


def test_chi_square_vs_reference_is_the_two_sample_table_test():
    fractions, live = [0.2, 0.3, 0.5], [30, 25, 45]
    stat, dof, p = drift.chi_square_vs_reference(fractions, live, reference_rows=1000)
    expected = stats.chi2_contingency([live, [200, 300, 500]], correction=False)
    assert (stat, dof, p) == pytest.approx((expected[0], expected[2], expected[1]))
    gof = drift.chi_square_vs_reference(fractions, live)
    assert gof[0] == pytest.approx(stats.chisquare(live, np.array(fractions) * 100).statistic)
    assert gof[2] < p   # an exact reference is stricter than a 1000-row sample
    assert drift.chi_square_vs_reference([0.5, 0.5], [0, 0]) == (0.0, 0, 1.0)


def test_healthy_windows_fail_at_about_the_family_alpha():
    # Without the PSI floor the chi-square + Bonferroni rule alone fails about family_alpha
    # of healthy windows (Bonferroni: at most): calibrated, neither eager nor blind.
    failures = null_failures(InputDriftGate(family_alpha=0.1, max_psi=1e-12), windows=300, rows=200, seed=1)
    assert 10 <= failures <= 45, failures   # 30 expected at 0.1; binomial sd 5.2


def test_healthy_windows_rarely_fail_with_the_defaults():
    # 40 features x 400 windows of the rollout's min_samples rows: at family_alpha 1e-3
    # about 0.4 failures are expected; a miscalibrated test (e.g. one ignoring that the
    # reference is a finite sample) would fail several.
    assert null_failures(DEFAULT, windows=400, rows=MIN_SAMPLES, seed=2) <= 2


def test_a_half_std_shift_on_a_quarter_of_the_features_fails_and_is_named():
    rng = np.random.default_rng(3)
    reference = training_reference(rng)
    x = rng.normal(size=(MIN_SAMPLES, FEATURES))
    shifted = rng.choice(FEATURES, FEATURES // 4, replace=False)
    x[:, shifted] += 0.5
    result = input_drift_gate(observe(reference, x), DEFAULT, MIN_SAMPLES)
    assert result.status is GateStatus.FAILED
    named = [int(part.split(":")[0]) for part in result.detail.split("feature ")[1:4]]
    assert set(named) <= set(shifted.tolist()), (named, shifted)
    assert result.detail.startswith(f"worst PSI on {MIN_SAMPLES} rows: feature {named[0]}: ")
    assert f"of {FEATURES} features drifted (chi-square p < 0.001/{FEATURES} and PSI > {DEFAULT.max_psi:g})" in result.detail
    assert result.value > result.threshold == DEFAULT.max_psi


def test_too_few_rows_is_no_data_and_a_healthy_window_passes_with_its_detail():
    rng = np.random.default_rng(4)
    reference = training_reference(rng)
    few = input_drift_gate(observe(reference, rng.normal(size=(150, FEATURES))), DEFAULT, MIN_SAMPLES)
    assert few.status is GateStatus.NO_DATA and few.detail == f"150 of {MIN_SAMPLES} input rows needed"
    ok = input_drift_gate(observe(reference, rng.normal(size=(372, FEATURES))), DEFAULT, MIN_SAMPLES)
    assert ok.status is GateStatus.PASSED
    assert ok.detail.startswith("worst PSI on 372 rows: feature ") and "(p=" in ok.detail
    assert f"0 of {FEATURES} features drifted" in ok.detail


def test_a_trivial_shift_on_a_huge_window_stays_below_the_psi_floor():
    # 1,000,000 rows: a 2-point move between bins is highly significant but immaterial.
    fractions = [[0.25] * 4] * 3
    live = [[230_000, 250_000, 250_000, 270_000]] * 3
    obs = Observations(Window(0, 60), "teacher", "student", input_bins=live, input_reference=fractions)
    assert drift.chi_square_vs_reference(fractions[0], live[0])[2] < 1e-100
    result = input_drift_gate(obs, DEFAULT, MIN_SAMPLES)
    assert result.status is GateStatus.PASSED and result.value < DEFAULT.max_psi


def test_the_reference_row_count_makes_a_small_reference_less_eager():
    # Live shares that differ from a 100-row reference by its own sampling noise.
    fractions, live = [[0.25] * 4], [[95, 125, 125, 155]]
    exact = Observations(Window(0, 60), "t", "s", input_bins=live, input_reference=fractions)
    small = Observations(Window(0, 60), "t", "s", input_bins=live, input_reference=fractions,
                         input_reference_rows=100)
    gate = InputDriftGate(family_alpha=0.01, max_psi=0.01)
    assert input_drift_gate(exact, gate, 200).status is GateStatus.FAILED
    assert input_drift_gate(small, gate, 200).status is GateStatus.PASSED


def test_the_reference_row_count_travels_from_the_manifest_to_the_observations():
    rng = np.random.default_rng(5)
    reference = reference_stats(rng.normal(size=(500, 3)), None)
    assert reference["inputs"]["rows"] == 500
    assert InputReference(**reference["inputs"]).rows == 500
    stats_ = WindowStats(input_edges=reference["inputs"]["edges"])
    stats_.record_inputs("student", rng.normal(size=(10, 3)))
    source = EmbeddedSource(stats_.snapshot, teacher="teacher", student="student", reference={"reference": reference})
    obs = source.observe(Window(0.0, 1e12))
    assert obs.input_reference_rows == 500.0 and obs.to_dict()["input_reference_rows"] == 500.0
    old = {"reference": {"inputs": {k: v for k, v in reference["inputs"].items() if k != "rows"}}}
    unknown = from_window_snapshot(stats_.snapshot(), old, teacher="teacher", student="student")
    assert unknown.input_reference_rows is None


def test_the_gate_config_checks_its_fields():
    with pytest.raises(ValueError, match="family_alpha"):
        InputDriftGate(family_alpha=1.5)
    with pytest.raises(ValueError, match="min_expected"):
        InputDriftGate(min_expected=0)
    with pytest.raises(ValueError, match="extra"):
        InputDriftGate(alpha=0.01)
    assert InputDriftGate(max_psi=0.25, report_worst=5).family_alpha == 1e-3   # older configs still load
