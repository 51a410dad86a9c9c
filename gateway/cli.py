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
import signal
import sys
import time
import traceback
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
    _refuse_taken_ports({"--port": port, "--metrics-port": metrics_port, **_haproxy_ports(not default_modes)}, host)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop is a Ctrl-C
    code = 0
    try:
        _start_ray(num_cpus=num_cpus, metrics_port=metrics_port, fast=not default_modes)
        _deploy(document, host=host, port=port)
        typer.echo(f"kdgate: serving on http://{host}:{port}  (metrics: http://127.0.0.1:{metrics_port}/metrics)")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("kdgate: stopping")
    except Exception:  # noqa: BLE001 -- reported, then the same bounded stop as Ctrl-C
        traceback.print_exc()
        code = 1
    finally:
        _stop(STOP_BUDGET_S)
        typer.echo("kdgate: stopped")
        sys.stdout.flush()
        sys.stderr.flush()
        # Ray's atexit hooks would wait on the processes just ended (seen: 6+ s more); nothing is left to flush.
        os._exit(code)


STOP_BUDGET_S = 4.0  # Serve's own shutdown waits up to 30 s for its controller; an operator will not


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _haproxy_ports(fast: bool) -> dict[str, int]:
    """The ports Serve's HAProxy ingress binds (fast mode): a crashed run's HAProxy may still hold them."""
    if not fast:
        return {}
    return {"RAY_SERVE_HAPROXY_METRICS_PORT": int(os.environ.get("RAY_SERVE_HAPROXY_METRICS_PORT", "9101")),
            "RAY_SERVE_HAPROXY_STATS_PORT": int(os.environ.get("RAY_SERVE_HAPROXY_STATS_PORT", "8404"))}


def _refuse_taken_ports(ports: dict[str, int], host: str) -> None:
    """One line naming the port and its holder, before any Ray start (exit 2)."""
    from gateway.serve.local import port_holder

    for option, number in ports.items():
        holder = port_holder(number, host if option == "--port" else "127.0.0.1")
        if holder is not None:
            typer.echo(f"kdgate serve: port {number} ({option}) is in use by {holder}; stop it or choose "
                       f"another port", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)


def _stop(budget_s: float) -> None:
    """Serve, then Ray, each bounded; whatever still runs after that is terminated, then killed."""
    import threading

    def shutdown() -> None:
        try:
            from ray import serve as ray_serve
            import ray

            ray_serve.shutdown()
            ray.shutdown()
        except Exception as err:  # noqa: BLE001 -- stopping must go on whatever Ray says
            typer.echo(f"kdgate: shutdown: {type(err).__name__}: {err}", err=True)

    worker = threading.Thread(target=shutdown, daemon=True)
    worker.start()
    worker.join(budget_s)
    from gateway.serve.local import stop_descendants

    stop_descendants(grace_s=1.0)


def _start_ray(*, num_cpus: int | None, metrics_port: int, fast: bool) -> None:
    import ray

    for name in FAST_MODE_ENV:
        os.environ.setdefault(name, "1" if fast else "0")
    cwd = os.getcwd()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [cwd, os.environ.get("PYTHONPATH")])),
           "KDGATE_HOME": os.environ.get("KDGATE_HOME", cwd)}
    os.environ.pop("RAY_ADDRESS", None)  # always its own Ray: never attach to a `ray start` cluster here
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _metrics_export_port=metrics_port,
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
