"""AuditLog: append-only JSON lines with time, actor, action, old and new."""
from __future__ import annotations

import json
import threading

import pytest

from gateway.audit import AuditLog
from gateway.core.config import load_gateway_config
from gateway.core.errors import AuditError

CONFIG = {
    "model_name": "digits",
    "variants": [
        {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": "t.onnx"},
        {"name": "student", "role": "student", "backend": "onnx", "model_path": "s.onnx"},
    ],
    "routing": {"weights": {"teacher": 95, "student": 5}},
}


def test_record_appends_one_json_line_per_change(tmp_path):
    log = AuditLog(tmp_path / "logs" / "audit.jsonl")
    log.record("alice", "routing.weights", {"student": 5}, {"student": 10}, at=0.0)
    log.record("bob", "shadow.fraction", 0.0, 0.1, at=1.5)
    lines = (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {"time": "1970-01-01T00:00:00.000Z", "actor": "alice", "action": "routing.weights",
                     "old": {"student": 5}, "new": {"student": 10}}
    assert [e["actor"] for e in log.entries()] == ["alice", "bob"]
    assert log.entries(last=1)[0]["time"] == "1970-01-01T00:00:01.500Z"


def test_existing_entries_are_never_rewritten(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path).record("a", "x", 1, 2)
    before = path.read_text()
    AuditLog(path).record("b", "y", 2, 3)  # a new process/instance appends
    assert path.read_text().startswith(before)


def test_config_change_records_changed_fields(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    old = load_gateway_config(CONFIG)
    new = old.with_weights({"teacher": 90, "student": 10})
    entry = log.record_config_change("admin-api", old, new)
    assert entry["old"] == {"routing.weights.student": 5.0, "routing.weights.teacher": 95.0}
    assert entry["new"] == {"routing.weights.student": 10.0, "routing.weights.teacher": 90.0}
    assert entry["changes"] == ["routing.weights.student: 5.0 -> 10.0", "routing.weights.teacher: 95.0 -> 90.0"]
    assert log.record_config_change("admin-api", new, new) is None
    assert len(log.entries()) == 1


def test_concurrent_writers_keep_lines_whole(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")

    def write(n: int) -> None:
        for i in range(50):
            log.record(f"t{n}", "x", "a" * 500, i)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log.entries()) == 200


def test_missing_file_has_no_entries_and_unwritable_path_is_an_error(tmp_path):
    assert AuditLog(tmp_path / "none.jsonl").entries() == []
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AuditError, match="cannot append"):
        AuditLog(blocker / "audit.jsonl").record("a", "x", 1, 2)
