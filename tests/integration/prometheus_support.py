"""A real Prometheus (Debian's ``prometheus`` binary) scraping the session's Ray metrics export port.

Shared by the live tests that read the gateway's metrics through Prometheus (the ops
dashboards and alerts, the rollout's ``source: prometheus``). It runs on loopback with a
free port and a temporary data dir.

Example::

    with running_prometheus(serve_instance["metrics_url"], tmp_path) as url:
        query(url, 'up{job="kdgate"}')
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from gateway.serve.local import free_port

JOB = "kdgate"


@contextlib.contextmanager
def running_prometheus(metrics_url: str, work, *, rules: dict | None = None) -> Iterator[str]:
    """Prometheus scraping ``metrics_url`` (with ``rules``, a rules-file dict, loaded); yields its base URL.

    Skips the test when the binary is missing; fails it when the first scrape never succeeds.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed: `make system-deps` installs Debian's prometheus package")
    target = metrics_url.split("/")[2]
    config: dict = {
        # Rules every second; scrapes every 3 s with a 3 s timeout: late in a full test run the
        # session's Ray export port holds every app's series and one scrape took over 1 s (the
        # timeout a 1 s interval implies), so the target never came up.
        "global": {"scrape_interval": "3s", "scrape_timeout": "3s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }
    if rules is not None:
        (work / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config["rule_files"] = [str(work / "rules.yaml")]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = work / "prometheus.log"
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_first_scrape(url, proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _wait_for_first_scrape(url: str, proc: subprocess.Popen, log, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            up = httpx.get(f"{url}/api/v1/query", params={"query": f'up{{job="{JOB}"}} == 1'}, timeout=2).json()
            if up["data"]["result"]:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    pytest.fail(f"prometheus did not scrape the gateway's metrics port within {timeout_s:.0f} s: "
                f"{target_health(url)}\n{log.read_text()[-2000:]}")


def target_health(url: str) -> str:
    """The scrape target's health, last error and last scrape duration, as Prometheus reports them."""
    try:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    except (httpx.HTTPError, ValueError, KeyError) as err:
        return f"targets unreadable ({err!r})"
    return "; ".join(f"{t.get('scrapeUrl')}: {t.get('health')}, last error {t.get('lastError')!r}, "
                     f"last scrape {t.get('lastScrapeDuration')} s" for t in targets) or "no targets"


def query(prometheus: str, promql: str) -> list[dict]:
    """An instant query; fails the test on any error Prometheus reports."""
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{promql}\n-> {body}"
    return body["data"]["result"]
