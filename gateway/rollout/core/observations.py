"""What the rollout gates read: counts over a time window, from any observation source.

Every field is additive (counts, sums, histogram buckets), so observations over a window
are a later cumulative reading minus an earlier one (:meth:`Observations.minus`). Two
sources produce them: :class:`EmbeddedSource` (the gateway replicas' in-process
``WindowStats`` snapshots, no Prometheus needed) and ``gateway.rollout.prometheus_source``
(production).

Example::

    replicas = ReplicaSnapshots()          # each gateway replica: replicas.report(id, stats.snapshot())
    src = EmbeddedSource(replicas.per_replica, teacher="teacher", student="student",
                         reference=manifest)
    obs = src.observe(Window(start=step_started_at, end=now))
    obs.agreement_rate, obs.kl_mean, obs.latency_quantile("student", 0.99)
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.stats import histogram_quantile


@dataclass(frozen=True)
class Window:
    """A time range ``[start, end]`` in seconds (same clock as the controller's ``now``)."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class LatencyHistogram:
    """Latency bucket counts (not cumulative); ``upper_bounds`` ascending, last may be inf.

    >>> LatencyHistogram((0.01, 0.1, math.inf), (50, 50, 0)).quantile(0.5)
    0.01
    """

    upper_bounds: tuple[float, ...]
    counts: tuple[float, ...]

    @classmethod
    def from_cumulative(cls, upper_bounds: Sequence[float], cumulative: Sequence[float]) -> "LatencyHistogram":
        """From Prometheus-style cumulative ``le`` buckets."""
        counts = [c - p for p, c in zip([0.0, *cumulative[:-1]], cumulative)]
        return cls(tuple(float(b) for b in upper_bounds), tuple(max(0.0, c) for c in counts))

    @property
    def total(self) -> float:
        return float(sum(self.counts))

    def quantile(self, q: float) -> float | None:
        """Quantile with linear interpolation inside the bucket (as ``histogram_quantile``).

        Falls in the +Inf bucket -> the largest finite bound; empty histogram -> None.
        """
        return histogram_quantile(self.counts, q, self.upper_bounds)

    def combine(self, other: "LatencyHistogram", sign: int = 1) -> "LatencyHistogram":
        if not other.counts:
            return self
        if not self.counts:
            return LatencyHistogram(other.upper_bounds, tuple(sign * c for c in other.counts))
        if self.upper_bounds != other.upper_bounds:
            raise ValueError("latency histograms have different buckets")
        return LatencyHistogram(self.upper_bounds, tuple(a + sign * b for a, b in zip(self.counts, other.counts)))


EMPTY_HISTOGRAM = LatencyHistogram((), ())


def _combine_maps(a: Mapping[str, Any], b: Mapping[str, Any], sign: int) -> dict[str, Any]:
    out: dict[str, Any] = dict(a)
    for key, value in b.items():
        if isinstance(value, LatencyHistogram):
            out[key] = out.get(key, EMPTY_HISTOGRAM).combine(value, sign)
        elif isinstance(value, Mapping):
            out[key] = _combine_maps(out.get(key, {}), value, sign)
        elif isinstance(value, Sequence):
            out[key] = _combine_lists(out.get(key, []), value, sign)
        else:
            out[key] = out.get(key, 0) + sign * value
    return out


def _combine_lists(a: Sequence[Any], b: Sequence[Any], sign: int) -> list[Any]:
    """Element-wise ``a + sign * b``; the shorter list counts as zeros (class counts grow)."""
    out = []
    for i in range(max(len(a), len(b))):
        x, y = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
        nested = isinstance(x, Sequence) or isinstance(y, Sequence)
        out.append(_combine_lists(x or [], y or [], sign) if nested else (x or 0) + sign * (y or 0))
    return out


@dataclass(frozen=True)
class Observations:
    """Counts the gates read, over one window, for one teacher/student pair.

    ``requests``/``errors``/``inferences``/``cost_usd`` are per variant (all routes);
    ``latency`` is variant -> route (``primary``/``shadow``) -> histogram;
    ``class_counts`` is variant -> predicted-class counts; ``input_bins`` is features x bins
    of live inputs binned with the manifest's reference edges, ``input_reference`` the
    manifest's reference fractions (same shape) and ``input_reference_rows`` the training
    rows behind them (None: unknown, the fractions are taken as exact).
    """

    window: Window
    teacher: str
    student: str
    compared: int = 0
    agreements: int = 0
    kl_sum: float = 0.0
    requests: Mapping[str, float] = field(default_factory=dict)
    errors: Mapping[str, float] = field(default_factory=dict)
    inferences: Mapping[str, float] = field(default_factory=dict)
    cost_usd: Mapping[str, float] = field(default_factory=dict)
    latency: Mapping[str, Mapping[str, LatencyHistogram]] = field(default_factory=dict)
    class_counts: Mapping[str, Sequence[float]] = field(default_factory=dict)
    input_bins: Sequence[Sequence[float]] = ()
    input_reference: Sequence[Sequence[float]] | None = None
    input_reference_rows: float | None = None
    stable_compared: int = 0     # rows the candidate answered next to a stable student
    stable_agreements: int = 0

    @property
    def agreement_rate(self) -> float | None:
        return self.agreements / self.compared if self.compared > 0 else None

    @property
    def kl_mean(self) -> float | None:
        return self.kl_sum / self.compared if self.compared > 0 else None

    @property
    def input_rows(self) -> float:
        """Rows behind the input histogram (every feature sees every row)."""
        return float(sum(self.input_bins[0])) if self.input_bins else 0.0

    def error_rate(self, variant: str) -> float | None:
        n = self.requests.get(variant, 0)
        return self.errors.get(variant, 0) / n if n > 0 else None

    def cost_per_inference(self, variant: str) -> float | None:
        n = self.inferences.get(variant, 0)
        return self.cost_usd.get(variant, 0.0) / n if n > 0 else None

    def latency_histogram(self, variant: str, route: str | None = None) -> LatencyHistogram:
        """One route's histogram, or all routes merged when ``route`` is None."""
        routes = self.latency.get(variant, {})
        if route is not None:
            return routes.get(route, EMPTY_HISTOGRAM)
        merged = EMPTY_HISTOGRAM
        for hist in routes.values():
            merged = merged.combine(hist)
        return merged

    def latency_quantile(self, variant: str, q: float, route: str | None = None) -> float | None:
        return self.latency_histogram(variant, route).quantile(q)

    def has_negative_counts(self) -> bool:
        """True when some count is below zero (a difference across a counter reset)."""
        def negative(value: Any) -> bool:
            if isinstance(value, LatencyHistogram):
                return any(c < 0 for c in value.counts)
            if isinstance(value, Mapping):
                return any(negative(v) for v in value.values())
            if isinstance(value, (list, tuple)):
                return any(negative(v) for v in value)
            return value < -1e-9

        return any(negative(v) for k, v in self._additive().items() if k not in ("kl_sum", "cost_usd"))

    def _additive(self) -> dict[str, Any]:
        names = ("compared", "agreements", "kl_sum", "requests", "errors", "inferences",
                 "cost_usd", "latency", "class_counts", "input_bins", "stable_compared", "stable_agreements")
        return {n: getattr(self, n) for n in names}

    def minus(self, earlier: "Observations") -> "Observations":
        """This cumulative reading minus an earlier one: the observations in between."""
        return self._combine(earlier, -1, Window(earlier.window.end, self.window.end))

    def plus(self, other: "Observations") -> "Observations":
        """Sum of two windows (e.g. two replicas, or two consecutive windows)."""
        window = Window(min(self.window.start, other.window.start), max(self.window.end, other.window.end))
        return self._combine(other, 1, window)

    def _combine(self, other: "Observations", sign: int, window: Window) -> "Observations":
        combined = _combine_maps(self._additive(), other._additive(), sign)
        combined["input_bins"] = tuple(tuple(row) for row in combined["input_bins"])
        return dataclasses.replace(self, window=window, **combined)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for evidence bundles and logs)."""
        hist = {v: {r: {"upper_bounds": list(h.upper_bounds), "counts": list(h.counts)} for r, h in routes.items()}
                for v, routes in self.latency.items()}
        out = {n: v for n, v in self._additive().items() if n != "latency"}
        return {"window": dataclasses.asdict(self.window), "teacher": self.teacher, "student": self.student,
                **out, "latency": hist, "input_reference": self.input_reference,
                "input_reference_rows": self.input_reference_rows}


class ObservationSource(Protocol):
    """Port: observations of the rollout's teacher/student pair over a window."""

    def observe(self, window: Window) -> Observations: ...


def empty_observations(window: Window, teacher: str, student: str) -> Observations:
    return Observations(window=window, teacher=teacher, student=student)


def _pair(snapshot: Mapping[str, Any], teacher: str | None, student: str | None) -> tuple[str, str]:
    if teacher and student:
        return teacher, student
    pairs = [(t, s) for t, students in snapshot.get("comparisons", {}).items() for s in students]
    if len(pairs) != 1:
        raise ValueError(f"name the teacher and student: the snapshot compares {pairs or 'no pairs'}")
    return pairs[0]


def _route_histograms(entry: Mapping[str, Any], bounds: Sequence[float]) -> dict[str, LatencyHistogram]:
    # WindowStats keeps one overflow slot above the last bound: it becomes the +Inf bucket.
    upper = (*map(float, bounds), math.inf)
    return {route: LatencyHistogram(upper, tuple(counts)) for route, counts in entry.get("latency_counts", {}).items()}


def from_window_snapshot(snapshot: Mapping[str, Any], reference: Mapping[str, Any] | None = None, *,
                         teacher: str | None = None, student: str | None = None,
                         usd_per_hour: Mapping[str, float] | None = None, at: float | None = None) -> Observations:
    """Cumulative :class:`Observations` from a ``WindowStats.snapshot()`` (or a merged one).

    ``reference`` is the student's manifest (or its ``reference`` section): its
    ``inputs.fractions`` are the input-drift baseline. Without ``teacher``/``student`` the
    snapshot's only compared pair is used. ``usd_per_hour`` prices busy seconds for cost.
    Subtract two readings (:meth:`Observations.minus`) to get a window.
    """
    teacher, student = _pair(snapshot, teacher, student)
    fractions, rows = input_reference(reference)
    variants = snapshot.get("variants", {})
    comparisons = snapshot.get("comparisons", {})
    pair = comparisons.get(teacher, {}).get(student, {})
    # The candidate vs a stable student (only one student is stable at a time).
    vs_stable = [by_student[student] for other, by_student in comparisons.items()
                 if other != teacher and student in by_student]
    prices = usd_per_hour or {}
    bins: list[Any] = []
    for entry in variants.values():  # inputs are the same traffic whoever answered them
        bins = _combine_lists(bins, entry.get("input_bins", []), 1)
    return Observations(
        window=Window(snapshot.get("started_at", 0.0), at if at is not None else snapshot.get("taken_at", 0.0)),
        teacher=teacher, student=student,
        compared=int(pair.get("compared", 0)), agreements=int(pair.get("agreements", 0)),
        kl_sum=float(pair.get("kl_sum", 0.0)),
        requests={v: sum(e.get("requests", {}).values()) for v, e in variants.items()},
        errors={v: sum(e.get("errors", {}).values()) for v, e in variants.items()},
        inferences={v: sum(e.get("inferences", {}).values()) for v, e in variants.items()},
        cost_usd={v: e.get("busy_s", 0.0) * prices.get(v, 0.0) / 3600.0 for v, e in variants.items()},
        latency={v: _route_histograms(e, snapshot.get("latency_upper_bounds_s", ())) for v, e in variants.items()},
        class_counts={v: list(e.get("class_counts", [])) for v, e in variants.items()},
        input_bins=tuple(tuple(row) for row in bins),
        input_reference=fractions, input_reference_rows=rows,
        stable_compared=int(sum(p.get("compared", 0) for p in vs_stable)),
        stable_agreements=int(sum(p.get("agreements", 0) for p in vs_stable)),
    )


def input_reference(reference: Mapping[str, Any] | None) -> tuple[list[list[float]] | None, float | None]:
    """``(fractions, rows)`` of a manifest's (or its ``reference`` section's) input reference.

    >>> input_reference({"reference": {"inputs": {"fractions": [[0.5, 0.5]], "rows": 10}}})
    ([[0.5, 0.5]], 10.0)
    """
    ref = (reference or {}).get("reference", reference or {})
    inputs = ref.get("inputs") or {}
    fractions, rows = inputs.get("fractions"), inputs.get("rows")
    return ([list(map(float, f)) for f in fractions] if fractions else None,
            float(rows) if fractions and rows else None)


class _ReplicaHistory:
    """Cumulative readings of one replica's stats (one stats lifetime), oldest first."""

    MAX_READINGS = 512  # one reading per check: hours of history

    def __init__(self, started_at: float):
        self.started_at = started_at
        self.readings: list[tuple[float, Observations]] = []

    def add(self, t: float, reading: Observations) -> None:
        self.readings = [*self.readings, (t, reading)][-self.MAX_READINGS:]

    def in_window(self, window: Window, current: Observations) -> Observations | None:
        """What this replica saw in ``window`` (None: nothing, or counters that went down)."""
        times = [t for t, _ in self.readings]
        i = bisect.bisect_right(times, window.start) - 1
        if i >= 0:
            observed = current.minus(self.readings[i][1])
        elif self.started_at >= window.start:
            observed = current  # the stats began inside the window: all of it counts
        elif len(self.readings) > 1:
            observed = current.minus(self.readings[0][1])  # first seen after the window began
        else:
            return None
        return None if observed.has_negative_counts() else observed


class EmbeddedSource:
    """Observations from cumulative in-process ``WindowStats`` snapshots of the gateway replicas.

    ``snapshots()`` returns one snapshot, or ``{replica_key: snapshot}`` (see
    :class:`ReplicaSnapshots`). For each replica, ``observe`` subtracts its latest reading
    taken at or before ``window.start``. A replica whose stats began inside the window counts
    in full; one first seen later (a restarted controller) counts from its first reading, so
    history from before the window never leaks in.
    """

    def __init__(self, snapshots: Callable[[], Mapping[str, Any]], *, teacher: str, student: str,
                 reference: Mapping[str, Any] | None = None, usd_per_hour: Mapping[str, float] | None = None):
        self._snapshots = snapshots
        self._convert = dict(teacher=teacher, student=student, reference=reference, usd_per_hour=usd_per_hour)
        self._replicas: dict[str, _ReplicaHistory] = {}

    def observe(self, window: Window) -> Observations:
        taken = self._snapshots()
        per_replica = {"local": taken} if "variants" in taken else dict(taken)
        total = empty_observations(window, self._convert["teacher"], self._convert["student"])
        fractions, rows = input_reference(self._convert["reference"])
        total = dataclasses.replace(total, input_reference=fractions, input_reference_rows=rows)
        for key, snapshot in per_replica.items():
            current = from_window_snapshot(snapshot, at=window.end, **self._convert)
            history = self._replicas.get(key)
            if history is None or history.started_at != snapshot.get("started_at", 0.0):
                history = self._replicas[key] = _ReplicaHistory(snapshot.get("started_at", 0.0))
            history.add(window.end, current)
            observed = history.in_window(window, current)
            if observed is not None:
                total = total.plus(dataclasses.replace(observed, window=window))
        return total


class ReplicaSnapshots:
    """Latest ``WindowStats`` snapshot per gateway replica, for an :class:`EmbeddedSource`.

    Replicas push their snapshots (e.g. every second). A replica whose stats restarted
    (``started_at`` changed) gets a new key; the old lifetime's last snapshot stays (it no
    longer changes, so it adds nothing to later windows) until ``max_entries`` pushes it out.

    >>> ReplicaSnapshots().per_replica()
    {}
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._latest: dict[str, Mapping[str, Any]] = {}
        self._max_entries = max_entries
        self._lock = threading.Lock()  # replicas report on the event loop, the controller reads in a thread

    def report(self, replica_id: str, snapshot: Mapping[str, Any]) -> None:
        if not snapshot:
            return
        key = f"{replica_id}@{snapshot.get('started_at', 0.0)}"
        with self._lock:
            self._latest.pop(key, None)
            self._latest[key] = snapshot  # re-inserted: dict order = least recently reported first
            while len(self._latest) > self._max_entries:
                self._latest.pop(next(iter(self._latest)))

    def per_replica(self) -> dict[str, Mapping[str, Any]]:
        with self._lock:
            return dict(self._latest)
