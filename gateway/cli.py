"""`kdgate serve CONFIG.yaml` and `kdgate capture export --out FILE.npz`.

``kdgate serve`` starts a local Ray instance (the embedded default), deploys the gateway
and serves until Ctrl-C. CONFIG is either a gateway config (one document, see
``gateway.core.config.GatewayConfig``) or a Ray Serve config file such as
``deployments/local.yaml`` (``applications: [...]``). Ray Serve's fast modes are on
unless the environment says otherwise: ``RAY_SERVE_ENABLE_HA_PROXY=1`` (HAProxy ingress)
and ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``; ``--default-modes`` turns both off.

Prometheus scrape target: Ray's metrics export port (``--metrics-port``, 8080 by
default), e.g. ``http://127.0.0.1:8080/metrics``; kdgate's series are ``ray_kdgate_*``.

Example:
    $ kdgate serve deployments/local.yaml
    $ kdgate capture export --out captured.npz --dir kdgate-capture
"""
from __future__ import annotations

import os
import pathlib
import time
from typing import Optional

import typer

from gateway.serve.local import FAST_MODE_ENV

EXIT_BAD_INPUT = 2

capture_app = typer.Typer(help="Disagreeing teacher/student pairs captured by the gateway.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``capture`` to the kdgate app."""
    app.command("serve")(serve)
    app.add_typer(capture_app, name="capture")
    from gateway.rollout.cli import rollout_app  # noqa: PLC0415 -- typer only, no heavy imports

    app.add_typer(rollout_app, name="rollout")


def serve(
    config: pathlib.Path = typer.Argument(..., help="Gateway config YAML or Ray Serve config file."),
    host: str = typer.Option("127.0.0.1", help="HTTP address of the inference port."),
    port: int = typer.Option(8000, help="HTTP port of the inference API."),
    metrics_port: int = typer.Option(8080, help="Ray metrics export port (the Prometheus scrape target)."),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for the local Ray instance (default: all)."),
    default_modes: bool = typer.Option(False, "--default-modes", help="Use Ray Serve's default proxy, not the fast modes."),
) -> None:
    """Start local Ray, deploy the gateway, serve until Ctrl-C."""
    import yaml

    from gateway.core.config import load_gateway_config
    from gateway.core.errors import GatewayConfigError

    try:
        document = yaml.safe_load(config.read_text())
        if not (isinstance(document, dict) and "applications" in document):
            load_gateway_config(document)  # fail fast, before Ray starts
    except (OSError, yaml.YAMLError, GatewayConfigError) as err:
        typer.echo(f"kdgate serve: {err}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from err
    _start_ray(num_cpus=num_cpus, metrics_port=metrics_port, fast=not default_modes)
    _deploy(document, host=host, port=port)
    typer.echo(f"kdgate: serving on http://{host}:{port}  (metrics: http://127.0.0.1:{metrics_port}/metrics)")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("kdgate: stopping")
    finally:
        from ray import serve as ray_serve

        ray_serve.shutdown()


def _start_ray(*, num_cpus: int | None, metrics_port: int, fast: bool) -> None:
    import ray

    for name in FAST_MODE_ENV:
        os.environ.setdefault(name, "1" if fast else "0")
    cwd = os.getcwd()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [cwd, os.environ.get("PYTHONPATH")])),
           "KDGATE_HOME": os.environ.get("KDGATE_HOME", cwd)}
    ray.init(num_cpus=num_cpus, include_dashboard=False, _metrics_export_port=metrics_port,
             runtime_env={"env_vars": env})


def _deploy(document: dict, *, host: str, port: int) -> None:
    from ray import serve as ray_serve

    if "applications" in document:
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        http = document.setdefault("http_options", {})
        http.update(host=host, port=port)  # the command line wins over the file
        ray_serve.start(http_options=http)
        _get_global_client().deploy_apps(ServeDeploySchema.model_validate(document), _blocking=True)
        return
    from gateway.serve.app import build_app

    ray_serve.start(http_options={"host": host, "port": port})
    ray_serve.run(build_app({"config": document}), name="kdgate", route_prefix="/")


@capture_app.command("export")
def capture_export(
    out: pathlib.Path = typer.Option(..., "--out", help="Output .npz (x_unlabeled + both outputs)."),
    directory: Optional[pathlib.Path] = typer.Option(None, "--dir", help="Capture directory (capture.dir)."),
    config: Optional[pathlib.Path] = typer.Option(None, "--config", help="Gateway config naming capture.dir."),
    base: Optional[pathlib.Path] = typer.Option(None, "--base", help="A distill npz dataset to append the rows to."),
) -> None:
    """Write captured disagreements as an unlabeled transfer set for `kdgate distill`."""
    from gateway.capture import export_capture
    from gateway.core.config import load_gateway_config
    from gateway.core.errors import GatewayError

    try:
        if directory is None:
            if config is None:
                raise typer.BadParameter("give --dir or --config")
            directory = pathlib.Path(load_gateway_config(config).capture.dir)
        rows = export_capture(directory, out, base_npz=base)
    except GatewayError as err:
        typer.echo(f"kdgate capture export: {err}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from err
    typer.echo(f"wrote {rows} captured rows to {out}")
