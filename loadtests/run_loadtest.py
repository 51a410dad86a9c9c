"""`make loadtest`: Locust headless against a local gateway, bounded in time; fails on any failed request.

Without ``--url`` it starts ``kdgate serve CONFIG`` on free loopback ports, waits until
the gateway is ready, runs ``loadtests/locustfile.py`` (its step shape ends the run; a
subprocess timeout bounds it as well), writes Locust's CSV files under
``--out`` and stops the gateway. Exit status: 0 only when requests were made and none
failed.

Example:
    $ python loadtests/run_loadtest.py --config deployments/local.yaml --out runs/loadtest
    $ python loadtests/run_loadtest.py --url http://127.0.0.1:8000 --steps 2 --step-seconds 5
"""
from __future__ import annotations

import argparse
import csv
import os
import pathlib
import signal
import subprocess
import sys
import time

from gateway.serve.local import free_port, wait_ready

HERE = pathlib.Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
READY_TIMEOUT_S = 240.0


def run_locust(url: str, out: pathlib.Path, *, steps: int, step_seconds: float, step_users: int,
               model: str = "mnist1d") -> dict:
    """Run the locustfile headless against ``url``; return the CSV's aggregated row (with ``exit_code``)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KDGATE_STEPS": str(steps), "KDGATE_STEP_SECONDS": str(step_seconds),
           "KDGATE_STEP_USERS": str(step_users), "KDGATE_MODEL": model}
    bound_s = steps * step_seconds + 15
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
               "--csv", str(out / "kdgate"), "--only-summary",
               "--stop-timeout", "5", "--exit-code-on-error", "1", "--loglevel", "WARNING"]
    done = subprocess.run(command, env=env, timeout=bound_s + 60, cwd=HERE.parent)
    with (out / "kdgate_stats.csv").open() as f:
        aggregated = next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")
    return {**aggregated, "exit_code": done.returncode}


def verdict(summary: dict) -> str | None:
    """Why the run failed (None when it passed)."""
    requests, failures = int(summary["Request Count"]), int(summary["Failure Count"])
    if summary["exit_code"] != 0:
        return f"locust exited with status {summary['exit_code']} ({failures} failed of {requests})"
    if requests == 0:
        return "no requests were made"
    if failures:
        return f"{failures} of {requests} requests failed"
    return None


def missing_models(config: pathlib.Path) -> list[str]:
    """Model files a gateway config (or Ray Serve config) names that do not exist (URIs: the replicas fetch them)."""
    import yaml

    from gateway.model_store import is_remote

    document = yaml.safe_load(config.read_text())
    configs = [a["args"]["config"] for a in document["applications"]] if "applications" in document else [document]
    paths = [v.get(key) for c in configs for v in c["variants"] for key in ("model_path", "manifest_path")]
    return [p for p in paths if p and not is_remote(p) and not pathlib.Path(p).exists()]


def _start_gateway(config: pathlib.Path, log: pathlib.Path) -> tuple[subprocess.Popen, str]:
    port, metrics_port = free_port(), free_port()
    kdgate = pathlib.Path(sys.executable).with_name("kdgate")
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    proc = subprocess.Popen([str(kdgate), "serve", str(config), "--host", "127.0.0.1", "--port", str(port),
                             "--metrics-port", str(metrics_port), "--num-cpus", "2"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # kdgate serve shuts Serve down on Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=pathlib.Path, default=pathlib.Path("deployments/local.yaml"))
    parser.add_argument("--url", help="An already running gateway (loopback); no gateway is started.")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/loadtest"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--step-users", type=int, default=4)
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S, help="Seconds to wait for the gateway.")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    missing = [] if args.url else missing_models(args.config)
    if missing:
        print(f"loadtest: {args.config} needs {', '.join(missing)}: run `make demo` first, or pass --url",
              file=sys.stderr)
        return 1
    proc, url = (None, args.url) if args.url else _start_gateway(args.config, args.out / "gateway.log")
    try:
        wait_ready(url, args.ready_timeout, proc)
        summary = run_locust(url, args.out, steps=args.steps, step_seconds=args.step_seconds,
                             step_users=args.step_users)
    except (RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired, StopIteration) as err:
        print(f"loadtest: {err} (gateway log: {args.out / 'gateway.log'})", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            _stop(proc)
    problem = verdict(summary)
    print(f"loadtest: {summary['Request Count']} requests, {summary['Failure Count']} failed, "
          f"p50 {summary['50%']} ms, p99 {summary['99%']} ms, {float(summary['Requests/s']):.1f} req/s; "
          f"CSV in {args.out}")
    if problem:
        print(f"loadtest FAILED: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
