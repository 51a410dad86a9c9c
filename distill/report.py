"""The human and machine report: report.json, plots/*.png and a self-contained report.html.

The report dict is built by the pipeline (keys listed in docs/artifacts.md and the issue);
this module only renders it. Missing optional keys render as "—" rather than failing, so a
black-box or regression run still gets a report.

Example:
    >>> write_report(Path("out"), report)  # doctest: +SKIP
    PosixPath('out/report.html')
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from distill.plots import plot_accuracy_vs_latency, plot_per_class, plot_sweep_heatmap, sweep_score

VARIANTS = ("teacher", "student", "baseline")


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, Paths and tuples turned into JSON types.

    NaN and infinities become ``None`` (strict JSON has no NaN).

    Example:
        >>> json_safe({"a": np.float32(0.5), "b": np.arange(2), "c": float("nan")})
        {'a': 0.5, 'b': [0, 1], 'c': None}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(out_dir: Path | str, report: dict) -> Path:
    """Write report.json, plots/*.png and report.html into ``out_dir``; return the html path.

    The PNGs are written to ``out_dir/plots`` and also embedded in the html (base64), so
    the html can be mailed or archived on its own.

    Example:
        >>> write_report(Path("out"), {"teacher": {...}, "student": {...}, ...})  # doctest: +SKIP
        PosixPath('out/report.html')
    """
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    report = json_safe(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plots = write_plots(plots_dir, report)
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(report, plots))
    return html_path


def write_plots(plots_dir: Path, report: dict) -> dict[str, Path]:
    """Render every plot the report has data for; returns title -> PNG path."""
    plots = {}
    sweep = report.get("sweep") or []
    has_accuracy = any(run.get("val_accuracy") is not None for run in sweep) or any(
        (report.get(v) or {}).get("accuracy") is not None for v in VARIANTS)
    if has_accuracy:  # a regression run has no accuracy to plot
        plots["Accuracy vs batch-1 latency"] = plot_accuracy_vs_latency(
            plots_dir / "accuracy_vs_latency.png", report, sweep)
    if any(run.get("kind", "kd") == "kd" for run in sweep):
        plots[f"Temperature × alpha: {sweep_score(sweep)[1]}"] = plot_sweep_heatmap(
            plots_dir / "temperature_alpha_heatmap.png", sweep)
    if any((report.get(v) or {}).get("per_class") for v in VARIANTS):
        plots["Per-class accuracy"] = plot_per_class(plots_dir / "per_class_accuracy.png", report)
    return plots


def _fmt(value: Any, kind: str = "num") -> str:
    """One table cell: percentages, milliseconds, bytes, dollars or plain numbers."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return html.escape(str(value))
    formats = {
        "pct": lambda v: f"{100 * v:.2f} %",
        "points": lambda v: f"{100 * v:+.2f} percentage points",
        "ms": lambda v: f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms",
        "bytes": lambda v: f"{v / 1024:.1f} KiB" if v < 1 << 20 else f"{v / (1 << 20):.2f} MiB",
        "usd": lambda v: f"${v:.3g}" if v < 1 else f"${v:.2f}",  # small costs keep 3 digits
        "x": lambda v: f"{v:.1f}×",
        "int": lambda v: f"{int(v):,}",
        "num": lambda v: f"{v:.4g}",
        "s": lambda v: f"{v:.1f} s",
    }
    return formats[kind](value)


def html_table(headers: list[str], rows: list[list[str]], highlight: int | None = None) -> str:
    """An HTML table of already-escaped cells; row ``highlight`` is emphasised."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        attr = ' class="chosen"' if index == highlight else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _variant_row(name: str, v: dict, cost: Any, quality: str) -> list[str]:
    latency, torch_latency = v.get("latency_ms") or {}, v.get("torch_latency_ms") or {}
    quality_cell = _fmt(v.get(quality), "pct" if quality == "accuracy" else "num")
    return [html.escape(name), quality_cell, _fmt(v.get("params"), "int"),
            _fmt(latency.get("batch1"), "ms"), _fmt(latency.get("batch64"), "ms"),
            _fmt(torch_latency.get("batch1"), "ms"), _fmt(v.get("onnx_size_bytes"), "bytes"),
            _fmt(cost, "usd"), _fmt(v.get("ece"), "num")]


def headline_table(report: dict) -> str:
    """Teacher, student, student INT8 and baseline side by side."""
    costs = report.get("cost_per_million_usd") or {}
    quality = "mse" if report.get("task") == "regression" else "accuracy"
    rows, student_row = [], 0
    for name in VARIANTS:
        if report.get(name):
            student_row = len(rows) if name == "student" else student_row
            rows.append(_variant_row(name, report[name], costs.get(name), quality))
        int8 = (report.get(name) or {}).get("int8")  # the student's; text runs: the teacher's too
        if int8:
            rows.append(_variant_row(f"{name} INT8", int8, costs.get(f"{name}_int8"), quality))
    headers = ["model", f"test {'MSE' if quality == 'mse' else 'accuracy'}", "params", "ORT batch 1", "ORT batch 64 (per call)", "torch batch 1",
               "ONNX size", "$ / 1M inferences", "ECE"]
    return html_table(headers, rows, highlight=student_row)


def summary_table(report: dict) -> str:
    """Retention, agreement, speedup, reductions, parity and the chosen setting."""
    student, parity = report.get("student") or {}, report.get("parity") or {}
    items = [
        ("retention (student ÷ teacher accuracy)", _fmt(report.get("retention"), "pct")),
        ("top-1 agreement with the teacher", _fmt(report.get("agreement"), "pct")),
        ("speedup at batch 1 (ONNX Runtime)", _fmt(report.get("speedup_batch1"), "x")),
        ("size reduction (ONNX bytes)", _fmt(report.get("size_reduction"), "x")),
        ("parameter reduction", _fmt(report.get("param_reduction"), "x")),
        ("student accuracy minus baseline accuracy", _fmt(_gain(report), "points")),
        ("chosen temperature / alpha", f"{_fmt(student.get('temperature'))} / {_fmt(student.get('alpha'))}"),
        ("worst student class", _worst(student)),
        ("parity max |ONNX − torch| student / teacher (tolerance)",
         f"{_fmt(parity.get('student_max_abs_diff'))} / {_fmt(parity.get('teacher_max_abs_diff'))} "
         f"({_fmt(parity.get('tolerance'))})"),
    ]
    return html_table(["figure", "value"], [[html.escape(k), v] for k, v in items])


def _gain(report: dict) -> float | None:
    student, baseline = report.get("student") or {}, report.get("baseline") or {}
    if student.get("accuracy") is None or baseline.get("accuracy") is None:
        return None
    return student["accuracy"] - baseline["accuracy"]


def _worst(variant: dict) -> str:
    worst = variant.get("worst_class") or {}
    if not worst:
        return "—"
    return f"{html.escape(str(worst.get('label')))} ({_fmt(worst.get('accuracy'), 'pct')})"


def per_class_table(report: dict) -> str:
    """Per-class test accuracy of each variant, one row per class."""
    labels = report.get("class_labels") or list((report.get("student") or {}).get("per_class") or {})
    present = [v for v in VARIANTS if (report.get(v) or {}).get("per_class")]
    rows = [[html.escape(str(label))] + [_fmt(report[v]["per_class"].get(str(label)), "pct")
                                         for v in present] for label in labels]
    return html_table(["class"] + present, rows)


def sweep_table(sweep: list[dict]) -> str:
    """Every sweep run: kind, temperature, alpha, validation accuracy, params, latency."""
    key, label, _ = sweep_score(sweep)
    rows, chosen = [], None
    ranked = sorted(sweep, key=lambda r: -r[key] if r.get(key) is not None else math.inf)
    for index, run in enumerate(ranked):
        chosen = index if run.get("chosen") else chosen
        rows.append([_fmt(run.get("kind", "kd")), _fmt(run.get("temperature")), _fmt(run.get("alpha")),
                     _fmt(run.get(key), "pct" if key == "val_accuracy" else "num"), _fmt(run.get("params"), "int"),
                     _fmt(run.get("latency_ms_batch1"), "ms"), _fmt(run.get("chosen", False))])
    headers = ["kind", "temperature", "alpha", label.replace(" (%)", ""), "params", "batch-1 latency", "chosen"]
    return html_table(headers, rows, highlight=chosen)


def generic_table(rows: list[dict]) -> str:
    """A table of arbitrary flat dicts (e.g. ``report["strategies"]``), columns in first-seen order."""
    headers: list[str] = []
    for row in rows:
        headers += [k for k in row if k not in headers]
    def kind(key: str) -> str:
        if "accuracy" in key or key in ("retention", "agreement"):
            return "pct"
        return "int" if key == "params" else "s" if key.endswith("_s") else "num"

    kinds = {k: kind(k) for k in headers}
    return html_table(headers, [[_fmt(row.get(k), kinds[k]) for k in headers] for row in rows])


def timings_table(report: dict) -> str:
    """Wall time of each stage and whether the soft-label cache was hit."""
    timings = report.get("timings_s") or {}
    stages = sorted(timings, key=lambda stage: stage == "total")  # the total last, order kept otherwise
    rows = [[html.escape(k), _fmt(timings[k], "s")] for k in stages]
    cache = report.get("soft_label_cache") or {}
    if cache:
        hit = "hit (teacher not run)" if cache.get("hit") else "miss (teacher run, entry stored)"
        rows.append(["soft-label cache", f"{hit}<br><code>{html.escape(str(cache.get('key', '')))}</code>"])
    return html_table(["stage", "time"], rows)


def verdicts_html(verdicts: dict) -> str:
    """report["verdicts"] as a list: bad ones first, in plain words, each with what to try."""
    items = []
    for verdict in sorted(verdicts.values(), key=lambda v: v.get("ok", True)):
        mark = "ok" if verdict.get("ok") else "warning"
        tips = "".join(f"<li>try: {html.escape(tip)}</li>" for tip in verdict.get("advice") or [])
        items.append(f"<li class='{mark}'><b>{mark.upper()} {html.escape(str(verdict.get('name')))}</b>: "
                     f"{html.escape(str(verdict.get('summary')))}{f'<ul>{tips}</ul>' if tips else ''}</li>")
    return f"<ul class='verdicts'>{''.join(items)}</ul>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
tr.chosen{background:#e6f4ea;font-weight:600} img{max-width:100%;border:1px solid #eee}
code{font-size:.85em;color:#555} .meta{color:#555}
li.warning{color:#8a4b00} li.ok{color:#1e6b34}
"""


def html_image(title: str, path: Path) -> str:
    """A figure with the PNG at ``path`` embedded, linked to its file under plots/."""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(title)} (<a href='plots/{path.name}'>plots/{path.name}</a>)"
            f"</figcaption></figure>")


def dataset_heading(report: dict, teacher: str) -> str:
    """The page's title and its line about the dataset, the task and the teacher."""
    dataset = report.get("dataset") or {}
    meta = ", ".join(f"{k} {_fmt(dataset.get(k), 'int')}" for k in ("n_train", "n_val", "n_test", "n_unlabeled")
                     if dataset.get(k) is not None)
    return (f"<h1>kdgate distillation report</h1><p class='meta'>dataset <b>{_fmt(dataset.get('name'))}</b> "
            f"({meta}; sha256 <code>{_fmt(dataset.get('sha256'))}</code>), task {_fmt(report.get('task'))}, "
            f"teacher {_fmt(teacher)}</p>")


def html_page(sections: list[str], report: dict) -> str:
    """A report page: ``sections``, then the timings and the config."""
    sections = [*sections, "<h2>Timings</h2>", timings_table(report)]
    if report.get("config"):
        sections.append(f"<h2>Config</h2><pre>{html.escape(json.dumps(report['config'], indent=2))}</pre>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>kdgate report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")


def render_html(report: dict, plots: dict[str, Path]) -> str:
    """The whole report page, with plots embedded, as one string."""
    sections = [
        dataset_heading(report, f"source {(report.get('teacher') or {}).get('source')}"),
        "<h2>Teacher, student, baseline (test set)</h2>", headline_table(report), summary_table(report),
    ]
    if report.get("verdicts"):
        sections += ["<h2>Verdicts</h2>", verdicts_html(report["verdicts"])]
    sections += [f"<h2>{html.escape(title)}</h2>{html_image(title, path)}" for title, path in plots.items()]
    if any((report.get(v) or {}).get("per_class") for v in VARIANTS):
        sections += ["<h2>Per-class test accuracy</h2>", per_class_table(report)]
    if report.get("sweep"):
        sections += ["<h2>Sweep (validation split)</h2>", sweep_table(report["sweep"])]
    if report.get("strategies"):
        sections += ["<h2>Strategies</h2>", generic_table(report["strategies"])]
    return html_page(sections, report)
