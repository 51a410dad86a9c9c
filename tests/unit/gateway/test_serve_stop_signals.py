"""`kdgate serve`'s stop on SIGINT/SIGTERM (gateway/serve/service.py), without Ray: a process
whose main thread is blocked for good still stops within its budget, ends what it started and
exits 0 -- the watcher thread acts on the signal, not the main thread."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BLOCKED = textwrap.dedent("""
    import subprocess, threading
    from gateway.serve import service

    child = subprocess.Popen(["sleep", "300"])
    service.stop_on_signals(1.0, lambda line: print(line, flush=True))
    print("child", child.pid, flush=True)
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # blocked for good, as a main thread stuck in a Ray call
""")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_process_whose_main_thread_is_blocked(signum):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("child "), first + proc.stdout.read()
        child = psutil.Process(int(first.split()[1]))
        started = time.monotonic()
        proc.send_signal(signum)
        output = proc.communicate(timeout=30)[0]
        stop_s = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    assert f"kdgate: {signal.Signals(signum).name}, stopping" in output and "kdgate: stopped" in output, output
    assert stop_s < 10.0
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_haproxy_socket_paths_fit_haproxy_limit_under_serve_per_node_directory():
    """Serve puts each HAProxy socket in a subdirectory named by the 56-hex-digit node id, and
    HAProxy refuses a socket path over 97 bytes (a too-long prefix broke every Serve start)."""
    from gateway.serve.local import haproxy_files

    files = haproxy_files()
    base = files["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]
    try:
        for name in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
            folder, file = os.path.split(files[name])
            assert len(os.path.join(folder, "f" * 56, file)) <= 97, files[name]
    finally:
        os.rmdir(base)
