"""Errors of the gateway package: one root, a small hierarchy.

The HTTP adapter maps every :class:`BadRequest` to a JSON error with its ``status``;
anything else that escapes a handler is a bug. Foreign errors (numpy, onnxruntime,
tritonclient, pydantic) are translated at the boundary with ``raise ... from err``.

Example::

    try:
        ...
    except BadRequest as err:
        return JSONResponse(err.to_json(), status_code=err.status)
"""
from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class GatewayConfigError(GatewayError):
    """The gateway config is invalid.

    ``problems`` lists ``(field.path, problem)`` pairs; the message has one
    ``field.path: problem`` line per pair.
    """

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        lines = [f"{path}: {problem}" if path else problem for path, problem in self.problems]
        super().__init__("invalid gateway config:\n" + "\n".join(lines))


class BadRequest(GatewayError):
    """A client error answered with a 4xx JSON body naming the problem.

    >>> BadRequest("input: expected float32").to_json()
    {'error': 'input: expected float32', 'status': 400}
    """

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def to_json(self) -> dict:
        """The JSON body the HTTP adapter returns."""
        return {"error": self.message, "status": self.status}


class MalformedRequest(BadRequest):
    """The body is not valid JSON / not a valid inference request (400)."""

    status = 400


class Unauthorized(BadRequest):
    """Missing or wrong admin bearer token (401)."""

    status = 401


class NotFound(BadRequest):
    """Unknown model, model version or variant (404)."""

    status = 404


class PayloadTooLarge(BadRequest):
    """Body over ``limits.max_body_bytes`` or batch over ``limits.max_batch_rows`` (413)."""

    status = 413


class InvalidInput(BadRequest):
    """Well-formed request with unusable data: shape, dtype, NaN/Inf, empty batch (422)."""

    status = 422


class BackendError(GatewayError):
    """A model backend failed to answer (the router falls back to the teacher)."""


class BackendTimeout(BackendError):
    """A model backend did not answer within its ``timeout_s``."""


class ComparisonError(GatewayError):
    """Teacher and student outputs cannot be compared (shape mismatch)."""


class CaptureError(GatewayError):
    """The capture store cannot write, read or export captured pairs."""


class AuditError(GatewayError):
    """The audit log cannot be written or read."""


class ManifestError(GatewayError):
    """A ``manifest.json`` that cannot be read or does not follow docs/artifacts.md."""
