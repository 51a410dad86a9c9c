"""Admin API helpers: bearer-token check and split changes.

The token comes from a file (``admin.token_file``, e.g. a mounted Kubernetes Secret;
read on every call so a rotated Secret takes effect without a restart) or from the env
var ``admin.token_env``. With neither set the admin API is closed: every call is 401.
Comparison is constant-time (:func:`hmac.compare_digest`).

Example::

    require_admin_token(request.headers.get("authorization"), config.admin)
    new_config = split_from_body(config, {"weights": {"teacher": 90, "student": 10}})
"""
from __future__ import annotations

import hmac
import os
import pathlib

from gateway.core.config import AdminConfig, GatewayConfig
from gateway.core.errors import GatewayConfigError, InvalidInput, Unauthorized


def configured_token(admin: AdminConfig) -> str | None:
    """The admin token in force, or None when none is configured."""
    if admin.token_file:
        try:
            token = pathlib.Path(admin.token_file).read_text().strip()
        except OSError:
            return None
        return token or None
    return os.environ.get(admin.token_env, "").strip() or None


def require_admin_token(authorization: str | None, admin: AdminConfig) -> None:
    """Raise :class:`Unauthorized` unless ``authorization`` is ``Bearer <the token>``."""
    expected = configured_token(admin)
    if expected is None:
        where = admin.token_file or f"${admin.token_env}"
        raise Unauthorized(f"admin API is closed: no token configured in {where}")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("wrong admin token")


def split_from_body(config: GatewayConfig, body: object) -> GatewayConfig:
    """The config with the split in ``{"weights": {...}}`` (validated; 422 when invalid)."""
    if not isinstance(body, dict) or not isinstance(body.get("weights"), dict):
        raise InvalidInput('split change must be a JSON object {"weights": {"variant": percent, ...}}')
    try:
        return config.with_weights(body["weights"])
    except GatewayConfigError as err:
        raise InvalidInput(str(err)) from err
