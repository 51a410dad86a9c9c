"""A real multi-node Ray cluster on this machine: ``ray start --head`` plus worker nodes.

Every node is one ``ray start --block`` process this test process owns (its own session,
its own temp dir under one short root, its own free loopback ports, ``num_cpus`` and a
``kdgate-node`` label); raylet, GCS, agents and workers are its descendants. The session's
shared :class:`~gateway.serve.local.LocalServe` is left alone: this process never calls
``ray.init`` into the cluster; a driver subprocess (``cluster_driver.py``) does, answering
one JSON line per command. Leaving the ``with`` block ends every process of the cluster by
pid (descendants, plus anything whose command line names the root) and checks none is left.

Example::

    with LocalCluster(workers=["b", "c"]) as cluster:
        driver = cluster.driver()
        driver.call("deploy", schema=..., http_port=port)
        killed = cluster.kill_node("b")        # SIGKILL the raylet and everything under it
"""
from __future__ import annotations

import json
import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil

from gateway.serve.local import ROOT, free_port, haproxy_files, serve_environment

DRIVER = pathlib.Path(__file__).with_name("cluster_driver.py")
LABEL = "kdgate-node"      # node label: "head" or the worker's name
RAY = str(pathlib.Path(sys.executable).with_name("ray"))


class LocalCluster:
    """Head + ``workers`` Ray nodes, each ``num_cpus`` CPUs, for the length of a ``with`` block."""

    def __init__(self, workers: list[str], *, num_cpus: float = 1, fast: bool = True,
                 start_timeout_s: float = 120.0):
        self.workers, self.num_cpus, self.start_timeout_s = list(workers), num_cpus, start_timeout_s
        # Short on purpose: Ray's and HAProxy's unix sockets live under it (108-byte path limit).
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="kdc-", dir="/tmp"))
        self.gcs_port = free_port()
        self.env = self._environment(fast)
        self.nodes: dict[str, subprocess.Popen] = {}
        self._drivers: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def _environment(self, fast: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(serve_environment(fast), RAY_USAGE_STATS_ENABLED="0",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), str(DRIVER.parent), env.get("PYTHONPATH")])))
        # HAProxy's files under the root (its command line then names it, and nothing is shared
        # with another Serve on this machine); replica ports apart from LocalServe's 30000+.
        haproxy = self.root / "haproxy"
        env.update(haproxy_files(str(haproxy)),
                   RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT="33000", RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT="33500",
                   RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT="34000", RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT="34500")
        return env

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> "LocalCluster":
        try:
            self._start_node("head", ["--head", f"--port={self.gcs_port}",
                                      f"--ray-client-server-port={free_port()}", "--include-dashboard=false",
                                      f"--dashboard-port={free_port()}"])
            self._wait_started("head")
            for name in self.workers:
                self._start_node(name, [f"--address={self.address}"])
            for name in self.workers:
                self._wait_started(name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start_node(self, name: str, args: list[str]) -> None:
        temp = self.root / f"node-{name}"
        temp.mkdir()
        command = [RAY, "start", "--block", *args, "--node-ip-address=127.0.0.1", f"--num-cpus={self.num_cpus}",
                   f"--temp-dir={temp}", f"--labels={LABEL}={name}", "--object-store-memory=80000000",
                   f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                   f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                   f"--dashboard-agent-grpc-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                   "--min-worker-port=0", "--max-worker-port=0", "--disable-usage-stats"]
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 -- the child keeps writing to it
        self.nodes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        log.close()

    def _wait_started(self, name: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.nodes[name].poll() is not None:
                raise RuntimeError(f"ray start of node {name} exited {self.nodes[name].returncode}:\n{self.log(name)}")
            if "Ray runtime started" in self.log(name):
                return
            time.sleep(0.2)
        raise TimeoutError(f"node {name} did not start within {self.start_timeout_s:.0f} s:\n{self.log(name)}")

    def log(self, name: str) -> str:
        """What ``ray start`` of node ``name`` printed."""
        return (self.root / f"{name}.log").read_text(errors="replace")

    def driver(self) -> "Driver":
        """A driver subprocess connected to the cluster (ended with the cluster)."""
        proc = subprocess.Popen([sys.executable, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=open(self.root / "driver.log", "ab"), text=True,  # noqa: SIM115
                                env={**self.env, "RAY_ADDRESS": self.address}, start_new_session=True)
        self._drivers.append(proc)
        return Driver(proc)

    # --- processes -------------------------------------------------------------------------

    def node_processes(self, name: str) -> list[psutil.Process]:
        """The ``ray start`` process of node ``name``, its descendants, and whatever names its temp dir."""
        return _tree(self.nodes[name].pid) + _naming(str(self.root / f"node-{name}"))

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL node ``name`` (raylet, agents, workers, all at once): a node lost. Returns the pids."""
        procs = _unique(self.node_processes(name))
        for proc in procs:
            _signal(proc, signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        self.nodes[name].wait(timeout=10)
        return [p.pid for p in procs]

    def leftovers(self) -> list[str]:
        """Live processes of this cluster (after :meth:`close`: none)."""
        procs = [p for node in self.nodes.values() for p in _tree(node.pid)] + _naming(str(self.root))
        return [f"{p.name()}[{p.pid}]" for p in _unique(procs) if _alive(p)]

    def close(self) -> None:
        """End every process of the cluster by pid: SIGTERM, then SIGKILL what is left after 5 s."""
        procs = [p for d in self._drivers for p in _tree(d.pid)]
        procs += [p for node in self.nodes.values() for p in _tree(node.pid)] + _naming(str(self.root))
        procs = _unique(procs)
        for sig, grace_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for proc in procs:
                _signal(proc, sig)
            _, procs = psutil.wait_procs(procs, timeout=grace_s)
        for child in [*self._drivers, *self.nodes.values()]:
            child.poll()  # reap
        left = self.leftovers()
        if not left:
            shutil.rmtree(self.root, ignore_errors=True)
        elif not procs:  # pragma: no cover -- would mean a process escaped both the tree and the root
            raise RuntimeError(f"cluster processes left after close: {left}")


class Driver:
    """A ``cluster_driver.py`` subprocess: ``call(op, **args)`` sends one JSON line, returns its answer."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def call(self, op: str, timeout_s: float = 180.0, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        # One answer per command, so nothing is left buffered between calls: select sees it all.
        if not select.select([self.proc.stdout], [], [], timeout_s)[0]:
            raise TimeoutError(f"the cluster driver did not answer {op!r} within {timeout_s:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the cluster driver exited ({self.proc.poll()}) during {op!r}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"cluster driver {op!r} failed: {answer['error']}")
        return answer


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _naming(text: str) -> list[psutil.Process]:
    """Processes whose command line contains ``text`` (reparented orphans escape the tree)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(arg.endswith(text) or f"{text}/" in arg for arg in proc.info["cmdline"] or ()):
                found.extend(_tree(proc.pid))
        except psutil.Error:
            continue
    return found


def _unique(procs: list[psutil.Process]) -> list[psutil.Process]:
    me = os.getpid()
    return list({p.pid: p for p in procs if p.pid != me}.values())


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass
