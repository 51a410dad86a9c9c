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
import signal
import socket
import sys
import threading
from typing import Callable, NoReturn

from gateway.serve.local import FAST_MODE_ENV, haproxy_files, stop_descendants

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_exiting = threading.Lock()
_wakeup: list[socket.socket] = []  # kept referenced: the C signal handler writes into it


def haproxy_ports(fast: bool) -> dict[str, int]:
    """The ports Serve's HAProxy ingress binds (fast mode): a crashed run's HAProxy may still hold them."""
    if not fast:
        return {}
    return {"RAY_SERVE_HAPROXY_METRICS_PORT": int(os.environ.get("RAY_SERVE_HAPROXY_METRICS_PORT", "9101")),
            "RAY_SERVE_HAPROXY_STATS_PORT": int(os.environ.get("RAY_SERVE_HAPROXY_STATS_PORT", "8404"))}


def stop_on_signals(budget_s: float, announce: Callable[[str], None]) -> None:
    """From now on SIGINT/SIGTERM stop Serve and Ray within ``budget_s`` and end the process.

    Python runs signal handlers only in the main thread, between bytecodes; under load the main
    thread can sit in a Ray call (start-up, deploy, a blocking get) long after the signal. So the
    C-level handler's wakeup byte (``signal.set_wakeup_fd``) wakes a watcher thread, which stops
    and exits whatever the main thread is doing. Call from the main thread, again after
    ``ray.init`` (Ray installs its own SIGTERM handler).
    """
    if not _wakeup:
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        _wakeup.extend((reader, writer))
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

        def watch() -> None:
            number = reader.recv(1)[0]
            announce(f"kdgate: {signal.Signals(number).name}, stopping")
            stop_and_exit(0, budget_s)

        threading.Thread(target=watch, name="kdgate-stop", daemon=True).start()
    for number in STOP_SIGNALS:
        # A Python-level handler must exist for the wakeup byte to be written; the watcher acts.
        signal.signal(number, lambda *_: None)


def stop_and_exit(code: int, budget_s: float) -> NoReturn:
    """Bounded :func:`stop`, then ``os._exit(code)``; a second caller waits for the first one's exit."""
    if not _exiting.acquire(blocking=False):
        threading.Event().wait()
    stop(budget_s)
    print("kdgate: stopped", flush=True)
    sys.stderr.flush()
    # Ray's atexit hooks would wait on the processes just ended (seen: 6+ s more); nothing is left to flush.
    os._exit(code)


def stop(budget_s: float) -> None:
    """Serve, then Ray, each bounded; whatever still runs after that is terminated, then killed."""
    import psutil

    # Taken first: Serve's shutdown ends actors whose children (HAProxy) are then re-parented away.
    started = psutil.Process().children(recursive=True)

    def shutdown() -> None:
        try:
            import ray
            from ray import serve as ray_serve

            if not ray.is_initialized():
                return  # stopped before ray.init finished: asking Serve would start a Ray
            ray_serve.shutdown()
            ray.shutdown()
        except Exception as err:  # noqa: BLE001 -- stopping must go on whatever Ray says
            print(f"kdgate: shutdown: {type(err).__name__}: {err}", file=sys.stderr)

    worker = threading.Thread(target=shutdown, daemon=True)
    worker.start()
    worker.join(budget_s)
    stop_descendants(grace_s=1.0, known=started)


def start_ray(*, num_cpus: int | None, metrics_port: int, fast: bool) -> None:
    """A private local Ray (never a `ray start` cluster) with the fast modes unless the env says otherwise."""
    import ray

    for name in FAST_MODE_ENV:
        os.environ.setdefault(name, "1" if fast else "0")
    if fast:
        for name, value in haproxy_files().items():
            os.environ.setdefault(name, value)
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
