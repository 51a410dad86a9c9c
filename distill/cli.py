"""`kdgate distill CONFIG.yaml [--out DIR|URI]` and `kdgate distill --schema`.

The config is validated before anything is trained; a bad one exits with code 2 and one
line per problem naming the field. Heavy imports (torch, onnxruntime) stay inside the
command so `kdgate --help` is instant.

Example:
    $ kdgate distill distill/configs/mnist1d.yaml --out runs/demo
    $ kdgate distill distill/configs/mnist1d.yaml --out s3://models/kdgate/v7   # then `kdgate publish`ed
    $ kdgate distill --schema > distill-config.schema.json
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class RichReporter:
    """Pipeline progress as rich progress bars and log lines."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.bars = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=console, transient=False)

    def __enter__(self) -> "RichReporter":
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def log(self, message: str) -> None:
        self.bars.console.print(f"[bold cyan]kdgate[/] {message}")

    def progress(self, label: str, total: int) -> Callable[[int], None]:
        task = self.bars.add_task(label, total=max(total, 1))
        return lambda done: self.bars.update(task, completed=done)


def _fmt(value, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "ms":
        return f"{value:.4f} ms"
    if kind == "x":
        return f"{value:.1f}x"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def summary_table(report: dict):
    """The short end-of-run table: accuracy, params, batch-1 latency per variant."""
    from rich.table import Table

    table = Table(title=f"kdgate distill: {report.get('name', '')}")
    for column in ("variant", "test accuracy", "params", "ONNX batch-1 latency", "ONNX bytes"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for name in ("teacher", "student", "baseline"):
        v = report.get(name) or {}
        table.add_row(name, _fmt(v.get("accuracy"), "pct"), _fmt(v.get("params")),
                      _fmt((v.get("latency_ms") or {}).get("batch1"), "ms"), _fmt(v.get("onnx_size_bytes")))
        int8 = v.get("int8")  # the student's; text runs: the teacher's too
        if int8:
            table.add_row(f"{name} INT8", _fmt(int8.get("accuracy"), "pct"), "",
                          _fmt(int8["latency_ms"]["batch1"], "ms"), _fmt(int8.get("onnx_size_bytes")))
    table.caption = (f"retention {_fmt(report.get('retention'), 'pct')} · agreement "
                     f"{_fmt(report.get('agreement'), 'pct')} · speedup {_fmt(report.get('speedup_batch1'), 'x')} · "
                     f"params {_fmt(report.get('param_reduction'), 'x')} fewer · total "
                     f"{report['timings_s']['total']:.0f} s")
    return table


def distill_command(
    config: Optional[Path] = typer.Argument(None, help="The distill config (YAML).", show_default=False),
    out: str = typer.Option("runs/distill", "--out", "-o", help="Output folder for report and artifacts, or an "
                            "s3://, gs:// URI: written to a temporary folder, then published there."),
    schema: bool = typer.Option(False, "--schema", help="Print the config's JSON Schema and exit."),
) -> None:
    """Distil a student from a teacher: sweep, evaluate, export ONNX/INT8/Triton and report."""
    from rich.console import Console

    from distill.config import config_json_schema, load_config
    from distill.errors import ConfigError, DataError, DistillError, TeacherError

    if schema:
        typer.echo(config_json_schema())
        return
    err_console = Console(stderr=True)
    if config is None:
        err_console.print("[red]error:[/] give a config file (kdgate distill CONFIG.yaml) or --schema")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        settings = load_config(config)
    except ConfigError as err:
        err_console.out(f"error: {err}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from err
    _run_to(out, lambda folder: _run(settings, folder, err_console, (DataError, TeacherError, ConfigError),
                                     DistillError))


def _run_to(out: str, run: Callable[[Path], None]) -> None:
    """``run(folder)`` into ``out``; a URI ``out`` gets a temporary folder, published afterwards."""
    import tempfile

    from gateway.model_store import is_remote
    from gateway.store_cli import publish_or_exit

    if not is_remote(out):
        run(Path(out))
        return
    with tempfile.TemporaryDirectory(prefix="kdgate-distill-") as folder:
        run(Path(folder))
        publish_or_exit(Path(folder), out)


def _run(settings, out: Path, err_console, bad_input: tuple, failure: type) -> None:
    from rich.console import Console

    from distill.pipeline import run_pipeline

    console = Console()
    try:
        with RichReporter(console) as reporter:
            report = run_pipeline(settings, out, reporter)
    except bad_input as err:
        err_console.out(f"error: {err}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from err
    except failure as err:
        err_console.out(f"failed: {err}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from err
    if report.get("task") == "embedding":
        from distill.embed_pipeline import summary_text  # noqa: PLC0415

        console.print(summary_text(report), highlight=False)
        print_verdicts(console, report)
        console.print(f"report: [bold]{out / 'report.json'}[/] (also manifest.json, *.onnx, tokenizer.json)")
        return
    console.print(summary_table(report))
    print_verdicts(console, report)
    extras = "tokenizer.json" if report.get("text") else "triton/"
    console.print(f"report: [bold]{out / 'report.html'}[/] (also report.json, manifest.json, *.onnx, {extras})")


def print_verdicts(console, report: dict) -> None:
    """The run's verdicts in plain words (a losing student or a tied sweep still exits 0, but says so)."""
    from rich.text import Text  # noqa: PLC0415

    from distill.verdicts import verdict_lines  # noqa: PLC0415

    for line in verdict_lines(report.get("verdicts") or {}):
        style = "bold yellow" if line.startswith("WARNING") else "green" if line.startswith("OK") else ""
        console.print(Text(line, style=style), soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `kdgate distill` to the kdgate app."""
    app.command("distill")(distill_command)
