"""`kdgate dashboards push --url URL` and `kdgate ops generate [--check]`.

``dashboards push`` uploads the dashboard built by :mod:`kdgate.ops.dashboards` through
grafana-client (Grafana's ``POST /api/dashboards/db``, overwrite on), with a service
account token from the environment (``$GRAFANA_TOKEN`` unless ``--token-env`` says
otherwise); the token is never printed. On Kubernetes the Grafana sidecar picks the
dashboard up from the ConfigMap instead, so no push is needed there.

Example:
    $ export GRAFANA_TOKEN=glsa_...
    $ kdgate dashboards push --url https://grafana.example.com --folder-uid ml
    $ kdgate ops generate --check
"""
from __future__ import annotations

import os
import pathlib
from typing import Optional

import typer

EXIT_FAILED = 1

dashboards_app = typer.Typer(help="The kdgate Grafana dashboard.", no_args_is_help=True)
ops_app = typer.Typer(help="Generated ops files: dashboard JSON, alerts, k8s serveConfigV2.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``dashboards`` and ``ops`` to the kdgate app."""
    app.add_typer(dashboards_app, name="dashboards")
    app.add_typer(ops_app, name="ops")


@dashboards_app.command("push")
def push(
    url: str = typer.Option(..., "--url", help="Grafana base URL, e.g. http://127.0.0.1:3000."),
    token_env: str = typer.Option("GRAFANA_TOKEN", "--token-env", help="Env var holding a Grafana API token."),
    folder_uid: Optional[str] = typer.Option(None, "--folder-uid", help="Grafana folder to put the dashboard in."),
    timeout_s: float = typer.Option(10.0, "--timeout", help="HTTP timeout, seconds."),
) -> None:
    """Upload (create or overwrite) the kdgate dashboard to Grafana."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    from kdgate.ops.dashboards import build_dashboard

    token = os.environ.get(token_env, "").strip()
    if not token:
        typer.echo(f"kdgate dashboards push: no Grafana token in ${token_env} (set it, or pass --token-env)", err=True)
        raise typer.Exit(EXIT_FAILED)
    payload = {"dashboard": build_dashboard(), "overwrite": True, "message": "kdgate dashboards push"}
    if folder_uid:
        payload["folderUid"] = folder_uid
    try:
        answer = GrafanaApi.from_url(url, credential=token, timeout=timeout_s).dashboard.update_dashboard(payload)
    except (GrafanaException, OSError) as err:
        typer.echo(f"kdgate dashboards push: Grafana at {url} refused or failed: {err}", err=True)
        raise typer.Exit(EXIT_FAILED) from err
    typer.echo(f"pushed dashboard {answer.get('uid', '?')} version {answer.get('version', '?')}: {answer.get('url', '')}")


@ops_app.command("generate")
def generate(
    check: bool = typer.Option(False, "--check", help="Only report stale files (exit 1 when any)."),
    root: pathlib.Path = typer.Option(pathlib.Path("."), "--root", help="Repository root."),
    models_uri: Optional[str] = typer.Option(
        None, "--models-uri", help="Where `kdgate publish` wrote the models (s3://bucket/prefix): the cluster "
                                   "fetches them from there instead of the models volume."),
) -> None:
    """Write the generated dashboard, PrometheusRule and k8s serveConfigV2 files."""
    from gateway.core.errors import GatewayConfigError
    from kdgate.ops import generate as gen

    try:
        paths = gen.check(root, models_uri) if check else gen.write(root, models_uri)
    except (OSError, GatewayConfigError) as err:
        typer.echo(f"kdgate ops generate: {err}", err=True)
        raise typer.Exit(EXIT_FAILED) from err
    if check and paths:
        typer.echo("stale generated files (run `kdgate ops generate`): " + ", ".join(paths), err=True)
        raise typer.Exit(EXIT_FAILED)
    typer.echo(("rewrote: " + ", ".join(paths)) if paths and not check else "generated files are up to date")
