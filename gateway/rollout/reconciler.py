"""The rollout reconciler: observe -> step -> apply actions -> persist, one tick at a time.

A thin adapter around the pure state machine (``gateway.rollout.core.machine``). It never raises
from :meth:`RolloutReconciler.tick`: an observation, store, webhook or weight-setting
failure becomes ``status.last_error``, an event in the store and a metric, and the next
tick retries (weights that could not be applied are re-applied first).

Hosting (in the gateway app)::

    reconciler = RolloutReconciler(
        spec, RolloutStore(spec.state_path), EmbeddedSource(merged_snapshot, teacher=..., student=...,
                                                             reference=manifest),
        set_weights=router.set_weights, teacher="teacher", student="student-v2",
        evidence=EvidenceWriter(spec.evidence_dir, config=gateway_config.model_dump(),
                                export_disagreements=capture.export_npz))
    while True:                      # a background task; commands come from the admin API
        reconciler.tick()
        await asyncio.sleep(reconciler.tick_period_s)
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import pathlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from gateway.rollout.core import machine as sm
from gateway.core.config import GatewayConfig
from gateway.core.errors import GatewayConfigError
from gateway.rollout.core.gates import GateResult
from gateway.rollout.core.observations import EmbeddedSource, ObservationSource, ReplicaSnapshots, Window
from gateway.rollout.core.machine import (
    Action, InvalidCommand, Notify, RecordCheck, RolloutPhase, RolloutStatus, SetWeights, WriteEvidence,
)
from gateway.rollout.core.spec import RolloutSpec
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


class ServeRolloutMetrics:
    """:class:`RolloutMetrics` through ``ray.serve.metrics`` (scraped as ``ray_kdgate_rollout_*``).

    ``kdgate_rollout_phase`` (1 for the current phase), ``kdgate_rollout_weight_ratio``
    (student share 0..1), ``kdgate_rollout_gate_value`` / ``_gate_threshold`` /
    ``_gate_failing`` by gate, ``kdgate_rollout_rollbacks_total`` by reason (failing gates),
    ``kdgate_rollout_errors_total`` by stage (observe, set_weights, notify, ...).
    """

    def __init__(self, model: str, student: str):
        from ray.serve.metrics import Counter  # noqa: PLC0415 -- keep Ray out of import time

        from gateway.serve.metrics import HeldGauge  # noqa: PLC0415 -- Ray evicts a gauge ~20 s after its last set

        self.tags = {"model": model, "variant": student}
        keys = ("model", "variant")
        self.phase = HeldGauge("kdgate_rollout_phase", description="1 for the rollout's current phase.",
                               tag_keys=(*keys, "phase"))
        self.weight = HeldGauge("kdgate_rollout_weight_ratio", description="Student live-traffic share (0..1).",
                                tag_keys=keys)
        self.gate_value = HeldGauge("kdgate_rollout_gate_value", description="Last value of each gate.",
                                    tag_keys=(*keys, "gate"))
        self.gate_threshold = HeldGauge("kdgate_rollout_gate_threshold", description="Threshold of each gate.",
                                        tag_keys=(*keys, "gate"))
        self.gate_failing = HeldGauge("kdgate_rollout_gate_failing", description="1 if the gate failed its last check.",
                                      tag_keys=(*keys, "gate"))
        self.rollbacks = Counter("kdgate_rollout_rollbacks_total", description="Automated rollbacks by reason.",
                                 tag_keys=(*keys, "reason"))
        self.errors = Counter("kdgate_rollout_errors_total", description="Controller errors by stage (retried).",
                              tag_keys=(*keys, "stage"))

    def record_status(self, status: RolloutStatus) -> None:
        for phase in RolloutPhase:
            self.phase.set(1.0 if phase is status.phase else 0.0, {**self.tags, "phase": phase.value})
        self.weight.set(status.weight / 100.0, self.tags)

    def record_gates(self, gates: tuple[GateResult, ...]) -> None:
        for g in gates:
            tags = {**self.tags, "gate": g.name}
            if g.value is not None:
                self.gate_value.set(g.value, tags)
            if g.threshold is not None:
                self.gate_threshold.set(g.threshold, tags)
            self.gate_failing.set(1.0 if g.status.value == "failed" else 0.0, tags)

    def record_rollback(self, reason: str) -> None:
        self.rollbacks.inc(1, {**self.tags, "reason": reason})

    def record_error(self, where: str) -> None:
        self.errors.inc(1, {**self.tags, "stage": where})

    def refresh(self) -> None:
        for gauge in (self.phase, self.weight, self.gate_value, self.gate_threshold, self.gate_failing):
            gauge.refresh()


class WebhookNotifier:
    """POST a JSON payload to ``url`` with a short timeout; raises on any failure."""

    def __init__(self, url: str, timeout_s: float = 2.0):
        self.url, self.timeout_s = url, timeout_s

    def __call__(self, payload: dict[str, Any]) -> None:
        response = httpx.post(self.url, json=payload, timeout=self.timeout_s)
        response.raise_for_status()


class RolloutReconciler:
    """Drive one rollout: restore or start it, run due checks, apply actions, persist.

    ``set_weights(dict)`` changes the live split; ``notify(payload)`` posts the webhook
    (default: :class:`WebhookNotifier` when ``spec.webhook_url`` is set); ``evidence`` writes
    bundles (default: :class:`EvidenceWriter` in ``spec.evidence_dir``); ``clock()`` is the time.
    """

    def __init__(self, spec: RolloutSpec, store: RolloutStore, source: ObservationSource,
                 set_weights: Callable[[dict[str, float]], None], *, teacher: str, student: str,
                 student_version: str = "", notify: Callable[[dict[str, Any]], None] | None = None,
                 evidence: Callable[..., Any] | None = None, clock: Callable[[], float] = time.time,
                 metrics: RolloutMetrics | None = None):
        self.spec, self.store, self.source = spec, store, source
        self.set_weights, self.clock = set_weights, clock
        self.teacher, self.student, self.student_version = teacher, student, student_version
        if notify is None and spec.webhook_url:
            notify = WebhookNotifier(spec.webhook_url, spec.webhook_timeout_s)
        self.notify = notify
        self.evidence = evidence or EvidenceWriter(spec.evidence_dir)
        self.metrics = metrics or NullMetrics()
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
        """Recent checks and events of this rollout (for ``kdgate rollout status``)."""
        status = self.status
        return {"status": status.to_dict(), "checks": self.store.checks(since=status.started_at, limit=limit),
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
            self._status = stored
            self._weights_applied = False  # re-assert the stored split (e.g. 0 % after a rollback)
            self.store.append_event(now, "restored", {"phase": stored.phase.value, "weight": stored.weight})
            self.metrics.record_status(stored)
            return stored
        new, actions = sm.start(self.spec, teacher=self.teacher, student=self.student, now=now,
                                student_version=self.student_version)
        self._transition(new, actions, now, event={"kind": "started"})
        return new

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
            self.metrics.record_rollback(",".join(g.name for g in new.failing) or "unknown")
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


def reconciler_from_config(config: GatewayConfig, *, set_weights: Callable[[dict[str, float]], None],
                           snapshot: Callable[[], Mapping[str, Any]] | None = None,
                           export_disagreements: Callable[[str], int] | None = None,
                           clock: Callable[[], float] = time.time, metrics: RolloutMetrics | None = None,
                           notify: Callable[[dict[str, Any]], None] | None = None) -> RolloutReconciler:
    """The reconciler for ``config.rollout``: names, versions, prices and the manifest come from
    the variants; observations from ``snapshot()`` (one WindowStats snapshot, or one per replica:
    ``ReplicaSnapshots.per_replica``) or
    Prometheus (``rollout.source: prometheus``); evidence bundles export the capture directory
    unless ``export_disagreements`` is given.
    """
    spec = config.rollout
    if spec is None:
        raise GatewayConfigError([("rollout", "no rollout policy in this config")])
    teacher, student = config.teacher, config.variant(config.rollout_student)
    reference = _read_manifest(student.manifest_path)
    prices = {v.name: v.usd_per_hour for v in config.variants}
    if spec.source == "prometheus":
        from gateway.rollout.prometheus_source import PrometheusSource  # noqa: PLC0415

        source: ObservationSource = PrometheusSource(spec.prometheus, model=config.model_name, teacher=teacher.name,
                                                     student=student.name, reference=reference, usd_per_hour=prices)
    elif snapshot is None:
        raise GatewayConfigError([("rollout.source", "embedded observations need the replicas' snapshots")])
    else:
        source = EmbeddedSource(snapshot, teacher=teacher.name, student=student.name, reference=reference,
                                usd_per_hour=prices)
    if export_disagreements is None and config.capture.enabled:
        export_disagreements = _capture_exporter(config.capture.dir)
    evidence = EvidenceWriter(spec.evidence_dir, config=config.model_dump(mode="json"),
                              export_disagreements=export_disagreements)
    return RolloutReconciler(spec, RolloutStore(spec.state_path), source, set_weights, teacher=teacher.name,
                             student=student.name, student_version=student.version, notify=notify,
                             evidence=evidence, clock=clock, metrics=metrics)


class RolloutController:
    """Host-neutral glue for the gateway: replicas push snapshots and pull weights; a loop ticks.

    Hosted by one single-replica Serve deployment (see :func:`run`); each gateway replica
    calls :meth:`sync` about once a second with its ``WindowStats`` snapshot and applies the
    weights it gets back, so a rollback reaches every replica within one sync period and
    in-flight requests finish on the variant that took them.

    Example::

        controller = RolloutController(config, export_disagreements=capture.export_npz)
        asyncio.create_task(controller.run())
        answer = controller.sync("replica-1", stats.snapshot())   # {"weights": {...}, "phase": ...}
    """

    def __init__(self, config: GatewayConfig, **kwargs: Any):
        self.snapshots = ReplicaSnapshots()
        self._weights = config.effective_weights()   # until the rollout sets (or restores) its own
        self.reconciler = reconciler_from_config(config, set_weights=self._set_weights,
                                                 snapshot=self.snapshots.per_replica, **kwargs)
        self._phase: str | None = None
        self._stopped = False
        self._wake: asyncio.Event | None = None

    def _set_weights(self, weights: dict[str, float]) -> None:
        self._weights = {**{name: 0.0 for name in self._weights}, **weights}

    def sync(self, replica_id: str, snapshot: dict) -> dict[str, Any]:
        """Take a replica's snapshot; answer the split it must route with (cheap, never blocks on a tick)."""
        self.snapshots.report(replica_id, snapshot)
        return {"weights": dict(self._weights), "phase": self._phase}

    def tick(self) -> RolloutStatus:
        status = self.reconciler.tick()
        self._phase = status.phase.value
        return status

    async def run(self) -> None:
        """Tick every ``tick_period_s`` until :meth:`stop`; ticks run in a thread (SQLite, HTTP)."""
        self._wake = asyncio.Event()
        while not self._stopped:
            await asyncio.to_thread(self.tick)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.reconciler.tick_period_s)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        """End :meth:`run` (call it on the loop that runs it)."""
        self._stopped = True
        if self._wake is not None:
            self._wake.set()

    def command(self, name: str, *, actor: str, weight: float | None = None) -> dict[str, Any]:
        """A manual command (raises InvalidCommand -> 409); returns the new status as a dict."""
        status = self.reconciler.command(name, actor=actor, weight=weight)
        self._phase = status.phase.value
        return status.to_dict()


def _capture_exporter(directory: str) -> Callable[[str], int]:
    """Export the flushed capture segments in ``directory`` (the replicas write them there)."""
    def export(out_path: str) -> int:
        from gateway.capture import export_capture  # noqa: PLC0415

        return export_capture(directory, out_path)

    return export


def _read_manifest(path: str | None) -> dict[str, Any] | None:
    """The student's manifest.json (its reference statistics), or None (input drift: no data)."""
    if not path:
        return None
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as err:
        log.warning("manifest %s unreadable (%s): the input drift gate will report no data", path, err)
        return None


def _with_error(status: RolloutStatus, message: str, now: float) -> RolloutStatus:
    return dataclasses.replace(status, last_error=message, updated_at=now)


def _required(weight: float | None) -> float:
    if weight is None:
        raise InvalidCommand("set_weight needs a weight (percent)")
    return float(weight)
