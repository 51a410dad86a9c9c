"""The distillation pipeline: data -> teacher -> soft labels -> sweep -> student -> export -> report.

``run_pipeline`` is what `kdgate distill` runs. It owns the order of the stages and their
timings; evaluation, export and rendering live in distill.evaluate / export / report.

Example:
    >>> report = run_pipeline(load_config("distill/configs/mnist1d.yaml"), Path("runs/demo"))  # doctest: +SKIP
    >>> report["student"]["accuracy"] > report["baseline"]["accuracy"]  # doctest: +SKIP
    True
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from distill.cache import SoftLabelCache
from distill.config import DistillConfig
from distill.data import Dataset, load_dataset
from distill.errors import TeacherError
from distill.strategies.runner import check_strategy, run_strategy
from distill.sweep import TeacherOutputs, choose_best, run_sweep
from distill.verdicts import classification_verdicts

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where the pipeline sends progress: the CLI draws rich bars, tests stay silent."""

    def log(self, message: str) -> None: ...

    def progress(self, label: str, total: int) -> Callable[[int], None]:
        """Start a bar of ``total`` steps; the returned function sets how many are done."""


class SilentReporter:
    """A Reporter that only logs (library use, tests)."""

    def log(self, message: str) -> None:
        log.info(message)

    def progress(self, label: str, total: int) -> Callable[[int], None]:
        return lambda done: None


class Timings(dict):
    """Wall seconds per stage; ``with timings.stage("sweep"): ...``."""

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 3)


def _epoch_bar(reporter: Reporter, label: str, epochs: int) -> Callable[[int, float], None]:
    advance = reporter.progress(label, epochs)
    return lambda epoch, _loss: advance(epoch + 1)


def _row_bar(reporter: Reporter, label: str, rows: int) -> Callable[[int], None]:
    advance, done = reporter.progress(label, rows), [0]

    def on_rows(n: int) -> None:
        done[0] += n
        advance(done[0])
    return on_rows


def prepare_teacher(config: DistillConfig, ds: Dataset, reporter: Reporter):
    """The teacher the config names; a trained one is cached by recipe and data hash."""
    from distill.teacher import load_teacher, train_teacher  # noqa: PLC0415

    if config.teacher.source != "train":
        teacher = load_teacher(config.teacher, ds)
        reporter.log(f"teacher: {config.teacher.source} from {config.teacher.path}")
        return teacher
    epochs = config.teacher.train.epochs
    teacher, cached = train_teacher(config.teacher, ds, config.cache_dir, config.seed,
                                    _epoch_bar(reporter, "teacher training", epochs))
    reporter.log("teacher: weights reused from the cache (not retrained)" if cached
                 else f"teacher: trained {epochs} epochs")
    return teacher


def label_with_teacher(config: DistillConfig, ds: Dataset, teacher, reporter: Reporter):
    """Teacher logits for every split, from one soft-label cache entry."""
    splits = [ds.x_train, ds.x_val, ds.x_test, ds.x_unlabeled]
    x_all = np.concatenate(splits)
    labels = SoftLabelCache(config.cache_dir).get_or_compute(
        teacher, x_all, _row_bar(reporter, "soft labels", len(x_all)))
    reporter.log(f"soft labels: cache {'HIT, teacher not run' if labels.hit else 'miss, teacher ran'} "
                 f"({len(x_all)} rows, key {labels.key[:12]})")
    if ds.task == "classification" and labels.logits.shape[1] != ds.n_outputs:
        raise TeacherError(f"the teacher has {labels.logits.shape[1]} outputs but the data has "
                           f"{ds.n_outputs} classes")
    bounds = np.cumsum([0] + [len(s) for s in splits])
    parts = [labels.logits[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return TeacherOutputs(*parts), labels


def run_pipeline(config: DistillConfig, out_dir: Path, reporter: Reporter | None = None) -> dict:
    """Run every stage, write the artifacts of docs/artifacts.md into ``out_dir``, return the report."""
    import torch  # noqa: PLC0415

    from distill.artifacts import build_report, export_and_evaluate  # noqa: PLC0415
    from distill.report import write_report  # noqa: PLC0415

    if config.data.task == "embedding":  # text -> sentence embeddings: its own stages (distill/embed_pipeline.py)
        from distill.embed_pipeline import run_embedding_pipeline  # noqa: PLC0415

        return run_embedding_pipeline(config, out_dir, reporter)
    if config.teacher.source == "huggingface":  # text classification: encoder + fitted head (distill/text_classify.py)
        from distill.text_classify import run_text_classification  # noqa: PLC0415

        return run_text_classification(config, out_dir, reporter)
    reporter = reporter or SilentReporter()
    torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = Timings()
    start = time.perf_counter()
    with timings.stage("data"):
        ds = load_dataset(config.data, config.seed)
    reporter.log(f"data: {ds.name}: {len(ds.x_train)} train, {len(ds.x_val)} val, {len(ds.x_test)} test, "
                 f"{len(ds.x_unlabeled)} unlabeled transfer rows")
    check_strategy(config, ds)
    with timings.stage("teacher"):
        teacher = prepare_teacher(config, ds, reporter)
    with timings.stage("soft_labels"):
        soft, labels = label_with_teacher(config, ds, teacher, reporter)
    with timings.stage("sweep"):
        runs = run_sweep(config, ds, soft, lambda label, epochs: _epoch_bar(reporter, label, epochs))
        best = choose_best(runs)
    reporter.log(f"sweep: chose T={best.temperature:g} alpha={best.alpha:g} (validation {best.val_score:.4f})")
    with timings.stage("final"):
        strategy = train_final(config, ds, soft, teacher, best, reporter)
    student = strategy.student
    baseline = next(r.model for r in runs if r.kind == "baseline")
    with timings.stage("export"):
        variants = export_and_evaluate(config, ds, teacher, soft, student, baseline, out_dir, reporter)
    add_validation_scores(ds, variants, student, baseline)
    timings["total"] = round(time.perf_counter() - start, 3)
    report = build_report(config, ds, soft, runs, best, strategy, variants, labels, timings, out_dir)
    report["verdicts"] = classification_verdicts(report)
    with timings.stage("report"):
        html = write_report(out_dir, report)
    timings["total"] = round(time.perf_counter() - start, 3)
    report["timings_s"] = dict(timings)
    _rewrite_json(out_dir, report)
    reporter.log(f"report: {html}")
    return report


def train_final(config: DistillConfig, ds: Dataset, soft: TeacherOutputs, teacher, best, reporter: Reporter):
    """The exported student, trained with the config's strategy around the sweep's choice."""
    strategy = run_strategy(config, ds, soft, teacher, best.temperature, best.alpha,
                            lambda label, epochs: _epoch_bar(reporter, label, epochs))
    reporter.log(f"strategy: {config.strategy.kind}" + _versus_kd(strategy.report))
    return strategy


def _versus_kd(strategy: dict) -> str:
    if "vs_plain_kd" not in strategy:
        return ""
    verdict = "beats" if strategy["beats_plain_kd"] else "does NOT beat"
    return f" {verdict} plain KD ({strategy['vs_plain_kd']:+.4f} on the test set)"


def add_validation_scores(ds: Dataset, variants: dict, student, baseline) -> None:
    """Validation score of the final student and the baseline, next to their test metrics."""
    from distill.train import predict, validation_score  # noqa: PLC0415

    key = "val_accuracy" if ds.task == "classification" else "val_neg_mse"
    for name, model in (("student", student), ("baseline", baseline)):
        variants[name][key] = validation_score(predict(model, ds.x_val), ds.y_val, ds.task)


def _rewrite_json(out_dir: Path, report: dict) -> None:
    """report.json again, now that the report stage's own time is known."""
    import json  # noqa: PLC0415

    from distill.report import json_safe  # noqa: PLC0415

    (out_dir / "report.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
