"""Where the request path reports what happened: metrics, window stats, capture, audit.

One object so the runtime calls one method per event and stays free of the four sinks'
details. Every sink is best effort: a full disk or a metrics hiccup is logged, never
turned into a failed inference request.

Example::

    observers = Observers(metrics=GatewayMetrics("mnist1d"))
    observers.config_applied(config)
    observers.request("student", "primary", 0.001, ok=True, rows=1)
"""
from __future__ import annotations

import logging
import time

import numpy as np

from gateway.audit import AuditLog
from gateway.capture import CaptureStore
from gateway.core.config import GatewayConfig
from gateway.core.errors import ManifestError
from gateway.core.manifest import read_manifest
from gateway.model_store import local_manifest
from gateway.core.stats import PRIMARY, WindowStats, cost_per_inference
from gateway.serve.metrics import GatewayMetrics

log = logging.getLogger(__name__)

COST_WINDOW_S = 30.0


class Observers:
    """Fans gateway events out to Prometheus metrics, WindowStats, capture and audit."""

    def __init__(self, metrics: GatewayMetrics | None, *, clock=time.time):
        self.metrics = metrics
        self.stats: WindowStats | None = None
        self._capture: CaptureStore | None = None
        self._audit: AuditLog | None = None
        self._config: GatewayConfig | None = None
        self._clock = clock
        # The cost gauges' own short window, reset every COST_WINDOW_S: [requests, errors, busy
        # seconds] per variant (a list per variant, not a second WindowStats: this runs per request).
        self._cost_counts: dict[str, list[float]] = {}
        self._cost_window_start = clock()
        if metrics is not None:
            metrics.export_counts(self._drift_counts)

    def _drift_counts(self):
        """The window stats' class counts and input bins so far (None before a config).

        Input bins (features x bins series) only where the rollout reads Prometheus, their one reader.
        """
        stats, config = self.stats, self._config
        if stats is None:
            return None
        started, classes, bins = stats.drift_counts()
        wanted = config is not None and config.rollout is not None and config.rollout.source == "prometheus"
        return started, classes, bins if wanted else []

    def config_applied(self, config: GatewayConfig) -> None:
        """Point the sinks at the new config (capture dir, audit path, weight gauges)."""
        old = self._config
        self._config = config
        if self.stats is None or old is None or old.variants != config.variants:
            self.stats = _window_stats(config)
        if config.capture.enabled and (old is None or old.capture != config.capture or self._capture is None):
            self._capture = _capture_store(config)
        elif not config.capture.enabled:
            self._capture = None
        if self._audit is None or old is None or old.audit_log != config.audit_log:
            self._audit = AuditLog(config.audit_log)
        if self.metrics:
            self.metrics.set_weights(config.effective_weights())

    def audit_applied(self, actor: str, old: GatewayConfig | None, new: GatewayConfig) -> None:
        """Audit an applied config: its changed fields, or the whole config the first time."""
        self._audit_safely(
            lambda audit: audit.record(actor, "config.initial", None, new.model_dump(mode="json"))
            if old is None else audit.record_config_change(actor, old, new)
        )

    def audit_rejected(self, actor: str, current: GatewayConfig | None, attempted: object, reason: str) -> None:
        """Audit a rejected change: what was tried and why; the config in force stays."""
        self._audit_safely(
            lambda audit: audit.record(actor, "config.rejected", {"in_force": _dump(current)},
                                       {"attempted": _dump(attempted), "reason": reason})
        )

    def _audit_safely(self, write) -> None:
        if self._audit is None:
            log.warning("no audit log configured yet; entry not written")
            return
        try:
            write(self._audit)
        except Exception:  # an audit failure is logged loudly but does not undo the change
            log.exception("audit log write failed")

    def request(self, variant: str, route: str, seconds: float, *, ok: bool, rows: int,
                x: np.ndarray | None = None, y: np.ndarray | None = None, windowed: bool = True,
                requests: int = 1) -> None:
        """One model call (primary or shadow) for ``requests`` requests (a shadow batch carries
        several); ``windowed=False``: a replaced model version's call, kept out of the window stats
        the rollout's gates read (metrics and cost still count it)."""
        if self.metrics:
            self.metrics.observe_request(variant, route, seconds, status="ok" if ok else "error", rows=rows,
                                         requests=requests)
        if windowed and self.stats is not None:
            self.stats.record_request(variant, route, seconds, ok, rows, requests=requests)
            if ok:
                self.stats.record_busy(variant, seconds)
        counts = self._cost_counts.setdefault(variant, [0, 0, 0.0])
        counts[0] += requests
        if ok:
            counts[2] += seconds
        else:
            counts[1] += requests
        if ok and windowed and y is not None and self.stats is not None:
            self._record_io(variant, route, x, y)
        self._maybe_publish_cost()

    def _record_io(self, variant: str, route: str, x: np.ndarray | None, y: np.ndarray) -> None:
        # Inputs once per request (primary); predictions on both routes, so a student in
        # shadow has a class distribution for the output-drift gate before it serves.
        # The metrics export these counts once a second (GatewayMetrics.export_counts), off the
        # request path: a rollout reading Prometheus judges drift from them.
        if route == PRIMARY and x is not None:
            self.stats.record_inputs(variant, x)
        if self._config.task == "classification" and y.ndim == 2:
            self.stats.record_outputs(variant, np.argmax(y, axis=1))

    def handled(self, variant: str, total_s: float, overhead_s: float) -> None:
        """An inference request ``variant`` answered: the handler's seconds, and the gateway's own
        share of them (parse, routing, encoding)."""
        if self.metrics:
            self.metrics.observe_handled(variant, total_s, overhead_s)
        if self.stats is not None:
            self.stats.record_handled(variant, total_s)

    def fallback(self, variant: str, reason: str) -> None:
        """A student failure answered by the teacher."""
        if self.metrics:
            self.metrics.fallback(variant, reason)
        if self.stats is not None:
            self.stats.record_fallback(variant)

    def shadow_drop(self, variant: str, reason: str, requests: int = 1) -> None:
        """Shadow work not done (queue_full, timeout, error, superseded) for ``requests`` requests."""
        if self.metrics:
            self.metrics.shadow_drop(variant, reason, requests)
        if self.stats is not None:
            self.stats.record_shadow_drop(variant, requests)

    def stable_comparison(self, stable: str, candidate: str, comps) -> None:
        """The candidate compared with the stable student: window stats only (the stable-agreement
        gate); no metric and no capture, whose labels must stay the teacher's."""
        if self.stats is not None:
            self.stats.record_comparison(stable, candidate, comps)

    def comparison(self, teacher: str, student: str, comps, x, t_out, s_out, request_id: str) -> None:
        """A compared teacher/student pair: stats, metrics, and capture of disagreements."""
        if self.stats is not None:
            self.stats.record_comparison(teacher, student, comps)
        agree = np.array([c.agree for c in comps], dtype=bool)
        if self.metrics:
            kls = [c.kl for c in comps if c.kl is not None]
            self.metrics.observe_comparison(student, int(agree.sum()), int((~agree).sum()), kls)
        if self._capture is not None and not agree.all():
            now = self._clock()
            try:
                for i in np.flatnonzero(~agree):
                    self._capture.add(x[i], t_out[i], s_out[i], request_id=request_id, t=now)
            except Exception:  # a full disk must not break the shadow loop
                log.exception("capture of disagreeing rows failed")

    def close(self) -> None:
        """Flush buffered capture rows and metrics (a replica shutting down must not lose them)."""
        if self.metrics:
            self.metrics.close()
        if self._capture is not None:
            try:
                self._capture.flush()
            except Exception:  # shutting down: log, never raise
                log.exception("capture flush at shutdown failed")

    def _maybe_publish_cost(self) -> None:
        if self._clock() - self._cost_window_start < COST_WINDOW_S or self._config is None:
            return
        now, counts, self._cost_counts = self._clock(), self._cost_counts, {}
        snapshot = {"started_at": self._cost_window_start, "taken_at": now,   # cost_per_inference's layout
                    "variants": {v: {"requests": {"all": n}, "errors": {"all": e}, "busy_s": busy}
                                 for v, (n, e, busy) in counts.items()}}
        self._cost_window_start = now
        if not self.metrics:
            return
        for v in self._config.variants:
            cost = cost_per_inference(snapshot, v.name, v.usd_per_hour)
            self.metrics.set_cost(v.name, provisioned=cost["provisioned_usd"], busy=cost["busy_usd"])


def _window_stats(config: GatewayConfig) -> WindowStats:
    """Stats binning inputs with the first manifest's reference edges (drift), if any."""
    for v in config.variants:
        if v.manifest_path:
            try:
                manifest = read_manifest(local_manifest(v.manifest_path))
            except ManifestError as err:
                log.warning("%s; input drift bins off", err)
                continue
            # A fixed class count: teacher and student class vectors always line up, even when
            # one of them has not (yet) predicted the highest class in a window.
            return WindowStats(input_edges=manifest.input_edges, n_classes=manifest.n_classes)
    return WindowStats()


def _capture_store(config: GatewayConfig) -> CaptureStore:
    cap = config.capture
    return CaptureStore(cap.dir, max_bytes=cap.max_bytes, segment_rows=cap.segment_rows)


def _dump(value: object) -> object:
    return value.model_dump(mode="json") if isinstance(value, GatewayConfig) else value
