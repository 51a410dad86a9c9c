"""Honest verdicts (distill/verdicts.py): a student that loses to its baseline, a sweep that ties."""
from __future__ import annotations

import pytest

from distill.report import verdicts_html
from distill.verdicts import (baseline_verdict, classification_verdicts, embedding_verdicts, proportion_noise,
                              sweep_verdict, verdict_lines)


def _kd(t: float, a: float, score: float, chosen: bool = False) -> dict:
    return {"kind": "kd", "temperature": t, "alpha": a, "val_accuracy": score, "chosen": chosen}


def test_student_losing_to_its_baseline_says_so_with_what_to_try():
    verdict = baseline_verdict(0.940, 0.951, n_rows=1000)
    assert (verdict.status, verdict.ok) == ("loses", False)
    assert "does NOT beat" in verdict.summary and "94.00 % vs 95.10 %" in verdict.summary
    assert verdict.figures["gain"] == pytest.approx(-0.011)
    assert any("larger student" in tip for tip in verdict.advice)
    assert any("unlabeled" in tip for tip in verdict.advice)
    assert verdict.lines()[0].startswith("WARNING baseline:")


def test_student_beating_its_baseline_is_ok_and_a_win_within_noise_is_called_that():
    clear = baseline_verdict(0.97, 0.90, n_rows=1000)
    assert (clear.status, clear.ok, clear.advice) == ("beats", True, [])
    assert "within noise" not in clear.summary
    narrow = baseline_verdict(0.951, 0.950, n_rows=1000)
    assert narrow.ok and "within noise" in narrow.summary


def test_exact_tie_with_the_baseline_is_not_ok():
    verdict = baseline_verdict(0.9, 0.9, n_rows=200)
    assert (verdict.status, verdict.ok) == ("ties", False) and "TIES" in verdict.summary


def test_regression_compares_mse_lower_is_better():
    assert baseline_verdict(0.5, 0.4, n_rows=100, metric="test MSE", higher_is_better=False,
                            accuracy=False).status == "loses"
    assert baseline_verdict(0.3, 0.4, n_rows=100, higher_is_better=False, accuracy=False).ok


def test_sweep_whose_runs_all_tie_is_flagged_with_the_chosen_setting_and_advice():
    rows = [_kd(t, a, 0.952, chosen=(t, a) == (1, 0.5)) for t in (1, 2, 4, 8, 16) for a in (0.5, 0.7, 0.9)]
    rows.append({"kind": "baseline", "temperature": None, "alpha": 0.0, "val_accuracy": 0.99})
    verdict = sweep_verdict(rows, n_val=600, epochs=4)
    assert (verdict.status, verdict.ok) == ("tied", False)
    assert "could NOT tell its 15 runs apart" in verdict.summary and "T=1 alpha=0.5" in verdict.summary
    assert verdict.figures["exact_ties"] == 15 and verdict.figures["tied_with_best"] == 15
    assert any("now 4; try 8" in tip for tip in verdict.advice)


def test_sweep_differences_inside_one_standard_error_still_tie():
    noise = proportion_noise(0.9, 400)  # 1.5 %
    verdict = sweep_verdict([_kd(1, 0.5, 0.9, True), _kd(4, 0.5, 0.9 - noise / 2)], n_val=400)
    assert verdict.status == "tied"


def test_a_separated_sweep_and_a_partly_tied_one_are_ok():
    separated = sweep_verdict([_kd(1, 0.5, 0.80), _kd(4, 0.5, 0.95, True)], n_val=1000)
    assert (separated.status, separated.ok) == ("separated", True) and "T=4 alpha=0.5" in separated.summary
    partly = sweep_verdict([_kd(1, 0.5, 0.80), _kd(4, 0.5, 0.95, True), _kd(8, 0.5, 0.949)], n_val=1000)
    assert (partly.status, partly.ok) == ("partly_tied", True) and "1 other run(s) of 3" in partly.summary


def test_regression_sweep_uses_a_relative_noise():
    rows = [{"kind": "kd", "temperature": 1, "alpha": a, "val_neg_mse": -1.0 - a / 1000} for a in (0.1, 0.5)]
    assert sweep_verdict(rows, n_val=100).status == "tied"
    rows[1]["val_neg_mse"] = -2.0
    assert sweep_verdict(rows, n_val=100).status == "separated"


def test_report_verdicts_and_their_printed_and_html_forms():
    report = {"task": "classification", "dataset": {"n_test": 500, "n_val": 300},
              "config": {"sweep": {"epochs": 4}}, "student": {"accuracy": 0.94}, "baseline": {"accuracy": 0.951},
              "sweep": [_kd(1, 0.5, 0.9, True), _kd(4, 0.5, 0.9)]}
    verdicts = classification_verdicts(report)
    assert {name: v["status"] for name, v in verdicts.items()} == {"baseline": "loses", "sweep": "tied"}
    lines = verdict_lines(verdicts)
    assert sum(line.startswith("WARNING") for line in lines) == 2 and any("try:" in line for line in lines)
    page = verdicts_html(verdicts)
    assert page.count("class='warning'") == 2 and "does NOT beat" in page


def test_embedding_verdict_compares_the_probe_with_the_best_no_teacher_model():
    metrics = {"student": {"probe_accuracy": 0.95}, "baseline": {"probe_accuracy": 0.96},
               "random": {"probe_accuracy": 0.90}}
    verdict = embedding_verdicts(metrics, n_test=1500)["baseline"]
    assert verdict["status"] == "loses" and "95.00 % vs 96.00 %" in verdict["summary"]
    assert embedding_verdicts({"student": {"mean_cosine": 0.9}}, n_test=10) == {}
