"""PNG plots of the distillation report (matplotlib, Agg backend: no display needed).

Each function takes the JSON-safe report (or its sweep list), writes one PNG and returns
its path.

Example:
    >>> plot_sweep_heatmap(Path("out/plots/heatmap.png"), report["sweep"])  # doctest: +SKIP
    PosixPath('out/plots/heatmap.png')
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLORS = {"teacher": "#c0392b", "student": "#1e8449", "baseline": "#566573"}


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (also used by the demo report)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # headless: servers and CI have no display
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (tight layout) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (latency, accuracy) not beaten by a faster-and-at-least-as-accurate point.

    Example:
        >>> pareto_front([(1, 0.8), (2, 0.7), (3, 0.9)])
        [(1, 0.8), (3, 0.9)]
    """
    front, best = [], -np.inf
    for latency, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((latency, accuracy))
            best = accuracy
    return front


def _scatter_sweep(ax, sweep: list[dict]) -> list[tuple[float, float]]:
    points = []
    usable = [r for r in sweep if r.get("latency_ms_batch1") is not None and r.get("val_accuracy") is not None]
    kd = [r for r in usable if r.get("kind", "kd") == "kd"]
    base = [r for r in usable if r.get("kind") == "baseline"]
    if kd:
        temps = np.array([r["temperature"] for r in kd], dtype=float)
        scatter = ax.scatter([r["latency_ms_batch1"] for r in kd], [100 * r["val_accuracy"] for r in kd],
                             c=np.log2(temps), cmap="viridis", s=36, alpha=.8, label="KD sweep run (val)")
        levels = np.unique(np.log2(temps))
        bar = ax.figure.colorbar(scatter, ax=ax, pad=.01, ticks=levels)
        bar.ax.set_yticklabels([f"{2 ** level:g}" for level in levels])
        bar.set_label("temperature T of the KD run")
    if base:
        ax.scatter([r["latency_ms_batch1"] for r in base], [100 * r["val_accuracy"] for r in base],
                   marker="s", facecolors="none", edgecolors=COLORS["baseline"], s=40,
                   label="no-teacher baseline run (val)")
    for run in kd + base:
        points.append((run["latency_ms_batch1"], 100 * run["val_accuracy"]))
        if run.get("chosen"):
            ax.scatter([run["latency_ms_batch1"]], [100 * run["val_accuracy"]], s=160,
                       facecolors="none", edgecolors="black", linewidths=1.5, label="chosen setting")
    return points


def _scatter_final_models(ax, report: dict) -> list[tuple[float, float]]:
    points = []
    for name, marker in {"teacher": "*", "student": "D", "baseline": "X"}.items():
        variant = report.get(name) or {}
        latency = (variant.get("latency_ms") or {}).get("batch1")
        if latency is None or variant.get("accuracy") is None:
            continue
        accuracy = 100 * variant["accuracy"]
        points.append((latency, accuracy))
        ax.scatter([latency], [accuracy], marker=marker, s=170, color=COLORS[name], zorder=3,
                   edgecolors="white", label=f"{name} (test)")
        # The teacher sits at the right edge: label it on its left so the text stays inside.
        left = name == "teacher"
        ax.annotate(f"{name} {accuracy:.1f} %", (latency, accuracy), textcoords="offset points",
                    xytext=(-12, 6) if left else (10, -12), ha="right" if left else "left",
                    fontsize=9, color=COLORS[name])
    return points


def plot_accuracy_vs_latency(path: Path, report: dict, sweep: list[dict]) -> Path:
    """Accuracy vs ONNX Runtime batch-1 latency (log scale) with Pareto fronts.

    Sweep runs show validation accuracy (possibly of a shortened schedule); teacher,
    student and baseline show test accuracy. The two are not comparable, so each gets its
    own front: the final models' (what one can deploy) and, when the sweep's runs differ
    in latency, the sweep's.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    fronts = [(pareto_front(_scatter_sweep(ax, sweep)), ":", "#7f8c8d", "Pareto front (sweep, validation)"),
              (pareto_front(_scatter_final_models(ax, report)), "--", "black", "Pareto front (final models, test)")]
    for front, style, color, label in fronts:
        if len({latency for latency, _ in front}) > 1:
            ax.step(*zip(*front), where="post", color=color, linestyle=style, linewidth=1.2, label=label)
    _log_latency_axis(ax)
    ax.set_xlabel("ONNX Runtime CPU latency, batch 1 (ms, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs latency: every sweep run, teacher, student and baseline")
    ax.grid(True, which="both", alpha=.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def _log_latency_axis(ax) -> None:
    """Log x axis with plain tick labels (0.02, 0.05, 0.1) instead of 2×10⁻²."""
    from matplotlib import ticker  # noqa: PLC0415

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.margins(x=0.08)


def sweep_score(sweep: list[dict]) -> tuple[str, str, float]:
    """(key, label, scale) of the validation score the sweep rows carry.

    Classification rows carry ``val_accuracy`` (shown in %), regression rows ``val_neg_mse``.
    """
    if any(run.get("val_accuracy") is not None for run in sweep) or not sweep:
        return "val_accuracy", "validation accuracy (%)", 100.0
    return "val_neg_mse", "validation −MSE", 1.0


def _heatmap_grid(sweep: list[dict]):
    key, _, scale = sweep_score(sweep)
    kd = [r for r in sweep if r.get("kind", "kd") == "kd"]
    temps = sorted({float(r["temperature"]) for r in kd})
    alphas = sorted({float(r["alpha"]) for r in kd})
    grid = np.full((len(alphas), len(temps)), np.nan)
    for i, alpha in enumerate(alphas):
        for j, temp in enumerate(temps):
            # Mean over repeats (several seeds may share one cell).
            cell = [r[key] for r in kd if float(r["alpha"]) == alpha
                    and float(r["temperature"]) == temp and r.get(key) is not None]
            if cell:
                grid[i, j] = scale * float(np.mean(cell))
    chosen = [(alphas.index(float(r["alpha"])), temps.index(float(r["temperature"])))
              for r in kd if r.get("chosen")]
    return temps, alphas, grid, chosen


def plot_sweep_heatmap(path: Path, sweep: list[dict]) -> Path:
    """Temperature × alpha heat map of the validation score, chosen cell outlined."""
    plt = pyplot()
    temps, alphas, grid, chosen = _heatmap_grid(sweep)
    label = sweep_score(sweep)[1]
    fig, ax = plt.subplots(figsize=(1.3 * len(temps) + 2.5, 0.8 * len(alphas) + 2))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, pad=.02).set_label(label)
    middle = np.nanmean(grid) if np.isfinite(grid).any() else 0
    for i in range(len(alphas)):
        for j in range(len(temps)):
            if np.isfinite(grid[i, j]):
                color = "black" if grid[i, j] >= middle else "white"
                ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", color=color, fontsize=10)
    for i, j in chosen:
        ax.add_patch(plt.Rectangle((j - .5, i - .5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
    ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_xlabel("temperature T")
    ax.set_ylabel("alpha (weight of the distillation term)")
    ax.set_title(f"Sweep: {label}, chosen outlined in red")
    return save_figure(fig, path)


def plot_per_class(path: Path, report: dict) -> Path:
    """Grouped bars: per-class test accuracy of teacher, student and baseline."""
    plt = pyplot()
    variants = [v for v in ("teacher", "student", "baseline") if (report.get(v) or {}).get("per_class")]
    labels = report.get("class_labels") or list(report[variants[0]]["per_class"])
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(labels) + 3), 4.5))
    lowest = 100.0
    for k, name in enumerate(variants):
        values = [report[name]["per_class"].get(str(label)) for label in labels]
        heights = [100 * v if v is not None else 0 for v in values]
        lowest = min([lowest] + [h for h, v in zip(heights, values) if v is not None])
        positions = np.arange(len(labels)) + (k - (len(variants) - 1) / 2) * width
        ax.bar(positions, heights, width, label=name, color=COLORS[name])
    # Start the axis just below the lowest bar: differences of a few points matter here.
    bottom = max(0.0, 10 * np.floor((lowest - 5) / 10))
    ax.set_ylim(bottom, 100.5)
    ax.set_xticks(range(len(labels)), [str(label) for label in labels])
    ax.set_xlabel("class")
    ax.set_ylabel(f"test accuracy (%, axis from {bottom:g})")
    ax.set_title("Per-class test accuracy")
    ax.grid(True, axis="y", alpha=.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars stay visible
    return save_figure(fig, path)
