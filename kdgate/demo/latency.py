"""The demo's latency check: the gateway's own histograms against what a client measures.

A single client sends inference requests one at a time, each followed by a *probe*: the same
body posted to a model the gateway does not serve, answered 404 before the body is read. The
probe's round trip minus its handler time (the ``Server-Timing`` header every response carries)
is the *network time*: loopback, the proxy, the hop to the replica, Serve's request wrapper,
the body's transfer -- what a client of an inference request waits beyond the handler. For
each variant that answered, the gateway's p50/p99 of its handler time (``handler_latency_counts``
in the replica's window stats, the buckets of ``kdgate_gateway_request_duration_seconds``) is
set beside the client's p50/p99 minus the median network time. One client and no other load,
so no request queues in front of the handler, where the gateway cannot see it.

Example::

    result = measure(url, "mnist1d", v2_bodies(rows), admin, requests=1000)
    result["variants"]["v1"]  # {"gateway_p50_ms": 0.19, "client_minus_network_p50_ms": 0.2, ...}
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway.core.stats import histogram_quantile
from gateway.http.inference import REPLICA_HEADER, VARIANT_HEADER

TOLERANCE = 0.2      # the gateway's figure within 20 % of the client's minus network time
QUANTILES = (("p50", 0.5), ("p99", 0.99))
PROBE_MODEL = "kdgate-latency-probe"   # a model name no gateway serves: 404 before the body is read


def handler_counts(before: Mapping[str, Any], after: Mapping[str, Any], variant: str) -> list[float] | None:
    """Handler-latency bucket counts of ``variant`` between two snapshots of one replica's stats
    (None when the stats were reset in between, or the variant answered nothing)."""
    if before.get("started_at") != after.get("started_at"):
        return None
    new = after.get("variants", {}).get(variant, {}).get("handler_latency_counts")
    if not new:
        return None
    old = before.get("variants", {}).get(variant, {}).get("handler_latency_counts") or [0] * len(new)
    counts = [a - b for a, b in zip(new, old)]
    return counts if sum(counts) > 0 else None


def server_timing_s(header: str | None) -> float | None:
    """Seconds of the ``gateway`` entry of a ``Server-Timing`` header (None when absent).

    >>> server_timing_s("gateway;dur=0.250")
    0.00025
    """
    for entry in (header or "").split(","):
        name, _, params = entry.strip().partition(";")
        if name == "gateway" and params.startswith("dur="):
            return float(params[4:]) / 1000.0
    return None


def compare(before: Mapping[str, Any], after: Mapping[str, Any], client_s: Mapping[str, Sequence[float]],
            network_s: Sequence[float], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Per variant: the gateway's and the client's (minus the median network time) p50/p99 in ms,
    their ratio, and whether it lies within ``1 ± tolerance``."""
    network_ms = 1000.0 * float(np.median(network_s)) if len(network_s) else None
    # The network's own tail, beside it: where the client's p99 can lie outside the handler.
    network_p99_ms = 1000.0 * float(np.quantile(network_s, 0.99)) if len(network_s) else None
    variants = {}
    for variant, times in client_s.items():
        counts = handler_counts(before, after, variant)
        row: dict[str, Any] = {"requests": len(times), "gateway_requests": int(sum(counts)) if counts else 0}
        for name, q in QUANTILES:
            client_ms = 1000.0 * float(np.quantile(times, q))
            gateway_s = histogram_quantile(counts, q) if counts else None
            gateway_ms = None if gateway_s is None else 1000.0 * gateway_s
            net_ms = None if network_ms is None else client_ms - network_ms
            ratio = gateway_ms / net_ms if gateway_ms is not None and net_ms and net_ms > 0 else None
            row.update({f"client_{name}_ms": client_ms, f"gateway_{name}_ms": gateway_ms,
                        f"client_minus_network_{name}_ms": net_ms, f"ratio_{name}": ratio,
                        f"within_{name}": ratio is not None and abs(ratio - 1.0) <= tolerance})
        variants[variant] = row
    return {"network_p50_ms": network_ms, "network_p99_ms": network_p99_ms, "tolerance": tolerance,
            "variants": variants}


def v2_bodies(rows: np.ndarray | None = None, texts: Sequence[str] | None = None) -> list[bytes]:
    """One-row V2 request bodies: FP32 ``rows`` or BYTES ``texts``."""
    if texts is not None:
        return [json.dumps({"inputs": [{"name": "input", "shape": [1, 1], "datatype": "BYTES", "data": [t]}]}).encode()
                for t in texts]
    return [json.dumps({"inputs": [{"name": "input", "shape": [1, *np.shape(row)], "datatype": "FP32",
                                    "data": np.asarray(row, np.float32).ravel().tolist()}]}).encode() for row in rows]


def measure(url: str, model: str, bodies: Sequence[bytes], admin, *, requests: int = 1000,
            timeout_s: float = 10.0) -> dict[str, Any]:
    """Run the check against a live, otherwise idle gateway (see the module docstring).

    ``admin`` is a :class:`kdgate.demo.load.AdminClient`; ``bodies`` V2 request bodies (:func:`v2_bodies`),
    sent in turn. The stats are read from the replica that answered; with several Gateway replicas the
    check names them and compares nothing (one replica's histogram against every replica's requests).
    """
    import httpx

    before = admin.get("/admin/stats")
    client_s: dict[str, list[float]] = {}
    network_s: list[float] = []
    replicas: set[str] = set()
    infer, probe = f"{url}/v2/models/{model}/infer", f"{url}/v2/models/{PROBE_MODEL}/infer"
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=timeout_s) as client:
        for i in range(requests):
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            response = client.post(infer, content=body, headers=headers)
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            client_s.setdefault(response.headers[VARIANT_HEADER], []).append(elapsed)
            replicas.add(response.headers.get(REPLICA_HEADER, ""))
            start = time.perf_counter()
            response = client.post(probe, content=body, headers=headers)
            elapsed = time.perf_counter() - start
            handler = server_timing_s(response.headers.get("server-timing"))
            if response.status_code != 404 or handler is None:
                raise RuntimeError(f"latency probe: expected a 404 with Server-Timing, got {response.status_code}")
            network_s.append(elapsed - handler)
    after = admin.get("/admin/stats")
    if len(replicas) > 1:
        return {"skipped": f"{len(replicas)} Gateway replicas answered; the check needs one", "variants": {}}
    return {**compare(before, after, client_s, network_s), "requests": requests}


def describe(result: Mapping[str, Any]) -> list[str]:
    """One line per variant for the terminal and the report."""
    if result.get("skipped"):
        return [f"latency check skipped: {result['skipped']}"]
    lines = []
    for variant, row in result["variants"].items():
        def pair(prefix: str) -> str:
            values = [row.get(f"{prefix}_{name}_ms") for name, _ in QUANTILES]
            return " / ".join("-" if v is None else f"{v:.3f}" for v in values)

        verdicts = ", ".join(f"{name} {'met' if row[f'within_{name}'] else 'NOT met'}"
                             + (f" ({row[f'ratio_{name}']:.2f}x)" if row[f"ratio_{name}"] is not None else "")
                             for name, _ in QUANTILES)
        lines.append(f"{variant} p50 / p99, {row['requests']} requests at 1 client: gateway histogram "
                     f"{pair('gateway')} ms; client {pair('client')} ms minus network "
                     f"{result['network_p50_ms']:.3f} ms = {pair('client_minus_network')} ms; "
                     f"within {result['tolerance']:.0%}: {verdicts}"
                     + (f" (network p99 {result['network_p99_ms']:.3f} ms: the tail outside the handler)"
                        if result.get("network_p99_ms") is not None else ""))
    return lines
