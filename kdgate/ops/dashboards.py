"""The kdgate Grafana dashboard, built from code so that every panel query lives in one place.

:data:`PANELS` lists each panel with its PromQL targets (built by :mod:`kdgate.ops.promql`);
:func:`build_dashboard` turns them into Grafana dashboard JSON (``dashboards/kdgate.json``
is its output, kept up to date by ``kdgate ops generate``). :func:`panel_queries` yields
every query with the dashboard variables filled in, which is how the tests evaluate each
one against a real Prometheus.

Example::

    >>> dashboard = build_dashboard()
    >>> dashboard["uid"], len(dashboard["panels"]) > 10
    ('kdgate', True)
    >>> next(panel_queries({"model": "mnist1d", "__rate_interval": "1m"}))[0]
    'Latency p50 / p99 by variant'
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping

from kdgate.ops import promql as q

UID = "kdgate"
TITLE = "kdgate: teacher/student gateway"
MODEL = 'model=~"$model"'
RANGE = "$__rate_interval"
GUARDING, GUARD_REASON = 'phase="Guarding"', 'reason=~"guard:.*"'  # the reconciler's "guard:<gates>" reasons
_VARIABLE = re.compile(r"\$(__rate_interval|model)\b")


@dataclasses.dataclass(frozen=True)
class Target:
    """One query of a panel and its legend (Grafana's ``{{label}}`` syntax)."""

    legend: str
    expr: str


@dataclasses.dataclass(frozen=True)
class Panel:
    """One dashboard panel: title, unit, kind and queries."""

    title: str
    unit: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"
    description: str = ""


def _latency_targets() -> tuple[Target, ...]:
    return tuple(
        Target(f"{{{{variant}}}} {{{{route}}}} {name}", q.quantile(p, q.LATENCY, ("variant", "route"), RANGE, MODEL))
        for name, p in (("p50", 0.5), ("p99", 0.99))
    )


def _per_variant_quantiles(metric: str) -> tuple[Target, ...]:
    return tuple(Target(f"{{{{variant}}}} {name}", q.quantile(p, metric, ("variant",), RANGE, MODEL))
                 for name, p in (("p50", 0.5), ("p99", 0.99)))


def _traffic_panels() -> tuple[Panel, ...]:
    served = q.rate_sum(q.REQUESTS, ("variant",), RANGE, MODEL, 'route="primary"')
    return (
        Panel("Latency p50 / p99 by variant", "s", _latency_targets(),
              description="Model answer latency per variant and route (primary = the caller waited)."),
        Panel("Gateway request p50 / p99 by answering variant", "s", _per_variant_quantiles(q.HANDLER),
              description="The handler's whole time per inference request (parse, routing, model calls, "
                          "encoding): what a client waits minus network and proxy."),
        Panel("Gateway overhead p50 / p99 by variant", "s", _per_variant_quantiles(q.OVERHEAD),
              description="The gateway's own time per inference request (parse, routing, encoding), "
                          "model call excluded."),
        Panel("Request rate by variant", "reqps", (
            Target("{{variant}} {{route}} {{status}}",
                   q.rate_sum(q.REQUESTS, ("variant", "route", "status"), RANGE, MODEL)),)),
        Panel("Error ratio by variant", "percentunit", (
            Target("{{variant}}", q.ratio(q.REQUESTS, 'status!="ok"', MODEL, ("variant",), RANGE)),),
              description="Failed model answers / all answers, per variant (primary and shadow)."),
        Panel("Traffic weight: configured vs served", "percentunit", (
            Target("{{variant}} configured", f"max by (variant) ({q.latest(q.WEIGHT, MODEL)})"),
            Target("{{variant}} served", f"{served} / ignoring(variant) group_left sum({served})"),
        )),
    )


def _quality_panels() -> tuple[Panel, ...]:
    return (
        Panel("Agreement with the teacher", "percentunit", (
            Target("{{variant}}", q.ratio(q.COMPARISONS, 'outcome="agree"', MODEL, ("variant",), RANGE)),),
              description="Share of compared rows whose top-1 class matches the teacher's."),
        Panel("KL(teacher || student)", "none", (
            Target("{{variant}} mean", q.histogram_mean(q.KL, ("variant",), RANGE, MODEL)),
            Target("{{variant}} p90", q.quantile(0.9, q.KL, ("variant",), RANGE, MODEL)),
        )),
        Panel("Cost per inference", "currencyUSD", (
            Target("{{variant}} {{method}}", f"max by (variant, method) ({q.latest(q.COST, MODEL)})"),)),
        Panel("Projected monthly cost at the current rate", "currencyUSD", (
            Target("{{variant}}", q.monthly_cost(MODEL, RANGE)),),
              description="Provisioned cost per inference x answered requests per second x 30 days."),
        Panel("Cost saving vs teacher-only (monthly, at the current rate)", "currencyUSD", (
            Target("saving", q.monthly_saving(MODEL, RANGE)),
            Target("teacher-only", q.teacher_only_monthly_cost(MODEL, RANGE)),
        ), description="What the teacher alone would cost for every answered request, minus what all variants' "
                       "answers cost now (shadow and guard answers included), both priced by busy time per "
                       "inference; once a student is stable the teacher answers only the guard's shadow share "
                       "and its Serve autoscaling (model-teacher min_replicas) lets its replicas go."),
    )


def _rollout_panels() -> tuple[Panel, ...]:
    return (
        Panel("Rollout phase", "none", (
            Target("{{variant}} {{phase}}", f"max by (variant, phase) ({q.latest(q.ROLLOUT_PHASE, MODEL)}) == 1"),),
              kind="state-timeline", description="Shadowing, Progressing, Guarding (promoted and watched), "
                                                 "RolledBack, Paused, Aborted."),
        Panel("Rollout weight and failing gates", "none", (
            Target("{{variant}} student weight", f"max by (variant) ({q.latest(q.ROLLOUT_WEIGHT, MODEL)})"),
            Target("{{gate}} failing", f"max by (gate) ({q.latest(q.ROLLOUT_GATE_FAILING, MODEL)})"),
        )),
        Panel("Guard: the promoted (stable) student", "none", (
            Target("{{variant}} guarding", f"max by (variant) ({q.latest(q.ROLLOUT_PHASE, MODEL, GUARDING)})"),
            Target("{{variant}} guard rollbacks", f"sum by (variant) ({q.selector(q.ROLLBACKS, MODEL, GUARD_REASON)}) "
                                                  f"or sum by (variant) ({q.selector(q.ROLLBACKS, MODEL)}) * 0"),
        ), description="1 while the promoted student is watched (phase Guarding: the teacher answers the guard's "
                       "shadow share, checks run every guard interval); guard rollbacks since the controller "
                       "started (0 when there were only canary rollbacks)."),
        Panel("Rollbacks", "none", (
            Target("{{variant}} {{reason}}", f"sum by (variant, reason) ({q.selector(q.ROLLBACKS, MODEL)})"),),
              kind="stat", description="Automated rollbacks since the controller started, by failing gates "
                                          "(guard:<gates> = the guard rolled a promoted student back)."),
    )


def _pressure_panels() -> tuple[Panel, ...]:
    return (
        Panel("Shadow drops", "ops", (
            Target("{{variant}} {{reason}}", q.rate_sum(q.SHADOW_DROPPED, ("variant", "reason"), RANGE, MODEL)),)),
        Panel("Fallbacks to the teacher", "ops", (
            Target("{{variant}} {{reason}}", q.rate_sum(q.FALLBACKS, ("variant", "reason"), RANGE, MODEL)),)),
        Panel("Batch size (rows per model call)", "none", (
            Target("{{variant}} p50", q.quantile(0.5, q.BATCH_ROWS, ("variant",), RANGE, MODEL)),
            Target("{{variant}} mean", q.histogram_mean(q.BATCH_ROWS, ("variant",), RANGE, MODEL)),
        )),
    )


PANELS: tuple[Panel, ...] = (*_traffic_panels(), *_quality_panels(), *_rollout_panels(), *_pressure_panels())


def _panel_json(panel: Panel, index: int) -> dict:
    width = 12
    return {
        "id": index + 1, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": width, "x": (index % 2) * width, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": t.expr, "legendFormat": t.legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for i, t in enumerate(panel.targets)],
    }


def _variables() -> list[dict]:
    return [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
        {"name": "model", "type": "query", "label": "Model", "refresh": 2, "includeAll": True,
         "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": f"label_values({q.REQUESTS}, model)", "refId": "model"},
         "definition": f"label_values({q.REQUESTS}, model)"},
    ]


def build_dashboard() -> dict:
    """The Grafana dashboard JSON (a ``dashboard`` object for Grafana's HTTP API)."""
    return {
        "uid": UID, "title": TITLE, "tags": ["kdgate"], "timezone": "browser", "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": _variables()},
        "panels": [_panel_json(panel, i) for i, panel in enumerate(PANELS)],
    }


def fill_variables(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with Grafana's ``$model`` / ``$__rate_interval`` replaced (KeyError if one is missing)."""
    return _VARIABLE.sub(lambda m: values[m.group(1)], expr)


def panel_queries(values: Mapping[str, str]) -> Iterator[tuple[str, str, str]]:
    """``(panel title, legend, PromQL)`` for every target of every panel, variables filled."""
    for panel in PANELS:
        for target in panel.targets:
            yield panel.title, target.legend, fill_variables(target.expr, values)
