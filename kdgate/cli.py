"""The `kdgate` command: one typer app, sub-commands registered by each package.

Each package's `register(app)` adds its commands; heavy imports (torch, ray) happen
inside the command bodies so that `kdgate --help` stays instant.
"""
from __future__ import annotations

import typer

from distill.cli import register as _register_distill
from gateway.cli import register as _register_gateway
from gateway.store_cli import register as _register_store
from kdgate.ops.cli import register as _register_ops

app = typer.Typer(
    name="kdgate",
    no_args_is_help=True,
    add_completion=False,
    help="Distil a small student from a large teacher and put it into production safely.",
)


@app.callback()
def _main() -> None:
    """kdgate: distil -> export -> canary/shadow gateway -> gated rollout with rollback."""


_register_distill(app)
_register_gateway(app)
_register_store(app)
_register_ops(app)


@app.command()
def version() -> None:
    """Print kdgate's version."""
    from kdgate import __version__

    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
