"""kdgate's alerts through Debian's promtool: `check rules`, then `test rules` (data/kdgate_alerts_promtool.yaml).

The rules file is generated from kdgate/ops/alerts.py with the production thresholds, the
same rules as k8s/base/prometheusrule.yaml. The promtool tests show each alert firing on
a synthetic bad series and staying silent on a healthy one.
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess

import pytest
import yaml

from kdgate.ops.alerts import AlertThresholds, alert_rules, rules_file

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROMTOOL_TESTS = pathlib.Path(__file__).parent / "data" / "kdgate_alerts_promtool.yaml"


def promtool(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed: `make system-deps` installs Debian's prometheus package")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def write_rules(directory: pathlib.Path, thresholds: AlertThresholds) -> None:
    (directory / "kdgate-rules.yaml").write_text(yaml.safe_dump(rules_file(thresholds), sort_keys=False))
    shutil.copy(PROMTOOL_TESTS, directory / PROMTOOL_TESTS.name)


def test_promtool_checks_the_rules(tmp_path):
    write_rules(tmp_path, AlertThresholds())
    result = promtool("check", "rules", "kdgate-rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_each_alert_fires_on_a_bad_series_and_stays_silent_on_a_healthy_one(tmp_path):
    write_rules(tmp_path, AlertThresholds())
    result = promtool("test", "rules", PROMTOOL_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("change, alert", [
    ({"min_agreement": 0.4}, "KdgateAgreementLow"),
    ({"student_p99_slo_s": 0.3}, "KdgateStudentLatencyHigh"),
    ({"max_shadow_drops_per_s": 0.2}, "KdgateShadowDrops"),
    ({"max_fallback_ratio": 0.05}, "KdgateFallbacksRising"),
])
def test_the_promtool_tests_fail_when_a_threshold_moves(tmp_path, change, alert):
    write_rules(tmp_path, dataclasses.replace(AlertThresholds(), **change))
    result = promtool("test", "rules", PROMTOOL_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and f"alertname: {alert}" in result.stdout + result.stderr


def test_the_prometheus_rule_in_k8s_carries_the_same_rules():
    manifest = yaml.safe_load((ROOT / "k8s" / "base" / "prometheusrule.yaml").read_text())
    assert manifest["spec"] == rules_file(AlertThresholds())
    assert [r["alert"] for r in alert_rules(AlertThresholds())] == [
        "KdgateRollbackHappened", "KdgateAgreementLow", "KdgateStudentLatencyHigh", "KdgateShadowDrops",
        "KdgateFallbacksRising"]


def test_bad_thresholds_are_refused_with_the_field_name():
    with pytest.raises(ValueError, match="min_agreement"):
        AlertThresholds(min_agreement=1.5)
    with pytest.raises(ValueError, match="student_p99_slo_s"):
        AlertThresholds(student_p99_slo_s=-1)
