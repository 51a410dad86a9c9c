"""One persisted source of truth for the split and config overlays (issue 11, point 4).

Every change, however it came (``admin-api``, ``serve-deploy``, ``rollout``, ``cli``), is a row
{seq, at, actor, source, config} holding the whole gateway config it puts in force; the most
recent row wins. Gateway replicas converge by applying :meth:`SplitStore.latest` (its ``seq``
tells them whether anything changed). A ``serve deploy`` is recorded only when the deployed
config differs from the last deployed one, so a restarted replica re-sending the same
``user_config`` never overrides a newer admin change, while an edited file does.

:class:`SharedConfig` is the logic the controller's deployment runs over the store: an admin
overlay merges into the latest config (validated, 422 when invalid), a rollout owns the
weights, and the latest row is cached (replicas poll it every half second).

Example::

    store = SplitStore("runs/gateway/split-state.sqlite")
    store.record_deploy(config)                 # first deploy: recorded
    store.record(with_90_10, source="admin-api", actor="ops")
    store.record_deploy(config)                 # same config again (replica restart): None
    store.latest()["source"]                    # "admin-api": the most recent change wins
"""
from __future__ import annotations

import json
import pathlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from gateway.core.config import load_gateway_config, merge_overlay
from gateway.core.errors import BadRequest, GatewayConfigError, InvalidInput

SOURCES = ("admin-api", "serve-deploy", "rollout", "cli")
_COLUMNS = "seq, at, actor, source, config"


class SplitStore:
    """SQLite table of changes; ``latest()`` is the config every replica must serve.

    ``scope`` (the Serve application's name) keeps applications that share a file apart.
    """

    def __init__(self, path: str | pathlib.Path, *, scope: str = "", clock: Callable[[], float] = time.time):
        self.path, self.scope, self._clock = pathlib.Path(path), scope, clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            # `deployed` is the config as a deploy sent it (before a rollout's weights replace
            # the file's): what a later deploy is compared with.
            db.execute("CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                       " at REAL NOT NULL, actor TEXT NOT NULL, source TEXT NOT NULL, config TEXT NOT NULL,"
                       " deployed TEXT, scope TEXT NOT NULL DEFAULT '')")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5)
        try:
            with db:  # commit or roll back
                yield db
        finally:
            db.close()

    def record(self, config: dict[str, Any], *, source: str, actor: str,
               deployed: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append a change (it becomes the latest); returns its row."""
        if source not in SOURCES:
            raise ValueError(f"unknown change source {source!r} (one of {', '.join(SOURCES)})")
        at = self._clock()
        with self._connect() as db:
            cur = db.execute("INSERT INTO changes (at, actor, source, config, deployed, scope) VALUES (?, ?, ?, ?, ?, ?)",
                             (at, actor, source, _dump(config), None if deployed is None else _dump(deployed),
                              self.scope))
            seq = cur.lastrowid
        return {"seq": seq, "at": at, "actor": actor, "source": source, "config": config}

    def record_deploy(self, deployed: dict[str, Any], *, config: dict[str, Any] | None = None,
                      actor: str = "serve-deploy") -> dict[str, Any] | None:
        """Record a deploy (``config``, default ``deployed``) unless ``deployed`` equals the last one."""
        with self._connect() as db:
            row = db.execute("SELECT deployed FROM changes WHERE source = 'serve-deploy' AND scope = ? "
                             "ORDER BY seq DESC LIMIT 1", (self.scope,)).fetchone()
        if row is not None and json.loads(row[0]) == deployed:
            return None  # a replica restart re-sent the same config: not a new change
        return self.record(deployed if config is None else config, source="serve-deploy", actor=actor,
                           deployed=deployed)

    def latest(self) -> dict[str, Any] | None:
        """The most recent change (None before any)."""
        with self._connect() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM changes WHERE scope = ? ORDER BY seq DESC LIMIT 1",
                             (self.scope,)).fetchone()
        if row is None:
            return None
        return {"seq": row[0], "at": row[1], "actor": row[2], "source": row[3], "config": json.loads(row[4])}


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True)


class SharedConfig:
    """The change log as the controller's deployment runs it (thread-safe; latest row cached).

    ``base`` is the config the application was built with (in force before any row);
    ``rollout_owns_weights``: with a rollout policy only the rollout changes the split.
    """

    def __init__(self, store: SplitStore, base: Mapping[str, Any], *, rollout_owns_weights: bool = False):
        self.store, self._base, self._rollout = store, dict(base), rollout_owns_weights
        self._lock = threading.Lock()  # the rollout's tick thread and admin calls both write
        self._latest = store.latest()

    @property
    def latest(self) -> dict[str, Any] | None:
        """The change in force (None before any)."""
        return self._latest

    def _current(self) -> dict[str, Any]:
        return self._latest["config"] if self._latest else self._base

    def change(self, overlay: dict[str, Any], *, source: str, actor: str) -> dict[str, Any]:
        """Merge ``overlay`` into the config in force and record it (422 invalid, 409 rollout's split)."""
        with self._lock:
            if self._rollout and "weights" in (overlay.get("routing") or {}):
                raise BadRequest("a rollout controls the split: use POST /admin/rollout/{command}", status=409)
            config = _validated(merge_overlay(self._current(), overlay))
            self._latest = self.store.record(config, source=source, actor=actor)
            return self._latest

    def set_weights(self, weights: Mapping[str, float], *, actor: str = "rollout-controller") -> dict[str, Any]:
        """The rollout's split (recorded only when it differs from the split in force)."""
        with self._lock:
            current = self._current()
            if _weights(current) == _weights({"routing": {"weights": dict(weights)}}) and self._latest:
                return self._latest
            config = _validated(merge_overlay(current, {"routing": {"weights": dict(weights)}}))
            self._latest = self.store.record(config, source="rollout", actor=actor)
            return self._latest

    def deploy(self, deployed: dict[str, Any], *, actor: str = "serve-deploy") -> dict[str, Any] | None:
        """A replica reports its deployed config; an unchanged one is no new change. Returns the latest."""
        with self._lock:
            config = deployed
            if self._rollout and self._latest is not None:
                config = _keep_weights(deployed, _weights(self._latest["config"]))
            row = self.store.record_deploy(deployed, config=config, actor=actor)
            if row is not None:
                self._latest = row
            return self._latest


def _weights(config: Mapping[str, Any]) -> dict[str, float]:
    """The nonzero weights of a config dict, as floats (0 and absent mean the same)."""
    return {k: float(v) for k, v in config["routing"]["weights"].items() if float(v) != 0.0}


def _keep_weights(deployed: dict[str, Any], weights: dict[str, float]) -> dict[str, Any]:
    """``deployed`` with the rollout's split (when that split still fits its variants)."""
    names = {v["name"] for v in deployed["variants"]}
    if not set(weights) <= names:
        return deployed  # the deploy removed a variant the rollout routed to: the file decides
    return merge_overlay(deployed, {"routing": {"weights": weights}})


def _validated(config: dict[str, Any]) -> dict[str, Any]:
    try:
        return load_gateway_config(config).model_dump(mode="json")
    except GatewayConfigError as err:
        raise InvalidInput(str(err)) from err
