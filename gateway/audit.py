"""Append-only JSON-lines audit log: who changed what, when, from what to what.

One line per change: ``{"time": ISO-8601 UTC, "actor": ..., "action": ..., "old": ...,
"new": ..., "changes": [...]}``. Lines are only ever appended (``O_APPEND``, flushed and
fsynced), so concurrent writers do not interleave within a line and a crash loses at
most the line being written.

Example::

    audit = AuditLog("kdgate-audit.jsonl")
    audit.record("admin-api", "routing.weights", old={"student": 5}, new={"student": 10})
    audit.record_config_change("serve-deploy", old_cfg, new_cfg)
    audit.entries()[-1]["changes"]   # ["routing.weights.student: 5.0 -> 10.0", ...]
"""
from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import threading
from typing import Any

from gateway.core.config import GatewayConfig, config_changes, diff_config
from gateway.core.errors import AuditError


def _iso_utc(at: float | dt.datetime | None) -> str:
    if at is None:
        moment = dt.datetime.now(dt.timezone.utc)
    elif isinstance(at, dt.datetime):
        moment = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
    else:
        moment = dt.datetime.fromtimestamp(float(at), tz=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """An append-only JSON-lines file (thread-safe within a process)."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._lock = threading.Lock()

    def record(self, actor: str, action: str, old: Any, new: Any, *,
               at: float | dt.datetime | None = None, changes: list[str] | None = None) -> dict:
        """Append one entry and return it. ``old``/``new`` must be JSON-able (else str())."""
        entry = {"time": _iso_utc(at), "actor": actor, "action": action, "old": old, "new": new}
        if changes is not None:
            entry["changes"] = list(changes)
        line = json.dumps(entry, default=str, sort_keys=False) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line.encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as err:
                raise AuditError(f"audit log: cannot append to {self.path}: {err}") from err
        return json.loads(line)

    def record_config_change(self, actor: str, old: GatewayConfig, new: GatewayConfig, *,
                             action: str = "config.update", at: float | dt.datetime | None = None) -> dict | None:
        """Record a config change as its changed fields; no entry (None) when nothing changed."""
        changes = config_changes(old, new)
        if not changes:
            return None
        return self.record(
            actor, action, {path: a for path, a, _ in changes}, {path: b for path, _, b in changes},
            at=at, changes=diff_config(old, new),
        )

    def entries(self, last: int | None = None) -> list[dict]:
        """Entries oldest first (the ``last`` n when given); a missing file has none."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise AuditError(f"audit log: cannot read {self.path}: {err}") from err
        selected = lines[-last:] if last else lines
        try:
            return [json.loads(line) for line in selected if line.strip()]
        except json.JSONDecodeError as err:
            raise AuditError(f"audit log: {self.path} has a corrupt line: {err}") from err
