"""`kdgate publish DIR URI`: upload an artifact folder to object storage (or a path).

The folder `kdgate distill` wrote (manifest.json, *.onnx, triton/, report) goes to
``URI`` as it is; the manifest is validated and each model checked against its sha256
first, and written last. Credentials come from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for s3://). Then point ``model_path`` /
``manifest_path`` at ``URI/<file>`` and apply the config: each replica fetches and
verifies the models itself.

Example:
    $ kdgate publish runs/demo s3://models/kdgate/v7
"""
from __future__ import annotations

import pathlib

import typer

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def publish_command(
    folder: pathlib.Path = typer.Argument(..., help="Artifact folder written by `kdgate distill` (has manifest.json)."),
    uri: str = typer.Argument(..., help="Destination: s3://bucket/prefix, gs://..., or a local folder."),
) -> None:
    """Upload an artifact folder (manifest verified first, written last) and print what was written."""
    publish_or_exit(folder, uri)


def publish_or_exit(folder: pathlib.Path, uri: str) -> None:
    """Publish ``folder`` to ``uri`` and print each file; a failure exits 2 (bad folder) or 1."""
    from gateway.core.errors import ManifestError
    from gateway.model_store import ModelStoreError, publish

    try:
        written = publish(folder, uri)
    except (ManifestError, ModelStoreError) as err:
        typer.echo(f"kdgate publish: {err}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT if isinstance(err, ManifestError) else EXIT_FAILED) from err
    for target in written:
        typer.echo(f"wrote {target}")
    typer.echo(f"published {len(written)} files; set model_path/manifest_path to {uri.rstrip('/')}/<file>")


def register(app: typer.Typer) -> None:
    """Add ``publish`` to the kdgate app."""
    app.command("publish")(publish_command)
