"""The driver of a :class:`cluster_support.LocalCluster`: a subprocess joined to it (``RAY_ADDRESS``).

The test process never joins the cluster (it may hold the session's LocalServe); it sends
this process one JSON object per line on stdin and reads one JSON answer per line:

- ``{"op": "deploy", "http_port": P, "proxy_location": "HeadOnly", "applications": [...]}``
  starts Serve (HTTP on 127.0.0.1:P) and deploys like ``serve deploy`` (declarative config);
- ``{"op": "details"}`` answers ``{"nodes": {node_id: {"label", "alive"}}, "serve": <Serve's
  instance details: applications, deployments, replicas with node_id and pid>}``.

A failure answers ``{"error": "..."}``; EOF on stdin ends the driver.
"""
from __future__ import annotations

import json
import sys
import traceback

import ray
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

LABEL = "kdgate-node"


def deploy(http_port: int, proxy_location: str, applications: list[dict]) -> dict:
    serve.start(proxy_location=proxy_location, http_options={"host": "127.0.0.1", "port": http_port})
    _get_global_client().deploy_apps(ServeDeploySchema(applications=applications), _blocking=True)
    return {"deployed": [app["name"] for app in applications]}


def details() -> dict:
    nodes = {n["NodeID"]: {"label": n.get("Labels", {}).get(LABEL), "alive": n["Alive"]} for n in ray.nodes()}
    return {"nodes": nodes, "serve": _get_global_client().get_serve_details()}


OPS = {"deploy": deploy, "details": details}


def main() -> None:
    ray.init(log_to_driver=False)
    out = sys.stdout
    sys.stdout = sys.stderr  # Ray and Serve print; only answers go to the real stdout
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = OPS[request.pop("op")](**request)
        except Exception as err:  # noqa: BLE001 -- the test reads the message
            answer = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        out.write(json.dumps(answer, default=str) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
