"""The controller the gateway hosts: builds the reconciler from a gateway config, takes the
replicas' snapshots, answers the split they route with, and ticks in a loop.

Example::

    controller = RolloutController(config, export_disagreements=capture.export_npz)
    asyncio.create_task(controller.run())
    answer = controller.sync("replica-1", stats.snapshot())   # {"weights": {...}, "phase": ...}
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.config import GatewayConfig
from gateway.core.errors import GatewayConfigError, ManifestError
from gateway.core.manifest import read_manifest
from gateway.rollout.core.machine import RolloutStatus
from gateway.rollout.core.observations import EmbeddedSource, ObservationSource, ReplicaSnapshots
from gateway.rollout.reconciler import RolloutMetrics, RolloutReconciler
from gateway.rollout.store import EvidenceWriter, RolloutStore

log = logging.getLogger("kdgate.rollout")


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
                             evidence=evidence, clock=clock, metrics=metrics,
                             variants=[v.name for v in config.variants])


class RolloutController:
    """Host-neutral glue for the gateway: replicas push snapshots and pull weights; a loop ticks.

    Hosted by one single-replica Serve deployment (see :func:`run`); each gateway replica
    calls :meth:`sync` about once a second with its ``WindowStats`` snapshot and applies the
    weights it gets back, so a rollback reaches every replica within one sync period and
    in-flight requests finish on the variant that took them.
    """

    def __init__(self, config: GatewayConfig, *, publish: Callable[[dict[str, float]], Any] | None = None,
                 **kwargs: Any):
        self.snapshots = ReplicaSnapshots()
        self._weights = config.effective_weights()   # until the rollout sets (or restores) its own
        self._publish = publish  # records the split in the shared change log (raises -> retried next tick)
        self.reconciler = reconciler_from_config(config, set_weights=self._set_weights,
                                                 snapshot=self.snapshots.per_replica, **kwargs)
        student = config.variant(config.rollout_student)
        self._student = (student.name, student.version)
        self._phase: str | None = None
        self._stopped = False
        self._wake: asyncio.Event | None = None

    def _set_weights(self, weights: dict[str, float]) -> None:
        wanted = {**{name: 0.0 for name in self._weights}, **weights}
        if self._publish is not None:
            self._publish(wanted)
        self._weights = wanted

    def sync(self, replica_id: str, snapshot: dict) -> dict[str, Any]:
        """Take a replica's snapshot; answer the split it must route with (cheap, never blocks on a tick).

        A snapshot from a replica that runs another version of the rollout's student (one not yet
        replaced by a redeploy, still shadowing the old model under the same name) is left out:
        its rows would be counted as the new version's.
        """
        name, version = self._student
        if snapshot.get("versions", {}).get(name, version) == version:
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
        return read_manifest(path).model_dump(mode="json", exclude_none=True)
    except ManifestError as err:
        log.warning("%s: the input drift gate will report no data", err)
        return None
