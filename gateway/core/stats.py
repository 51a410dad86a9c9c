"""In-process aggregates of live traffic: the embedded observation source.

Each gateway replica keeps one :class:`WindowStats`; the rollout controller merges the
replicas' snapshots (:func:`merge_snapshots`) and subtracts an earlier reading to get a
window. Every number in a snapshot is additive (counts and sums, no means or maxima),
so snapshots add across replicas and subtract across time.

Snapshot layout (plain JSON)::

    {"format": 1, "started_at": t0, "taken_at": t1, "replicas": 1,
     "latency_upper_bounds_s": LATENCY_BUCKETS_S,   # counts have one more slot: > 10 s
     "variants": {name: {
         "requests": {route: n}, "errors": {route: n}, "inferences": {route: rows},
         "latency_counts": {route: [n per bucket]}, "latency_sum_s": {route: s},
         "busy_s": s, "fallbacks": n, "shadow_drops": n,
         "handler_latency_counts": [n per bucket], "handler_latency_sum_s": s,
         "class_counts": [n per predicted class], "input_bins": [[n per bin] per feature]}},
     "comparisons": {teacher: {student: {"compared": n, "agreements": n, "kl_sum": x,
         "js_distance_sum": x, "max_prob_gap_sum": x, "abs_error_sum": x, "cosine_sum": x}}}}

Example::

    stats = WindowStats(input_edges=read_manifest("manifest.json").input_edges)
    stats.record_request("student", PRIMARY, latency_s=0.004, ok=True, rows=8)
    stats.quantile("student", PRIMARY, 0.99)
"""
from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gateway.core.compare import Comparison
from gateway.core.errors import GatewayError

PRIMARY, SHADOW = "primary", "shadow"
SNAPSHOT_FORMAT = 1
BROADCAST_MAX_ROWS = 64   # input binning: up to this many rows, one broadcast comparison; more, searchsorted
FOLD_ROWS = 256           # inputs/classes wait in a list until this many rows (or a reader) fold them at once


def _log_buckets(low_s: float, high_s: float, per_decade: int) -> tuple[float, ...]:
    """Log-spaced bounds from ``low_s`` to ``high_s`` (both included), 3 significant digits."""
    steps = math.ceil(per_decade * math.log10(high_s / low_s))
    bounds = {float(f"{low_s * 10 ** (k / per_decade):.3g}") for k in range(steps)}
    return tuple(sorted(bounds | {high_s}))


# Upper bounds (seconds) of every latency histogram (Prometheus, window stats, rollout
# gates): 9 per decade from 25 us to 10 s, i.e. edges about 29 % apart, 52 bounds. A
# colocated student answers in tens of microseconds end to end inside the replica, so the
# first bound sits below it; interpolation inside a bucket keeps p99 within ~10 %
# (tests/unit/gateway/test_gateway_stats.py). Each bound is one Prometheus series per
# label set: 52 is about the most a scrape of every variant x route should carry.
LATENCY_BUCKETS_S: tuple[float, ...] = _log_buckets(25e-6, 10.0, 9)

_COMPARISON_FIELDS = {
    "kl_sum": "kl", "js_distance_sum": "js_distance", "max_prob_gap_sum": "max_prob_gap",
    "abs_error_sum": "abs_error", "cosine_sum": "cosine",
}


def histogram_quantile(counts: Sequence[float], q: float,
                       upper_bounds: Sequence[float] = LATENCY_BUCKETS_S) -> float | None:
    """Quantile ``q`` of a latency histogram, interpolating inside the bucket.

    ``counts`` has one slot per bound plus an overflow slot (or the last bound is +Inf,
    as in Prometheus ``le`` buckets); a quantile in the overflow slot is reported as the
    largest finite bound (as Prometheus does). Empty -> None.

    >>> histogram_quantile([0, 10, 0], 0.5, upper_bounds=[0.001, 0.002])
    0.0015
    """
    total = float(sum(counts))
    if total <= 0:
        return None
    rank, seen, lower = q * total, 0.0, 0.0
    for bound, count in zip(upper_bounds, counts):
        if math.isinf(bound):
            break
        if count > 0 and seen + count >= rank:
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        lower = bound
    return float(lower)


class WindowStats:
    """Thread-safe cumulative counters of one replica since start or :meth:`reset`.

    Give ``n_classes`` (:attr:`gateway.core.manifest.Manifest.n_classes`) so ``class_counts`` has a
    fixed length from the start and readings subtract cleanly; without it the list grows
    with the largest class seen.
    """

    def __init__(self, *, input_edges: Sequence[Sequence[float]] | None = None,
                 n_classes: int | None = None, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._n_classes = int(n_classes or 0)
        self._lock = threading.Lock()
        self._set_edges(input_edges)
        self.reset()

    def reset(self) -> None:
        """Forget everything; the window starts now."""
        with self._lock:
            self._started_at = self._clock()
            self._variants: dict[str, dict[str, Any]] = {}
            self._bins: dict[str, np.ndarray] = {}   # variant -> input rows [feature, bin] (padded)
            self._pending: list[tuple[str, str, np.ndarray]] = []   # ("inputs" | "classes", variant, rows)
            self._pending_rows = 0
            self._comparisons: dict[str, dict[str, dict[str, float]]] = {}

    def set_input_edges(self, input_edges: Sequence[Sequence[float]] | None) -> None:
        """New reference edges (after a reconfigure); input bins start over."""
        with self._lock:
            self._fold()   # the classes still pending; their inputs were binned against the old edges
            self._set_edges(input_edges)
            self._bins = {}

    def _set_edges(self, input_edges: Sequence[Sequence[float]] | None) -> None:
        """The edges as one ``[feature, edge]`` matrix, padded with NaN (no value is >= NaN)."""
        self._edges = [np.asarray(e, dtype=np.float64) for e in input_edges] if input_edges else None
        if self._edges:
            width = max(len(e) for e in self._edges)
            self._edge_matrix = np.full((len(self._edges), width), np.nan)
            for f, e in enumerate(self._edges):
                self._edge_matrix[f, :len(e)] = e
            self._edge_counts = np.array([len(e) for e in self._edges])
            self._bin_offsets = np.arange(len(self._edges)) * (width + 1)

    def _bin_lists(self, counts: np.ndarray | None) -> list[list[int]]:
        """Padded ``[feature, bin]`` counts as one list per feature (len(edges) + 1 bins each)."""
        if not self._edges:
            return []
        if counts is None:
            return [[0] * (len(e) + 1) for e in self._edges]
        return [row[:n + 1].tolist() for row, n in zip(counts, self._edge_counts)]

    def _variant(self, name: str) -> dict[str, Any]:
        entry = self._variants.get(name)
        if entry is None:
            entry = self._variants[name] = {
                "requests": {}, "errors": {}, "inferences": {}, "latency_counts": {}, "latency_sum_s": {},
                "busy_s": 0.0, "fallbacks": 0, "shadow_drops": 0,
                "handler_latency_counts": [0] * (len(LATENCY_BUCKETS_S) + 1), "handler_latency_sum_s": 0.0,
                "class_counts": [0] * self._n_classes,
            }
        return entry

    def record_request(self, variant: str, route: str, latency_s: float, ok: bool, rows: int,
                       requests: int = 1) -> None:
        """One model call by ``variant`` on ``route`` (primary|shadow) answered (or failed) ``requests``
        requests (several: a shadow batch); its latency counts once for each of them, as a request in a
        dynamic batch waits for the whole batch."""
        slot = bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)  # Prometheus "le": value <= bound
        with self._lock:
            entry = self._variant(variant)
            counts = entry["latency_counts"].setdefault(route, [0] * (len(LATENCY_BUCKETS_S) + 1))
            counts[slot] += requests
            _add(entry["latency_sum_s"], route, float(latency_s) * requests)
            _add(entry["requests"], route, requests)
            _add(entry["errors"], route, 0 if ok else requests)
            _add(entry["inferences"], route, int(rows) if ok else 0)

    def record_handled(self, variant: str, seconds: float) -> None:
        """One inference request ``variant`` answered took ``seconds`` in the gateway's handler
        (parse, routing, model call, encoding): what a client waits minus the network and the proxy."""
        slot = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        with self._lock:
            entry = self._variant(variant)
            entry["handler_latency_counts"][slot] += 1
            entry["handler_latency_sum_s"] += float(seconds)

    def record_busy(self, variant: str, seconds: float) -> None:
        """Seconds a backend spent computing (once per batch, not per request), for cost."""
        with self._lock:
            self._variant(variant)["busy_s"] += float(seconds)

    def record_fallback(self, variant: str) -> None:
        """``variant`` failed or timed out and the teacher answered instead."""
        with self._lock:
            self._variant(variant)["fallbacks"] += 1

    def record_shadow_drop(self, variant: str, requests: int = 1) -> None:
        """Shadow work for ``variant`` was dropped (queue full or too late), ``requests`` requests of it."""
        with self._lock:
            self._variant(variant)["shadow_drops"] += requests

    def record_comparison(self, teacher_variant: str, student_variant: str, comps: Sequence[Comparison]) -> None:
        """Compared pairs of one request; fields that do not apply (None) add nothing."""
        if not comps:
            return
        sums = {key: sum(getattr(c, attr) or 0.0 for c in comps) for key, attr in _COMPARISON_FIELDS.items()}
        with self._lock:
            pair = self._comparisons.setdefault(teacher_variant, {}).setdefault(student_variant, {})
            _add(pair, "compared", len(comps))
            _add(pair, "agreements", sum(1 for c in comps if c.agree))
            for key, value in sums.items():
                _add(pair, key, float(value))

    def record_outputs(self, variant: str, predicted_classes: np.ndarray) -> None:
        """Predicted classes (argmax) ``variant`` answered with, for output drift."""
        classes = np.asarray(predicted_classes, dtype=np.int64).ravel()
        if classes.size == 0:
            return
        if classes.min() < 0:
            raise GatewayError(f"record_outputs: negative class index {int(classes.min())}")
        self._queue("classes", variant, classes)

    def record_inputs(self, variant: str, x: np.ndarray) -> None:
        """Bin each flattened feature of ``x`` ``[rows, *features]`` with the reference edges.

        On the request path only a shape check and an append: rows wait in a list until
        :data:`FOLD_ROWS` of them (or a reader) bin them in one go, about 0.3 us a row where one
        row at a time took 7 us (40 features, 10 edges; :meth:`_bin_counts`).
        """
        if self._edges is None:
            return
        flat = np.asarray(x).reshape(len(x), -1)
        if flat.shape[1] != len(self._edges):
            raise GatewayError(f"record_inputs: {flat.shape[1]} features, reference edges have {len(self._edges)}")
        self._queue("inputs", variant, flat)

    def _queue(self, kind: str, variant: str, rows: np.ndarray) -> None:
        with self._lock:
            self._pending.append((kind, variant, rows))
            self._pending_rows += len(rows)
            if self._pending_rows >= FOLD_ROWS:
                self._fold()

    def _fold(self) -> None:
        """Add the pending inputs and classes to the counts (caller holds the lock)."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        grouped: dict[tuple[str, str], list[np.ndarray]] = {}
        for kind, variant, rows in pending:
            grouped.setdefault((kind, variant), []).append(rows)
        for (kind, variant), parts in grouped.items():
            rows = np.concatenate(parts)
            if kind == "inputs":   # pending only while edges exist: new edges fold first
                counts = self._bin_counts(rows.astype(np.float64, copy=False))
                self._variant(variant)
                total = self._bins.get(variant)
                self._bins[variant] = counts if total is None else total + counts
            else:
                counts = np.bincount(rows).tolist()
                total = self._variant(variant)["class_counts"]
                total.extend([0] * (len(counts) - len(total)))
                for c, n in enumerate(counts):
                    total[c] += n

    def _bin_counts(self, flat: np.ndarray) -> np.ndarray:
        """Rows per ``[feature, bin]`` (padded) of ``flat`` ``[rows, features]``: a row's bin is the
        number of edges <= its value, NaN in the last bin."""
        if len(flat) <= BROADCAST_MAX_ROWS:   # one comparison of every value with every edge
            index = (flat[:, :, None] >= self._edge_matrix).sum(axis=2)
            nan = np.isnan(flat)
            if nan.any():
                index = np.where(nan, self._edge_counts, index)
        else:                                  # many rows: a binary search per feature is cheaper
            index = np.stack([np.searchsorted(e, flat[:, f], side="right") for f, e in enumerate(self._edges)],
                             axis=1)
        width = self._edge_matrix.shape[1] + 1
        return np.bincount((index + self._bin_offsets).ravel(),
                           minlength=len(self._edges) * width).reshape(len(self._edges), width)

    def drift_counts(self) -> tuple[float, dict[str, list[int]], list[list[int]]]:
        """``(started_at, {variant: rows per predicted class}, rows per input bin per feature)`` so
        far: what the drift gates judge, for the metrics' exporter (cumulative; the input bins of
        every variant summed, inputs being one traffic whoever answered them)."""
        with self._lock:
            self._fold()
            bins = self._bin_lists(sum(self._bins.values())) if self._bins else []
            return self._started_at, {v: list(e["class_counts"]) for v, e in self._variants.items()}, bins

    def quantile(self, variant: str, route: str, q: float) -> float | None:
        """Latency quantile of one variant and route so far (None without requests)."""
        with self._lock:
            counts = list(self._variants.get(variant, {}).get("latency_counts", {}).get(route, []))
        return histogram_quantile(counts, q)

    def handler_quantile(self, variant: str, q: float) -> float | None:
        """Quantile of the handler's time for requests ``variant`` answered (None without any)."""
        with self._lock:
            counts = list(self._variants.get(variant, {}).get("handler_latency_counts", []))
        return histogram_quantile(counts, q)

    def snapshot(self) -> dict:
        """A JSON-able copy of every counter (see the module docstring for the layout)."""
        with self._lock:
            self._fold()
            return {
                "format": SNAPSHOT_FORMAT, "started_at": self._started_at, "taken_at": self._clock(),
                "replicas": 1, "latency_upper_bounds_s": list(LATENCY_BUCKETS_S),
                "variants": {v: {**_deep_copy(e), "input_bins": self._bin_lists(self._bins.get(v))}
                             for v, e in self._variants.items()},
                "comparisons": _deep_copy(self._comparisons),
            }


def _add(counter: dict[str, Any], key: str, value: float) -> None:
    counter[key] = counter.get(key, 0) + value


def _add_lists(a: list, b: list) -> list:
    """Element-wise sum of (nested) lists; the shorter one is padded with zeros."""
    if len(a) < len(b):
        a, b = b, a
    out = [_add_values(x, y) for x, y in zip(a, b)]
    return out + _deep_copy(a[len(b):])


def _add_values(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        out = _deep_copy(a)
        for key, value in b.items():
            out[key] = _add_values(out[key], value) if key in out else _deep_copy(value)
        return out
    if isinstance(a, list):
        return _add_lists(a, b)
    return a + b


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def merge_snapshots(snapshots: Sequence[Mapping[str, Any]]) -> dict:
    """Sum the snapshots of several replicas into one (same layout, ``replicas`` = n).

    >>> merge_snapshots([a.snapshot(), b.snapshot()])["replicas"]  # doctest: +SKIP
    2
    """
    if not snapshots:
        raise GatewayError("merge_snapshots: no snapshots")
    bounds = snapshots[0]["latency_upper_bounds_s"]
    if any(s["latency_upper_bounds_s"] != bounds for s in snapshots):
        raise GatewayError("merge_snapshots: replicas use different latency buckets")
    merged = {"variants": {}, "comparisons": {}}
    for snap in snapshots:
        merged = _add_values(merged, {"variants": snap["variants"], "comparisons": snap["comparisons"]})
    return {
        "format": SNAPSHOT_FORMAT,
        "started_at": min(s["started_at"] for s in snapshots),
        "taken_at": max(s["taken_at"] for s in snapshots),
        "replicas": sum(s.get("replicas", 1) for s in snapshots),
        "latency_upper_bounds_s": list(bounds),
        **merged,
    }


def cost_per_inference(snapshot: Mapping[str, Any], variant: str, usd_per_hour: float,
                       replicas: int = 1) -> dict[str, float | None]:
    """Cost per request of ``variant`` over the snapshot's window, two ways.

    ``provisioned_usd``: ``usd_per_hour x replicas x window hours / requests`` (what the
    fleet costs whether busy or not); ``busy_usd``: ``busy seconds x price / requests``
    (what the work itself costs). None when the variant had no successful requests.

    >>> cost_per_inference(snap, "student", usd_per_hour=0.36)  # doctest: +SKIP
    {'provisioned_usd': 1.2e-06, 'busy_usd': 4e-07, 'requests': 1000}
    """
    entry = snapshot["variants"].get(variant, {})
    ok = sum(entry.get("requests", {}).values()) - sum(entry.get("errors", {}).values())
    window_h = max(0.0, snapshot["taken_at"] - snapshot["started_at"]) / 3600.0
    if ok <= 0:
        return {"provisioned_usd": None, "busy_usd": None, "requests": 0}
    return {
        "provisioned_usd": usd_per_hour * replicas * window_h / ok,
        "busy_usd": entry.get("busy_s", 0.0) * usd_per_hour / 3600.0 / ok,
        "requests": ok,
    }
