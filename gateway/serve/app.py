"""The Ray Serve application builder: ingress ``Gateway`` plus one deployment per remote variant.

``serve run deployments/local.yaml`` imports :func:`build_app` with the YAML's ``args``
(the gateway config). Colocated ONNX students run inside the ``Gateway`` replica
(:mod:`gateway.serve.ingress`, no hop on the canary path); every other variant is a
``model-<name>`` deployment (:mod:`gateway.serve.model`) reached through a
DeploymentHandle; one ``rollout`` deployment (:mod:`gateway.serve.rollout_host`) holds the
split/config change log every Gateway replica converges to, and the rollout controller when
the config has a ``rollout:`` policy. ``args`` are part of Serve's code version, so
editing them restarts replicas; live changes go in the Gateway's ``user_config``.

Example::

    from ray import serve
    serve.run(build_app({"config": gateway_config_dict}), name="kdgate", route_prefix="/")
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

import yaml
from ray import serve

from gateway.core.config import load_gateway_config
from gateway.core.errors import GatewayConfigError
from gateway.model_store import is_remote
from gateway.serve.ingress import Gateway
from gateway.serve.model import ModelDeployment
from gateway.serve.rollout_host import RolloutHost

SERVE_DEFAULT_MAX_ONGOING = 5  # ray.serve's DEFAULT_MAX_ONGOING_REQUESTS (2.x)


def _config_from_args(args: dict[str, Any]) -> dict:
    if "config_path" in args:
        try:
            return yaml.safe_load(pathlib.Path(args["config_path"]).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise GatewayConfigError([("config_path", f"cannot read {args['config_path']}: {err}")]) from err
    return args["config"] if "config" in args else dict(args)


def _absolute_paths(data: dict) -> dict:
    base = pathlib.Path(os.environ.get("KDGATE_HOME") or os.getcwd())
    for v in data["variants"]:
        for key in ("model_path", "manifest_path"):
            if v.get(key) and not is_remote(v[key]) and not pathlib.Path(v[key]).is_absolute():
                v[key] = str(base / v[key])
    for section, key in (("capture", "dir"), (None, "audit_log"), (None, "split_state_path")):
        holder = data[section] if section else data
        if holder.get(key) and not pathlib.Path(holder[key]).is_absolute():
            holder[key] = str(base / holder[key])
    return data


def _backend_fields(variant: dict) -> dict:
    """Only what the model deployment needs, so a weight change does not restart it."""
    keep = ("name", "role", "backend", "model_path", "manifest_path", "device", "triton", "timeout_s", "threads")
    return {k: variant[k] for k in keep}


def _max_ongoing(batching: dict) -> int:
    """Requests a model replica takes at once: Serve's default (5) caps a dynamic batch at 5 rows of
    requests, so a batching replica admits two full batches (one running, one filling)."""
    if not batching["enabled"]:
        return SERVE_DEFAULT_MAX_ONGOING
    return max(SERVE_DEFAULT_MAX_ONGOING, 2 * batching["max_batch_size"])


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``import_path: gateway.serve.app:build_app``.

    ``args`` is ``{"config": {...gateway config...}}``, ``{"config_path": "file.yaml"}``,
    or the gateway config itself. Relative model paths resolve against the current
    directory (``KDGATE_HOME`` when set). An invalid config fails the build with a
    message naming each bad field.
    """
    raw = _config_from_args(args)
    config = load_gateway_config(raw)
    data = _absolute_paths(config.model_dump(mode="json"))
    remote = {
        v["name"]: ModelDeployment.options(
            name=f"model-{v['name']}", user_config={"batching": v["batching"]},
            max_ongoing_requests=_max_ongoing(v["batching"]),
        ).bind(_backend_fields(v), config.model_name)
        for v in data["variants"] if not v["colocated"]
    }
    # `args` are part of Serve's code version: editing them restarts replicas. Live changes
    # go in the Gateway deployment's user_config (an overlay, see Gateway.reconfigure),
    # which `serve deploy` applies in place. {} makes Serve call reconfigure at start.
    # The control deployment always runs: it holds the change log every replica converges to.
    # The ingress admits as many requests as the batching deployments behind it can batch.
    ingress_limit = max([SERVE_DEFAULT_MAX_ONGOING, *(_max_ongoing(v["batching"]) for v in data["variants"]
                                                      if not v["colocated"])])
    return Gateway.options(user_config={}, max_ongoing_requests=ingress_limit).bind(remote, data, RolloutHost.bind(data))
