"""MetricBuffer/Flusher: per-request metric writes are summed in Python and reach Ray on a timer."""
from __future__ import annotations

import time

from gateway.serve.metric_buffer import Flusher, MetricBuffer
from gateway.serve.metrics import GatewayMetrics


class Recording:
    def __init__(self):
        self.calls: list[tuple[float, dict]] = []

    def inc(self, value, tags):
        self.calls.append((value, dict(tags)))

    observe = inc


def test_counters_collapse_to_one_write_per_label_set_and_histograms_keep_every_value():
    counter, hist, buffer = Recording(), Recording(), MetricBuffer()
    for _ in range(100):
        buffer.inc(counter, 1, {"variant": "student"})
    buffer.inc(counter, 2, {"variant": "teacher"})
    buffer.observe(hist, 0.00004, {"variant": "student"})
    buffer.observe(hist, 0.00006, {"variant": "student"})
    assert counter.calls == [] and buffer.pending() == 4
    assert buffer.flush() == 4
    assert sorted(counter.calls, key=lambda c: c[1]["variant"]) == [
        (100, {"variant": "student"}), (2, {"variant": "teacher"})]
    assert [v for v, _ in hist.calls] == [0.00004, 0.00006]
    assert buffer.flush() == 0  # nothing written twice


def test_an_observation_counted_several_times_is_written_that_many_times():
    hist, buffer = Recording(), MetricBuffer()
    buffer.observe(hist, 0.002, {"variant": "teacher"}, count=3)   # a shadow batch of three requests
    buffer.observe(hist, 0.001, {"variant": "teacher"})
    assert buffer.flush() == 4
    assert [v for v, _ in hist.calls] == [0.002, 0.002, 0.002, 0.001]


def test_flusher_writes_on_its_timer_and_at_stop():
    counter, buffer = Recording(), MetricBuffer()
    flusher = Flusher(buffer.flush, interval_s=0.02).start()
    buffer.inc(counter, 1, {"v": "a"})
    deadline = time.monotonic() + 2.0
    while not counter.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counter.calls == [(1, {"v": "a"})]
    buffer.inc(counter, 5, {"v": "a"})
    flusher.stop()
    assert counter.calls[-1] == (5, {"v": "a"})


def test_gateway_metrics_request_path_writes_nothing_until_flush():
    metrics = GatewayMetrics(model="m", flush_interval_s=3600)
    metrics.requests, metrics.request_seconds, metrics.rows = Recording(), Recording(), Recording()
    metrics.overhead_seconds, metrics.handler_seconds = Recording(), Recording()
    for _ in range(10):
        metrics.observe_request("student", "primary", 0.00005, status="ok", rows=2)
        metrics.observe_handled("student", 0.00025, 0.0002)
    assert metrics.requests.calls == [] and metrics.request_seconds.calls == []
    metrics.close()
    assert metrics.requests.calls == [(1 * 10, {"variant": "student", "model": "m", "route": "primary",
                                                "status": "ok"})]
    assert metrics.rows.calls == [(20, {"variant": "student", "model": "m", "route": "primary"})]
    assert len(metrics.request_seconds.calls) == 10 and len(metrics.overhead_seconds.calls) == 10
    assert metrics.handler_seconds.calls == [(0.00025, {"variant": "student", "model": "m"})] * 10


def test_timer_flush_pauses_between_chunks_and_writes_everything():
    """The flusher thread lets the event loop take the GIL every FLUSH_CHUNK writes."""
    from gateway.serve.metric_buffer import FLUSH_CHUNK

    counter, hist, buffer = Recording(), Recording(), MetricBuffer()
    buffer.inc(counter, 3, {"v": "a"})
    for i in range(2 * FLUSH_CHUNK + 5):
        buffer.observe(hist, float(i), {"v": "a"})
    pauses = []
    assert buffer.flush(pause=lambda: pauses.append(len(counter.calls) + len(hist.calls))) == 2 * FLUSH_CHUNK + 6
    assert pauses == [FLUSH_CHUNK, 2 * FLUSH_CHUNK]  # after each full chunk, none after the last
    assert counter.calls == [(3, {"v": "a"})]
    assert [v for v, _ in hist.calls] == [float(i) for i in range(2 * FLUSH_CHUNK + 5)]
