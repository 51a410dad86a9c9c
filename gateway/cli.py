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
import threading
import traceback
from typing import Optional

import typer

from gateway.serve import service

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
    _refuse_taken_ports({"--port": port, "--metrics-port": metrics_port, **service.haproxy_ports(not default_modes)}, host)
    service.stop_on_signals(STOP_BUDGET_S, typer.echo)  # also while Ray starts: a stop is a stop
    code = 0
    try:
        service.start_ray(num_cpus=num_cpus, metrics_port=metrics_port, fast=not default_modes)
        service.stop_on_signals(STOP_BUDGET_S, typer.echo)  # ray.init replaced the SIGTERM handler
        service.deploy_document(document, host=host, port=port)
        typer.echo(f"kdgate: serving on http://{host}:{port}  (metrics: http://127.0.0.1:{metrics_port}/metrics)")
        threading.Event().wait()  # until a signal: its watcher thread stops Ray and ends the process
    except BaseException:  # noqa: BLE001 -- reported, then the same bounded stop as Ctrl-C
        traceback.print_exc()
        code = 1
    service.stop_and_exit(code, STOP_BUDGET_S)


STOP_BUDGET_S = 4.0  # Serve's own shutdown waits up to 30 s for its controller; an operator will not


def _refuse_taken_ports(ports: dict[str, int], host: str) -> None:
    """One line naming the port and its holder, before any Ray start (exit 2)."""
    from gateway.serve.local import port_holder

    for option, number in ports.items():
        holder = port_holder(number, host if option == "--port" else "127.0.0.1")
        if holder is not None:
            typer.echo(f"kdgate serve: port {number} ({option}) is in use by {holder}; stop it or choose "
                       f"another port", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)


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
