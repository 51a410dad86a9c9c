"""The fast modes replay a request whose replica died before answering, wherever the gateway runs.

Local Serve, ``kdgate serve`` and every Ray pod on Kubernetes set the same HAProxy ``retry-on``
(measured in tests/integration/gateway/test_gateway_multinode.py: without it, the requests in
flight on a lost node's Gateway replica fail with a dropped connection).
"""
from __future__ import annotations

import pytest
from k8s_fixtures import OVERLAYS, of_kind, ray_pod_templates, render

from gateway.serve.local import HAPROXY_RETRY_ON, serve_environment

NAME, VALUE = HAPROXY_RETRY_ON


def test_fast_modes_replay_a_request_whose_replica_closed_without_an_answer():
    assert "empty-response" in VALUE.split() and "conn-failure" in VALUE.split()
    assert serve_environment(fast=True)[NAME] == VALUE
    assert NAME not in serve_environment(fast=False)   # Ray Serve's defaults stay its defaults


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_pod_sets_the_same_retry_policy(overlay):
    (rayservice,) = of_kind(render(overlay), "RayService")
    for template in ray_pod_templates(rayservice):
        for container in template["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get(NAME) == VALUE, (overlay, container["name"])
