"""One source of truth for the split (issue 11, points 4 and 5), on real Ray Serve with 2 and 3 Gateway replicas.

Each response names the Gateway replica that answered (``x-kdgate-replica``) and the change-log
entry whose split it serves (``x-kdgate-split-seq``), so convergence is measured per replica,
under load, from the client's side.
"""
from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from gateway_support import ADMIN_TOKEN, gateway_config, serve_deploy, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
CONVERGE_S = 2.0
RETRIES = 3
TEACHER_ONLY, STUDENT_ONLY = {"teacher": 100, "student": 0}, {"teacher": 0, "student": 100}


class Load:
    """Bounded V1 load from ``threads`` clients; every answer is kept as (time, replica, seq, variant).

    A 5xx or a dropped connection is retried up to :data:`RETRIES` times, 0.2 s apart (inference is
    idempotent; a retry may still meet the dying replica before the proxy drops it), each counted
    in ``retried``; ``failures`` holds what still failed.
    """

    def __init__(self, url: str, threads: int = 6):
        self.url, self.records, self.failures, self.retried = url, [], [], []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(seed,)) for seed in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                body = {"instances": rng.normal(size=(2, 40)).round(3).tolist()}
                response = self._post(client, body)
                for _ in range(RETRIES):
                    if response.status_code < 500:
                        break
                    self.retried.append((response.status_code, response.text[:200]))
                    time.sleep(0.2)
                    response = self._post(client, body)
                if response.status_code != 200:
                    self.failures.append((response.status_code, response.text[:200]))
                    continue
                h = response.headers
                self.records.append((time.monotonic(), h["x-kdgate-replica"], int(h["x-kdgate-split-seq"]),
                                     h["x-kdgate-variant"]))

    def _post(self, client: httpx.Client, body: dict) -> httpx.Response:
        try:
            return client.post(f"{self.url}/v1/models/mnist1d:predict", json=body)
        except httpx.TransportError as err:  # a connection reset counts like a 5xx
            return httpx.Response(599, text=repr(err))

    def replicas(self, since: float = 0.0) -> set[str]:
        """Replicas that answered at or after ``since``."""
        return {r for t, r, _, _ in self.records if t >= since}

    def wait_for_replicas(self, wanted: set[str] | int, since: float = 0.0, timeout_s: float = 60.0) -> set[str]:
        """Until ``wanted`` replicas (a set of ids, or a count) answered since ``since``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = self.replicas(since)
            if (seen >= wanted) if isinstance(wanted, set) else len(seen) >= wanted:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"replicas seen {self.replicas(since)}, wanted {wanted}")

    def wait_for_new_replica(self, known: set[str], since: float, timeout_s: float = 90.0) -> str:
        """The first replica not in ``known`` that answered since ``since`` (a replacement)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if new := sorted(self.replicas(since) - known):
                return new[0]
            time.sleep(0.1)
        raise AssertionError(f"no replica beyond {known} answered within {timeout_s:.0f} s")

    def convergence(self, replicas: set[str], seq: int, since: float, timeout_s: float = 20.0) -> dict[str, float]:
        """Seconds from ``since`` until each replica's first answer under change ``seq`` (or later)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            first = {}
            for t, replica, served, _ in self.records:
                if replica in replicas and served >= seq and replica not in first:
                    first[replica] = t - since
            if set(first) == replicas:
                return first
            time.sleep(0.1)
        raise AssertionError(f"not every replica served change {seq}: {first}")

    def check_after(self, replica: str, seq: int, at: float, variant: str, grace_s: float = 0.5) -> None:
        """Once ``replica`` served ``seq`` (at ``at``), it never went back, and every answer came from ``variant``.

        Answers received within ``grace_s`` after ``at`` are skipped: another client thread may
        still receive one the replica built just before it changed.
        """
        later = [(served, v) for t, r, served, v in self.records if r == replica and t > at + grace_s]
        assert all(served >= seq for served, _ in later), f"{replica} went back to an older split"
        assert {v for served, v in later if served == seq} <= {variant}, later[:5]


def _gateway_replicas(app: str) -> set[str]:
    import ray

    prefix = f"SERVE_REPLICA::{app}#Gateway#"
    return {a["name"][len(prefix):] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(prefix)}


def _config(onnx_models, tmp_path) -> dict:
    """All traffic on the teacher; the admin token file holds :data:`ADMIN_TOKEN`."""
    (tmp_path / "token").write_text(ADMIN_TOKEN)
    return gateway_config(onnx_models, tmp_path, routing={"weights": TEACHER_ONLY, "allow_force": True},
                          admin={"token_file": str(tmp_path / "token")})


def _deploy(config: dict, app: str, replicas: int, overlay: dict | None = None) -> None:
    serve_deploy(config, name=app, prefix=f"/{app}", overlay=overlay, deployments=[
        {"name": "Gateway", "num_replicas": replicas, "ray_actor_options": {"num_cpus": 0.1}}])


def _put_split(url: str, weights: dict) -> dict:
    response = httpx.put(f"{url}/admin/split", json={"weights": weights}, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _split(url: str) -> dict:
    return httpx.get(f"{url}/admin/split", headers=AUTH, timeout=30).json()


@pytest.mark.parametrize("replicas", [2, 3])
def test_put_split_under_load_reaches_every_replica_within_2_s_with_no_failed_request(
        serve_instance, onnx_models, tmp_path, replicas):
    from ray import serve

    app = f"split-{replicas}"
    config = _config(onnx_models, tmp_path)
    _deploy(config, app, replicas)
    url = f"{serve_instance['url']}/{app}"
    try:
        wait_ready(url)
        with Load(url) as load:
            ids = load.wait_for_replicas(replicas)
            sent_at = time.monotonic()
            answer = _put_split(url, STUDENT_ONLY)
            seq = answer["change"]["seq"]
            converged = load.convergence(ids, seq, sent_at)
            time.sleep(1.0)
        stated = _split(url)
    finally:
        serve.delete(app)
    print(f"{replicas} Gateway replicas: PUT /admin/split served by each replica after "
          + ", ".join(f"{s:.2f} s" for s in sorted(converged.values()))
          + f"; {len(load.records)} requests, {len(load.retried)} retried, {len(load.failures)} failed")
    assert answer["weights"] == {"teacher": 0.0, "student": 100.0}
    assert (stated["change"]["seq"], stated["change"]["source"]) == (seq, "admin-api")
    assert max(converged.values()) <= CONVERGE_S, converged
    for replica, after in converged.items():
        load.check_after(replica, seq, sent_at + after, "student")
    assert load.failures == [] and load.retried == [], (load.failures[:3], load.retried[:3])


def test_the_last_split_survives_a_killed_replica_a_restarted_app_and_loses_only_to_an_edited_file(
        serve_instance, onnx_models, tmp_path):
    import ray
    from ray import serve

    app = "split-lifecycle"
    config = _config(onnx_models, tmp_path)
    _deploy(config, app, 2)
    url = f"{serve_instance['url']}/{app}"
    try:
        wait_ready(url)
        with Load(url) as load:
            before = load.wait_for_replicas(2)
            seq = _put_split(url, STUDENT_ONLY)["change"]["seq"]
            load.convergence(before, seq, time.monotonic())
            victim = sorted(before)[0]
            ray.kill(ray.get_actor(f"SERVE_REPLICA::{app}#Gateway#{victim}", namespace="serve"), no_restart=True)
            killed_at = time.monotonic()
            new = load.wait_for_new_replica(before, since=killed_at)
            replaced_s = time.monotonic() - killed_at
            load.check_after(new, seq, killed_at, "student", grace_s=0.0)  # the replacement serves the last split
        kill_load = load

        serve.delete(app)                                      # controller and replicas gone...
        _deploy(config, app, 2)                                # ...and the same file redeployed
        wait_ready(url)
        with Load(url) as load:
            load.wait_for_replicas(2)
            time.sleep(1.0)
            redeployed = _split(url)
            assert {v for *_, v in load.records} == {"student"}, "a redeploy brought the file's split back"

            # (it must differ from what was deployed: the same config again is no new change)
            edited = {"routing": {"weights": {"teacher": 30, "student": 70}}}
            edit_at = time.monotonic()
            _deploy(config, app, 2, overlay=edited)             # an edited file is the most recent change
            after_edit = _split(url)
            while after_edit["change"]["source"] != "serve-deploy" and time.monotonic() < edit_at + 30:
                time.sleep(0.2)                                # Serve reconfigures the replicas after it returns
                after_edit = _split(url)
            ids = load.wait_for_replicas(2, since=edit_at)
            edit_s = max(load.convergence(ids, after_edit["change"]["seq"], edit_at).values())
    finally:
        serve.delete(app)
    print(f"killed Gateway replica {victim} replaced by {new} after {replaced_s:.1f} s; "
          f"{len(kill_load.records)} requests, {len(kill_load.retried)} retried by the client, "
          f"{len(kill_load.failures)} failed {kill_load.failures[:2]}; edited file served by both after {edit_s:.1f} s")
    assert (redeployed["weights"]["student"], redeployed["change"]["source"]) == (100.0, "admin-api")
    assert redeployed["change"]["seq"] == seq
    assert (after_edit["weights"]["teacher"], after_edit["change"]["source"]) == (30.0, "serve-deploy")
    assert after_edit["change"]["seq"] > seq
    assert kill_load.failures == [] and load.failures == [], (kill_load.failures[:3], load.failures[:3])
    assert len(kill_load.retried) <= RETRIES * 6, kill_load.retried   # only requests in flight on the killed replica (6 clients)
