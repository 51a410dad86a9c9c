"""One persisted source of truth for the split and config overlays (issue 11, point 4).

Every change, however it came (``admin-api``, ``serve-deploy``, ``rollout``, ``cli``), is a row
{seq, at, actor, source, overlay}; the most recent row wins. Gateway replicas converge by
applying :meth:`SplitStore.latest` (its ``seq`` tells them whether anything changed). A
``serve deploy`` overlay is recorded only when it differs from the last *deploy* overlay, so a
restarted replica re-sending the same ``user_config`` never overrides a newer admin change.

Example::

    store = SplitStore("runs/kdgate-state/split.sqlite")
    store.record({"routing": {"weights": {"teacher": 90, "student": 10}}}, source="admin-api", actor="ops")
    store.record_deploy({})                 # first deploy: recorded
    store.record_deploy({})                 # same overlay again (replica restart): None
    store.latest()["source"]                # "serve-deploy": the most recent change wins
"""
from __future__ import annotations

import json
import pathlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SOURCES = ("admin-api", "serve-deploy", "rollout", "cli")


class SplitStore:
    """SQLite table of changes; ``latest()`` is the overlay every replica must serve."""

    def __init__(self, path: str | pathlib.Path, *, clock: Callable[[], float] = time.time):
        self.path, self._clock = pathlib.Path(path), clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                       " at REAL NOT NULL, actor TEXT NOT NULL, source TEXT NOT NULL, overlay TEXT NOT NULL)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5)
        try:
            with db:  # commit or roll back
                yield db
        finally:
            db.close()

    def record(self, overlay: dict[str, Any], *, source: str, actor: str) -> dict[str, Any]:
        """Append a change (it becomes the latest); returns its row."""
        if source not in SOURCES:
            raise ValueError(f"unknown change source {source!r} (one of {', '.join(SOURCES)})")
        at = self._clock()
        with self._connect() as db:
            cur = db.execute("INSERT INTO changes (at, actor, source, overlay) VALUES (?, ?, ?, ?)",
                             (at, actor, source, json.dumps(overlay, sort_keys=True)))
            seq = cur.lastrowid
        return {"seq": seq, "at": at, "actor": actor, "source": source, "overlay": overlay}

    def record_deploy(self, overlay: dict[str, Any], *, actor: str = "serve-deploy") -> dict[str, Any] | None:
        """Record a ``serve deploy`` overlay only when it differs from the last deploy overlay."""
        last = self._last("WHERE source = 'serve-deploy'")
        if last is not None and last["overlay"] == overlay:
            return None  # a replica restart re-sent the same user_config: not a new change
        return self.record(overlay, source="serve-deploy", actor=actor)

    def latest(self) -> dict[str, Any] | None:
        """The most recent change (None before any)."""
        return self._last("")

    def _last(self, where: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute(f"SELECT seq, at, actor, source, overlay FROM changes {where} "
                             "ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {"seq": row[0], "at": row[1], "actor": row[2], "source": row[3], "overlay": json.loads(row[4])}
