"""Command-line commands of this package (placeholder until implemented)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the kdgate app."""
