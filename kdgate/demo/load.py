"""Load and observation for the demo: Locust in a child process, a sampler of the admin API.

:class:`LocustLoad` runs real Locust (``locust --headless``) against the gateway and
stops it by its own process id; its CSV gives the client's view (requests, failures,
p50/p99). :class:`Sampler` polls ``/admin/split``, ``/admin/rollout`` and ``/admin/stats``
once a second in a thread and keeps one sample per poll (cumulative window stats
included), from which :mod:`kdgate.demo.report` computes the timeline.

Example::

    with LocustLoad(url, csv_prefix=out / "locust-good") as load, \
            Sampler(url, token, stage="good") as sampler:
        wait_for(sampler, lambda s: s["phase"] == "Guarding", timeout_s=120)
    load.summary()   # {"requests": 4021, "failures": 0, "p50_ms": 6.0, ...}
"""
from __future__ import annotations

import csv
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"  # the project's users: V1/V2, sticky keys, MNIST-1D rows


class LocustLoad:
    """Real Locust, headless, in a child process for the length of a ``with`` block.

    ``users`` closed-loop users of ``loadtests/locustfile.py`` (one step of its step
    shape, held up to ``max_s``), each with its own sticky ``x-user-id``.
    """

    def __init__(self, url: str, *, csv_prefix: pathlib.Path, users: int = 3, model: str = "mnist1d",
                 max_s: int = 600, shift_std: float = 0.0, env: dict[str, str] | None = None):
        self.url, self.csv_prefix = url, csv_prefix
        self.command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
                        "--csv", str(csv_prefix), "--loglevel", "WARNING", "--only-summary", "--stop-timeout", "2"]
        self.env = {**os.environ, "KDGATE_MODEL": model, "KDGATE_STEP_USERS": str(users), "KDGATE_STEPS": "1",
                    "KDGATE_STEP_SECONDS": str(max_s), "KDGATE_SHIFT_STD": str(shift_std), **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log_path = csv_prefix.with_name(csv_prefix.name + ".log")

    def __enter__(self) -> "LocustLoad":
        self.csv_prefix.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("w")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=ROOT, start_new_session=True)
        log.close()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (Locust writes its CSV and exits), SIGKILL if it lingers."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def summary(self) -> dict[str, Any]:
        """The Aggregated row of Locust's ``*_stats.csv`` (client-side view)."""
        return read_locust_stats(pathlib.Path(f"{self.csv_prefix}_stats.csv"))


def read_locust_stats(path: pathlib.Path) -> dict[str, Any]:
    """Requests, failures, p50/p99 (ms) and requests/s from a Locust stats CSV."""
    if not path.exists():
        return {"requests": 0, "failures": 0, "p50_ms": None, "p99_ms": None, "rps": None}
    with path.open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    row = rows.get("Aggregated") or next(iter(rows.values()), None)
    if row is None:
        return {"requests": 0, "failures": 0, "p50_ms": None, "p99_ms": None, "rps": None}

    def number(key: str) -> float | None:
        value = row.get(key, "")
        return float(value) if value not in ("", "N/A") else None

    return {"requests": int(number("Request Count") or 0), "failures": int(number("Failure Count") or 0),
            "p50_ms": number("50%"), "p99_ms": number("99%"), "rps": number("Requests/s")}


class AdminClient:
    """The gateway's admin API with the bearer token."""

    def __init__(self, url: str, token: str, timeout_s: float = 10.0):
        self.url = url
        self.client = httpx.Client(timeout=timeout_s, headers={"authorization": f"Bearer {token}"})

    def get(self, path: str) -> dict[str, Any]:
        response = self.client.get(f"{self.url}{path}")
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.client.close()


class Sampler:
    """Polls the admin API once a second in a thread; ``samples`` grows while it runs."""

    def __init__(self, url: str, token: str, *, stage: str, period_s: float = 1.0):
        self.admin = AdminClient(url, token)
        self.stage, self.period_s = stage, period_s
        self.samples: list[dict[str, Any]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{stage}", daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.admin.close()

    def latest(self) -> dict[str, Any] | None:
        return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._sample())
            except (httpx.HTTPError, ValueError):
                self.errors += 1  # a replica restarting: the next poll retries
            self._stop.wait(self.period_s)

    def _sample(self) -> dict[str, Any]:
        rollout = self.admin.get("/admin/rollout")["status"]
        return {"t": time.time(), "stage": self.stage, "weights": self.admin.get("/admin/split")["weights"],
                "phase": rollout["phase"], "rollout_weight": rollout["weight"], "reason": rollout.get("reason", ""),
                "candidate": rollout.get("candidate"), "stable": rollout.get("stable"),
                "last_verdict": rollout.get("last_verdict"), "stats": self.admin.get("/admin/stats")}


def wait_for(sampler: Sampler, until: Callable[[dict], bool], *, timeout_s: float,
             on_sample: Callable[[dict], None] | None = None) -> dict | None:
    """Block until a new sample satisfies ``until(sample)`` (or timeout); return that sample."""
    deadline, seen = time.monotonic() + timeout_s, len(sampler.samples)
    while time.monotonic() < deadline:
        if len(sampler.samples) > seen:
            seen = len(sampler.samples)
            sample = sampler.samples[-1]
            if on_sample is not None:
                on_sample(sample)
            if until(sample):
                return sample
        time.sleep(0.2)
    return None


def combined_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Locust summaries of consecutive runs as one: requests and failures add up, p99 the worst.

    >>> combined_stats([{"requests": 10, "failures": 0, "p50_ms": 2.0, "p99_ms": 9.0, "rps": 5.0},
    ...                 {"requests": 30, "failures": 1, "p50_ms": 4.0, "p99_ms": 7.0, "rps": 6.0}])["p99_ms"]
    9.0
    """
    if len(parts) == 1:
        return parts[0]
    worst = [p["p99_ms"] for p in parts if p.get("p99_ms") is not None]
    busiest = max(parts, key=lambda p: p["requests"])
    return {"requests": sum(p["requests"] for p in parts), "failures": sum(p["failures"] for p in parts),
            "p50_ms": busiest.get("p50_ms"), "p99_ms": max(worst) if worst else None, "rps": busiest.get("rps")}
