"""A worker node lost under load, on a real multi-node Ray cluster (head + 2 workers on this machine).

The gateway runs 2 Gateway (ingress) and 2 teacher replicas, one of each per worker node
(``max_replicas_per_node: 1``, a label selector preferring the workers, the head as fallback),
plus the rollout controller on a worker, holding a paused rollout at 30 %. Clients send load to
the head node's ingress; one worker node is killed (raylet, agents and workers, SIGKILL by pid).
Measured: requests and failures, when Ray declared the node dead, when Serve had every
deployment HEALTHY again at its replica count off the dead node, and the split and rollout
state afterwards. A teacher call in flight on the lost node is retried inside the gateway; a
request in flight on the lost node's Gateway replica dies with it (the client sees the
connection drop), so the client retries a dropped connection or a 5xx once, a second later,
and the test counts those retries: at most one per client thread.
"""
from __future__ import annotations

import os
import threading
import time

import httpx
import pytest
from cluster_support import LABEL, LocalCluster
from gateway_support import ADMIN_TOKEN, gateway_config, steady_load, wait_ready

from gateway.serve.local import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
APP = "kdgate"
REPLICAS = {"Gateway": 2, "model-teacher": 2, "rollout": 1}
# On a worker node when one has room, on the head otherwise (where replacements go).
ON_WORKERS = {"label_selector": {LABEL: "!head"}, "fallback_strategy": [{"label_selector": {LABEL: "head"}}]}
STUDENT_WEIGHT = 30.0
CLIENTS = 3


def _application(onnx_models, tmp_path) -> dict:
    (tmp_path / "token").write_text(ADMIN_TOKEN)
    config = gateway_config(onnx_models, tmp_path, admin={"token_file": str(tmp_path / "token")})
    config["rollout"] = {"steps": [10, 50, 100], "interval_s": 1.0,
                         "state_path": str(tmp_path / "rollout.sqlite"), "evidence_dir": str(tmp_path / "evidence")}
    spread = {"max_replicas_per_node": 1, "ray_actor_options": {"num_cpus": 0.25, **ON_WORKERS}}
    return {"name": APP, "route_prefix": "/", "import_path": "gateway.serve.app:build_app", "args": {"config": config},
            "deployments": [{"name": "Gateway", "num_replicas": 2, "user_config": {}, **spread},
                            {"name": "model-teacher", "num_replicas": 2, **spread},
                            {"name": "rollout", "ray_actor_options": {"num_cpus": 0, **ON_WORKERS}}]}


def _placement(details: dict) -> dict[str, list[tuple[str, str]]]:
    """``{deployment: [(node label, replica state), ...]}`` from the driver's details."""
    nodes = details["nodes"]
    deployments = details["serve"]["applications"][APP]["deployments"]
    return {name: sorted((nodes.get(r.get("node_id"), {}).get("label") or "?", r["state"]) for r in d["replicas"])
            for name, d in deployments.items()}


def _recovered(details: dict, dead: str) -> bool:
    """Every deployment HEALTHY with its replica count RUNNING, none on the dead node."""
    deployments = details["serve"]["applications"][APP]["deployments"]
    placement = _placement(details)
    return all(deployments[name]["status"] == "HEALTHY"
               and [s for label, s in placement[name] if label != dead] == ["RUNNING"] * count
               and all(label != dead for label, _ in placement[name])
               for name, count in REPLICAS.items())


def _splits(url: str, reads: int = 12) -> set[float]:
    """Student weights answered by ``reads`` GET /admin/split (spread over the Gateway replicas)."""
    return {httpx.get(f"{url}/admin/split", headers=AUTH, timeout=10).json()["weights"]["student"]
            for _ in range(reads)}


def _seconds(value: float | None) -> str:
    """``12.3 s``; None: not seen while the test watched (Serve can recover before Ray marks the node dead)."""
    return "not seen" if value is None else f"{value:.1f} s"


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s")


def test_losing_a_worker_node_under_load_fails_no_request_and_serve_reschedules(onnx_models, tmp_path):
    fast = os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "1") != "0"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with LocalCluster(workers=["b", "c"], fast=fast) as cluster:
        driver = cluster.driver()
        driver.call("deploy", http_port=port, proxy_location="HeadOnly",
                    applications=[_application(onnx_models, tmp_path)])
        wait_ready(url)
        httpx.post(f"{url}/admin/rollout/set_weight", json={"weight": STUDENT_WEIGHT}, headers=AUTH,
                   timeout=10).raise_for_status()
        _wait(lambda: _splits(url) == {STUDENT_WEIGHT}, 30, "both Gateway replicas at the rollout's split")
        before = _placement(driver.call("details"))
        rollout_before = httpx.get(f"{url}/admin/rollout", headers=AUTH, timeout=10).json()["status"]
        (victim, _), = before["rollout"]
        assert victim in ("b", "c") and all(len({label for label, _ in before[name]}) == 2
                                            for name in ("Gateway", "model-teacher")), before
        assert all(victim in {label for label, _ in before[name]} for name in ("Gateway", "model-teacher")), before

        stop, sent, failures, retried, started = threading.Event(), [], [], [], time.monotonic()
        clients = [threading.Thread(target=steady_load, args=(url, stop, sent, failures, retried),
                                   kwargs={"started": started})
                   for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        try:
            time.sleep(3.0)
            killed_at, sent_at_kill = time.monotonic(), len(sent)
            killed = cluster.kill_node(victim)
            dead_s, recovered_s, details = None, None, None
            deadline = killed_at + 120
            while time.monotonic() < deadline and recovered_s is None:
                details = driver.call("details")
                if dead_s is None and not any(n["alive"] for n in details["nodes"].values() if n["label"] == victim):
                    dead_s = time.monotonic() - killed_at
                if _recovered(details, victim):
                    recovered_s = time.monotonic() - killed_at
                time.sleep(0.5)
            time.sleep(3.0)   # traffic on the recovered deployment
        finally:
            stop.set()
            for client in clients:
                client.join()
        after = _placement(details)
        rollout_after = httpx.get(f"{url}/admin/rollout", headers=AUTH, timeout=10).json()["status"]
        split_after = _splits(url)
    print(f"\nnode {victim} killed ({len(killed)} processes); placement before {before}, after {after}; "
          f"{len(sent)} requests ({len(sent) - sent_at_kill} after the kill, the kill at "
          f"{killed_at - started:.2f} s), {len(retried)} retried by the client {retried[:4]}, {len(failures)} failed "
          f"{failures[:5]}; node declared dead after {_seconds(dead_s)}; Serve recovered after {_seconds(recovered_s)}; "
          f"split after {split_after}; rollout after {rollout_after['phase']} {rollout_after['weight']} %")
    assert recovered_s is not None, f"Serve did not recover within 120 s: {after}"
    assert failures == [], failures[:10]
    # Only the requests in flight on the lost node's Gateway replica may need the client's retry.
    assert len(retried) <= CLIENTS, retried
    assert split_after == {STUDENT_WEIGHT}
    assert ({k: rollout_after[k] for k in ("phase", "weight", "started_at")}
            == {k: rollout_before[k] for k in ("phase", "weight", "started_at")}), (rollout_before, rollout_after)
    assert len(sent) - sent_at_kill > 20
    assert not cluster.leftovers()
