"""Admin API: closed (401) without a configured token; bodies bounded like the inference routes.

No Ray: the token check is plain Python, and the admin handlers of the Gateway class are
called on an instance built without Serve (they only read the config in force).
"""
from __future__ import annotations

import asyncio
import json
import types

import pytest
from starlette.requests import Request

from gateway.http.admin import configured_token, require_admin_token
from gateway.core.config import AdminConfig, load_gateway_config
from gateway.core.errors import PayloadTooLarge, Unauthorized

TOKEN = "a-real-admin-token-0123456789abcdef"
ENV = "KDGATE_TEST_ADMIN_TOKEN"
ATTEMPTS = [None, "", "Bearer", "Bearer ", f"Bearer {TOKEN}", "Bearer None", "Basic eDp5"]


def _closed_configs(tmp_path, monkeypatch) -> dict[str, AdminConfig]:
    """Every way to have no token: an empty, blank or missing file; an unset or blank env var."""
    (tmp_path / "empty").write_text("")
    (tmp_path / "blank").write_text(" \n\t\n")
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv(ENV + "_BLANK", "  ")
    return {
        "empty file": AdminConfig(token_file=str(tmp_path / "empty")),
        "blank file": AdminConfig(token_file=str(tmp_path / "blank")),
        "missing file": AdminConfig(token_file=str(tmp_path / "absent")),
        "unset env": AdminConfig(token_env=ENV),
        "blank env": AdminConfig(token_env=ENV + "_BLANK"),
    }


@pytest.mark.parametrize("case", ["empty file", "blank file", "missing file", "unset env", "blank env"])
@pytest.mark.parametrize("authorization", ATTEMPTS)
def test_no_configured_token_closes_the_admin_api(tmp_path, monkeypatch, case, authorization):
    admin = _closed_configs(tmp_path, monkeypatch)[case]
    assert configured_token(admin) is None
    with pytest.raises(Unauthorized, match="admin API is closed") as caught:
        require_admin_token(authorization, admin)
    assert caught.value.status == 401


def test_a_configured_token_admits_only_itself(tmp_path, monkeypatch):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    monkeypatch.setenv(ENV, "a-different-env-token")
    admin = AdminConfig(token_file=str(secret), token_env=ENV)  # the file wins over the env var
    require_admin_token(f"Bearer {TOKEN}", admin)
    require_admin_token(f"bearer {TOKEN}", admin)
    for wrong in (None, "", "Bearer ", f"Basic {TOKEN}", "Bearer a-different-env-token", f"Bearer {TOKEN[:-1]}"):
        with pytest.raises(Unauthorized) as caught:
            require_admin_token(wrong, admin)
        assert caught.value.status == 401
        assert TOKEN not in caught.value.message and TOKEN[:-1] not in caught.value.message  # never echoed


def _gateway(max_body_bytes: int):
    """The admin endpoints over a stand-in runtime: a config in force is all they read."""
    from gateway.http.admin import AdminEndpoints

    config = load_gateway_config({
        "model_name": "digits",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": "teacher.onnx"},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": "student.onnx", "colocated": True},
        ],
        "routing": {"weights": {"teacher": 100, "student": 0}},
        "limits": {"max_body_bytes": max_body_bytes},
        "admin": {"token_env": ENV},
    })
    return AdminEndpoints(types.SimpleNamespace(config=config), types.SimpleNamespace(), types.SimpleNamespace())


def _request(method: str, path: str, body: bytes, *, declare_length: bool) -> Request:
    headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    return Request({"type": "http", "method": method, "path": path, "headers": headers}, receive)


# (handler, method, path params) of every admin route that reads a body
ADMIN_BODY_ROUTES = [("put_config", "PUT", {}), ("put_split", "PUT", {}), ("rollout_command", "POST", {"command": "pause"})]


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("handler", "method", "params"), ADMIN_BODY_ROUTES, ids=[r[0] for r in ADMIN_BODY_ROUTES])
def test_admin_bodies_are_bounded_by_max_body_bytes(monkeypatch, handler, method, params, declare_length):
    monkeypatch.setenv(ENV, TOKEN)
    limit = 64
    body = json.dumps({"weights": {"teacher": 100, "student": 0}, "pad": "x" * limit}).encode()
    gateway = _gateway(limit)
    request = _request(method, "/admin/x", body, declare_length=declare_length)
    with pytest.raises(PayloadTooLarge, match="limits.max_body_bytes") as caught:
        asyncio.run(getattr(gateway, handler)(request, **params))
    assert caught.value.status == 413
