"""The RayService ``serveConfigV2`` for Kubernetes, generated from a ``deployments/`` file.

Ops edit one Serve config (``deployments/canary-5.yaml``: split, shadow, rollout policy);
:func:`k8s_serve_config` rewrites what differs in a cluster: listen on all interfaces,
models from the read-only models volume or a ``--models-uri`` (object storage, see
docs/artifacts.md), capture/audit/rollout state on the state
volume, the admin token from the mounted Secret, at least two autoscaled ``Gateway``
replicas (one replica or node lost must not stop traffic), and (profile ``gpu``) the
teacher on CUDA with one GPU. Every gateway config in the result is validated with the gateway's
own model, so a bad edit fails here, before ``kubectl apply``.

Example::

    doc = k8s_serve_config("deployments/canary-5.yaml", profile="gpu")
    doc["applications"][0]["args"]["config"]["variants"][0]["device"]   # "cuda"
"""
from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from gateway.core.config import GatewayConfig, load_gateway_config, merge_overlay
from gateway.core.errors import GatewayConfigError
from gateway.model_store import is_remote

MODELS_DIR = "/models"
STATE_DIR = "/var/lib/kdgate"
ADMIN_TOKEN_FILE = "/etc/kdgate/admin/token"
PROFILES = ("cpu", "gpu")
SERVE_PORT = 8000
GATEWAY_DEPLOYMENT = "Gateway"
# Two replicas so a lost replica or node never takes the ingress down; at most four: at
# 0.5 CPU each they take half of the base cluster's 4 CPUs (head 2 + one cpu worker 2),
# leaving the rest to the teacher. Serve's default target_ongoing_requests applies.
GATEWAY_MIN_REPLICAS = 2
GATEWAY_MAX_REPLICAS = 4


def k8s_serve_config(deployments_file: str | pathlib.Path, *, profile: str, models_uri: str | None = None) -> dict:
    """The Serve config of ``deployments_file`` rewritten for the cluster (see the module docstring).

    ``models_uri`` (e.g. ``s3://bucket/kdgate/v7``, where ``kdgate publish`` wrote the
    artifact folder) replaces the models volume: each model and manifest path becomes
    ``<models_uri>/<file name>``, fetched and verified by every replica. Paths that are
    already URIs in the source stay as they are.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    document = yaml.safe_load(pathlib.Path(deployments_file).read_text())
    if not isinstance(document, dict) or not document.get("applications"):
        raise GatewayConfigError([("applications", f"{deployments_file} is not a Ray Serve config file")])
    document = copy.deepcopy(document)
    document["http_options"] = {"host": "0.0.0.0", "port": SERVE_PORT}
    for app in document["applications"]:
        config = app["args"]["config"]
        _to_volumes(config, app["name"], models_uri)
        _gateway_replicas(app)
        if profile == "gpu":
            _teacher_on_gpu(app)
    for _, config in gateway_configs(document):
        load_gateway_config(config)  # raises GatewayConfigError naming the bad field
    return document


def _to_volumes(config: dict, app_name: str, models_uri: str | None) -> None:
    models = models_uri.rstrip("/") if models_uri else MODELS_DIR
    for variant in config["variants"]:
        for key in ("model_path", "manifest_path"):
            if variant.get(key) and not is_remote(variant[key]):
                variant[key] = f"{models}/{pathlib.PurePosixPath(variant[key]).name}"
    state = f"{STATE_DIR}/{app_name}"
    config.setdefault("capture", {})["dir"] = f"{state}/capture"
    config["audit_log"] = f"{state}/audit.jsonl"
    config["split_state_path"] = f"{state}/split-state.sqlite"  # the change log every replica converges to
    config["admin"] = {"token_file": ADMIN_TOKEN_FILE}
    if config.get("rollout"):
        config["rollout"].update(state_path=f"{state}/rollout-state.sqlite", evidence_dir=f"{state}/evidence")


def _gateway_replicas(app: dict) -> None:
    """Autoscale the ingress with at least :data:`GATEWAY_MIN_REPLICAS` replicas.

    A fixed ``num_replicas`` in the source becomes an autoscaling config (Serve takes one
    or the other); an autoscaling config of the source keeps its other settings.
    """
    deployments = app.setdefault("deployments", [])
    entry = next((d for d in deployments if d.get("name") == GATEWAY_DEPLOYMENT), None)
    if entry is None:
        entry = {"name": GATEWAY_DEPLOYMENT}
        deployments.insert(0, entry)
    entry.pop("num_replicas", None)
    scaling = dict(entry.get("autoscaling_config") or {})
    scaling["min_replicas"] = max(GATEWAY_MIN_REPLICAS, scaling.get("min_replicas", 0))
    scaling["max_replicas"] = max(GATEWAY_MAX_REPLICAS, scaling.get("max_replicas", 0), scaling["min_replicas"])
    entry["autoscaling_config"] = scaling


def _teacher_on_gpu(app: dict) -> None:
    config = app["args"]["config"]
    teacher = next(v for v in config["variants"] if v["role"] == "teacher")
    if teacher.get("colocated"):
        raise GatewayConfigError([("variants", "the gpu profile needs a remote (non-colocated) teacher")])
    teacher["device"] = "cuda"
    name = f"model-{teacher['name']}"
    deployments = app.setdefault("deployments", [])
    entry = next((d for d in deployments if d.get("name") == name), None)
    if entry is None:
        entry = {"name": name}
        deployments.append(entry)
    entry["ray_actor_options"] = {**entry.get("ray_actor_options", {}), "num_cpus": 1, "num_gpus": 1}


def gateway_configs(document: Mapping[str, Any]) -> Iterator[tuple[str, dict]]:
    """``(application name, effective gateway config)``: ``args.config`` with the Gateway's user_config merged in."""
    for app in document.get("applications", []):
        config = app.get("args", {}).get("config")
        if config is None:
            raise GatewayConfigError([(f"applications.{app.get('name')}.args.config", "missing")])
        overlay = next((d.get("user_config") or {} for d in app.get("deployments", [])
                        if d.get("name") == GATEWAY_DEPLOYMENT), {})
        yield app["name"], merge_overlay(config, overlay)


def parse_serve_config_v2(text: str) -> list[GatewayConfig]:
    """Validate a RayService ``serveConfigV2`` string: Serve's schema, then each gateway config."""
    from ray.serve.schema import ServeDeploySchema

    document = yaml.safe_load(text)
    ServeDeploySchema.model_validate(document)
    return [load_gateway_config(config) for _, config in gateway_configs(document)]
