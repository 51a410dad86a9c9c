"""PromQL building and response parsing, replayed from answers recorded from a real Prometheus.

The answers in data/prometheus_answers.json were recorded by
tests/integration/rollout/test_rollout_prometheus.py (KDGATE_RECORD_PROMETHEUS=DIR):
400 requests per variant, 95 % agreement, KL 0.02, student 4 ms, teacher 20 ms.
"""
from __future__ import annotations

import json
import pathlib

import httpx
import pytest

from gateway.rollout.core.gates import evaluate_gates
from gateway.rollout.core.observations import Window
from gateway.rollout.core.spec import PrometheusSpec, RolloutSpec
from gateway.rollout.prometheus_source import (
    PrometheusQueryError, PrometheusSource, increase_query, parse_vector,
)

RECORDED = json.loads((pathlib.Path(__file__).parent / "data" / "prometheus_answers.json").read_text())
WINDOW = Window(*RECORDED["window"])


def replaying_source(answers_by_query, seen):
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        query = request.url.params["query"]
        seen.append((query, float(request.url.params["time"])))
        if query not in answers_by_query:
            return httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": f"unknown {query}"})
        return httpx.Response(200, json=answers_by_query[query])

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return PrometheusSource(PrometheusSpec(url="http://prometheus:9090/", selector='job="kdgate"'), model="mnist1d",
                            teacher="teacher", student="student", client=client,
                            reference={"reference": {"inputs": {"fractions": [[0.25] * 4] * 3}}},
                            usd_per_hour={"teacher": 3.6, "student": 0.36})


def test_queries_are_increases_over_the_window_with_the_selector():
    source = replaying_source({}, [])
    queries = source.queries(WINDOW)
    assert queries["comparisons"] == ('sum by (outcome) (increase(ray_kdgate_comparisons_total'
                                      '{model="mnist1d",variant="student",job="kdgate"}[5s]))')
    assert queries["latency"].startswith("sum by (variant, route, le) (increase("
                                         "ray_kdgate_request_duration_seconds_bucket{")
    assert all("[5s]" in q and 'job="kdgate"' in q for q in queries.values())


def test_recorded_answers_become_observations_that_pass_the_gates():
    seen = []
    source = replaying_source({}, seen)
    answers = {source.queries(WINDOW)[name]: body for name, body in RECORDED["answers"].items()}
    source = replaying_source(answers, seen)
    obs = source.observe(WINDOW)
    assert len(seen) == 8 and all(t == pytest.approx(WINDOW.end, abs=1e-3) for _, t in seen)
    assert obs.compared == 418 and obs.agreement_rate == pytest.approx(0.95, abs=0.005)
    assert obs.kl_mean == pytest.approx(0.02, rel=0.01)
    assert obs.latency_quantile("student", 0.99, "shadow") == pytest.approx(0.004, rel=0.3)
    assert obs.latency_quantile("teacher", 0.99, "primary") == pytest.approx(0.02, rel=0.3)
    assert obs.error_rate("student") == 0.0
    assert obs.cost_per_inference("student") / obs.cost_per_inference("teacher") == pytest.approx(0.02, rel=0.01)
    assert len(obs.input_bins) == 3 and len(obs.class_counts["student"]) == 4
    assert {g.status.value for g in evaluate_gates(RolloutSpec(min_samples=100), obs)} == {"passed"}


def test_error_answers_and_unreachable_servers_raise_the_gateway_error():
    with pytest.raises(PrometheusQueryError, match="bad_data"):
        replaying_source({}, []).observe(WINDOW)
    with pytest.raises(PrometheusQueryError, match="expected a vector"):
        parse_vector({"status": "success", "data": {"resultType": "matrix", "result": []}})

    def refuse(request):
        raise httpx.ConnectError("connection refused")

    source = PrometheusSource(PrometheusSpec(url="http://prometheus:9090"), model="m", teacher="t", student="s",
                              client=httpx.Client(transport=httpx.MockTransport(refuse)))
    with pytest.raises(PrometheusQueryError, match="refused"):
        source.observe(WINDOW)


def test_nan_samples_are_dropped_and_grouping_is_optional():
    body = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"variant": "a"}, "value": [1, "NaN"]}, {"metric": {"variant": "b"}, "value": [1, "3"]}]}}
    assert parse_vector(body) == [({"variant": "b"}, 3.0)]
    assert increase_query("m", (), "{}", 60) == "sum (increase(m{}[60s]))"
