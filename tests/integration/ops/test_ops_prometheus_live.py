"""Every dashboard query and every alert against a real Prometheus scraping a real gateway under Locust load.

Debian's ``prometheus`` runs on loopback (free port, temporary data dir, 1 s scrape and
rule evaluation) and scrapes the session's Ray metrics export port. The gateway app is
built to exercise every signal: a remote student with a 1 us timeout (fallbacks), a
one-slot shadow queue under full shadowing (drops), a random student that disagrees with
the teacher (low agreement), and a rollout starting at 10 % whose gates fail (a real
automated rollback). Locust (a subprocess running loadtests/locustfile.py) drives V1 and
V2 traffic. Then each panel query and each alert expression is evaluated through the HTTP
API: none may error, each must return data; the values are printed.
"""
from __future__ import annotations

import math
import threading
import time

import httpx
import numpy as np
import pytest
from gateway_support import FEATURES, deploy, gateway_config, post_predict, wait_ready
from prometheus_support import query, running_prometheus
from run_loadtest import run_locust, verdict

from kdgate.ops.alerts import AlertThresholds, alert_rules, rules_file
from kdgate.ops.dashboards import panel_queries

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "ops-admin-token"
APP, PREFIX = "ops", "/ops"
# The rules Prometheus loads here: production windows, but thresholds this gateway crosses
# (its student answers in milliseconds, so the latency SLO is set below that).
LIVE = AlertThresholds(student_p99_slo_s=0.0001, max_shadow_drops_per_s=0.0, max_fallback_ratio=0.0)
DASHBOARD_VARIABLES = {"model": "mnist1d", "__rate_interval": "2m"}
# Long enough for a rollback (two failed checks 4 s apart) and two 30 s cost publications
# on a loaded CI machine: the wait ends when Locust does.
LOAD = {"steps": 6, "step_seconds": 25.0, "step_users": 2}
DATA_TIMEOUT_S = 210.0


def _ops_gateway_config(models: dict, tmp) -> dict:
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    config = gateway_config(models, tmp, admin={"token_file": str(token_file)})
    config["variants"][0]["usd_per_hour"] = 0.40
    # Remote with a 1 us timeout: no Serve handle hop is that fast, so every call falls back
    # (5 ms, then 1 ms, stopped producing fallbacks on a quiet machine once the hop got faster:
    # the alert had no data).
    config["variants"][1].update(colocated=False, timeout_s=1e-6, usd_per_hour=0.10)
    # QA requests forced to the student (below) keep it falling back after the rollback too.
    config["routing"]["allow_force"] = True
    # One request per shadow job (batch_window_s 0): the one-slot queue overflows.
    config["shadow"] = {"fraction": 1.0, "canary_compare_fraction": 1.0, "queue_size": 1, "timeout_s": 2.0,
                        "batch_window_s": 0}
    config["rollout"] = {
        "steps": [10, 50, 100], "interval_s": 4.0, "min_samples": 30, "failure_threshold": 2, "deadline_s": 120,
        "gates": {"input_drift": {"enabled": False}},
        "state_path": str(tmp / "rollout.sqlite"), "evidence_dir": str(tmp / "evidence"),
    }
    return config


@pytest.fixture(scope="module")
def ops_gateway(serve_instance, onnx_models, tmp_path_factory):
    from ray import serve

    tmp = tmp_path_factory.mktemp("ops-gateway")
    deploy(_ops_gateway_config(onnx_models, tmp), name=APP, prefix=PREFIX)
    url = serve_instance["url"] + PREFIX
    wait_ready(url, timeout_s=120)
    yield url
    serve.delete(APP)


@pytest.fixture(scope="module")
def prometheus(serve_instance, tmp_path_factory):
    with running_prometheus(serve_instance["metrics_url"], tmp_path_factory.mktemp("prometheus"),
                            rules=rules_file(LIVE, interval="1s")) as url:
        yield url


def has_data(result: list[dict]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def every_query() -> dict[str, str]:
    """Label -> PromQL for every panel target and every alert expression (the live thresholds)."""
    queries = {f"panel '{title}' [{legend}]": expr for title, legend, expr in panel_queries(DASHBOARD_VARIABLES)}
    queries.update({f"alert {rule['alert']}": rule["expr"] for rule in alert_rules(LIVE)})
    return queries


def _admin(url: str) -> dict:
    return httpx.get(f"{url}/admin/rollout", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10).json()


def _wait_for_data(prometheus: str, ops_gateway: str, locust: threading.Thread) -> dict[str, list]:
    """Poll until every query has data (or the deadline); return the last results."""
    deadline = time.monotonic() + DATA_TIMEOUT_S
    while True:
        results = {label: query(prometheus, promql) for label, promql in every_query().items()}
        missing = [label for label, result in results.items() if not has_data(result)]
        if not missing or time.monotonic() > deadline or not locust.is_alive():
            return results
        print(f"waiting for data: {missing}; rollout: {_admin(ops_gateway).get('status', {}).get('phase')}")
        time.sleep(5)


SHOWN_LABELS = ("variant", "route", "status", "reason", "phase", "method", "gate")


def _format(result: list[dict]) -> str:
    """Up to six series as ``label=value,...: value``."""
    shown = []
    for r in result[:6]:
        labels = ",".join(f"{k}={v}" for k, v in r["metric"].items() if k in SHOWN_LABELS)
        shown.append(f"{{{labels}}} {float(r['value'][1]):.6g}")
    return "; ".join(shown) or "(no data)"


def _forced_student_requests(url: str, stop: threading.Event, sent: list) -> None:
    """A few requests a second forced to the student, from start to end.

    Prometheus rates need a counter to rise between scrapes: without these, every fallback
    happened in the seconds before the rollback (the student then gets no traffic), the
    fallback counter was first scraped after them, and the fallback alert's rate stayed 0/0.
    """
    body = {"instances": np.random.default_rng(0).normal(size=(4, FEATURES)).round(4).tolist()}
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            sent.append(post_predict(client, url, body, headers={"x-kdgate-force-variant": "student"})[0])
            stop.wait(0.2)


def _run_locust_into(summary: dict, url: str, out) -> None:
    try:
        summary.update(run_locust(url, out, **LOAD))
    except Exception as err:  # noqa: BLE001 -- reported by the test's assertion
        summary["error"] = repr(err)


def test_every_panel_and_alert_returns_data_from_a_real_prometheus(ops_gateway, prometheus, tmp_path):
    summary: dict = {}
    locust = threading.Thread(target=_run_locust_into, args=(summary, ops_gateway, tmp_path / "locust"))
    stop, forced = threading.Event(), []
    qa = threading.Thread(target=_forced_student_requests, args=(ops_gateway, stop, forced))
    locust.start()
    qa.start()
    try:
        results = _wait_for_data(prometheus, ops_gateway, locust)
    finally:
        locust.join(timeout=LOAD["steps"] * LOAD["step_seconds"] + 120)
        stop.set()
        qa.join()
    for label, result in results.items():
        print(f"{label}: {_format(result)}")
    print("rollout:", _admin(ops_gateway).get("status", {}).get("reason"))
    assert "error" not in summary and verdict(summary) is None, summary.get("error") or verdict(summary)
    assert forced and set(forced) == {200}, f"forced student requests: {sorted(set(map(str, forced)))}"
    missing = [label for label, result in results.items() if not has_data(result)]
    assert not missing, f"no data for: {missing}"
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"][0]["rules"]
    assert {r["name"]: r["health"] for r in rules} == {r["alert"]: "ok" for r in alert_rules(LIVE)}
    assert all(r["state"] in ("pending", "firing") for r in rules), [(r["name"], r["state"]) for r in rules]


def test_production_alert_expressions_evaluate_without_error(ops_gateway, prometheus):
    for rule in alert_rules(AlertThresholds()):
        print(f"production alert {rule['alert']}: {_format(query(prometheus, rule['expr']))}")
