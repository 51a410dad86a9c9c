"""The ``Gateway`` ingress deployment: HTTP dispatch and wiring, nothing else.

Each request is matched against the route table (:mod:`gateway.http.routes`) and handed
to the endpoint object that owns it: inference (:mod:`gateway.http.inference`), admin
(:mod:`gateway.http.admin`) or health (:mod:`gateway.http.health`). Errors become JSON.
Colocated students run inside this replica through its :class:`~gateway.runtime.GatewayRuntime`;
remote variants are reached through DeploymentHandles.

The config comes from ``args`` (structural: variants, which need deployments); live
changes go in the deployment's ``user_config``, an overlay merged over it: ``serve
deploy`` of a file whose edit touches only that overlay calls :meth:`Gateway.reconfigure`
in place (no restart). An invalid config is rejected, audited, and the previous one stays.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from typing import Any

import numpy as np
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from gateway.core.config import merge_overlay
from gateway.core.errors import BackendError, BadRequest, GatewayConfigError
from gateway.http import routes as http_routes
from gateway.http.admin import AdminEndpoints
from gateway.http.health import HealthEndpoints
from gateway.http.inference import REPLICA_HEADER, VARIANT_HEADER, InferenceEndpoints
from gateway.observers import Observers
from gateway.request_context import start_request
from gateway.runtime import GatewayRuntime
from gateway.serve.metrics import GatewayMetrics
from gateway.serve.model import DEFAULT_REPLICA_CPUS
from gateway.serve.rollout_host import RolloutSync, controller_caller

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1  # a 503 tells clients when to retry (a backend may come back any moment)
CHANGE_HEADER = "x-kdgate-split-seq"  # the change-log entry (seq) whose split that replica serves
TIMING_HEADER = "server-timing"  # W3C Server-Timing: the handler's milliseconds (``gateway;dur=0.142``)
_REPLICA_KEY, _CHANGE_KEY, _TIMING_KEY = (h.encode("latin-1") for h in (REPLICA_HEADER, CHANGE_HEADER, TIMING_HEADER))


# Helpers sit above the deployment: @serve.deployment pickles the class at import time,
# so a global the methods use must already exist then.
def _error(status: int, message: str) -> JSONResponse:
    headers = {VARIANT_HEADER: "none"}
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


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


async def _run_after_send(timing) -> None:
    """Async on purpose: starlette runs a plain function's background task in a thread. The yield
    first lets a send that only queued the body (Serve's proxy path) ship it before the work runs."""
    await asyncio.sleep(0)
    timing.run_deferred()


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": DEFAULT_REPLICA_CPUS})
class Gateway:
    """Ingress replica: dispatches requests to the endpoints; wires runtime, metrics, rollout."""

    def __init__(self, remote_models: dict[str, DeploymentHandle], base_config: dict, control: DeploymentHandle):
        callers = {name: _handle_caller(handle) for name, handle in remote_models.items()}
        self._observers = Observers(metrics=GatewayMetrics(model=base_config["model_name"]))
        self.runtime = GatewayRuntime(remote_callers=callers, observers=self._observers)
        self._base_config = base_config
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._replica_raw = self.replica.encode("latin-1")   # its header value, encoded once
        self._sync = RolloutSync(
            controller_caller(control), replica_id=self.replica, runtime=self.runtime,
            snapshot=self._snapshot, rollout=base_config.get("rollout") is not None,
        )
        self.admin = AdminEndpoints(self.runtime, self._observers, self._sync,
                                    rollout=base_config.get("rollout") is not None)
        endpoints = (InferenceEndpoints(self.runtime), self.admin, HealthEndpoints(self.runtime))
        self._handlers = {name: getattr(ep, name) for ep in endpoints
                          for name in dir(ep) if not name.startswith("_") and name in http_routes.HANDLERS}

    async def reconfigure(self, user_config: dict) -> None:
        """Serve calls this at start and on every ``serve deploy`` that edits ``user_config``.

        ``user_config`` is an overlay merged over the config from ``args`` (dicts merge,
        everything else replaces), e.g. ``{"routing": {"weights": {"teacher": 90,
        "student": 10}}}``. The result is reported to the shared change log, which records it
        when it differs from the last deployed config (an edited file), and this replica then
        serves the change in force: a restart re-sending the same file keeps a newer admin change.
        An invalid result is rejected (logged, audited, reported in ``/admin/config``); the
        previous config stays in force.
        """
        effective = merge_overlay(self._base_config, user_config or {})
        first = self.runtime.state is None
        # First start: serve the file at once (it fails the deployment when invalid);
        # later: only validate it, the change log decides what is served.
        accept = self.runtime.apply if first else self.runtime.check
        try:
            accept(effective, actor="serve-deploy")
            self.admin.last_rejection = None
        except GatewayConfigError as err:
            if first:
                raise
            self.admin.last_rejection = str(err)
            return
        reported = await self._sync.report_deploy(effective)
        self._sync.ensure_started()  # converge to the change log from now on, traffic or not
        if not reported and not first:
            self.runtime.apply(effective, actor="serve-deploy")  # host down: the deploy still takes effect here

    async def __call__(self, request: Request) -> Response:
        """Dispatch one HTTP request (see :mod:`gateway.http.routes`); errors become JSON."""
        start, timing = time.perf_counter(), start_request()
        self._sync.ensure_started()
        try:
            handler, params = http_routes.match_route(request.method, http_routes.relative_path(request.scope))
            result = await self._handlers[handler](request, **params)
        except BadRequest as err:
            return self._tagged(_error(err.status, err.message), start)
        except BackendError as err:
            # Only the teacher's failure gets here (a student's falls back): service down.
            return self._tagged(_error(503, f"no variant could answer: {err}"), start)
        response = self._tagged(result if isinstance(result, Response) else JSONResponse(_finite(result)), start)
        if timing.variant is not None:  # an inference request: its handler time and the gateway's own share
            total_s = time.perf_counter() - start
            timing.deferred.append(functools.partial(self._observers.handled, timing.variant, total_s,
                                                     timing.overhead_s(total_s)))
        if timing.deferred:  # the answer's bookkeeping and shadow work
            response.background = BackgroundTask(_run_after_send, timing)  # starlette: after the body
        return response

    def _snapshot(self) -> dict:
        """Window stats plus the version of each variant they were measured on (the controller
        leaves out a replica whose student is another version than the rollout's)."""
        versions = {v.name: v.version for v in self.runtime.config.variants}
        return {**self._observers.stats.snapshot(), "versions": versions}

    def _tagged(self, response: Response, start: float) -> Response:
        """Name the replica that answered and the change it serves (per-replica convergence is measurable),
        and the handler's time since ``start`` (``Server-Timing``: a client sees what the network added)."""
        timing = f"gateway;dur={1000.0 * (time.perf_counter() - start):.3f}"
        # Appended raw: three MutableHeaders writes (each a scan of the list) cost 1.7 us, this 0.1 us.
        response.raw_headers += [(_REPLICA_KEY, self._replica_raw),
                                 (_CHANGE_KEY, str(self._sync.seq).encode("latin-1")),
                                 (_TIMING_KEY, timing.encode("latin-1"))]
        return response

    def __del__(self):  # Serve's shutdown hook: keep the capture rows still in memory
        self._observers.close()

    async def check_health(self) -> None:
        """Serve's periodic probe (every 10 s): starts the rollout sync loop before any
        traffic and re-exports the rarely-changing gauges, which Ray drops after ~20 s."""
        self._sync.ensure_started()
        if self._observers.metrics is not None:
            self._observers.metrics.refresh()
