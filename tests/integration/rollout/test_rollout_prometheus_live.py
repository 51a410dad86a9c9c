"""A rollout driven by ``rollout.source: prometheus`` against a real Prometheus scraping a real gateway.

The gateway app (model ``promsrc1d``: Prometheus series are labelled by model, and the
session's other apps serve ``mnist1d``) rolls out a student that is the teacher's own
network (it always agrees), with every gate on: agreement, KL, latency, error rate, output
and input drift, and cost before the promotion. Its controller reads nothing from the
replicas: every check queries Prometheus (Debian's binary, scraping the session's Ray
metrics export port every 3 s). Sticky users send N(0, 1) rows, the training reference of
the student's manifest: the student is promoted and guarded. Then every feature moves by
3 standard deviations: the guard rolls the student back, naming input_drift.

Timing: Ray exports application metrics every 10 s (``metrics_report_interval_ms``) and
Prometheus scrapes every 3 s, so a check sees traffic up to ~14 s late. A canary check's
window runs from the step's start, so it grows until it holds ``min_samples``; the guard
looks back 20 s (two Ray exports). Checks run every 10 s, one Ray export: with checks every
3 s, consecutive checks judged the same export (the gate values repeated), so the two failed
checks of ``failure_threshold: 2`` could be one export's data.
"""
from __future__ import annotations

import time

import pytest
from gateway_support import (
    ADMIN_TOKEN, Traffic, deploy, gateway_config, manifest_with_reference, rollout_history, wait_for, wait_ready,
)
from prometheus_support import query, running_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP, MODEL = "promsrc", "promsrc1d"
INTERVAL_S = 10.0
GUARD_LOOKBACK_S = 20.0


def prometheus_rollout_config(onnx_models, tmp, prometheus_url: str) -> dict:
    """Teacher (remote, $0.40/h) at 100 %; the student (the teacher's file, colocated, $0.10/h) rolled out 50 -> 100."""
    (tmp / "token").write_text(ADMIN_TOKEN)
    config = gateway_config(onnx_models, tmp, model_name=MODEL, admin={"token_file": str(tmp / "token")})
    config["variants"][0]["usd_per_hour"] = 0.40
    config["variants"][1].update(model_path=onnx_models["teacher"], usd_per_hour=0.10,
                                 manifest_path=manifest_with_reference(onnx_models, tmp))
    config["routing"]["weights"] = {"teacher": 100, "student": 0}
    config["shadow"] = {"fraction": 1.0, "canary_compare_fraction": 1.0}
    config["rollout"] = {
        "steps": [50, 100], "interval_s": INTERVAL_S, "min_samples": 150, "failure_threshold": 2, "deadline_s": 150,
        "source": "prometheus", "prometheus": {"url": prometheus_url, "selector": 'job="kdgate"'},
        # PSI over 40 features passes 0.25 by chance now and then on a few hundred rows; the
        # drift below moves every feature by 3 standard deviations (PSI >> 1).
        "gates": {"input_drift": {"max_psi": 0.6}, "cost": {"enabled": True},
                  "latency": {"max_ratio_to_teacher": 3.0}},
        "guard": {"interval_s": INTERVAL_S, "lookback_s": GUARD_LOOKBACK_S, "min_samples": 100,
                  "shadow_fraction": 0.3},
        "state_path": str(tmp / "rollout.sqlite"), "evidence_dir": str(tmp / "evidence"),
    }
    return config


@pytest.fixture(scope="module")
def prometheus(serve_instance, tmp_path_factory):
    with running_prometheus(serve_instance["metrics_url"], tmp_path_factory.mktemp("prometheus")) as url:
        yield url


@pytest.fixture(scope="module")
def rollout_app(serve_instance, onnx_models, prometheus, tmp_path_factory):
    """The app deployed and its traffic running: ``(url, traffic, started_at)``."""
    from ray import serve

    tmp = tmp_path_factory.mktemp("promsrc")
    deploy(prometheus_rollout_config(onnx_models, tmp, prometheus), name=APP, prefix=f"/{APP}")
    url = f"{serve_instance['url']}/{APP}"
    wait_ready(url, timeout_s=120)
    traffic = Traffic(url, model=MODEL)
    try:
        yield url, traffic, time.time()
    finally:
        traffic.end()
        serve.delete(APP)


def gates_line(gates: list[dict]) -> str:
    return "; ".join(f"{g['name']} {g['status']} {_num(g.get('value'))} (threshold {_num(g.get('threshold'))})"
                     for g in gates)


def _num(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def wait_for_phase(url: str, phases: set[str], traffic: Traffic, timeout_s: float) -> dict:
    """Poll the rollout until its phase is in ``phases``; on a timeout print every check's gates."""
    try:
        return wait_for(url, lambda h: h["status"]["phase"] in phases, timeout_s=timeout_s, traffic=traffic)
    except AssertionError:
        for check in rollout_history(url).get("checks", [])[-8:]:
            print(f"check at {check['at']:.1f} ({check['phase']}, {check['weight']:g} %): {check['verdict']}: "
                  f"{gates_line(check['gates'])}")
        raise


def test_a_healthy_student_is_promoted_from_prometheus_data(rollout_app, prometheus):
    url, traffic, started_at = rollout_app
    history = wait_for_phase(url, {"Guarding", "Promoted", "RolledBack"}, traffic, timeout_s=150)
    promoted_after = time.time() - started_at
    status = history["status"]
    canary = [c for c in history["checks"] if c["phase"] not in ("Guarding", "Promoted")]
    for check in canary:
        print(f"canary check +{check['at'] - started_at:.1f} s at {check['weight']:g} %: {check['verdict']} "
              f"({check['decision']}): {gates_line(check['gates'])}")
    series = query(prometheus, f'sum by (variant, route) (ray_kdgate_requests_total{{model="{MODEL}"}})')
    observed = canary[-1]["observations"]
    print(f"promoted {promoted_after:.1f} s after traffic began ({len(canary)} canary checks, the last on "
          f"{observed['compared']} compared rows, {sum(observed['input_bins'][0]):.0f} input rows); "
          f"{len(traffic.sent)} requests, {len(traffic.failures)} failed; Prometheus request counts: "
          + ", ".join(f"{s['metric'].get('variant')}/{s['metric'].get('route')}={float(s['value'][1]):.0f}"
                      for s in series))
    assert status["phase"] in ("Guarding", "Promoted"), status
    assert status["stable"] == "student" and history["split"]["student"] == 100.0
    passed = [c for c in canary if c["verdict"] == "passed"]
    assert passed, "no canary check passed"
    # Every gate judged Prometheus data in the check that promoted (cost only there).
    last = {g["name"]: g["status"] for g in passed[-1]["gates"]}
    assert {name for name, s in last.items() if s == "passed"} >= {
        "agreement", "kl", "latency", "error_rate", "output_drift", "input_drift", "cost"}, last
    assert traffic.failures == []
    # The input bins come from the cluster's one count exporter: no replica label, one process.
    # Per-replica series once filled Ray's 2,000 series per metric after four replica lifetimes.
    exporters = query(prometheus, f'count by (WorkerId, replica) (ray_kdgate_input_bin_total{{model="{MODEL}"}})')
    assert [s["metric"].get("replica") for s in exporters] == [None], exporters


def test_drift_makes_the_guard_roll_back_from_prometheus_data(rollout_app):
    url, traffic, _ = rollout_app
    guarding = wait_for_phase(url, {"Guarding", "RolledBack"}, traffic, timeout_s=60)
    assert guarding["status"]["phase"] == "Guarding", guarding["status"]
    # Healthy traffic until a guard check has judged it (its window starts at the promotion, so
    # the first ones wait for Prometheus data): no false alarm.
    # (A guard check sets last_check_at; the promoting check's "passed" is still in last_verdict.)
    judged = wait_for(url, lambda h: h["status"]["phase"] != "Guarding" or (
        h["status"]["last_check_at"] is not None and h["status"]["last_verdict"] == "passed"),
        timeout_s=60, traffic=traffic)
    assert judged["status"]["phase"] == "Guarding", judged["status"]
    traffic.shift[0], drift_at = 3.0, time.time()
    history = wait_for_phase(url, {"RolledBack"}, traffic, timeout_s=120)
    status = history["status"]
    guard_checks = [c for c in history["checks"] if c["phase"] == "Guarding"]
    before = [c for c in guard_checks if c["at"] < drift_at]
    after = [c for c in guard_checks if c["at"] >= drift_at]
    for check in before + after:
        print(f"guard check {check['at'] - drift_at:+.1f} s from the drift: {check['verdict']}: "
              f"{gates_line(check['gates'])}")
    guard_passed_after = judged["status"]["last_check_at"] - judged["status"]["step_started_at"]
    print(f"guard passed a check {guard_passed_after:.1f} s after the promotion; "
          f"rolled back {status['updated_at'] - drift_at:.1f} s after the drift ({len(before)} guard checks "
          f"before it: {[c['verdict'] for c in before]}, {len(after)} after); reason: {status['reason']}; "
          f"{len(traffic.sent)} requests, {len(traffic.failures)} failed")
    # Healthy traffic is never rolled back: no two failed guard checks in a row before the drift
    # (failure_threshold 2). One isolated failed check on healthy traffic was seen once in nine runs
    # (its gate not recorded then; every check's gates are printed above since).
    verdicts = [c["verdict"] for c in before]
    assert "passed" in verdicts and not any(a == b == "failed" for a, b in zip(verdicts, verdicts[1:])), verdicts
    assert status["stable"] == "teacher" and "input_drift" in status["reason"], status["reason"]
    assert after[-1]["verdict"] == "failed"
    assert traffic.failures == []
