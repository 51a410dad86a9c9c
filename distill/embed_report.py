"""report.html of the embedding task: the student against the teacher and two same-size models that
never saw it, the acceptance targets, INT8, the exported files, verdicts (report.json's figures).

Example::

    (out_dir / "report.html").write_text(render_embedding_html(report))
"""
from __future__ import annotations

import html

from distill.report import _fmt, dataset_heading, generic_table, html_page, html_table, verdicts_html

MODELS = {"teacher": "teacher", "student": "distilled student", "baseline": "same size, trained on the labels",
          "random": "same size, untrained"}


def models_table(report: dict) -> str:
    """Held-out mean cosine with the teacher, top-k neighbour overlap, probe accuracy, size, batch-1 latency."""
    metrics, params = report.get("metrics") or {}, report.get("params") or {}
    latency = report.get("latency_ms_batch1") or {}
    rows = []
    for name, label in MODELS.items():
        if name not in metrics:
            continue
        m = metrics[name]
        size = params.get("teacher" if name == "teacher" else "student")
        rows.append([html.escape(label), _fmt(m.get("mean_cosine")), _fmt(m.get("topk_overlap")),
                     _fmt(m.get("probe_accuracy"), "pct"), _fmt(size, "int"), _fmt(latency.get(name), "ms")])
    top_k = (report.get("config") or {}).get("embedding", {}).get("top_k", "k")
    headers = ["model", "mean cosine with the teacher", f"top-{top_k} neighbour overlap", "probe accuracy",
               "parameters", f"ONNX batch-1 ms ({report.get('latency_tokens', '?')} tokens)"]
    return html_table(headers, rows, highlight=1)


def acceptance_table(report: dict) -> str:
    rows = [[html.escape(name), _fmt(a.get("value")), _fmt(a.get("target")),
             "met" if a.get("met") else "<b>NOT met</b>"] for name, a in (report.get("acceptance") or {}).items()]
    return html_table(["target", "measured", "target value", "verdict"], rows)


def files_table(report: dict) -> str:
    rows = [[html.escape(name), html.escape(str(o.get("file"))), _fmt(o.get("size_bytes"), "bytes"),
             _fmt(o.get("max_abs_diff")), _fmt(o.get("tolerance")), f"<code>{html.escape(str(o.get('sha256')))}</code>"]
            for name, o in (report.get("onnx") or {}).items()]
    return html_table(["model", "file", "size", "parity max |diff|", "tolerance", "sha256"], rows)


def render_embedding_html(report: dict) -> str:
    """The embedding task's report page as one string."""
    tokenizer = report.get("tokenizer") or {}
    sections = [dataset_heading(report, f"{report.get('teacher_identity')}, {tokenizer.get('max_length')} tokens"),
                "<h2>Student, teacher and no-teacher models (held-out texts)</h2>", models_table(report)]
    if report.get("verdicts"):
        sections += ["<h2>Verdicts</h2>", verdicts_html(report["verdicts"])]
    sections += ["<h2>Acceptance</h2>", acceptance_table(report)]
    per_seed = [{"seed": i, **{f"{model} {k}": v for model in ("student", "baseline") for k, v in seed[model].items()}}
                for i, seed in enumerate(report.get("per_seed") or []) if "student" in seed and "baseline" in seed]
    if per_seed:
        sections += ["<h2>Per seed</h2>", generic_table(per_seed)]
    if report.get("int8"):
        rows = [{"model": name, **{k: v for k, v in record.items() if not isinstance(v, dict) and k != "sha256"}}
                for name, record in report["int8"].items()]
        sections += ["<h2>INT8 (dynamic quantization)</h2>", generic_table(rows)]
    sections += ["<h2>Exported files (ONNX, parity-checked)</h2>", files_table(report)]
    return html_page(sections, report)
