"""Health, server metadata and API documentation endpoints (free of Ray).

Example::

    health = HealthEndpoints(runtime)
    await health.ready(request)      # 200 {"ready": true} once a config is in force
"""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from gateway.http import routes as http_routes


class HealthEndpoints:
    """V2 liveness/readiness/server metadata, Swagger UI and the OpenAPI document."""

    def __init__(self, runtime):
        self.runtime = runtime

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

    async def docs(self, request: Request) -> Response:
        """Swagger UI for the routes in :mod:`gateway.http.routes`."""
        return HTMLResponse(http_routes.swagger_html(request.scope.get("root_path", "") + "/openapi.json"))

    async def openapi(self, _request: Request) -> dict:
        """The OpenAPI document."""
        return http_routes.openapi_document()
