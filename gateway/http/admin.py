"""Admin API: bearer-token check, split changes and the ``/admin/*`` endpoints.

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
from typing import Protocol

from starlette.requests import Request

from gateway.core.config import AdminConfig, GatewayConfig, diff_config, merge_overlay
from gateway.core.errors import (
    BadRequest, GatewayConfigError, InvalidInput, MalformedRequest, NotFound, Unauthorized,
)
from gateway.http.api import load_json
from gateway.http.inference import read_body


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


def json_object(body: bytes) -> dict:
    """``body`` parsed as one JSON object (400 naming the problem otherwise)."""
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise MalformedRequest("expected a JSON object")
    return doc


class SplitControl(Protocol):
    """The shared change log as one replica sees it (:class:`gateway.serve.rollout_host.RolloutSync`)."""

    change: dict | None  # {seq, at, actor, source} of the change this replica serves
    last_rejection: str | None  # why this replica could not serve the latest change, if so

    async def call(self, method: str, *args) -> dict: ...
    async def publish(self, overlay: dict, *, source: str, actor: str) -> tuple[dict, list[str]]: ...


class AdminEndpoints:
    """The ``/admin/*`` endpoints (bearer token on every one) over one replica's runtime.

    Changes are validated here (422 naming the problem, audited) and then recorded in the
    application's shared change log through ``control``, which every replica converges to;
    ``rollout``: the config has a rollout policy (its controller owns the split).
    """

    def __init__(self, runtime, observers, control: SplitControl, *, rollout: bool = False):
        self.runtime, self.observers, self.control, self.rollout = runtime, observers, control, rollout
        self.last_rejection: str | None = None  # the last config change refused, for GET /admin/config

    def _check(self, request: Request) -> None:
        require_admin_token(request.headers.get("authorization"), self.runtime.config.admin)

    async def get_config(self, request: Request) -> dict:
        """The config in force, the change that set it, and the last rejected change, if any."""
        self._check(request)
        return {"config": self.runtime.config.model_dump(mode="json"), "change": self.control.change,
                "last_rejection": self.last_rejection or self.control.last_rejection}

    async def put_config(self, request: Request) -> dict:
        """Change the config of every replica: an overlay such as ``{"shadow": {"fraction": 0.1}}``.

        Dicts merge into the current config, other values replace; invalid -> 422 and the
        previous config stays. Variants that need a new deployment need a redeploy.
        """
        self._check(request)
        body = json_object(await read_body(request, self.runtime.config))
        before = self.runtime.config
        try:
            self.runtime.check(merge_overlay(before.model_dump(mode="json"), body), actor="admin-api")
        except GatewayConfigError as err:
            raise InvalidInput(str(err)) from err
        row = await self._publish(body)
        return {"config": self.runtime.config.model_dump(mode="json"), "change": row,
                "changes": diff_config(before, self.runtime.config)}

    async def get_split(self, request: Request) -> dict:
        """The current split, percent per variant, and the change that set it ({seq, at, actor, source})."""
        self._check(request)
        return {"weights": self.runtime.config.effective_weights(), "change": self.control.change}

    async def put_split(self, request: Request) -> dict:
        """Set the split of every replica: ``{"weights": {"teacher": 90, "student": 10}}``; invalid -> 422."""
        self._check(request)
        if self.rollout:
            raise BadRequest("a rollout controls the split: use POST /admin/rollout/{command}", status=409)
        body = json_object(await read_body(request, self.runtime.config))
        before = self.runtime.config
        try:
            new = split_from_body(before, body)
        except BadRequest as err:
            self.observers.audit_rejected("admin-api", before, body, err.message)
            raise
        row = await self._publish({"routing": {"weights": dict(new.routing.weights)}})
        return {"weights": self.runtime.config.effective_weights(), "change": row,
                "changes": diff_config(before, self.runtime.config)}

    async def _publish(self, overlay: dict) -> dict:
        """Record ``overlay`` in the shared change log; this replica serves it before answering."""
        row, _ = await self.control.publish(overlay, source="admin-api", actor="admin-api")
        return {k: row[k] for k in ("seq", "at", "actor", "source")}

    async def get_stats(self, request: Request) -> dict:
        """This replica's window stats (the embedded observation source for rollouts)."""
        self._check(request)
        stats = self.observers.stats
        return stats.snapshot() if stats is not None else {}

    async def get_rollout(self, request: Request) -> dict:
        """The rollout's status, the split it sets and the one this replica serves, recent checks (404 without one)."""
        self._check(request)
        history = await self._rollout("status")
        return {**history, "split_in_force": self.runtime.config.effective_weights()}

    async def rollout_command(self, request: Request, command: str) -> dict:
        """pause | resume | abort | promote | set_weight (body ``{"weight": w}``); 409 if not applicable."""
        self._check(request)
        body = await read_body(request, self.runtime.config)
        weight = json_object(body).get("weight") if body else None
        return await self._rollout("command", command, "admin-api", weight)

    async def _rollout(self, method: str, *args) -> dict:
        if not self.rollout:
            raise NotFound("no rollout policy in this gateway's config (rollout: null)")
        return await self.control.call(method, *args)
