"""Production observation source: the gateway's metrics through Prometheus's HTTP API.

Every quantity is an ``increase(...[Ns])`` over the analysis window, evaluated at the
window's end (``/api/v1/query?time=END``), so a check sees the same window whichever
replica or pod served the traffic. Metric names are the gateway's (``gateway/serve/metrics.py``)
as Ray exports them (``ray_`` prefix).

Example::

    source = PrometheusSource(PrometheusSpec(url="http://prometheus:9090", selector='application="kdgate"'),
                              model="mnist1d", teacher="teacher", student="student-v2",
                              reference=manifest, usd_per_hour={"teacher": 2.5, "student-v2": 0.3})
    obs = source.observe(Window(start=now - 60, end=now))
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import httpx

from gateway.core.errors import GatewayError
from gateway.rollout.core.observations import LatencyHistogram, Observations, Window, input_reference
from gateway.rollout.core.spec import PrometheusSpec

# Metric families the gateway exports (name after Ray's "ray_" prefix).
METRICS = {
    "requests": "ray_kdgate_requests_total",              # variant, route, model, status
    "rows": "ray_kdgate_rows_total",                      # variant, route, model
    "latency": "ray_kdgate_request_duration_seconds_bucket",  # variant, route, model, le
    "comparisons": "ray_kdgate_comparisons_total",        # variant (student), model, outcome
    "kl_sum": "ray_kdgate_kl_divergence_sum",             # variant (student), model
    # Busy seconds: the gateway exports no separate counter (gateway/serve/metrics.py); the
    # latency histogram's sum is every answered request's seconds, both routes.
    "busy": "ray_kdgate_request_duration_seconds_sum",    # variant, route, model
    "predictions": "ray_kdgate_predictions_total",        # variant, model, class
    "input_bins": "ray_kdgate_input_bin_total",           # model, feature, bin
}


Sample = tuple[dict[str, str], float]  # (labels, value) of one instant-vector element


class PrometheusQueryError(GatewayError):
    """Prometheus could not be reached or answered with an error."""


def _matchers(model: str, selector: str, **labels: str) -> str:
    parts = [f'model="{model}"', *(f'{k}="{v}"' for k, v in labels.items())]
    if selector.strip():
        parts.append(selector.strip().strip("{}"))
    return "{" + ",".join(parts) + "}"


def increase_query(metric: str, by: tuple[str, ...], matchers: str, seconds: int) -> str:
    """``sum by (...) (increase(metric{...}[Ns]))``.

    >>> increase_query("ray_kdgate_rows_total", ("variant",), '{model="m"}', 60)
    'sum by (variant) (increase(ray_kdgate_rows_total{model="m"}[60s]))'
    """
    grouping = f"sum by ({', '.join(by)}) " if by else "sum "
    return f"{grouping}(increase({metric}{matchers}[{seconds}s]))"


def parse_vector(body: Mapping[str, Any]) -> list[Sample]:
    """``(labels, value)`` pairs of an instant-vector answer; raises on an error answer."""
    if body.get("status") != "success":
        raise PrometheusQueryError(f"prometheus: {body.get('errorType', 'error')}: {body.get('error', body)}")
    data = body.get("data", {})
    if data.get("resultType") != "vector":
        raise PrometheusQueryError(f"prometheus: expected a vector, got {data.get('resultType')}")
    out = []
    for sample in data.get("result", []):
        value = float(sample["value"][1])
        if math.isfinite(value):
            out.append((dict(sample.get("metric", {})), value))
    return out


def histograms_from_buckets(samples: list[Sample]) -> dict[str, dict[str, LatencyHistogram]]:
    """Cumulative ``le`` bucket samples -> variant -> route -> :class:`LatencyHistogram`."""
    grouped: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for labels, value in samples:
        grouped[(labels.get("variant", ""), labels.get("route", ""))].append((float(labels["le"]), value))
    out: dict[str, dict[str, LatencyHistogram]] = defaultdict(dict)
    for (variant, route), buckets in grouped.items():
        buckets.sort()
        cumulative = [max(v for _, v in buckets[: i + 1]) for i in range(len(buckets))]  # keep it monotone
        out[variant][route] = LatencyHistogram.from_cumulative([b for b, _ in buckets], cumulative)
    return dict(out)


class PrometheusSource:
    """:class:`~gateway.rollout.core.observations.ObservationSource` backed by Prometheus."""

    def __init__(self, spec: PrometheusSpec, *, model: str, teacher: str, student: str,
                 reference: Mapping[str, Any] | None = None, usd_per_hour: Mapping[str, float] | None = None,
                 client: httpx.Client | None = None):
        self.spec, self.model, self.teacher, self.student = spec, model, teacher, student
        self.input_reference, self.input_reference_rows = input_reference(reference)
        self.usd_per_hour = dict(usd_per_hour or {})
        self.client = client or httpx.Client(timeout=spec.timeout_s)

    def query(self, promql: str, at: float) -> list[Sample]:
        """One instant query evaluated at ``at`` (unix seconds)."""
        url = self.spec.url.rstrip("/") + "/api/v1/query"
        try:
            response = self.client.get(url, params={"query": promql, "time": f"{at:.3f}"}, timeout=self.spec.timeout_s)
            body = response.json()
        except (httpx.HTTPError, ValueError) as err:
            raise PrometheusQueryError(f"prometheus {url}: {type(err).__name__}: {err}") from err
        return parse_vector(body)

    def queries(self, window: Window) -> dict[str, str]:
        """The PromQL of every quantity for ``window`` (name -> query)."""
        seconds = max(1, int(round(window.seconds)))
        sel = self.spec.selector

        def q(key: str, by: tuple[str, ...], **labels: str) -> str:
            return increase_query(METRICS[key], by, _matchers(self.model, sel, **labels), seconds)

        return {
            "requests": q("requests", ("variant", "status")),
            "rows": q("rows", ("variant",)),
            "latency": q("latency", ("variant", "route", "le")),
            "comparisons": q("comparisons", ("outcome",), variant=self.student),
            "kl_sum": q("kl_sum", (), variant=self.student),
            "busy": q("busy", ("variant",)),
            "predictions": q("predictions", ("variant", "class")),
            "input_bins": q("input_bins", ("feature", "bin")),
        }

    def observe(self, window: Window) -> Observations:
        results = {name: self.query(promql, window.end) for name, promql in self.queries(window).items()}
        return self.to_observations(window, results)

    def to_observations(self, window: Window, results: Mapping[str, list[Sample]]) -> Observations:
        """Observations from the parsed answers of :meth:`queries` (pure; tested with recorded JSON)."""
        requests: dict[str, float] = defaultdict(float)
        errors: dict[str, float] = defaultdict(float)
        for labels, value in results["requests"]:
            requests[labels.get("variant", "")] += value
            if labels.get("status", "ok") != "ok":
                errors[labels.get("variant", "")] += value
        outcomes = {labels.get("outcome"): value for labels, value in results["comparisons"]}
        agree, disagree = outcomes.get("agree", 0.0), outcomes.get("disagree", 0.0)
        busy = {labels.get("variant", ""): value for labels, value in results["busy"]}
        return Observations(
            window=window, teacher=self.teacher, student=self.student,
            compared=int(round(agree + disagree)), agreements=int(round(agree)),
            kl_sum=sum(value for _, value in results["kl_sum"]),
            requests=dict(requests), errors=dict(errors),
            inferences={labels.get("variant", ""): value for labels, value in results["rows"]},
            cost_usd={v: s * self.usd_per_hour.get(v, 0.0) / 3600.0 for v, s in busy.items()},
            latency=histograms_from_buckets(results["latency"]),
            class_counts=_indexed_counts(results["predictions"], "variant", "class"),
            input_bins=_input_bins(results["input_bins"]),
            input_reference=self.input_reference, input_reference_rows=self.input_reference_rows,
        )


def _indexed_counts(samples: list[Sample], key: str, index: str) -> dict[str, list[float]]:
    """``{key: [count per integer index]}`` from samples labelled with both."""
    out: dict[str, list[float]] = {}
    for labels, value in samples:
        counts = out.setdefault(labels.get(key, ""), [])
        i = int(labels[index])
        counts.extend([0.0] * (i + 1 - len(counts)))
        counts[i] += value
    return out


def _input_bins(samples: list[Sample]) -> tuple[tuple[float, ...], ...]:
    by_feature = _indexed_counts(samples, "feature", "bin")
    if not by_feature:
        return ()
    n_features = max(int(f) for f in by_feature) + 1
    width = max(len(c) for c in by_feature.values())
    return tuple(tuple(by_feature.get(str(f), []) + [0.0] * (width - len(by_feature.get(str(f), []))))
                 for f in range(n_features))
