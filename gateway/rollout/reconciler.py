"""The rollout reconciler: observe -> step -> apply actions -> persist, one tick at a time.

A thin adapter around the pure state machine (``gateway.rollout.core.machine``). It never raises
from :meth:`RolloutReconciler.tick`: an observation, store, webhook or weight-setting
failure becomes ``status.last_error``, an event in the store and a metric, and the next
tick retries (weights that could not be applied are re-applied first).

Example (the gateway builds it with :func:`gateway.rollout.controller.reconciler_from_config`)::

    split = {}
    reconciler = RolloutReconciler(
        spec, RolloutStore(spec.state_path), EmbeddedSource(snapshots, teacher="teacher", student="student",
                                                             reference=manifest),
        set_weights=split.update, teacher="teacher", student="student")
    while True:                      # a background task; commands come from the admin API
        reconciler.tick()
        time.sleep(reconciler.tick_period_s)
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from gateway.rollout.core import machine as sm
from gateway.rollout.core.gates import GateResult
from gateway.rollout.core.observations import ObservationSource, Window
from gateway.rollout.core.machine import (
    Action, InvalidCommand, Notify, RecordCheck, RolloutPhase, RolloutStatus, SetWeights, WriteEvidence,
)
from gateway.rollout.core.spec import RolloutSpec
from gateway.rollout.notify import WebhookNotifier
from gateway.rollout.store import EvidenceWriter, RolloutStore

log = logging.getLogger("kdgate.rollout")


class RolloutMetrics(Protocol):
    """What the reconciler reports; the gateway implements it with ``ray.serve.metrics``."""

    def record_status(self, status: RolloutStatus) -> None: ...        # phase, weight
    def record_gates(self, gates: tuple[GateResult, ...]) -> None: ...  # value per gate
    def record_rollback(self, reason: str) -> None: ...                 # rollbacks by reason (gate)
    def record_error(self, where: str) -> None: ...                     # errors by stage
    def refresh(self) -> None: ...                                      # re-export held gauges


class NullMetrics:
    """Records nothing (tests, or a gateway without metrics)."""

    def record_status(self, status: RolloutStatus) -> None:
        pass

    def record_gates(self, gates: tuple[GateResult, ...]) -> None:
        pass

    def record_rollback(self, reason: str) -> None:
        pass

    def record_error(self, where: str) -> None:
        pass

    def refresh(self) -> None:
        pass


class RolloutReconciler:
    """Drive one rollout: restore or start it, run due checks, apply actions, persist.

    ``set_weights(dict)`` changes the live split; ``notify(payload)`` posts the webhook
    (default: :class:`WebhookNotifier` when ``spec.webhook_url`` is set); ``evidence`` writes
    bundles (default: :class:`EvidenceWriter` in ``spec.evidence_dir``); ``clock()`` is the time.

    ``variants`` are the gateway config's variant names. A new candidate (another student,
    or a new version) starts from the stored stable variant when it is still among them
    (else the teacher), so rolling out v2 after v1 was promoted takes traffic from v1.
    """

    def __init__(self, spec: RolloutSpec, store: RolloutStore, source: ObservationSource,
                 set_weights: Callable[[dict[str, float]], None], *, teacher: str, student: str,
                 student_version: str = "", notify: Callable[[dict[str, Any]], None] | None = None,
                 evidence: Callable[..., Any] | None = None, clock: Callable[[], float] = time.time,
                 metrics: RolloutMetrics | None = None, variants: Collection[str] | None = None):
        self.spec, self.store, self.source = spec, store, source
        self.set_weights, self.clock = set_weights, clock
        self.teacher, self.student, self.student_version = teacher, student, student_version
        if notify is None and spec.webhook_url:
            notify = WebhookNotifier(spec.webhook_url, spec.webhook_timeout_s)
        self.notify = notify
        self.evidence = evidence or EvidenceWriter(spec.evidence_dir)
        self.metrics = metrics or NullMetrics()
        self.variants = frozenset(variants) if variants is not None else None
        self._lock = threading.RLock()
        self._status: RolloutStatus | None = None
        self._weights_applied = False

    @property
    def tick_period_s(self) -> float:
        """How often the host should call :meth:`tick` (checks still run every ``interval_s``)."""
        return min(self.spec.interval_s / 4, 5.0)

    @property
    def status(self) -> RolloutStatus:
        """The current status (never raises: an unreadable state gives a teacher-only status)."""
        with self._lock:
            now = self.clock()
            try:
                return self._ensure_status(now)
            except Exception as err:  # noqa: BLE001 -- the admin API shows the error instead
                self._record_error("load", err, now)
                return self._fallback_status(now)

    def update_spec(self, spec: RolloutSpec) -> None:
        """A new rollout policy (gateway reconfigure): keep the weight, re-derive the step."""
        with self._lock:
            self.spec = spec
            if self._status is not None:
                self._status = sm.realign(spec, self._status)
                self._safely("persist", lambda: self.store.save(self._status), self.clock())

    def tick(self, now: float | None = None) -> RolloutStatus:
        """Run one reconcile pass; never raises. Returns the (possibly unchanged) status."""
        with self._lock:
            now = self.clock() if now is None else now
            try:
                status = self._ensure_status(now)
                if not self._weights_applied:
                    self._apply([SetWeights(status.weights(), "re-applying the rollout's weights")], now)
                if sm.check_due(self.spec, self._status, now):
                    self._check(now)
                self.metrics.refresh()
            except Exception as err:  # noqa: BLE001 -- the control loop never dies
                self._record_error("tick", err, now)
            return self._status if self._status is not None else self._fallback_status(now)

    def history(self, limit: int = 200) -> dict[str, Any]:
        """Status (stable, candidate, reference, phase), the split it sets, recent checks and events."""
        status = self.status
        return {"status": status.to_dict(), "split": status.weights(),
                "checks": self.store.checks(since=status.started_at, limit=limit),
                "events": self.store.events(limit=limit)}

    def command(self, name: str, *, actor: str = "operator", weight: float | None = None) -> RolloutStatus:
        """Apply a manual command (promote, pause, resume, abort, set_weight).

        Raises :class:`InvalidCommand` (409) when it does not apply in the current phase.
        """
        with self._lock:
            now = self.clock()
            status = self._ensure_status(now)
            commands = {
                "promote": lambda: sm.promote(self.spec, status, now, actor),
                "pause": lambda: sm.pause(status, now, actor),
                "resume": lambda: sm.resume(self.spec, status, now, actor),
                "abort": lambda: sm.abort(status, now, actor),
                "set_weight": lambda: sm.set_weight(self.spec, status, _required(weight), now, actor),
            }
            if name not in commands:
                raise InvalidCommand(f"unknown rollout command {name!r}; use one of {sorted(commands)}")
            new, actions = commands[name]()
            self._transition(new, actions, now, event={"kind": f"command:{name}", "actor": actor, "weight": weight})
            return new

    # --- internals ---

    def _ensure_status(self, now: float) -> RolloutStatus:
        if self._status is not None:
            return self._status
        # A first reading gives the embedded source its baseline (it subtracts readings).
        self._safely("observe", lambda: self.source.observe(Window(now, now)), now)
        stored = self.store.load()
        if stored is not None and (stored.student, stored.student_version, stored.teacher) == (
                self.student, self.student_version, self.teacher):
            restored = self._status = self._with_known_stable(stored)
            self._weights_applied = False  # re-assert the stored split (e.g. 0 % after a rollback)
            self.store.append_event(now, "restored", {"phase": restored.phase.value, "weight": restored.weight,
                                                      "stable": restored.stable})
            self.metrics.record_status(restored)
            return restored
        stable = self._stable_after(stored)
        if self._is_stored_stable(stored):
            # The stable student (same version) named as the candidate again, e.g. after another
            # candidate's rollback: it is guarded, not put through a new canary.
            new, actions = sm.guard_stable(self.spec, teacher=self.teacher, student=self.student, now=now,
                                           student_version=self.student_version, previous=stable)
        else:
            new, actions = sm.start(self.spec, teacher=self.teacher, student=self.student, now=now,
                                    student_version=self.student_version, stable=stable,
                                    stable_version=stored.stable_version if stored and stable == stored.stable else "")
        self._transition(new, actions, now, event={"kind": "started", "stable": new.stable,
                                                   "previous_candidate": stored.student if stored else None})
        return new

    def _is_stored_stable(self, stored: RolloutStatus | None) -> bool:
        """True when this candidate is the stored stable student, same version (a new version canaries)."""
        return (stored is not None and stored.teacher == self.teacher and stored.stable == self.student
                and self.student != self.teacher and stored.stable_version == self.student_version)

    def _known(self, name: str) -> bool:
        return bool(name) and (self.variants is None or name in self.variants)

    def _stable_after(self, stored: RolloutStatus | None) -> str:
        """The stable variant a new candidate takes its traffic from: the stored one if still deployed."""
        if stored is None or stored.teacher != self.teacher:
            return self.teacher
        for name in (stored.stable, stored.previous_stable):
            if self._known(name) and name != self.student:
                return name
        return self.teacher

    def _with_known_stable(self, status: RolloutStatus) -> RolloutStatus:
        """A restored status whose stable (or rollback) variant left the config falls back to the teacher."""
        if not status.promoted and not self._known(status.stable):
            status = dataclasses.replace(status, stable=self.teacher)
        if status.previous_stable and not self._known(status.previous_stable):
            status = dataclasses.replace(status, previous_stable=self.teacher)
        return status

    def _check(self, now: float) -> None:
        window = sm.analysis_window(self.spec, self._status, now)
        try:
            observations = self.source.observe(window)
        except Exception as err:  # noqa: BLE001 -- a failed observation is retried next tick
            self._record_error("observe", err, now)
            return
        new, actions = sm.step(self.spec, dataclasses.replace(self._status, last_error=""), observations, now)
        self.metrics.record_gates(new.last_gates)
        self._transition(new, actions, now)

    def _transition(self, new: RolloutStatus, actions: list[Action], now: float,
                    event: dict[str, Any] | None = None) -> None:
        old, self._status = self._status, new
        self._apply(actions, now)
        if old is None or old.phase is not new.phase or old.weight != new.weight or event:
            detail = {"from": old.phase.value if old else None, "to": new.phase.value, "weight": new.weight,
                      "reason": new.reason, **(event or {})}
            self._safely("event", lambda: self.store.append_event(now, detail.pop("kind", "phase"), detail), now)
        if new.phase is RolloutPhase.ROLLED_BACK and (old is None or old.phase is not RolloutPhase.ROLLED_BACK):
            guard = "guard:" if old is not None and old.phase is RolloutPhase.GUARDING else ""
            self.metrics.record_rollback(guard + (",".join(g.name for g in new.failing) or "unknown"))
        self.metrics.record_status(new)
        self._safely("persist", lambda: self.store.save(self._status), now)

    def _apply(self, actions: list[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, SetWeights):
                apply_weights = lambda a=action: self.set_weights(dict(a.weights))  # noqa: E731
                self._weights_applied = self._safely("set_weights", apply_weights, now)
            elif isinstance(action, Notify) and self.notify is not None:
                self._safely("notify", lambda a=action: self.notify(a.payload), now)
            elif isinstance(action, WriteEvidence):
                self._safely("evidence", lambda a=action: self._write_evidence(a), now)
            elif isinstance(action, RecordCheck):
                self._safely("record_check", lambda a=action: self.store.append_check(a), now)

    def _write_evidence(self, action: WriteEvidence) -> None:
        checks = self.store.checks(since=self._status.started_at)
        path = self.evidence(action, self._status, checks, self.spec)
        log.info("rollout evidence (%s) written to %s", action.kind, path)

    def _safely(self, where: str, fn: Callable[[], Any], now: float) -> bool:
        try:
            fn()
            return True
        except Exception as err:  # noqa: BLE001 -- reported, retried, never fatal
            self._record_error(where, err, now)
            return False

    def _record_error(self, where: str, err: Exception, now: float) -> None:
        message = f"{where}: {type(err).__name__}: {err}"
        log.warning("rollout %s", message)
        self.metrics.record_error(where)
        if self._status is not None:
            self._status = _with_error(self._status, message, now)
        try:
            self.store.append_event(now, "error", {"where": where, "error": message})
            if self._status is not None:
                self.store.save(self._status)
        except Exception:  # noqa: BLE001 -- the store itself may be what failed
            log.exception("rollout store unavailable while recording an error")

    def _fallback_status(self, now: float) -> RolloutStatus:
        """Status to report before any could be loaded or started (store down): teacher only."""
        return RolloutStatus(teacher=self.teacher, student=self.student, phase=RolloutPhase.PAUSED, step_index=0,
                             weight=0.0, started_at=now, step_started_at=now, updated_at=now,
                             last_error="rollout state unavailable")


def _with_error(status: RolloutStatus, message: str, now: float) -> RolloutStatus:
    return dataclasses.replace(status, last_error=message, updated_at=now)


def _required(weight: float | None) -> float:
    if weight is None:
        raise InvalidCommand("set_weight needs a weight (percent)")
    return float(weight)
