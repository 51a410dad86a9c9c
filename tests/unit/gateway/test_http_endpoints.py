"""Every route in the table is answered by exactly one endpoint object (no Ray needed)."""
from __future__ import annotations

from gateway.http.admin import AdminEndpoints
from gateway.http.health import HealthEndpoints
from gateway.http.inference import InferenceEndpoints
from gateway.http.routes import HANDLERS

ENDPOINTS = (InferenceEndpoints, AdminEndpoints, HealthEndpoints)


def test_each_route_handler_has_exactly_one_owner():
    owners = {name: [cls.__name__ for cls in ENDPOINTS if callable(getattr(cls, name, None))] for name in HANDLERS}
    assert {name: found for name, found in owners.items() if len(found) != 1} == {}
