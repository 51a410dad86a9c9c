"""One persisted source of truth for the split and config overlays (issue 11, point 4).

Every change, however it came (``admin-api``, ``serve-deploy``, ``rollout``, ``cli``), is a row
{seq, at, actor, source, config} holding the whole gateway config it puts in force; the most
recent row wins. Gateway replicas converge by applying :meth:`SplitStore.latest` (its ``seq``
tells them whether anything changed). A ``serve deploy`` is recorded only when the deployed
config differs from the last deployed one, so a restarted replica re-sending the same
``user_config`` never overrides a newer admin change, while an edited file does.

:class:`SharedConfig` is the logic the controller's deployment runs over the store: an admin
overlay merges into the latest config (validated, 422 when invalid), a rollout owns the
weights, and every write merges into the latest row as the file holds it.

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
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; ``write`` takes the file's write lock before reading (BEGIN IMMEDIATE),
        so a read-merge-append is atomic across processes (two control replicas during a redeploy)."""
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def update(self, make: Callable[[dict[str, Any] | None, dict[str, Any] | None], Any], *,
               source: str, actor: str) -> dict[str, Any] | None:
        """Append ``make(latest, last_deployed)`` as the newest change, in one write transaction.

        ``make`` sees the latest row (None before any) and the config the last deploy sent (None
        before any) as they are in the file now, never a cached copy, so a writer whose view is
        old cannot undo a newer change. It returns the new config, or ``(config, deployed)`` for a
        deploy, or None (nothing to record). Returns the new row, or None when nothing was recorded.
        """
        if source not in SOURCES:
            raise ValueError(f"unknown change source {source!r} (one of {', '.join(SOURCES)})")
        with self._connect(write=True) as db:
            made = make(self._latest(db), self._last_deployed(db))
            if made is None:
                return None
            config, deployed = made if isinstance(made, tuple) else (made, None)
            at = self._clock()
            cur = db.execute("INSERT INTO changes (at, actor, source, config, deployed, scope) VALUES (?, ?, ?, ?, ?, ?)",
                             (at, actor, source, _dump(config), None if deployed is None else _dump(deployed),
                              self.scope))
            return {"seq": cur.lastrowid, "at": at, "actor": actor, "source": source, "config": config}

    def record(self, config: dict[str, Any], *, source: str, actor: str) -> dict[str, Any]:
        """Append a change (it becomes the latest); returns its row."""
        return self.update(lambda _latest, _deployed: config, source=source, actor=actor)

    def record_deploy(self, deployed: dict[str, Any], *, actor: str = "serve-deploy") -> dict[str, Any] | None:
        """Record a deploy unless ``deployed`` equals the last one (then None)."""
        return self.update(lambda _latest, last: None if last == deployed else (deployed, deployed),
                           source="serve-deploy", actor=actor)

    def latest(self) -> dict[str, Any] | None:
        """The most recent change (None before any)."""
        with self._connect() as db:
            return self._latest(db)

    def _latest(self, db: sqlite3.Connection) -> dict[str, Any] | None:
        row = db.execute(f"SELECT {_COLUMNS} FROM changes WHERE scope = ? ORDER BY seq DESC LIMIT 1",
                         (self.scope,)).fetchone()
        if row is None:
            return None
        return {"seq": row[0], "at": row[1], "actor": row[2], "source": row[3], "config": json.loads(row[4])}

    def _last_deployed(self, db: sqlite3.Connection) -> dict[str, Any] | None:
        row = db.execute("SELECT deployed FROM changes WHERE source = 'serve-deploy' AND scope = ? "
                         "ORDER BY seq DESC LIMIT 1", (self.scope,)).fetchone()
        return None if row is None else json.loads(row[0])


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True)


class SharedConfig:
    """The change log as the controller's deployment runs it (thread-safe).

    ``base`` is the config the application was built with (in force before any row);
    ``rollout_owns_weights``: with a rollout policy only the rollout changes the split.
    Every write merges into the latest row as the file holds it (:meth:`SplitStore.update`):
    during a redeploy the old and the new control replica both write here, and a copy cached by
    one of them would let it undo the other's change (seen: a rollout step of the old
    generation putting the previous deploy's models back). Reads are cached for ``max_age_s``.
    """

    def __init__(self, store: SplitStore, base: Mapping[str, Any], *, rollout_owns_weights: bool = False,
                 max_age_s: float = 0.25, clock: Callable[[], float] = time.monotonic):
        self.store, self._base, self._rollout = store, dict(base), rollout_owns_weights
        self._max_age_s, self._clock = max_age_s, clock
        self._lock = threading.Lock()  # the rollout's tick thread and admin calls both write
        self._remember(store.latest())

    def _remember(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        self._latest, self._read_at = row, self._clock()
        return row

    @property
    def latest(self) -> dict[str, Any] | None:
        """The change in force (None before any), at most ``max_age_s`` old."""
        with self._lock:
            if self._clock() - self._read_at > self._max_age_s:
                self._remember(self.store.latest())
            return self._latest

    def _write(self, make, *, source: str, actor: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.store.update(make, source=source, actor=actor)
            return self._remember(row if row is not None else self.store.latest())

    def change(self, overlay: dict[str, Any], *, source: str, actor: str) -> dict[str, Any]:
        """Merge ``overlay`` into the config in force and record it (422 invalid, 409 rollout's split)."""
        if self._rollout and "weights" in (overlay.get("routing") or {}):
            raise BadRequest("a rollout controls the split: use POST /admin/rollout/{command}", status=409)
        return self._write(lambda latest, _: _validated(merge_overlay(self._config(latest), overlay)),
                           source=source, actor=actor)

    def set_weights(self, weights: Mapping[str, float], *, actor: str = "rollout-controller") -> dict[str, Any]:
        """The rollout's split (recorded only when it differs from the split in force)."""
        def make(latest, _deployed):
            current = self._config(latest)
            if latest is not None and _weights(current) == _weights({"routing": {"weights": dict(weights)}}):
                return None
            return _validated(merge_overlay(current, {"routing": {"weights": dict(weights)}}))
        return self._write(make, source="rollout", actor=actor)

    def deploy(self, deployed: dict[str, Any], *, actor: str = "serve-deploy") -> dict[str, Any] | None:
        """A replica reports its deployed config; an unchanged one is no new change. Returns the latest."""
        def make(latest, last_deployed):
            if last_deployed == deployed:
                return None  # a replica restart re-sent the same config: not a new change
            if self._rollout and latest is not None:
                return _keep_weights(deployed, _weights(latest["config"])), deployed
            return deployed, deployed
        return self._write(make, source="serve-deploy", actor=actor)

    def _config(self, latest: dict[str, Any] | None) -> dict[str, Any]:
        return latest["config"] if latest else self._base


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
