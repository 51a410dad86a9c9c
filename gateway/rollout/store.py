"""Persistence of the rollout: status, check history and events in one SQLite file, and
evidence bundles (:class:`EvidenceWriter`) as directories of JSON/CSV.

The file lives on a volume on Kubernetes, so a restarted controller resumes where it
stopped (a rolled-back student stays rolled back). Each call opens its own connection:
the store is used from the reconciler's background task and from admin requests.

Example::

    store = RolloutStore("runs/rollout-state.sqlite")
    store.save(status)
    assert store.load() == status
    store.checks(since=status.started_at)   # gate values over time, oldest first
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import pathlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

from gateway.core.errors import GatewayError
from gateway.rollout.core.machine import RecordCheck, RolloutStatus, WriteEvidence
from gateway.rollout.core.spec import RolloutSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS status (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL, updated_at REAL);
CREATE TABLE IF NOT EXISTS checks (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
                                   body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS checks_at ON checks (at);
"""


class RolloutStoreError(GatewayError):
    """The rollout state file cannot be read or written."""


class RolloutStore:
    """Status (one row), analysis checks and events, in SQLite at ``path``."""

    def __init__(self, path: str | pathlib.Path, *, max_checks: int = 20000):
        self.path = pathlib.Path(path)
        self.max_checks = max_checks
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise RolloutStoreError(f"cannot open rollout state {self.path}: {err}") from err

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=5.0)
        except sqlite3.Error as err:
            raise RolloutStoreError(f"cannot open rollout state {self.path}: {err}") from err
        try:
            with db:  # one transaction, committed on success
                yield db
        except sqlite3.Error as err:
            raise RolloutStoreError(f"rollout state {self.path}: {err}") from err
        finally:
            db.close()

    def save(self, status: RolloutStatus) -> None:
        """Replace the stored status."""
        body = json.dumps(status.to_dict())
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO status (id, body, updated_at) VALUES (1, ?, ?)",
                       (body, status.updated_at))

    def load(self) -> RolloutStatus | None:
        """The stored status, or None when nothing was saved yet."""
        with self._connect() as db:
            row = db.execute("SELECT body FROM status WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            return RolloutStatus.from_dict(json.loads(row[0]))
        except (ValueError, TypeError, KeyError) as err:
            raise RolloutStoreError(f"rollout state {self.path} holds an unreadable status: {err}") from err

    def append_check(self, record: RecordCheck) -> None:
        """Store one analysis check; the oldest beyond ``max_checks`` are dropped."""
        body = dataclasses.asdict(record)
        body["gates"] = [g.to_dict() for g in record.gates]
        with self._connect() as db:
            db.execute("INSERT INTO checks (at, body) VALUES (?, ?)", (record.at, json.dumps(body)))
            db.execute("DELETE FROM checks WHERE id <= (SELECT MAX(id) FROM checks) - ?", (self.max_checks,))

    def checks(self, since: float | None = None, limit: int = 5000) -> list[dict[str, Any]]:
        """Stored checks at or after ``since``, oldest first (the last ``limit`` of them)."""
        with self._connect() as db:
            rows = db.execute("SELECT body FROM (SELECT id, body FROM checks WHERE at >= ? ORDER BY id DESC "
                              "LIMIT ?) ORDER BY id", (since if since is not None else float("-inf"), limit)).fetchall()
        return [json.loads(body) for (body,) in rows]

    def append_event(self, at: float, kind: str, detail: dict[str, Any]) -> None:
        """Store one event (phase change, command, check error, delivery failure)."""
        with self._connect() as db:
            db.execute("INSERT INTO events (at, kind, body) VALUES (?, ?, ?)", (at, kind, json.dumps(detail)))

    def events(self, limit: int = 200) -> list[dict[str, Any]]:
        """The most recent events, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT at, kind, body FROM (SELECT * FROM events ORDER BY id DESC LIMIT ?) "
                              "ORDER BY id", (limit,)).fetchall()
        return [{"at": at, "kind": kind, **json.loads(body)} for at, kind, body in rows]


class EvidenceWriter:
    """Write an evidence bundle directory: status, config, gate values over time, disagreements.

    ``export_disagreements(path) -> rows`` is the capture store's ``export_npz``.
    """

    def __init__(self, directory: str | pathlib.Path, *, config: dict[str, Any] | None = None,
                 export_disagreements: Callable[[str], int] | None = None):
        self.directory = pathlib.Path(directory)
        self.config = config or {}
        self.export_disagreements = export_disagreements

    def __call__(self, action: WriteEvidence, status: RolloutStatus, checks: list[dict[str, Any]],
                 spec: RolloutSpec) -> pathlib.Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(action.at))
        out = self.directory / f"{stamp}-{action.kind}-{status.student}"
        out.mkdir(parents=True, exist_ok=True)
        disagreements: dict[str, Any] = {"path": None, "rows": 0}
        if self.export_disagreements is not None:
            try:
                rows = self.export_disagreements(str(out / "disagreements.npz"))
                disagreements = {"path": "disagreements.npz", "rows": rows}
            except Exception as err:  # noqa: BLE001 -- evidence without captures beats no evidence
                disagreements["error"] = f"{type(err).__name__}: {err}"
        bundle = {"kind": action.kind, "reason": action.reason, "at": action.at, "status": status.to_dict(),
                  "spec": spec.model_dump(mode="json"), "config": self.config, "disagreements": disagreements,
                  "checks": checks}
        (out / "evidence.json").write_text(json.dumps(bundle, indent=1, default=str))
        _write_gates_csv(out / "gates.csv", checks)
        return out


def _write_gates_csv(path: pathlib.Path, checks: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["at", "phase", "step_index", "weight", "verdict", "gate", "status", "value", "threshold"])
        for c in checks:
            for g in c["gates"]:
                writer.writerow([c["at"], c["phase"], c["step_index"], c["weight"], c["verdict"], g["name"],
                                 g["status"], g["value"], g["threshold"]])


GATE_COLUMNS = ("agreement", "kl", "latency", "error_rate", "output_drift", "input_drift")


def _cell(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return "-"
    mark = {"passed": "", "failed": "!", "no_data": "?"}[gate["status"]]
    return f"{gate['value']:.3g}{mark}" if gate["value"] is not None else "n/a?"


def format_timeline(checks: list[dict[str, Any]], t0: float | None = None) -> str:
    """One line per check: time, phase, weight, gate values (``!`` failed, ``?`` no data), decision."""
    if not checks:
        return "(no checks recorded)"
    t0 = checks[0]["window"]["start"] if t0 is None else t0
    header = f"{'t (s)':>7} {'phase':<12} {'weight':>6} " + " ".join(f"{c[:11]:>11}" for c in GATE_COLUMNS)
    lines = [header + "  verdict  decision"]
    for c in checks:
        gates = {g["name"]: g for g in c["gates"]}
        cells = " ".join(f"{_cell(gates.get(name)):>11}" for name in GATE_COLUMNS)
        row = f"{c['at'] - t0:7.0f} {c['phase']:<12} {c['weight']:6g} {cells}"
        lines.append(f"{row}  {c['verdict']:<8} {c['decision']}")
    return "\n".join(lines)
