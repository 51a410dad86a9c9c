"""The demo's latency check: gateway histogram deltas against client time minus network."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.core.stats import WindowStats
from kdgate.demo.latency import compare, describe, handler_counts, server_timing_s


def _client_and_stats(handler_s: np.ndarray, network_s: float):
    stats = WindowStats()
    stats.record_handled("v1", 0.5)           # before the check: must not count
    before = stats.snapshot()
    for seconds in handler_s:
        stats.record_handled("v1", float(seconds))
    return before, stats.snapshot(), {"v1": list(handler_s + network_s)}


def test_gateway_matches_client_minus_network_when_network_is_constant():
    rng = np.random.default_rng(0)
    handler = rng.lognormal(np.log(150e-6), 0.3, 2000)
    before, after, client = _client_and_stats(handler, network_s=600e-6)
    result = compare(before, after, client, network_s=[600e-6] * 100)
    row = result["variants"]["v1"]
    assert row["gateway_requests"] == 2000 and row["requests"] == 2000
    assert row["client_minus_network_p50_ms"] == pytest.approx(1000 * np.median(handler), rel=1e-6)
    assert row["within_p50"] and row["within_p99"]
    assert 0.9 < row["ratio_p50"] < 1.1 and 0.9 < row["ratio_p99"] < 1.1
    assert "v1 p50 / p99, 2000 requests" in describe(result)[0] and "NOT met" not in describe(result)[0]
    assert result["network_p99_ms"] == pytest.approx(0.6) and "network p99 0.600 ms" in describe(result)[0]


def test_a_gateway_that_misses_time_is_not_within_tolerance():
    handler = np.full(500, 100e-6)
    before, after, client = _client_and_stats(handler, network_s=600e-6)
    client["v1"] = [t + 200e-6 for t in client["v1"]]   # 200 us the handler never saw
    row = compare(before, after, client, network_s=[600e-6])["variants"]["v1"]
    assert row["ratio_p50"] == pytest.approx(1 / 3, rel=0.15)
    assert not row["within_p50"] and "p50 NOT met" in describe({"network_p50_ms": 0.6, "tolerance": 0.2,
                                                                "variants": {"v1": row}})[0]


def test_reset_stats_or_unknown_variant_give_no_gateway_figure():
    before = WindowStats().snapshot()
    after = WindowStats().snapshot()
    after["started_at"] = before["started_at"] + 1
    assert handler_counts(before, after, "v1") is None
    row = compare(before, before, {"v2": [0.001]}, network_s=[0.0005])["variants"]["v2"]
    assert row["gateway_p50_ms"] is None and row["ratio_p50"] is None and not row["within_p50"]


def test_server_timing_reads_the_gateway_entry_only():
    assert server_timing_s("db;dur=5, gateway;dur=0.125") == pytest.approx(0.000125)
    assert server_timing_s("db;dur=5") is None and server_timing_s(None) is None
