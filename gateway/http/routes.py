"""The gateway's HTTP routes: a small dispatch table plus a FastAPI app that documents them.

The ingress deployment answers through a plain ``__call__`` (Serve's fast path for a
deployment that takes a Starlette request) and this table, not through
``@serve.ingress(FastAPI)``: measured here, the ASGI ingress added about a quarter of a
millisecond per request, as much as the whole gateway logic. FastAPI still describes the
API: :func:`openapi_document` is served at ``/openapi.json`` and Swagger UI at ``/docs``.

Example::

    handler, params = match_route("POST", "/v2/models/mnist1d/versions/2/infer")
    # ("infer_v2", {"name": "mnist1d", "version": "2"})
"""
from __future__ import annotations

import inspect
import re
from functools import lru_cache
from typing import Any

from gateway.core.errors import BadRequest, NotFound

_SEGMENT = r"(?P<{}>[^/:]+)"
_VERSION = r"(?:/versions/(?P<version>[^/]+))?"

# (method, path pattern, endpoint method name, one-line summary for the docs)
ROUTES: tuple[tuple[str, str, str, str], ...] = (
    ("GET", "/v2/health/live", "live", "V2 liveness"),
    ("GET", "/v2/health/ready", "ready", "V2 readiness"),
    ("GET", "/v2", "server_metadata", "V2 server metadata"),
    ("GET", "/v2/models/{name}{version}", "model_metadata", "V2 model metadata"),
    ("GET", "/v2/models/{name}{version}/ready", "model_ready", "V2 model readiness"),
    ("POST", "/v2/models/{name}{version}/infer", "infer_v2",
     "V2 inference (JSON or binary tensor data; tritonclient works unchanged)"),
    ("POST", "/v1/models/{name}:predict", "predict_v1", 'V1 predict: {"instances": [[...], ...]}'),
    ("GET", "/admin/config", "get_config", "Config in force (bearer token)"),
    ("PUT", "/admin/config", "put_config", "Change the config with an overlay (bearer token)"),
    ("GET", "/admin/split", "get_split", "Current split (bearer token)"),
    ("PUT", "/admin/split", "put_split", 'Set the split: {"weights": {...}} (bearer token)'),
    ("GET", "/admin/stats", "get_stats", "Window stats of this replica (bearer token)"),
    ("GET", "/admin/rollout", "get_rollout", "Rollout status and recent checks (bearer token)"),
    ("POST", "/admin/rollout/{command}", "rollout_command",
     'Rollout command: pause, resume, abort, promote, set_weight {"weight": w} (bearer token)'),
    ("GET", "/docs", "docs", "Swagger UI"),
    ("GET", "/openapi.json", "openapi", "OpenAPI document"),
)

HANDLERS = frozenset(handler for _, _, handler, _ in ROUTES)


class MethodNotAllowed(BadRequest):
    """A known path asked with the wrong HTTP method (405)."""

    status = 405


def _regex(pattern: str) -> re.Pattern:
    body = re.escape(pattern).replace(r"\{version\}", _VERSION)
    body = re.sub(r"\\\{(\w+)\\\}", lambda m: _SEGMENT.format(m.group(1)), body)
    return re.compile("^" + body + "/?$")


_COMPILED = tuple((method, _regex(pattern), handler) for method, pattern, handler, _ in ROUTES)


def match_route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """Handler name and path parameters for ``method path`` (404/405 :class:`BadRequest`)."""
    path_known = False
    for route_method, regex, handler in _COMPILED:
        found = regex.match(path)
        if found:
            if route_method == method:
                return handler, {k: v for k, v in found.groupdict().items() if v is not None}
            path_known = True
    if path_known:
        raise MethodNotAllowed(f"{method} is not allowed on {path}")
    raise NotFound(f"no route {method} {path}; see /docs")


def relative_path(scope: dict) -> str:
    """The request path without the application's route prefix."""
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def _body_models() -> dict[str, Any]:
    """Request bodies per handler, for the docs only (the handlers validate bodies themselves)."""
    from fastapi import Body
    from pydantic import BaseModel, Field

    class V1PredictRequest(BaseModel):
        instances: list[list[float]] | list[str] = Field(
            description="Rows of input features, one per example; texts for a text model.")

    class V2InputTensor(BaseModel):
        name: str = Field(description="Input name, e.g. input.")
        shape: list[int] = Field(description="Tensor shape, batch first.")
        datatype: str = Field(description="FP32 (FP64 and integer types are rejected with 422); "
                                          "BYTES (texts) for a text model.")
        data: list[Any] = Field(description="Row-major flat (or nested) values.")

    class V2InferRequest(BaseModel):
        id: str | None = Field(None, description="Request id, echoed back.")
        inputs: list[V2InputTensor] = Field(description="Exactly one input tensor.")

    class SplitRequest(BaseModel):
        weights: dict[str, float] = Field(description="Percent per variant, summing to 100.")

    class RolloutCommandRequest(BaseModel):
        weight: float | None = Field(None, description="set_weight only: student percent.")

    return {
        "predict_v1": V1PredictRequest, "infer_v2": V2InferRequest, "put_split": SplitRequest,
        "rollout_command": RolloutCommandRequest | None,
        "put_config": (dict[str, Any], Body(description='Overlay, e.g. {"shadow": {"fraction": 0.1}}')),
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    """OpenAPI for the table above, generated by FastAPI from documentation stubs."""
    from fastapi import FastAPI

    app = FastAPI(title="kdgate gateway", version="0.1.0",
                  description="Open Inference Protocol V2 and V1 predict, routed between teacher and student.")
    bodies = _body_models()
    for method, pattern, handler, summary in ROUTES:
        for with_version in ((False, True) if "{version}" in pattern else (False,)):
            path = pattern.replace("{version}", "/versions/{version}" if with_version else "")
            app.add_api_route(path, _stub(path, bodies.get(handler)), methods=[method], summary=summary,
                              name=f"{handler}{'_v' * with_version}")
    return app.openapi()


def _stub(path: str, body: Any = None):
    """An endpoint whose signature names the path parameters and body (FastAPI reads it for the docs)."""
    params = [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=str)
              for p in re.findall(r"{(\w+)}", path)]
    if body is not None:
        annotation, default = body if isinstance(body, tuple) else (body, inspect.Parameter.empty)
        params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default))

    async def endpoint(**_kwargs):  # never called: the ingress dispatches itself
        return None

    endpoint.__signature__ = inspect.Signature(params)
    return endpoint


def swagger_html(openapi_url: str) -> str:
    """Swagger UI page pointing at ``openapi_url``."""
    from fastapi.openapi.docs import get_swagger_ui_html

    return get_swagger_ui_html(openapi_url=openapi_url, title="kdgate gateway").body.decode()
