"""Inference and model endpoints: Open Inference Protocol V2 and V1 predict.

Plain objects over a :class:`~gateway.runtime.GatewayRuntime`, free of Ray: the ingress
deployment (:mod:`gateway.serve.ingress`) dispatches to them by route name.

Example::

    endpoints = InferenceEndpoints(runtime)
    response = await endpoints.infer_v2(request, name="mnist1d")
"""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.core.config import GatewayConfig
from gateway.core.errors import NotFound, PayloadTooLarge
from gateway.http import api as http_api

VARIANT_HEADER = "x-kdgate-variant"
REPLICA_HEADER = "x-kdgate-replica"  # the Gateway replica that answered (set by the ingress on every response)
VERSION_HEADER = "x-kdgate-model-version"
FALLBACK_HEADER = "x-kdgate-fallback"


def tensor_spec(state) -> http_api.TensorSpec:
    """What a request batch must look like under the config in force."""
    shape = tuple(state.input_shape[1:]) if state.input_shape else None
    limits = state.config.limits
    return http_api.TensorSpec(feature_shape=shape, max_rows=limits.max_batch_rows,
                               text=state.text is not None, max_text_bytes=limits.max_text_bytes)


def answer_headers(answer) -> dict[str, str]:
    """Who answered: variant, its version, and whether the teacher stood in."""
    headers = {VARIANT_HEADER: answer.variant, VERSION_HEADER: answer.version}
    if answer.fallback:
        headers[FALLBACK_HEADER] = "true"
    return headers


async def read_body(request: Request, config: GatewayConfig) -> bytes:
    """The body, refused (413) before reading when its declared size is over the limit."""
    limit = config.limits.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes, over the limit of {limit} bytes (limits.max_body_bytes)")
    body = await request.body()
    http_api.check_body_size(body, limit)
    return body


class InferenceEndpoints:
    """V2 model metadata/readiness/inference and V1 predict for one runtime."""

    def __init__(self, runtime):
        self.runtime = runtime

    def model_state(self, name: str, version: str | None):
        """The state in force, after checking the model name and (optional) version exist."""
        state = self.runtime.state
        if name != state.config.model_name:
            raise NotFound(f"unknown model {name!r}; this gateway serves {state.config.model_name!r}")
        if version is not None and version not in state.versions.values():
            raise NotFound(f"unknown version {version!r} of {name!r}; versions: {sorted(set(state.versions.values()))}")
        return state

    async def model_metadata(self, _request: Request, name: str, version: str | None = None) -> dict:
        """V2 model metadata: versions, input and output tensors."""
        state = self.model_state(name, version)
        tensors = lambda tensor, shape: [{"name": tensor, "datatype": "FP32", "shape": shape or [-1]}]  # noqa: E731
        text_input = [{"name": http_api.INPUT_NAME, "datatype": "BYTES", "shape": [-1, 1]}]
        return {
            "name": name, "versions": sorted(set(state.versions.values())), "platform": "kdgate",
            "inputs": text_input if state.text is not None else tensors(http_api.INPUT_NAME, state.input_shape),
            "outputs": tensors(http_api.OUTPUT_NAME, state.output_shape),
        }

    async def model_ready(self, _request: Request, name: str, version: str | None = None) -> Response:
        """V2 model readiness."""
        self.model_state(name, version)
        ok = self.runtime.ready()
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    async def infer_v2(self, request: Request, name: str, version: str | None = None) -> Response:
        """V2 inference (JSON, or binary tensor data with Inference-Header-Content-Length)."""
        state = self.model_state(name, version)
        body = await read_body(request, state.config)
        parsed = http_api.parse_v2_request(
            body, header_length=request.headers.get(http_api.HEADER_LENGTH), spec=tensor_spec(state),
        )
        answer = await self.runtime.answer(parsed.x, request.headers, version=version, request_id=parsed.request_id)
        content, extra = http_api.encode_v2_response(answer.y, parsed, model_name=name, model_version=answer.version)
        return Response(content, media_type="application/json", headers={**extra, **answer_headers(answer)})

    async def predict_v1(self, request: Request, name: str) -> Response:
        """V1 predict: ``{"instances": [[...], ...]}`` -> ``{"predictions": [[...], ...]}``."""
        state = self.model_state(name, None)
        body = await read_body(request, state.config)
        x = http_api.parse_v1_request(body, spec=tensor_spec(state))
        answer = await self.runtime.answer(x, request.headers)
        return Response(http_api.encode_v1_response(answer.y), media_type="application/json",
                        headers=answer_headers(answer))
