"""A real Triton server (pytriton's tritonserver 2.51) reads the exported model repository.

The bundled server has only the Python backend, so it cannot *run* an onnxruntime model.
It does validate config.pbtxt fully before it looks for the backend, so "unable to find
backend library for backend 'onnxruntime'" proves Triton accepted the config, and a broken
config is rejected with Triton's own message first.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.export import export_onnx, write_triton_model

pytestmark = pytest.mark.integration

TRITON_HOME = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
    "site-packages" / "pytriton" / "tritonserver"
BACKEND_MISSING = "unable to find backend library for backend 'onnxruntime'"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def triton_load_log(repo: Path) -> str:
    """Start tritonserver on ``repo`` (it exits after failing to load) and return its log."""
    binary = TRITON_HOME / "bin" / "tritonserver"
    if not binary.exists():
        pytest.skip("nvidia-pytriton's tritonserver is not installed")
    # Its Python stub links the system libpython, older than this interpreter (DESIGN.md).
    env = {"LD_LIBRARY_PATH": sysconfig.get_config_var("LIBDIR"), "PATH": "/usr/bin:/bin"}
    command = [str(binary), "--model-repository", str(repo), "--backend-directory",
               str(TRITON_HOME / "backends"), "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1",
               "--http-port", str(_free_port()), "--grpc-port", str(_free_port()),
               "--metrics-port", str(_free_port()), "--exit-on-error", "true", "--exit-timeout-secs", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    return done.stdout + done.stderr


@pytest.fixture
def model_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    x = np.random.default_rng(0).normal(size=(20, 16)).astype(np.float32)
    exported = export_onnx(model, tmp_path / "student.onnx", x)
    return write_triton_model(tmp_path / "triton", "kdgate-student", exported.path, (16,), 4)


def test_real_triton_accepts_the_exported_config(model_dir):
    log = triton_load_log(model_dir.parent)
    assert "kdgate-student" in log
    assert BACKEND_MISSING in log, log[-3000:]


def test_real_triton_rejects_a_broken_config(model_dir):
    config = model_dir / "config.pbtxt"
    config.write_text(config.read_text().replace("preferred_batch_size: 32", "preferred_batch_size: 128"))
    log = triton_load_log(model_dir.parent)
    assert "preferred size must be <= max batch size" in log, log[-3000:]
    assert BACKEND_MISSING not in log
