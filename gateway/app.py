"""The Ray Serve application: ingress ``Gateway`` plus one deployment per remote variant.

``serve run deployments/local.yaml`` imports :func:`build_app` with the YAML's ``args``
(the gateway config). Colocated ONNX students run inside the ``Gateway`` replica (no
hop on the canary path); every other variant is a ``model-<name>`` deployment reached
through a DeploymentHandle, with ``@serve.batch`` dynamic batching when enabled.

The gateway config comes in ``args`` (structural: variants, which need deployments);
live changes go in the ``Gateway`` deployment's ``user_config``, an overlay merged over
it: ``serve deploy`` of a file whose edit touches only that overlay calls
:meth:`Gateway.reconfigure` in place (no restart). ``args`` are part of Serve's code
version, so editing them restarts replicas. An invalid config is rejected, audited, and
the previous one stays in force. HTTP dispatch: :mod:`gateway.http_routes`.

Example::

    from ray import serve
    serve.run(build_app({"config": gateway_config_dict}), name="kdgate", route_prefix="/")
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import pathlib
from typing import Any

import numpy as np
import yaml
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from gateway import admin, http_api, http_routes
from gateway.backends import OnnxBackend, build_backend
from gateway.core.config import BatchingConfig, GatewayConfig, VariantConfig, load_gateway_config
from gateway.core.errors import (
    BackendError, BadRequest, GatewayConfigError, InvalidInput, MalformedRequest, NotFound,
    PayloadTooLarge,
)
from gateway.metrics import GatewayMetrics
from gateway.observers import Observers
from gateway.rollout_host import RolloutHost, RolloutSync
from gateway.runtime import GatewayRuntime

log = logging.getLogger(__name__)

VARIANT_HEADER = "x-kdgate-variant"
VERSION_HEADER = "x-kdgate-model-version"
FALLBACK_HEADER = "x-kdgate-fallback"
DEFAULT_REPLICA_CPUS = 0.5  # small enough that ingress + teacher fit a 2-core machine

RETRY_AFTER_S = 1  # a 503 tells clients when to retry (a backend may come back any moment)


def _error(status: int, message: str) -> JSONResponse:
    headers = {VARIANT_HEADER: "none"}
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


# Helpers sit above the deployments: @serve.deployment pickles the class at import
# time, so a global the methods use must already exist then.
def _spec(state) -> http_api.TensorSpec:
    shape = tuple(state.input_shape[1:]) if state.input_shape else None
    return http_api.TensorSpec(feature_shape=shape, max_rows=state.config.limits.max_batch_rows)


def _answer_headers(answer) -> dict[str, str]:
    headers = {VARIANT_HEADER: answer.variant, VERSION_HEADER: answer.version}
    if answer.fallback:
        headers[FALLBACK_HEADER] = "true"
    return headers


def _handle_caller(handle: DeploymentHandle):
    async def call(x: np.ndarray) -> np.ndarray:
        try:
            return await handle.remote(x)
        except RayActorError:
            # The replica died or became unreachable mid-request (killed, OOM, node lost).
            # Inference is idempotent: Serve routes the one retry to a live replica.
            log.warning("model replica lost mid-request; retrying once on another replica")
            return await handle.remote(x)

    return call


def _finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats (an empty window's inf/nan) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_object(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except ValueError as err:
        raise MalformedRequest(f"malformed JSON: {err}") from err
    if not isinstance(doc, dict):
        raise MalformedRequest("expected a JSON object")
    return doc


def merge_overlay(base: dict, overlay: dict) -> dict:
    """``base`` with ``overlay`` merged in: nested dicts merge, other values replace.

    >>> merge_overlay({"routing": {"weights": {"t": 95, "s": 5}, "allow_force": False}},
    ...               {"routing": {"weights": {"t": 90, "s": 10}}})
    {'routing': {'weights': {'t': 90, 's': 10}, 'allow_force': False}}
    """
    merged = dict(base)
    for key, value in overlay.items():
        if key == "weights" or not (isinstance(value, dict) and isinstance(merged.get(key), dict)):
            merged[key] = value  # a split replaces the old one whole: absent variants mean 0
        else:
            merged[key] = merge_overlay(merged[key], value)
    return merged


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
            if v.get(key) and not pathlib.Path(v[key]).is_absolute():
                v[key] = str(base / v[key])
    for section, key in (("capture", "dir"), (None, "audit_log")):
        holder = data[section] if section else data
        if holder.get(key) and not pathlib.Path(holder[key]).is_absolute():
            holder[key] = str(base / holder[key])
    return data


def _backend_fields(variant: dict) -> dict:
    """Only what the model deployment needs, so a weight change does not restart it."""
    keep = ("name", "role", "backend", "model_path", "device", "triton", "timeout_s")
    return {k: variant[k] for k in keep}


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": DEFAULT_REPLICA_CPUS})
class Gateway:
    """Ingress replica: parses requests, routes, runs colocated students, queues shadows."""

    def __init__(self, remote_models: dict[str, DeploymentHandle], base_config: dict,
                 rollout: DeploymentHandle | None = None):
        callers = {name: _handle_caller(handle) for name, handle in remote_models.items()}
        self._observers = Observers(metrics=GatewayMetrics(model=base_config["model_name"]))
        self.runtime = GatewayRuntime(remote_callers=callers, observers=self._observers)
        self._base_config = base_config
        self.last_rejection: str | None = None
        self._rollout = rollout
        self._rollout_sync = None if rollout is None else RolloutSync(
            rollout, replica_id=serve.get_replica_context().replica_id.unique_id, runtime=self.runtime,
            snapshot=lambda: self._observers.stats.snapshot(),
        )

    def reconfigure(self, user_config: dict) -> None:
        """Serve calls this at start and on every ``serve deploy`` that edits ``user_config``.

        ``user_config`` is an overlay merged over the config from ``args`` (dicts merge,
        everything else replaces), e.g. ``{"routing": {"weights": {"teacher": 90,
        "student": 10}}}``. An invalid result is rejected (logged, audited, reported in
        ``/admin/config``); the previous config stays in force.
        """
        effective = merge_overlay(self._base_config, user_config or {})
        try:
            self.runtime.apply(effective, actor="serve-deploy")
            self.last_rejection = None
        except GatewayConfigError as err:
            if self.runtime.state is None:
                raise  # first config: fail the deployment with the message
            self.last_rejection = str(err)

    async def __call__(self, request: Request) -> Response:
        """Dispatch one HTTP request (see :mod:`gateway.http_routes`); errors become JSON."""
        if self._rollout_sync is not None:
            self._rollout_sync.ensure_started()
        try:
            handler, params = http_routes.match_route(request.method, http_routes.relative_path(request.scope))
            result = await getattr(self, handler)(request, **params)
        except BadRequest as err:
            return _error(err.status, err.message)
        except BackendError as err:
            # Only the teacher's failure gets here (a student's falls back): service down.
            return _error(503, f"no variant could answer: {err}")
        return result if isinstance(result, Response) else JSONResponse(_finite(result))

    # ----- Open Inference Protocol V2 -------------------------------------------------
    async def live(self, _request: Request) -> dict:
        """Liveness: the replica answers."""
        return {"live": True}

    async def ready(self, _request: Request) -> Response:
        """Readiness: a config is in force and colocated backends are ready."""
        ok = self.runtime.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(self, _request: Request) -> dict:
        """V2 server metadata."""
        return {"name": "kdgate", "version": "0.1.0", "extensions": ["binary_tensor_data"]}

    async def model_metadata(self, _request: Request, name: str, version: str | None = None) -> dict:
        """V2 model metadata: versions, input and output tensors."""
        state = self._model_state(name, version)
        tensors = lambda tensor, shape: [{"name": tensor, "datatype": "FP32", "shape": shape or [-1]}]  # noqa: E731
        return {
            "name": name, "versions": sorted(set(state.versions.values())), "platform": "kdgate",
            "inputs": tensors(http_api.INPUT_NAME, state.input_shape),
            "outputs": tensors(http_api.OUTPUT_NAME, state.output_shape),
        }

    async def model_ready(self, _request: Request, name: str, version: str | None = None) -> Response:
        """V2 model readiness."""
        self._model_state(name, version)
        ok = self.runtime.ready()
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    async def infer_v2(self, request: Request, name: str, version: str | None = None) -> Response:
        """V2 inference (JSON, or binary tensor data with Inference-Header-Content-Length)."""
        state = self._model_state(name, version)
        body = await self._body(request, state.config)
        parsed = http_api.parse_v2_request(
            body, header_length=request.headers.get(http_api.HEADER_LENGTH), spec=_spec(state),
        )
        answer = await self.runtime.answer(parsed.x, request.headers, version=version, request_id=parsed.request_id)
        content, extra = http_api.encode_v2_response(
            answer.y, parsed, model_name=name, model_version=answer.version,
        )
        return Response(content, media_type="application/json", headers={**extra, **_answer_headers(answer)})

    # ----- V1 predict -------------------------------------------------------------------
    async def predict_v1(self, request: Request, name: str) -> Response:
        """V1 predict: ``{"instances": [[...], ...]}`` -> ``{"predictions": [[...], ...]}``."""
        state = self._model_state(name, None)
        body = await self._body(request, state.config)
        x = http_api.parse_v1_request(body, spec=_spec(state))
        answer = await self.runtime.answer(x, request.headers)
        return Response(http_api.encode_v1_response(answer.y), media_type="application/json",
                        headers=_answer_headers(answer))

    # ----- admin --------------------------------------------------------------------------
    async def get_config(self, request: Request) -> dict:
        """The config in force (and the last rejected change, if any)."""
        self._admin(request)
        return {"config": self.runtime.config.model_dump(mode="json"), "last_rejection": self.last_rejection}

    async def put_config(self, request: Request) -> dict:
        """Change the config in force: an overlay such as ``{"shadow": {"fraction": 0.1}}``.

        Dicts merge into the current config, other values replace; invalid -> 422 and the
        previous config stays. Variants that need a new deployment need a redeploy.
        """
        self._admin(request)
        body = _json_object(await self._body(request, self.runtime.config))
        config = self.runtime.config
        try:
            changes = self.runtime.apply(merge_overlay(config.model_dump(mode="json"), body), actor="admin-api")
        except GatewayConfigError as err:
            raise InvalidInput(str(err)) from err
        return {"config": self.runtime.config.model_dump(mode="json"), "changes": changes}

    async def get_split(self, request: Request) -> dict:
        """The current split, percent per variant."""
        self._admin(request)
        return {"weights": self.runtime.config.effective_weights()}

    async def put_split(self, request: Request) -> dict:
        """Set the split: ``{"weights": {"teacher": 90, "student": 10}}``; invalid -> 422."""
        self._admin(request)
        if self._rollout is not None:
            raise BadRequest("a rollout controls the split: use POST /admin/rollout/{command}", status=409)
        body = _json_object(await self._body(request, self.runtime.config))
        config = self.runtime.config
        try:
            new = admin.split_from_body(config, body)
        except BadRequest as err:
            self._observers.audit_rejected("admin-api", config, body, err.message)
            raise
        changes = self.runtime.apply(new, actor="admin-api")
        return {"weights": new.effective_weights(), "changes": changes}

    async def get_stats(self, request: Request) -> dict:
        """This replica's window stats (the embedded observation source for rollouts)."""
        self._admin(request)
        stats = self._observers.stats
        return stats.snapshot() if stats is not None else {}

    async def get_rollout(self, request: Request) -> dict:
        """The rollout's status and recent checks (404 without a rollout policy)."""
        self._admin(request)
        return await self._rollout_call("status")

    async def rollout_command(self, request: Request, command: str) -> dict:
        """pause | resume | abort | promote | set_weight (body ``{"weight": w}``); 409 if not applicable."""
        self._admin(request)
        body = await self._body(request, self.runtime.config)
        weight = _json_object(body).get("weight") if body else None
        return await self._rollout_call("command", command, "admin-api", weight)

    async def _rollout_call(self, method: str, *args) -> dict:
        if self._rollout is None:
            raise NotFound("no rollout policy in this gateway's config (rollout: null)")
        try:
            return await getattr(self._rollout, method).remote(*args)
        except BadRequest:
            raise  # InvalidCommand (409) arrives as itself (Ray's error subclasses the cause)
        except Exception as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BadRequest):
                raise cause from err
            raise BackendError(f"rollout controller unavailable: {err}") from err

    def __del__(self):  # Serve's shutdown hook: keep the capture rows still in memory
        self._observers.close()

    async def check_health(self) -> None:
        """Serve's periodic probe (every 10 s): starts the rollout sync loop before any
        traffic and re-exports the rarely-changing gauges, which Ray drops after ~20 s."""
        if self._rollout_sync is not None:
            self._rollout_sync.ensure_started()
        if self._observers.metrics is not None:
            self._observers.metrics.refresh()

    async def docs(self, request: Request) -> Response:
        """Swagger UI for the routes in :mod:`gateway.http_routes`."""
        return HTMLResponse(http_routes.swagger_html(request.scope.get("root_path", "") + "/openapi.json"))

    async def openapi(self, _request: Request) -> dict:
        """The OpenAPI document."""
        return http_routes.openapi_document()

    # ----- helpers ------------------------------------------------------------------------
    def _admin(self, request: Request) -> None:
        admin.require_admin_token(request.headers.get("authorization"), self.runtime.config.admin)

    def _model_state(self, name: str, version: str | None):
        state = self.runtime.state
        if name != state.config.model_name:
            raise NotFound(f"unknown model {name!r}; this gateway serves {state.config.model_name!r}")
        if version is not None and version not in state.versions.values():
            raise NotFound(f"unknown version {version!r} of {name!r}; versions: {sorted(set(state.versions.values()))}")
        return state

    @staticmethod
    async def _body(request: Request, config: GatewayConfig) -> bytes:
        limit = config.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        # Refuse an oversized body before reading it when the client declared its size.
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(
                f"body is {declared} bytes, over the limit of {limit} bytes (limits.max_body_bytes)"
            )
        body = await request.body()
        http_api.check_body_size(body, limit)
        return body


@serve.deployment(ray_actor_options={"num_cpus": DEFAULT_REPLICA_CPUS})
class ModelDeployment:
    """One remote variant (the teacher, or a non-colocated student) behind a handle."""

    def __init__(self, variant: dict, model_name: str):
        self.variant = VariantConfig.model_validate(variant)
        self.backend = build_backend(self.variant)
        self.metrics = GatewayMetrics(model=model_name)
        self.batching = self.variant.batching

    def reconfigure(self, user_config: dict) -> None:
        """``{"batching": {...}}``: batch size and wait change in place."""
        self.batching = BatchingConfig.model_validate(user_config.get("batching", {}))
        self._batched.set_max_batch_size(self.batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.batching.wait_timeout_s)

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.batching.enabled:
            return await self._batched(x)
        return await self._infer(x)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _batched(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        y = await self._infer(np.concatenate(xs))
        return np.split(y, np.cumsum([len(x) for x in xs])[:-1])

    async def _infer(self, x: np.ndarray) -> np.ndarray:
        self.metrics.observe_batch(self.variant.name, len(x))
        if isinstance(self.backend, OnnxBackend):
            return self.backend.infer(x)  # microseconds for small models: cheaper than a thread hop
        return await asyncio.to_thread(self.backend.infer, x)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``import_path: gateway.app:build_app``.

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
        ).bind(_backend_fields(v), config.model_name)
        for v in data["variants"] if not v["colocated"]
    }
    # `args` are part of Serve's code version: editing them restarts replicas. Live changes
    # go in the Gateway deployment's user_config (an overlay, see Gateway.reconfigure),
    # which `serve deploy` applies in place. {} makes Serve call reconfigure at start.
    rollout = RolloutHost.bind(data) if config.rollout is not None else None
    return Gateway.options(user_config={}).bind(remote, data, rollout)
