"""Faults: a Triton teacher that goes down and comes back, replicas and the rollout controller killed."""
from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from gateway_support import ADMIN_TOKEN, gateway_config, steady_load

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TEACHER = {"x-kdgate-force-variant": "teacher"}
STUDENT = {"x-kdgate-force-variant": "student"}
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _predict(url: str, x: np.ndarray, headers: dict) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/models/mnist1d:predict", json={"instances": x.tolist()},
                          headers=headers, timeout=30)
    return response, time.perf_counter() - started


def test_triton_down_fails_fast_with_503_retry_after_and_recovers_by_itself(
        app_factory, triton_factory, onnx_models, tmp_path):
    triton, ports = triton_factory()
    config = gateway_config(onnx_models, tmp_path)
    config["variants"][0].update(backend="triton", model_path=None, batching={"enabled": False}, timeout_s=1.0,
                                 triton={"url": f"127.0.0.1:{ports['http']}", "model_name": "kdgate-teacher"})
    url = app_factory("triton-faults", config)
    x = onnx_models["x"][:2]
    assert _predict(url, x, TEACHER)[0].status_code == 200

    triton.stop()
    down, seconds = _predict(url, x, TEACHER)
    assert down.status_code == 503, down.text
    assert down.headers["retry-after"] == "1" and "no variant could answer" in down.json()["error"]
    assert seconds < 3.0, f"a dead Triton took {seconds:.2f} s to fail"
    assert _predict(url, x, STUDENT)[0].status_code == 200   # the in-process student keeps serving

    down_at = time.monotonic()
    triton_factory(ports)                                 # Triton returns on the same address
    deadline, response = time.monotonic() + 60, down
    while time.monotonic() < deadline:
        response, _ = _predict(url, x, TEACHER)
        if response.status_code == 200:
            break
        time.sleep(0.5)
    print(f"dead Triton answered 503 in {seconds * 1000:.0f} ms; "
          f"teacher served again {time.monotonic() - down_at:.1f} s after the restart began")
    assert response.status_code == 200, response.text
    assert response.headers["x-kdgate-variant"] == "teacher"


def _replicas(app: str, deployment: str) -> set[str]:
    """Names of the live replica actors of ``app``'s ``deployment``."""
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#")}


# The student is colocated in the Gateway (ingress) replica: killing one of those kills a student.
# A teacher replica's death is absorbed inside the gateway (one retry on another replica). An
# ingress replica's death fails the requests in flight on it at the proxy (seen: 1 in 3608, a
# plain 500), which only the client can retry: that case runs with a one-retry client and
# reports how many requests needed it.
@pytest.mark.parametrize("deployment, weights, client_retry", [
    ("model-teacher", {"teacher": 100, "student": 0}, False),
    ("Gateway", {"teacher": 0, "student": 100}, True),
])
def test_killing_a_replica_under_load_fails_no_request_and_serve_replaces_it(
        serve_instance, onnx_models, tmp_path, deployment, weights, client_retry):
    import threading

    import ray
    from ray import serve

    from gateway_support import serve_deploy, wait_ready

    app = "kill-replica"
    config = gateway_config(onnx_models, tmp_path)
    config["routing"]["weights"] = weights
    serve_deploy(config, name=app, prefix=f"/{app}", deployments=[
        {"name": deployment, "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1}}])
    url = f"{serve_instance['url']}/{app}"
    wait_ready(url)
    before = _replicas(app, deployment)
    assert len(before) == 2, before
    stop, sent, failures, retried = threading.Event(), [], [], []
    workers = [threading.Thread(target=steady_load, args=(url, stop, sent, failures, retried),
                                kwargs={"client_retry": client_retry})
               for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(2.0)
        victim = sorted(before)[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)   # SIGKILL of its worker process
        killed_at, sent_at_kill = time.monotonic(), len(sent)
        deadline, after = killed_at + 60, before
        while time.monotonic() < deadline:
            after = _replicas(app, deployment)
            if len(after) == 2 and victim not in after:
                break
            time.sleep(0.5)
        replaced_s = time.monotonic() - killed_at
        time.sleep(1.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        serve.delete(app)
    print(f"killed {victim}: replaced after {replaced_s:.1f} s; {len(sent)} requests "
          f"({len(sent) - sent_at_kill} after the kill), {len(retried)} retried by the client "
          f"{retried[:2]}, {len(failures)} failed")
    assert victim not in after and len(after) == 2, after
    assert failures == [], failures[:5]
    assert len(retried) <= 4, retried   # at most the requests in flight on the killed replica
    assert len(sent) - sent_at_kill > 20


def _rollout(url: str) -> dict:
    return httpx.get(f"{url}/admin/rollout", headers=AUTH, timeout=10).json()["status"]


def _kill_controller_and_wait(app: str, url: str, split_seen: list) -> float:
    """SIGKILL the RolloutHost replica; wait for its replacement, sampling the live split meanwhile."""
    import ray

    (victim,) = _replicas(app, "rollout")
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    killed_at = time.monotonic()
    while time.monotonic() < killed_at + 60:
        split_seen.append(httpx.get(f"{url}/admin/split", headers=AUTH, timeout=10).json()["weights"]["student"])
        if (alive := _replicas(app, "rollout")) and victim not in alive:
            try:
                _rollout(url)
                return time.monotonic() - killed_at
            except (httpx.HTTPError, KeyError):
                pass
        time.sleep(0.25)
    raise AssertionError("the rollout controller was not replaced within 60 s")


def test_a_killed_rollout_controller_comes_back_with_its_status_and_the_split_unchanged(
        serve_instance, onnx_models, tmp_path):
    import threading

    from gateway_support import deploy, drifting_traffic, held_rollout_config, wait_for_student_weight, wait_ready
    from ray import serve

    app = "kill-controller"
    deploy(held_rollout_config(onnx_models, tmp_path, interval_s=1.0, lookback_s=6.0), name=app, prefix=f"/{app}")
    url = f"{serve_instance['url']}/{app}"
    wait_ready(url)
    stop, shift, failures, sent, split_seen = threading.Event(), [0.0], [], [], []
    worker = threading.Thread(target=drifting_traffic, args=(url, stop, shift, failures, sent))
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while _rollout(url)["weight"] < 50 and time.monotonic() < deadline:
            time.sleep(0.5)
        held = _rollout(url)
        assert (held["phase"], held["weight"]) == ("Progressing", 50.0), "\n".join(
            [f"{held['reason']} (verdict {held['last_verdict']}, error {held['last_error']!r})",
             *(f"{g['name']} {g['status']}: {g['detail']}" for g in held["last_gates"])])
        wait_for_student_weight(url, 50.0)          # the gateway replica has synced the step
        first_restart_s = _kill_controller_and_wait(app, url, split_seen)
        restored = _rollout(url)
        assert split_seen and set(split_seen) == {50.0}, split_seen     # weights unchanged meanwhile
        assert (restored["phase"], restored["weight"], restored["started_at"]) == (
            "Progressing", 50.0, held["started_at"])

        shift[0] = 3.0                                                     # the student goes bad...
        while _rollout(url)["phase"] != "RolledBack" and time.monotonic() < deadline + 60:
            time.sleep(0.5)
        assert _rollout(url)["phase"] == "RolledBack"
        wait_for_student_weight(url, 0.0)
        shift[0], split_seen = 0.0, []
        second_restart_s = _kill_controller_and_wait(app, url, split_seen)
        time.sleep(3.0)                                                    # ...and stays at 0 % after a restart
        after = _rollout(url)
        final_split = httpx.get(f"{url}/admin/split", headers=AUTH, timeout=10).json()["weights"]["student"]
    finally:
        stop.set()
        worker.join()
        serve.delete(app)
    print(f"controller replaced in {first_restart_s:.1f} s (at 50 %) and {second_restart_s:.1f} s "
          f"(rolled back); {len(sent)} requests, {len(failures)} failed")
    assert (after["phase"], after["weight"], final_split) == ("RolledBack", 0.0, 0.0), after
    assert set(split_seen) == {0.0}, split_seen
    assert failures == [], failures[:3]
