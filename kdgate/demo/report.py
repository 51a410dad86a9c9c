"""The demo's report: a timeline from sampled window stats, PNG plots, HTML and a rich table.

Pure parts (``timeline_points``, ``stage_summary``) turn the sampler's cumulative
snapshots into windowed points through the same code the rollout gates use
(:func:`gateway.rollout.core.observations.from_window_snapshot`); the rest renders them.
Plots reuse distill's matplotlib helpers, tables its HTML ones.

Example::

    points = timeline_points(samples, teacher="teacher", student="student", prices=PRICES)
    rows = [stage_summary(stage, points, status, locust) for ...]
    html_path = write_demo_report(out_dir, {"stages": rows, "points": points, ...})
"""
from __future__ import annotations

import html
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.rollout.core.observations import Observations, from_window_snapshot
from gateway.core.stats import LATENCY_BUCKETS_S, PRIMARY

FIRST_BUCKET_MS = 1000.0 * LATENCY_BUCKETS_S[0]
WINDOW_S = 5.0      # points are rates and quantiles over the last few seconds
PER_MILLION = 1e6


def _observe(sample: Mapping[str, Any], teacher: str, student: str, prices: Mapping[str, float]) -> Observations:
    return from_window_snapshot(sample["stats"], teacher=teacher, student=student, usd_per_hour=prices,
                                at=sample["t"])


def _earlier(samples: Sequence[Mapping[str, Any]], i: int, window_s: float) -> int | None:
    """Index of the newest sample at least ``window_s`` older than sample ``i`` (same stats lifetime)."""
    started = samples[i]["stats"].get("started_at")
    for j in range(i - 1, -1, -1):
        if samples[j]["stats"].get("started_at") != started:
            return None
        if samples[i]["t"] - samples[j]["t"] >= window_s:
            return j
    return None


def _ms(value: float | None) -> float | None:
    return None if value is None else 1000.0 * value


def window_point(obs: Observations, *, teacher: str, student: str) -> dict[str, Any]:
    """Agreement, requests/s, p50/p99 (primary route, ms) and $/1M inferences of one window."""
    seconds = max(obs.window.end - obs.window.start, 1e-9)
    point: dict[str, Any] = {"agreement": obs.agreement_rate, "compared": obs.compared,
                             "rps": sum(obs.requests.values()) / seconds}
    for role, name in (("teacher", teacher), ("student", student)):
        cost = obs.cost_per_inference(name)
        point[role] = {
            "p50_ms": _ms(obs.latency_quantile(name, 0.5, PRIMARY)),
            "p99_ms": _ms(obs.latency_quantile(name, 0.99, PRIMARY)),
            "usd_per_million": None if cost is None else cost * PER_MILLION,
            "requests": obs.requests.get(name, 0.0),
        }
    return point


def timeline_points(samples: Sequence[Mapping[str, Any]], *, teacher: str, student: str,
                    prices: Mapping[str, float], window_s: float = WINDOW_S) -> list[dict[str, Any]]:
    """One point per sample: weight and phase, plus window metrics once a window has passed."""
    points = []
    for i, sample in enumerate(samples):
        point = {"t": sample["t"], "stage": sample["stage"], "phase": sample["phase"],
                 "weight": float(sample["weights"].get(student, 0.0)),
                 "candidate": sample.get("candidate"), "stable": sample.get("stable")}
        j = _earlier(samples, i, window_s)
        if j is not None:
            window = _observe(sample, teacher, student, prices).minus(_observe(samples[j], teacher, student, prices))
            if not window.has_negative_counts():
                point.update(window_point(window, teacher=teacher, student=student))
        points.append(point)
    return points


def weight_path(points: Sequence[Mapping[str, Any]]) -> list[float]:
    """The student's weights in the order they were seen, repeats collapsed.

    >>> weight_path([{"weight": 0}, {"weight": 5}, {"weight": 5}, {"weight": 0}])
    [0, 5, 0]
    """
    path: list[float] = []
    for p in points:
        if not path or path[-1] != p["weight"]:
            path.append(p["weight"])
    return path


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def stage_summary(stage: Mapping[str, Any], points: Sequence[Mapping[str, Any]], status: Mapping[str, Any],
                  locust: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the summary table: outcome, steps seen, typical metrics, client-side failures."""
    mine = [p for p in points if p["stage"] == stage["key"]]
    live = [p for p in mine if "agreement" in p]

    def typical(role: str, key: str) -> float | None:
        return _median([p[role][key] for p in live])

    ours = [p for p in mine if p.get("candidate") == stage["variant"]]  # not the previous stage's status
    return {
        "stage": stage["key"], "title": stage["title"], "student": stage["variant"],
        "outcome": status.get("phase"), "reason": status.get("reason", ""),
        "stable_before": ours[0].get("stable") if ours else None, "stable_after": status.get("stable"),
        "weights_seen": weight_path(ours or mine),
        "seconds": (mine[-1]["t"] - mine[0]["t"]) if mine else 0.0,
        "agreement": _median([p["agreement"] for p in live]),
        "student_p50_ms": typical("student", "p50_ms"), "student_p99_ms": typical("student", "p99_ms"),
        "teacher_p50_ms": typical("teacher", "p50_ms"), "teacher_p99_ms": typical("teacher", "p99_ms"),
        "student_usd_per_million": typical("student", "usd_per_million"),
        "teacher_usd_per_million": typical("teacher", "usd_per_million"),
        "requests": locust.get("requests", 0), "failures": locust.get("failures", 0),
        "client_p99_ms": locust.get("p99_ms"),
    }


def rollback_moments(stages: Sequence[Mapping[str, Any]]) -> list[tuple[float, str]]:
    """(time, label) of every rollback, from each stage's final rollout status."""
    return [(s["status"]["updated_at"], f"{'guard: ' if s['status'].get('reason', '').startswith('guard') else ''}"
                                        f"{s['variant']} rolled back")
            for s in stages if s["status"].get("phase") == "RolledBack"]


def _fmt(value: Any, kind: str = "num") -> str:
    if value is None:
        return "-"
    if kind == "ms" and value <= FIRST_BUCKET_MS:
        return f"<{FIRST_BUCKET_MS:g}"  # inside the histogram's first bucket (25 us): no finer resolution
    formats = {"pct": lambda v: f"{100 * v:.1f} %", "ms": lambda v: f"{v:.2f}" if v >= 1 else f"{v:.3f}", "usd": lambda v: f"{v:.3g}",
               "int": lambda v: f"{int(v):,}", "s": lambda v: f"{v:.0f} s", "num": lambda v: f"{v:.4g}"}
    return formats[kind](value)


SUMMARY_COLUMNS = ("rollout", "outcome", "stable", "live weight %", "agreement", "student p50/p99 ms",
                   "teacher p50/p99 ms", "$/1M inferences student/teacher", "requests", "failed", "time")


def summary_cells(row: Mapping[str, Any]) -> list[str]:
    """The summary table's cells for one stage (terminal and HTML share them)."""
    weights = "→".join(f"{w:g}" for w in row["weights_seen"])
    return [
        row["title"], str(row["outcome"]), f"{row.get('stable_before') or '-'} → {row.get('stable_after') or '-'}",
        weights, _fmt(row["agreement"], "pct"),
        f"{_fmt(row['student_p50_ms'], 'ms')} / {_fmt(row['student_p99_ms'], 'ms')}",
        f"{_fmt(row['teacher_p50_ms'], 'ms')} / {_fmt(row['teacher_p99_ms'], 'ms')}",
        f"{_fmt(row['student_usd_per_million'], 'usd')} / {_fmt(row['teacher_usd_per_million'], 'usd')}",
        _fmt(row["requests"], "int"), _fmt(row["failures"], "int"), _fmt(row["seconds"], "s"),
    ]


def rich_summary(rows: Sequence[Mapping[str, Any]], title: str = "kdgate demo"):
    """The end-of-demo terminal table (rich)."""
    from rich.table import Table

    table = Table(title=title)
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="left" if column in ("rollout", "outcome", "stable") else "right")
    for row in rows:
        table.add_row(*summary_cells(row))
    return table


def render_html(report: Mapping[str, Any], plots: Mapping[str, pathlib.Path]) -> str:
    """The demo report page: summary, plots (embedded), each stage's analysis checks."""
    from distill.report import STYLE, html_image, html_table
    from gateway.rollout.store import format_timeline
    rows = [[html.escape(c) for c in summary_cells(r)] for r in report["stages"]]
    sections = [f"<h1>kdgate demo</h1><p class='meta'>{html.escape(report.get('subtitle', ''))}</p>",
                "<h2>Summary</h2>", html_table(list(SUMMARY_COLUMNS), rows)]
    for row in report["stages"]:
        if row.get("reason"):
            sections.append(f"<p><b>{html.escape(row['title'])}</b>: {html.escape(row['reason'])}</p>")
    sections += [f"<h2>{html.escape(title)}</h2>{html_image(title, path)}" for title, path in plots.items()]
    for stage in report.get("stage_details", []):
        sections.append(f"<h2>Analysis checks: {html.escape(stage['title'])}</h2>"
                        f"<pre>{html.escape(format_timeline(stage['checks']))}</pre>")
    if report.get("latency"):
        from kdgate.demo.latency import describe

        sections.append("<h2>Latency: the gateway's histograms vs a client</h2><ul>"
                        + "".join(f"<li>{html.escape(line)}</li>" for line in describe(report["latency"])) + "</ul>"
                        "<p class='meta'>Gateway: the handler's time (kdgate_gateway_request_duration_seconds "
                        "buckets). Client: one client, no other load; network = the median round trip, minus its "
                        "handler time (Server-Timing), of the same body posted to a model the gateway does not "
                        "serve (404 before the body is read).</p>")
    if report.get("notes"):
        sections.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"]) + "</ul>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>kdgate demo</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")


def write_demo_report(out_dir: pathlib.Path, report: Mapping[str, Any]) -> pathlib.Path:
    """report.json, plots/*.png and report.html in ``out_dir``; returns the HTML path."""
    from kdgate.demo.plots import write_plots
    from kdgate.demo.setup import write_json

    write_json(out_dir / "report.json", report)
    plots = write_plots(out_dir / "plots", report["points"], rollback_moments(report.get("stage_details", [])),
                        t0=report["points"][0]["t"] if report["points"] else 0.0)
    path = out_dir / "report.html"
    path.write_text(render_html(report, plots))
    return path
