"""PNG plots of the demo timeline (matplotlib through distill's headless helpers).

Every plot shares one time axis (seconds since the first sample), draws each stage as
its own line (the redeploy between stages leaves a gap) and marks each rollback with a
red dashed line.

Example::

    write_plots(out / "plots", points, [(t_rollback, "rollback: agreement")], t0=points[0]["t"])
"""
from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from distill.plots import COLORS, pyplot, save_figure

STAGE_STYLE = {"v1": "-", "v2": "--", "drift": "-.", "v3": "-"}
STAGE_LABEL = {"drift": "v1 (drift)"}


def _by_stage(points: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    stages: dict[str, list[Mapping[str, Any]]] = {}
    for p in points:
        stages.setdefault(p["stage"], []).append(p)
    return stages


def _series(points: Sequence[Mapping[str, Any]], value: Callable[[Mapping[str, Any]], Any],
            t0: float) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for p in points:
        try:
            y = value(p)
        except (KeyError, TypeError):
            continue
        if y is not None:
            xs.append(p["t"] - t0)
            ys.append(y)
    return xs, ys


def _mark_events(ax, points: Sequence[Mapping[str, Any]], rollbacks: Sequence[tuple[float, str]], t0: float) -> None:
    for t, label in rollbacks:
        ax.axvline(t - t0, color="#c0392b", linestyle="--", linewidth=1.5)
        ax.annotate(label, (t - t0, 0.97), xycoords=("data", "axes fraction"), va="top", ha="right",
                    fontsize=8, color="#c0392b", xytext=(-3, 0), textcoords="offset points")
    for t, label in promotion_moments(points):
        ax.axvline(t - t0, color="#1e8449", linestyle=":", linewidth=1.5)
        ax.annotate(label, (t - t0, 0.97), xycoords=("data", "axes fraction"), va="top",
                    ha="right", fontsize=8, color="#1e8449", xytext=(-3, 0), textcoords="offset points")


def promotion_moments(points: Sequence[Mapping[str, Any]]) -> list[tuple[float, str]]:
    """(time, label) of each moment a candidate became the stable variant.

    >>> promotion_moments([{"t": 1, "candidate": "v1", "stable": "teacher"}, {"t": 2, "candidate": "v1", "stable": "v1"}])
    [(2, 'v1 promoted')]
    """
    moments, before = [], None
    for p in points:
        if p.get("stable") == p.get("candidate") and before is not None and before != p.get("stable"):
            moments.append((p["t"], f"{p['stable']} promoted"))
        before = p.get("stable")
    return moments


def stable_plot(path: pathlib.Path, points: Sequence[Mapping[str, Any]], rollbacks, t0: float) -> pathlib.Path:
    """Which variant was stable (served the traffic off the canary) over time, one step line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.6))
    names = list(dict.fromkeys(p["stable"] for p in points if p.get("stable")))
    palette = ("#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b")
    for i, (stage, stage_points) in enumerate(_by_stage(points).items()):
        xs, ys = _series(stage_points, lambda p: names.index(p["stable"]) if p.get("stable") else None, t0)
        if xs:
            ax.step(xs, ys, "-", where="post", color=palette[i % len(palette)], linewidth=2.5,
                    label=f"during {STAGE_LABEL.get(stage, stage)}")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.5, max(len(names) - 0.5, 0.5))
    _mark_events(ax, points, rollbacks, t0)
    ax.set_xlabel("seconds since the gateway started serving")
    ax.set_ylabel("stable variant")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def _plot(path: pathlib.Path, points, rollbacks, t0: float, *, ylabel: str,
          lines: Sequence[tuple[str, Callable, str]], step: bool = False, ylim=None) -> pathlib.Path:
    """One figure: for each stage, one line per ``(label, value(point), color)``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for stage, stage_points in _by_stage(points).items():
        for label, value, color in lines:
            xs, ys = _series(stage_points, value, t0)
            if xs:
                draw = ax.step if step else ax.plot
                kwargs = {"where": "post"} if step else {"marker": ".", "markersize": 3}
                draw(xs, ys, STAGE_STYLE.get(stage, "-"), color=color,
                     label=f"{STAGE_LABEL.get(stage, stage)} {label}".strip(), **kwargs)
    _mark_events(ax, points, rollbacks, t0)
    ax.set_xlabel("seconds since the gateway started serving")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def write_plots(plots_dir: pathlib.Path, points: Sequence[Mapping[str, Any]],
                rollbacks: Sequence[tuple[float, str]], *, t0: float) -> dict[str, pathlib.Path]:
    """Weight, agreement, latency and cost over time; returns title -> PNG path."""
    teacher, student = COLORS["teacher"], COLORS["student"]
    args = (points, rollbacks, t0)
    return {
        "Stable variant over time": stable_plot(plots_dir / "stable.png", *args),
        "Candidate traffic weight over time": _plot(
            plots_dir / "weight.png", *args, ylabel="candidate live traffic (%)", step=True, ylim=(-3, 103),
            lines=[("weight", lambda p: p["weight"], student)]),
        "Agreement with the teacher (5 s window)": _plot(
            plots_dir / "agreement.png", *args, ylabel="top-1 agreement", ylim=(0, 1.02),
            lines=[("agreement", lambda p: p["agreement"], student)]),
        "Latency per variant, primary route (5 s window)": _plot(
            plots_dir / "latency.png", *args, ylabel="latency (ms)",
            lines=[("student p50", lambda p: p["student"]["p50_ms"], student),
                   ("student p99", lambda p: p["student"]["p99_ms"], "#82e0aa"),
                   ("teacher p50", lambda p: p["teacher"]["p50_ms"], teacher),
                   ("teacher p99", lambda p: p["teacher"]["p99_ms"], "#f1948a")]),
        "Cost per million inferences (busy time x $/hour, 5 s window)": _plot(
            plots_dir / "cost.png", *args, ylabel="USD per 1M inferences",
            lines=[("student", lambda p: p["student"]["usd_per_million"], student),
                   ("teacher", lambda p: p["teacher"]["usd_per_million"], teacher)]),
    }
