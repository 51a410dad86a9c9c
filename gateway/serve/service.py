"""The Ray side of ``kdgate serve``: start a private Ray, deploy, stop within a budget.

``gateway/cli.py`` keeps the command line (parsing, messages, exit codes); everything that
touches Ray or its processes lives here, with the rest of the Ray code in ``gateway/serve/``.

Example::

    start_ray(num_cpus=2, metrics_port=8080, fast=True)
    deploy_document(yaml.safe_load(open("deployments/local.yaml")), host="127.0.0.1", port=8000)
    ...
    stop(budget_s=4.0)
"""
from __future__ import annotations

import os
import sys
import threading

from gateway.serve.local import FAST_MODE_ENV, stop_descendants


def haproxy_ports(fast: bool) -> dict[str, int]:
    """The ports Serve's HAProxy ingress binds (fast mode): a crashed run's HAProxy may still hold them."""
    if not fast:
        return {}
    return {"RAY_SERVE_HAPROXY_METRICS_PORT": int(os.environ.get("RAY_SERVE_HAPROXY_METRICS_PORT", "9101")),
            "RAY_SERVE_HAPROXY_STATS_PORT": int(os.environ.get("RAY_SERVE_HAPROXY_STATS_PORT", "8404"))}


def stop(budget_s: float) -> None:
    """Serve, then Ray, each bounded; whatever still runs after that is terminated, then killed."""

    def shutdown() -> None:
        try:
            from ray import serve as ray_serve
            import ray

            ray_serve.shutdown()
            ray.shutdown()
        except Exception as err:  # noqa: BLE001 -- stopping must go on whatever Ray says
            print(f"kdgate: shutdown: {type(err).__name__}: {err}", file=sys.stderr)

    worker = threading.Thread(target=shutdown, daemon=True)
    worker.start()
    worker.join(budget_s)
    stop_descendants(grace_s=1.0)


def start_ray(*, num_cpus: int | None, metrics_port: int, fast: bool) -> None:
    """A private local Ray (never a `ray start` cluster) with the fast modes unless the env says otherwise."""
    import ray

    for name in FAST_MODE_ENV:
        os.environ.setdefault(name, "1" if fast else "0")
    cwd = os.getcwd()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [cwd, os.environ.get("PYTHONPATH")])),
           "KDGATE_HOME": os.environ.get("KDGATE_HOME", cwd)}
    os.environ.pop("RAY_ADDRESS", None)  # always its own Ray: never attach to a `ray start` cluster here
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _metrics_export_port=metrics_port,
             runtime_env={"env_vars": env})


def deploy_document(document: dict, *, host: str, port: int) -> None:
    """A Ray Serve config file (``applications:``) or one gateway config, on ``host:port``."""
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
