"""`kdgate serve` starts and stops like a service: SIGINT -> exit within 10 s, nothing left
running; a taken port is named with its holder before Ray starts."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import psutil
import pytest
import yaml
from gateway_support import gateway_config, serve_command, serve_env, wait_ready

from gateway.serve.local import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigint_stops_within_10_s_and_leaves_nothing(onnx_models, tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(gateway_config(onnx_models, tmp_path)))
    port = free_port()
    log = tmp_path / "serve.log"  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(serve_command(path, port), env=serve_env(), stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_ready(f"http://127.0.0.1:{port}", timeout_s=180, proc=proc)
        except RuntimeError as err:
            raise AssertionError(log.read_text()[-3000:]) from err
        descendants = psutil.Process(proc.pid).children(recursive=True)
        names = sorted({p.name() for p in descendants})
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        stop_s = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _, running = psutil.wait_procs(descendants, timeout=2)  # a killed process may take a moment to be reaped
    left = [f"{p.pid}" for p in running if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    print(f"kdgate serve stopped {stop_s:.1f} s after SIGINT; it had run {len(descendants)} processes ({names})")
    assert stop_s <= 10.0, log.read_text()[-2000:]
    assert left == []


def test_a_taken_port_is_named_with_its_holder_before_ray_starts(onnx_models, tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(gateway_config(onnx_models, tmp_path)))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(serve_command(path, port), env=serve_env(), capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert f"port {port} (--port) is in use by" in lines[-1] and f"pid {os.getpid()}" in lines[-1], result.stderr
    assert time.monotonic() - started < 20  # no Ray start before the check
