"""A private local Ray + Serve instance (demo, benchmarks, load tests, integration tests).

Always a new Ray instance (``address="local"``: never attach to another ``ray start``
cluster on this machine), listening on 127.0.0.1 on free ports, with Ray Serve's fast
modes on unless asked otherwise; leaving the ``with`` block shuts Serve and Ray down,
also on Ctrl-C or an exception.

Example::

    with LocalServe(fast=True) as local:
        serve.run(app, name="kdgate", route_prefix="/")
        httpx.get(f"{local.url}/v2/health/ready")
"""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAST_MODE_ENV = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_holder(port: int, host: str = "127.0.0.1") -> str | None:
    """None when ``host:port`` can be bound now; else who holds it, e.g. ``"haproxy (pid 1234)"``."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
            return None
        except OSError:
            pass
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except (psutil.Error, OSError):
        pass
    return "another process"


def stop_descendants(grace_s: float = 2.0, known: list | None = None) -> list[str]:
    """Terminate what this process started and still runs (Ray, HAProxy), then kill the stubborn.

    ``known``: processes seen earlier (psutil) that may have been re-parented away since.
    """
    import psutil

    alive = list({p.pid: p for p in [*(known or []), *psutil.Process().children(recursive=True)]}.values())
    for stop in (psutil.Process.terminate, psutil.Process.kill):
        for child in alive:
            try:
                stop(child)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(alive, timeout=grace_s)
    return [f"{c.pid}" for c in alive]


READY_SETTLE_S = 1.5  # ready answers needed in a row: HAProxy reloads once more as the replica registers


def wait_ready(url: str, timeout_s: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``/v2/health/ready`` until it has answered 200 for :data:`READY_SETTLE_S` in a row; raise
    when ``proc`` (the gateway) died or the time is up.

    One 200 is not enough in HAProxy mode: the first answers come through Serve's fallback proxy,
    and ~0.1 s later HAProxy reloads with the new replica as a backend. A request in that reload
    got Serve's 404 "Path '/admin/config' not found" (a CI run, 0.2 s after the first ready).
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    ready_since = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with status {proc.returncode} before it was ready")
        try:
            ok = httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            ok = False
        now = time.monotonic()
        ready_since = (ready_since or now) if ok else None
        if ready_since is not None and now - ready_since >= READY_SETTLE_S:
            return
        time.sleep(0.1 if ok else 0.2)
    raise TimeoutError(f"{url} was not ready within {timeout_s:.0f} s")


def haproxy_files(base: str | None = None) -> dict[str, str]:
    """Environment giving HAProxy's config, sockets and state files a directory of their own.

    Serve's defaults are fixed paths (``/tmp/haproxy-serve/...``) shared by every Serve on the
    machine, so a second Serve (``kdgate serve`` next to a test's, or a crashed run's leftovers)
    would reload or query the other's HAProxy. ``base``: a short new directory under /tmp by
    default: Serve puts each socket in a 56-character subdirectory of it, and HAProxy refuses a
    socket path over 97 bytes (``/tmp/kdgate-haproxy-XXXXXXXX`` was one byte too long).
    """
    base = base or tempfile.mkdtemp(prefix="kdh-", dir="/tmp")
    files = {"CONFIG_FILE_LOC": "haproxy.cfg", "SOCKET_PATH": "admin.sock", "SERVER_STATE_FILE": "server-state",
             "METRICS_SOCKET_PATH": "metrics.sock"}
    return {"RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
            **{f"RAY_SERVE_HAPROXY_{name}": os.path.join(base, file) for name, file in files.items()}}


def serve_environment(fast: bool) -> dict[str, str]:
    """Environment Serve's actors must inherit (set before ``ray.init``).

    Fast modes (HAProxy ingress, throughput-optimised handles) or Ray Serve's defaults;
    HAProxy's own stats/metrics listeners on free ports and its files in a directory of its own
    (:func:`haproxy_files`); a 2 s drain window for a
    stopping ingress replica (30 s by default) so a redeploy does not stall the run.
    """
    env = {name: "1" if fast else "0" for name in FAST_MODE_ENV}
    env.update(RAY_AUTH_MODE="disabled", RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="2",
               RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()), RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()),
               **haproxy_files())
    return env


class LocalServe:
    """Own Ray (``num_cpus``) + Serve on a free loopback port for the length of a ``with`` block."""

    def __init__(self, *, fast: bool = True, num_cpus: int = 2, port: int | None = None):
        self.fast, self.num_cpus = fast, num_cpus
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._started = False

    def __enter__(self) -> "LocalServe":
        import ray

        os.environ.pop("RAY_ADDRESS", None)
        os.environ.update(serve_environment(self.fast))
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                 _metrics_export_port=self.metrics_port, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
        self._started = True
        try:
            self._start_serve(attempts=2)
        except BaseException:
            self.close()
            raise
        return self

    def _start_serve(self, attempts: int) -> None:
        """serve.start; once more if its proxy missed Serve's fixed 60 s start-up limit (a busy machine)."""
        from ray import serve

        for attempt in range(1, attempts + 1):
            try:
                serve.start(http_options={"host": "127.0.0.1", "port": self.port})
                return
            except Exception as err:  # noqa: BLE001 -- ActorDiedError/GetTimeoutError from the proxy
                if attempt == attempts:
                    raise
                print(f"serve.start() attempt {attempt} failed ({type(err).__name__}); retrying", flush=True)
                _shutdown_serve()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Shut Serve and Ray down (idempotent)."""
        if not self._started:
            return
        import ray

        self._started = False
        try:
            _shutdown_serve()
        finally:
            ray.shutdown()

    @property
    def mode(self) -> str:
        return "fast (HAProxy + throughput-optimized)" if self.fast else "default"


def _shutdown_serve() -> None:
    from ray import serve

    try:
        serve.shutdown()
    except Exception as err:  # noqa: BLE001 -- seen on a loaded machine: Serve kills its HAProxy
        # proxy actor before it started and then trips over it; nothing is left to lose.
        print(f"serve.shutdown() failed: {type(err).__name__}: {err}", flush=True)


def child_processes() -> list[str]:
    """Names of this process's live descendants (what a clean shutdown leaves: none)."""
    import psutil

    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{child.name()}[{child.pid}]")
        except psutil.NoSuchProcess:
            continue
    return alive
