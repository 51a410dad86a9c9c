"""PromQL for kdgate's metrics, in one place: dashboard panels and alerts both use these.

Ray exports the gateway's ``kdgate_*`` metrics with a ``ray_`` prefix (see
``gateway/serve/metrics.py``). Every builder takes a label-matcher string (``model=~"$model"``
on the dashboard, ``model!=""`` in alerts) and a range (``$__rate_interval`` or ``5m``).

Example::

    >>> rate_sum(REQUESTS, ("variant",), "5m", 'model="m"')
    'sum by (variant) (rate(ray_kdgate_requests_total{model="m"}[5m]))'
"""
from __future__ import annotations

PREFIX = "ray_kdgate_"
REQUESTS = PREFIX + "requests_total"
LATENCY = PREFIX + "request_duration_seconds"
COMPARISONS = PREFIX + "comparisons_total"
KL = PREFIX + "kl_divergence"
SHADOW_DROPPED = PREFIX + "shadow_dropped_total"
FALLBACKS = PREFIX + "fallbacks_total"
WEIGHT = PREFIX + "weight_ratio"
COST = PREFIX + "cost_per_inference_usd"
BATCH_ROWS = PREFIX + "batch_size_rows"
OVERHEAD = PREFIX + "gateway_overhead_seconds"
HANDLER = PREFIX + "gateway_request_duration_seconds"
ROLLOUT_PHASE = PREFIX + "rollout_phase"
ROLLOUT_WEIGHT = PREFIX + "rollout_weight_ratio"
ROLLOUT_GATE_FAILING = PREFIX + "rollout_gate_failing"
ROLLBACKS = PREFIX + "rollout_rollbacks_total"
SECONDS_PER_MONTH = 30 * 24 * 3600


def selector(metric: str, *matchers: str) -> str:
    """``metric{m1,m2}`` from non-empty matcher strings."""
    inner = ",".join(m for m in matchers if m)
    return f"{metric}{{{inner}}}"


def latest(metric: str, *matchers: str, lookback: str = "1h") -> str:
    """A gauge's last value within ``lookback``: ``last_over_time(metric{...}[lookback])``.

    Ray 2.60 stops exporting a gauge about two export intervals (~20 s) after it was last
    set. The gateway re-sets its rarely-changing gauges every few seconds
    (``gateway.serve.metrics.HeldGauge``); this lookback also bridges what that cannot: a
    replica restarting, or scrapes missed, so a panel shows no gap and a RolledBack alert
    does not resolve by itself meanwhile.
    """
    return f"last_over_time({selector(metric, *matchers)}[{lookback}])"


def _by(labels: tuple[str, ...]) -> str:
    return f"by ({', '.join(labels)})"


def rate_sum(metric: str, by: tuple[str, ...], window: str, *matchers: str) -> str:
    """``sum by (...) (rate(metric{...}[window]))``."""
    return f"sum {_by(by)} (rate({selector(metric, *matchers)}[{window}]))"


def ratio(metric: str, part: str, matchers: str, by: tuple[str, ...], window: str) -> str:
    """Share of ``metric``'s rate whose labels match ``part`` (0, not "no data", when none do).

    ``part_rate or total_rate * 0`` keeps a series for every group, so a variant that never
    failed shows 0 % errors instead of a gap.
    """
    part_rate = rate_sum(metric, by, window, matchers, part)
    total = rate_sum(metric, by, window, matchers)
    return f"({part_rate} or {total} * 0) / {total}"


def quantile(q: float, histogram: str, by: tuple[str, ...], window: str, *matchers: str) -> str:
    """``histogram_quantile(q, ...)`` of a Ray histogram, grouped by ``by``."""
    return f"histogram_quantile({q:g}, {rate_sum(histogram + '_bucket', (*by, 'le'), window, *matchers)})"


def histogram_mean(histogram: str, by: tuple[str, ...], window: str, *matchers: str) -> str:
    """Mean of a histogram's observations over ``window``."""
    return f"{rate_sum(histogram + '_sum', by, window, *matchers)} / {rate_sum(histogram + '_count', by, window, *matchers)}"


def monthly_cost(matchers: str, window: str, method: str = "provisioned") -> str:
    """Projected monthly USD per variant: cost per inference x current request rate x a month."""
    provisioned = latest(COST, matchers, f'method="{method}"')
    cost = f"max by (variant) ({provisioned})"
    requests = rate_sum(REQUESTS, ("variant",), window, matchers, 'status="ok"')
    return f"{cost} * on (variant) {requests} * {SECONDS_PER_MONTH}"


def teacher_only_monthly_cost(matchers: str, window: str, teacher: str = "teacher") -> str:
    """Projected monthly USD if the teacher answered every primary request, priced by its busy time
    per inference (load-independent, unlike the provisioned price of a teacher left with the guard's share)."""
    busy = latest(COST, matchers, 'method="busy"', f'variant="{teacher}"')
    served = rate_sum(REQUESTS, (), window, matchers, 'status="ok"', 'route="primary"')
    return f"max({busy}) * on () {served} * {SECONDS_PER_MONTH}"


def monthly_saving(matchers: str, window: str, teacher: str = "teacher") -> str:
    """Teacher-only monthly cost minus what every variant's answers cost now, both by busy time
    (the teacher's shadow answers for the guard included)."""
    now = f"sum({monthly_cost(matchers, window, 'busy')})"
    return f"{teacher_only_monthly_cost(matchers, window, teacher)} - on () {now}"
