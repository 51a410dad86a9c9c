"""Prometheus metrics of the gateway, through ``ray.serve.metrics``.

Ray exports them on each node's metrics export port (``ray start --metrics-export-port
8080``; ``kdgate serve`` uses 8080 by default) in Prometheus text format, prefixed
``ray_`` and tagged with ``application``, ``deployment`` and ``replica``: the counter
``kdgate_requests_total`` is scraped as ``ray_kdgate_requests_total``. That port is the
scrape target (on KubeRay: a PodMonitor on the head and worker pods' ``metrics`` port).

Names follow Prometheus conventions: base units in the name, labels ``variant``,
``route`` (``primary|shadow``) and ``model``. Busy seconds per variant are
``kdgate_request_duration_seconds_sum`` (no separate counter: one metric write less on
the hot path); ``kdgate_cost_per_inference_usd`` is computed in the replica over 30 s
windows. ``kdgate_gateway_request_duration_seconds`` is the handler's whole time per inference
request (what a client waits minus network and proxy) and ``kdgate_gateway_overhead_seconds``
the replica's own share of it (parse, routing, encoding: the handler's time minus the model
call), both by the variant that answered.

Per-request writes go to a :class:`~gateway.serve.metric_buffer.MetricBuffer` and reach
Ray once a second from a flusher thread (:meth:`GatewayMetrics.close` flushes the rest);
the rarely-set gauges are written directly. ``kdgate_predictions_total`` and
``kdgate_input_bin_total`` (the drift gates' counts) come from one exporter actor per cluster
instead, tagged ``application``, ``deployment`` and ``model`` (:mod:`gateway.serve.count_exporter`
says why); input bins only for applications whose rollout reads Prometheus.

Example::

    metrics = GatewayMetrics(model="mnist1d")
    metrics.observe_request("student", "primary", 0.0012, status="ok", rows=4)
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gateway.core.stats import LATENCY_BUCKETS_S
from gateway.serve.metric_buffer import Flusher, MetricBuffer

DriftCounts = tuple  # (started_at, {variant: rows per class}, rows per bin per feature)


class HeldGauge:
    """A ``ray.serve.metrics.Gauge`` that remembers its last values and can set them again.

    Ray 2.60 evicts a gauge series two export intervals (about 20 s) after its last
    ``set``: a weight or rollout phase that changes once a day would vanish from the
    scrape. :meth:`refresh`, called every few seconds, keeps such series alive.
    """

    def __init__(self, name: str, *, description: str, tag_keys: tuple[str, ...]):
        from ray.serve.metrics import Gauge

        self._gauge = Gauge(name, description=description, tag_keys=tag_keys)
        self._last: dict[tuple[tuple[str, str], ...], float] = {}

    def set(self, value: float, tags: dict[str, str]) -> None:
        self._last[tuple(sorted(tags.items()))] = value
        self._gauge.set(value, tags)

    def refresh(self) -> None:
        """Set every series again to its last value."""
        for key, value in list(self._last.items()):
            self._gauge.set(value, dict(key))


BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
KL_BUCKETS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


class GatewayMetrics:
    """All kdgate_* metrics of one replica; tag values are always strings."""

    def __init__(self, model: str, *, flush_interval_s: float = 1.0):
        from ray.serve.metrics import Counter, Histogram

        self.model = model
        self._buffer = MetricBuffer()
        self.request_seconds = Histogram(
            "kdgate_request_duration_seconds",
            description="Model answer latency by variant and route (primary|shadow), seconds.",
            boundaries=list(LATENCY_BUCKETS_S), tag_keys=("variant", "route", "model"),
        )
        self.requests = Counter(
            "kdgate_requests_total", description="Inference requests by variant, route and status.",
            tag_keys=("variant", "route", "model", "status"),
        )
        self.rows = Counter(
            "kdgate_rows_total", description="Input rows answered by variant and route.",
            tag_keys=("variant", "route", "model"),
        )
        self.comparisons = Counter(
            "kdgate_comparisons_total",
            description="Teacher/student answer pairs compared, by outcome (agree|disagree).",
            tag_keys=("variant", "model", "outcome"),
        )
        self.kl = Histogram(
            "kdgate_kl_divergence", description="KL(teacher || student) per compared row, nats.",
            boundaries=list(KL_BUCKETS), tag_keys=("variant", "model"),
        )
        self.shadow_dropped = Counter(
            "kdgate_shadow_dropped_total",
            description="Shadow work dropped, by reason (queue_full|timeout|error|superseded: queued before a redeploy replaced the model).",
            tag_keys=("variant", "model", "reason"),
        )
        self.fallbacks = Counter(
            "kdgate_fallbacks_total", description="Student failures answered by the teacher instead.",
            tag_keys=("variant", "model", "reason"),
        )
        self.weight = HeldGauge(
            "kdgate_weight_ratio", description="Configured traffic share per variant (0..1).",
            tag_keys=("variant", "model"),
        )
        self.cost = HeldGauge(
            "kdgate_cost_per_inference_usd",
            description="Cost per answered request over the last window, by method "
                        "(provisioned: $/h x window / requests; busy: busy seconds x $/h / requests).",
            tag_keys=("variant", "model", "method"),
        )
        self.batch_rows = Histogram(
            "kdgate_batch_size_rows", description="Rows per model call (after dynamic batching).",
            boundaries=list(BATCH_SIZE_BUCKETS), tag_keys=("variant", "model"),
        )
        self.overhead_seconds = Histogram(
            "kdgate_gateway_overhead_seconds",
            description="Gateway's own time per inference request (parse, routing, encoding; "
                        "handler time minus the model call), by the variant that answered, seconds.",
            boundaries=list(LATENCY_BUCKETS_S), tag_keys=("variant", "model"),
        )
        self.handler_seconds = Histogram(
            "kdgate_gateway_request_duration_seconds",
            description="Gateway handler time per inference request (parse, routing, model calls, "
                        "encoding: what a client waits minus network and proxy), by the variant that "
                        "answered, seconds.",
            boundaries=list(LATENCY_BUCKETS_S), tag_keys=("variant", "model"),
        )
        self._counts_source: Callable[[], DriftCounts | None] | None = None
        # Receives the counts' growth: (classes, bins) -> None; a RemoteCounts once first needed.
        self.count_sink: Callable[[dict[str, list[int]], list[list[int]]], None] | None = None
        self._exported: DriftCounts = (None, {}, [])
        self._export_lock = threading.Lock()
        self._flusher = Flusher(self.flush, interval_s=flush_interval_s).start()

    def flush(self, pause: Callable[[], Any] | None = None) -> int:
        """Write the buffered per-request metrics to Ray now (the flusher does it every second,
        with ``pause`` between chunks of writes)."""
        self._export_count_growth()
        return self._buffer.flush(pause)

    def export_counts(self, read: Callable[[], DriftCounts | None]) -> None:
        """From now on each flush sends ``count_sink`` what the cumulative counts ``read()`` returns
        grew by since the previous flush: ``kdgate_predictions_total`` and ``kdgate_input_bin_total``,
        what the rollout's drift gates judge when it reads Prometheus (``rollout.source: prometheus``).

        ``read()`` gives ``(started_at, {variant: rows per class}, rows per bin per feature)``
        (:meth:`gateway.core.stats.WindowStats.drift_counts`); a new ``started_at`` (new window
        stats after a config change) counts from zero. Once a second instead of per request: a
        32-row request over 40 features is 400 label sets, about 180 us of Python on the request path.
        The sink is the cluster's one exporter (:mod:`gateway.serve.count_exporter`), not this
        replica's own counters: per-replica series would outgrow Ray's metrics agent.
        """
        self._counts_source = read

    def _export_count_growth(self) -> None:
        with self._export_lock:  # the flusher thread and an explicit flush()
            current = self._counts_source() if self._counts_source is not None else None
            if current is None:
                return
            started, classes, bins = current
            last_started, last_classes, last_bins = self._exported
            if started != last_started:
                last_classes, last_bins = {}, []
            class_growth = {v: _growth(counts, last_classes.get(v, [])) for v, counts in classes.items()}
            bin_growth = [_growth(row, last_bins[f] if f < len(last_bins) else []) for f, row in enumerate(bins)]
            if any(map(any, class_growth.values())) or any(map(any, bin_growth)):
                if self.count_sink is None:
                    from gateway.serve.count_exporter import RemoteCounts

                    self.count_sink = RemoteCounts(self.model)
                self.count_sink({v: g for v, g in class_growth.items() if any(g)}, bin_growth)
            self._exported = current

    def close(self) -> None:
        """Stop the flusher and write what is still buffered."""
        self._flusher.stop()

    def refresh(self) -> None:
        """Keep the gauges that change rarely (weights, cost) in the scrape (see :class:`HeldGauge`)."""
        self.weight.refresh()
        self.cost.refresh()

    def _tags(self, variant: str, **extra: str) -> dict[str, str]:
        return {"variant": variant, "model": self.model, **extra}

    def observe_request(self, variant: str, route: str, seconds: float, *, status: str, rows: int,
                        requests: int = 1) -> None:
        """One model answer (or failure) on ``route``, for ``requests`` requests (a shadow batch: several;
        its latency is observed once for each, as in the window stats)."""
        buf = self._buffer
        buf.inc(self.requests, requests, self._tags(variant, route=route, status=status))
        if status == "ok":
            tags = self._tags(variant, route=route)
            buf.observe(self.request_seconds, seconds, tags, count=requests)
            buf.inc(self.rows, rows, tags)

    def observe_handled(self, variant: str, total_s: float, overhead_s: float) -> None:
        """One inference request answered by ``variant``: the handler's time and the gateway's own share."""
        tags = self._tags(variant)
        self._buffer.observe(self.handler_seconds, total_s, tags)
        self._buffer.observe(self.overhead_seconds, overhead_s, tags)

    def observe_comparison(self, student: str, agreements: int, disagreements: int, kls: list[float]) -> None:
        """The outcome of comparing one teacher/student answer pair (per row)."""
        if agreements:
            self._buffer.inc(self.comparisons, agreements, self._tags(student, outcome="agree"))
        if disagreements:
            self._buffer.inc(self.comparisons, disagreements, self._tags(student, outcome="disagree"))
        tags = self._tags(student)
        for kl in kls:
            self._buffer.observe(self.kl, kl, tags)

    def shadow_drop(self, variant: str, reason: str, requests: int = 1) -> None:
        """Shadow work that was not done (queue full, timeout, backend error), per request it carried."""
        self._buffer.inc(self.shadow_dropped, requests, self._tags(variant, reason=reason))

    def fallback(self, variant: str, reason: str) -> None:
        """A student failure that the teacher answered."""
        self._buffer.inc(self.fallbacks, 1, self._tags(variant, reason=reason))

    def set_weights(self, weights: dict[str, float]) -> None:
        """Publish the configured split (percent in config, ratio in the metric)."""
        for variant, percent in weights.items():
            self.weight.set(percent / 100.0, self._tags(variant))

    def set_cost(self, variant: str, *, provisioned: float | None, busy: float | None) -> None:
        """Cost per inference over the last window (None: no requests, left unchanged)."""
        if provisioned is not None:
            self.cost.set(provisioned, self._tags(variant, method="provisioned"))
        if busy is not None:
            self.cost.set(busy, self._tags(variant, method="busy"))

    def observe_batch(self, variant: str, rows: int) -> None:
        """Rows in one model call."""
        self._buffer.observe(self.batch_rows, rows, self._tags(variant))


def _growth(now: list[int], before: list[int]) -> list[int]:
    """``now - before`` element-wise (``before`` shorter: its missing entries are 0).

    >>> _growth([3, 5, 1], [1, 5])
    [2, 0, 1]
    """
    return [n - (before[i] if i < len(before) else 0) for i, n in enumerate(now)]
