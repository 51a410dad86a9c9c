"""py-spy profile of the Gateway replica under student-path load: share of samples per area.

Starts LocalServe with the bench's gateway app (100 % colocated student, shadow off), keeps
``--clients`` sequential HTTP clients busy, records the Gateway replica with
``py-spy record --format raw`` for ``--seconds``, and prints the share of samples whose
stack passes through Ray's metric calls, kdgate's metric buffer, the window stats, and
capture. Run it under the heavy lock::

    flock /tmp/kdgate-heavy.lock .venv/bin/python loadtests/profile_gateway.py --out runs/bench/profile.txt
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtests"))
AREAS = {  # label -> substrings of a frame's file path or function name
    "ray metric writes": ("ray/util/metrics.py", "ray/serve/metrics.py"),
    "kdgate metric buffer": ("gateway/serve/metric_buffer.py",),
    "window stats": ("gateway/core/stats.py",),
    "capture": ("gateway/capture.py",),
}


def replica_pid() -> int:
    out = subprocess.run(["pgrep", "-f", "ServeReplica:gw:Gateway"], capture_output=True, text=True).stdout.split()
    if not out:
        raise SystemExit("no Gateway replica process found")
    return int(out[0])


def shares(raw: str) -> dict[str, float]:
    """Share of samples (collapsed-stack lines ``frames count``) touching each area."""
    total, hits = 0, dict.fromkeys(AREAS, 0)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for area, needles in AREAS.items():
            if any(n in stack for n in needles):
                hits[area] += int(count)
    return {a: (h / total if total else 0.0) for a, h in hits.items()} | {"samples": total}


def load(url: str, body: bytes, stop: threading.Event) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            client.post(url, content=body, headers={"content-type": "application/json"})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    import json

    from ray import serve

    from bench_gateway import _gateway_config, demo_or_tiny_models
    from gateway.serve.app import build_app
    from gateway.serve.local import LocalServe

    with tempfile.TemporaryDirectory() as tmp_name, LocalServe(fast=True, num_cpus=4) as local:
        tmp = pathlib.Path(tmp_name)
        args.tiny = False
        student, teacher, features = demo_or_tiny_models(args, tmp)
        (tmp / "token").write_text("t")
        serve.run(build_app({"config": _gateway_config(student, teacher, tmp, batching=False)}), name="gw",
                  route_prefix="/gw")
        url, body = f"{local.url}/gw/v1/models/bench:predict", json.dumps({"instances": [[0.1] * features]}).encode()
        stop = threading.Event()
        threads = [threading.Thread(target=load, args=(url, body, stop), daemon=True) for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(2.0)  # warm up
        raw_path = tmp / "raw.txt"
        py_spy = str(pathlib.Path(sys.executable).with_name("py-spy"))  # the venv's, not PATH's
        subprocess.run([py_spy, "record", "--pid", str(replica_pid()), "--duration", str(int(args.seconds)),
                        "--format", "raw", "--rate", "200", "--nonblocking", "-o", str(raw_path)],
                       check=True, capture_output=True)
        stop.set()
        result = shares(raw_path.read_text())
    text = "\n".join(f"{k}: {v:.2%}" if k != "samples" else f"samples: {v}" for k, v in result.items())
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
