"""Rollout notifications: the webhook a rollback or promotion posts (Alertmanager/Slack JSON)."""
from __future__ import annotations

from typing import Any

import httpx


class WebhookNotifier:
    """POST a JSON payload to ``url`` with a short timeout; raises on any failure."""

    def __init__(self, url: str, timeout_s: float = 2.0):
        self.url, self.timeout_s = url, timeout_s

    def __call__(self, payload: dict[str, Any]) -> None:
        response = httpx.post(self.url, json=payload, timeout=self.timeout_s)
        response.raise_for_status()
