"""PrometheusSource against a real Prometheus scraping an exporter of the gateway's metric names.

The exporter uses prometheus_client with the exact names and labels Ray exports for
``gateway/serve/metrics.py`` (``ray_`` prefix), so the PromQL is checked by the real engine.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from gateway.rollout.core.gates import evaluate_gates
from gateway.rollout.core.observations import Window
from gateway.rollout.core.spec import PrometheusSpec, RolloutSpec
from gateway.core.stats import LATENCY_BUCKETS_S
from gateway.rollout.prometheus_source import PrometheusSource

pytestmark = [pytest.mark.integration]
MODEL = "mnist1d"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    """The gateway's metric families, served on 127.0.0.1 by prometheus_client."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ray_kdgate_requests", "", ["variant", "route", "model", "status"], registry=r)
        self.rows = Counter("ray_kdgate_rows", "", ["variant", "route", "model"], registry=r)
        self.latency = Histogram("ray_kdgate_request_duration_seconds", "", ["variant", "route", "model"],
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.comparisons = Counter("ray_kdgate_comparisons", "", ["variant", "model", "outcome"], registry=r)
        self.kl = Histogram("ray_kdgate_kl_divergence", "", ["variant", "model"], registry=r)
        self.predictions = Counter("ray_kdgate_predictions", "", ["variant", "model", "class"], registry=r)
        self.input_bins = Counter("ray_kdgate_input_bin", "", ["model", "feature", "bin"], registry=r)
        self.port = _free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=r)

    def traffic(self, n: int, *, agree: float, student_s: float, scale: int = 1):
        """``n`` requests (teacher primary, student shadow); ``scale`` 0 only creates the series."""
        for variant, route, secs in (("teacher", "primary", 0.02), ("student", "shadow", student_s)):
            self.requests.labels(variant, route, MODEL, "ok").inc(n * scale)
            self.requests.labels(variant, route, MODEL, "error").inc(0)
            self.rows.labels(variant, route, MODEL).inc(n * scale)
            latency = self.latency.labels(variant, route, MODEL)  # created even when scale is 0
            for _ in range(n * scale):
                latency.observe(secs)
            for c in range(4):
                self.predictions.labels(variant, MODEL, str(c)).inc(n * scale / 4)
        self.comparisons.labels("student", MODEL, "agree").inc(round(n * scale * agree))
        self.comparisons.labels("student", MODEL, "disagree").inc(round(n * scale * (1 - agree)))
        kl = self.kl.labels("student", MODEL)
        for _ in range(n * scale):
            kl.observe(0.02)
        for f in range(3):
            for b in range(4):
                self.input_bins.labels(MODEL, str(f), str(b)).inc(n * scale / 4)

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (make system-deps)")
    exporter = Exporter()
    exporter.traffic(1, agree=1.0, student_s=0.004, scale=0)  # series exist at 0 before traffic
    work = tmp_path_factory.mktemp("prometheus")
    port = _free_port()
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: kdgate, static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]}}]\n")
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_first_scrape(url)
        yield url, exporter
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        exporter.close()


def _wait_for_first_scrape(url: str, timeout_s: float = 40.0) -> None:
    """Prometheus needs a few seconds to discover the target, then one scrape."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            body = httpx.get(url + "/api/v1/query", params={"query": 'up{job="kdgate"} == 1'}, timeout=1).json()
            if body.get("data", {}).get("result"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    pytest.fail(f"prometheus did not scrape the exporter within {timeout_s:.0f} s")


def _wait_scrapes(seconds: float = 3.5):
    time.sleep(seconds)


def test_observations_through_real_prometheus(prometheus):
    url, exporter = prometheus
    source = PrometheusSource(PrometheusSpec(url=url, selector='job="kdgate"'), model=MODEL, teacher="teacher",
                              student="student", reference={"inputs": {"fractions": [[0.25] * 4] * 3}},
                              usd_per_hour={"teacher": 3.6, "student": 0.36})
    _wait_scrapes()
    start = time.time()
    exporter.traffic(400, agree=0.95, student_s=0.004)
    _wait_scrapes()
    window = Window(start - 1.0, time.time())
    obs = source.observe(window)
    # increase() extrapolates to the window's edges: counts are close, not exact.
    assert obs.compared == pytest.approx(400, rel=0.35)
    assert obs.agreement_rate == pytest.approx(0.95, abs=0.01)
    assert obs.kl_mean == pytest.approx(0.02, rel=0.05)
    assert obs.requests["student"] == pytest.approx(400, rel=0.35) and obs.errors.get("student", 0) == 0
    assert obs.latency_quantile("student", 0.99, "shadow") == pytest.approx(0.004, rel=0.3)
    assert obs.cost_per_inference("student") / obs.cost_per_inference("teacher") == pytest.approx(0.02, rel=0.05)
    assert len(obs.input_bins) == 3 and obs.class_counts["teacher"] and obs.input_reference
    results = {g.name: g.status.value for g in evaluate_gates(RolloutSpec(min_samples=100), obs)}
    assert set(results.values()) == {"passed"}, results
    record_dir = os.environ.get("KDGATE_RECORD_PROMETHEUS")
    if record_dir:  # refresh the unit tests' recorded answers
        answers = {name: httpx.get(url + "/api/v1/query", params={"query": q, "time": window.end}).json()
                   for name, q in source.queries(window).items()}
        out = pathlib.Path(record_dir) / "prometheus_answers.json"
        out.write_text(json.dumps({"window": [window.start, window.end], "answers": answers}, indent=1))


def test_unreachable_prometheus_raises_the_gateway_error():
    from gateway.rollout.prometheus_source import PrometheusQueryError

    source = PrometheusSource(PrometheusSpec(url=f"http://127.0.0.1:{_free_port()}", timeout_s=0.5), model=MODEL,
                              teacher="teacher", student="student")
    with pytest.raises(PrometheusQueryError):
        source.observe(Window(0, 60))
