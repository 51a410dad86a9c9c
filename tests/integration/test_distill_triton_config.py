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


def test_real_triton_accepts_a_text_models_config(tmp_path):
    """Token ids in (INT64, any sequence length), as the text pipelines write triton/."""
    torch.manual_seed(0)

    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table, self.head = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3)

        def forward(self, ids):
            return self.head(self.table(ids).mean(dim=1))

    ids = np.random.default_rng(0).integers(1, 50, size=(6, 12)).astype(np.int64)
    exported = export_onnx(Bag(), tmp_path / "student.onnx", ids, dtype=np.int64)
    write_triton_model(tmp_path / "triton", "kdgate-student", exported.path, (-1,), 3, input_type="TYPE_INT64")
    assert "data_type: TYPE_INT64" in (tmp_path / "triton" / "kdgate-student" / "config.pbtxt").read_text()
    log = triton_load_log(tmp_path / "triton")
    assert BACKEND_MISSING in log, log[-3000:]
