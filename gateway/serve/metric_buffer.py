"""Metric writes off the request path: add up in plain Python, flush to Ray on a timer.

A ``ray.serve.metrics`` write validates and merges tags and records into Ray's exporter
on every call; profiled on the Gateway replica, per-request writes were 4.6 % of its
samples. :class:`MetricBuffer` keeps counter increments summed per label set and
histogram observations listed per label set (a dict lookup and an add or append on the
hot path); :class:`Flusher` hands them to the real metrics every ``interval_s`` from a
daemon thread, and once more at shutdown. Counters collapse to one write per label set
per flush; histogram observations are replayed one by one (Ray has no bulk observe), but
on the flusher thread, not inside a request, and in chunks with a pause between them: a
thread that replays thousands of observations in one go holds the GIL until the interpreter
forces a switch (every 5 ms), so each request arriving meanwhile waited up to 5 ms before
its handler started. Measured on the bench app (one client, 4,000 requests): the time a
client waits outside the handler, p50, went from 0.715 ms with one-go flushes to 0.663 ms
with pauses, as without a flusher at all (0.664-0.684 ms).

No Ray import here: the sinks are any objects with ``inc(value, tags)`` /
``observe(value, tags)``.

Example::

    buffer = MetricBuffer()
    buffer.inc(requests_counter, 1, {"variant": "student"})
    buffer.observe(latency_histogram, 0.00004, {"variant": "student"})
    flusher = Flusher(buffer.flush, interval_s=1.0).start()
    ...
    flusher.stop()  # flushes what is left
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0  # well inside Ray's 10 s export interval: a scrape sees at most ~1 s lag
FLUSH_CHUNK = 32        # Ray writes per chunk: ~0.1 ms of GIL before the flusher pauses
FLUSH_PAUSE_S = 0.0002  # the pause: the event loop's waiting request takes the GIL meanwhile


class CounterSink(Protocol):
    def inc(self, value: float, tags: dict[str, str]) -> None: ...


class HistogramSink(Protocol):
    def observe(self, value: float, tags: dict[str, str]) -> None: ...


TagKey = tuple[tuple[str, str], ...]


class MetricBuffer:
    """Pending counter sums and histogram observations, keyed by (sink, label set)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[int, TagKey], float] = {}
        self._observed: dict[tuple[int, TagKey], list[float]] = {}
        self._sinks: dict[int, Any] = {}

    def inc(self, sink: CounterSink, value: float, tags: dict[str, str]) -> None:
        """Add ``value`` to ``sink``'s series ``tags`` (written at the next flush)."""
        key = (id(sink), tuple(tags.items()))
        with self._lock:
            self._sinks[key[0]] = sink
            self._counts[key] = self._counts.get(key, 0) + value

    def observe(self, sink: HistogramSink, value: float, tags: dict[str, str], count: int = 1) -> None:
        """Queue ``count`` observations of ``value`` for ``sink``'s series ``tags``."""
        key = (id(sink), tuple(tags.items()))
        with self._lock:
            self._sinks[key[0]] = sink
            values = self._observed.get(key)
            if values is None:
                self._observed[key] = [value] * count
            elif count == 1:
                values.append(value)
            else:
                values.extend([value] * count)

    def pending(self) -> int:
        """Writes a flush would make now (counter series + histogram observations)."""
        with self._lock:
            return len(self._counts) + sum(len(v) for v in self._observed.values())

    def flush(self, pause: Callable[[], Any] | None = None) -> int:
        """Write everything pending to the sinks; return the number of writes. ``pause()`` is
        called after every :data:`FLUSH_CHUNK` writes (the timer's flush lets requests run)."""
        with self._lock:
            counts, self._counts = self._counts, {}
            observed, self._observed = self._observed, {}
            sinks = dict(self._sinks)
        writes = [(sinks[sink_id].inc, value, dict(tags)) for (sink_id, tags), value in counts.items()]
        for (sink_id, tags), values in observed.items():
            sink, tag_dict = sinks[sink_id], dict(tags)
            writes += [(sink.observe, value, tag_dict) for value in values]
        for i, (write, value, tag_dict) in enumerate(writes):
            if pause is not None and i and i % FLUSH_CHUNK == 0:
                pause()
            write(value, tag_dict)
        return len(writes)


class Flusher:
    """Calls ``flush(pause=...)`` every ``interval_s`` on a daemon thread (``pause`` sleeps
    ``pause_s``: see :meth:`MetricBuffer.flush`), and ``flush()`` once at :meth:`stop`."""

    def __init__(self, flush: Callable[..., Any], *, interval_s: float = FLUSH_INTERVAL_S,
                 pause_s: float = FLUSH_PAUSE_S):
        self._flush = flush
        self._interval_s = interval_s
        self._pause = functools.partial(time.sleep, pause_s)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kdgate-metric-flush", daemon=True)

    def start(self) -> "Flusher":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the timer and flush what is left (a replica shutting down keeps its counts)."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self._interval_s)
        self._safe_flush()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self._safe_flush(pause=self._pause)

    def _safe_flush(self, **kwargs: Any) -> None:
        try:
            self._flush(**kwargs)
        except Exception:  # a metrics hiccup must never kill the timer or a shutdown
            log.exception("metric flush failed")
