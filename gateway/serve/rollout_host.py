"""Hosting the rollout controller in the gateway application.

When the gateway config has a ``rollout:`` policy, :func:`gateway.serve.app.build_app` adds one
``rollout`` deployment (:class:`RolloutHost`, a single replica holding the
:class:`~gateway.rollout.controller.RolloutController` and its tick loop). Every Gateway replica runs a
:class:`RolloutSync` task: about once a second it sends its ``WindowStats`` snapshot and
applies the split the controller answers (audited as actor ``rollout``), so a rollback
reaches every replica within one sync period while in-flight requests finish on the
variant that took them.

Example::

    sync = RolloutSync(handle, replica_id="abc", runtime=runtime, snapshot=stats.snapshot)
    sync.ensure_started()          # from inside the replica's event loop
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ray import serve

log = logging.getLogger(__name__)

SYNC_PERIOD_S = 1.0


@serve.deployment(name="rollout", num_replicas=1, ray_actor_options={"num_cpus": 0},
                  graceful_shutdown_timeout_s=2, graceful_shutdown_wait_loop_s=0.5)
class RolloutHost:
    """The one rollout controller of the application (its state lives in ``state_path``)."""

    def __init__(self, gateway_config: dict):
        from gateway.core.config import load_gateway_config
        from gateway.rollout.controller import RolloutController
        from gateway.model_store import with_local_manifests
        from gateway.rollout.notify import WebhookNotifier
        from gateway.serve.rollout_metrics import ServeRolloutMetrics

        # The controller reads the student's manifest from a path: fetch a remote one first.
        config = with_local_manifests(load_gateway_config(gateway_config))
        spec = config.rollout
        notify = WebhookNotifier(spec.webhook_url, spec.webhook_timeout_s) if spec.webhook_url else None
        self.controller = RolloutController(
            config, metrics=ServeRolloutMetrics(config.model_name, config.rollout_student), notify=notify,
        )
        self._task: asyncio.Task | None = None

    def _ensure_loop(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.controller.run())

    async def sync(self, replica_id: str, snapshot: dict) -> dict:
        """A gateway replica's snapshot in, the split it must route with out."""
        self._ensure_loop()
        return self.controller.sync(replica_id, snapshot)

    async def command(self, name: str, actor: str, weight: float | None = None) -> dict:
        """pause | resume | abort | promote | set_weight ...; InvalidCommand (409) when not applicable."""
        self._ensure_loop()
        return await asyncio.to_thread(self.controller.command, name, actor=actor, weight=weight)

    async def status(self) -> dict:
        """The rollout's status and recent history."""
        self._ensure_loop()
        return await asyncio.to_thread(self.controller.reconciler.history, 50)

    async def check_health(self) -> None:
        """Serve's periodic probe doubles as the tick loop's starter (no traffic needed)."""
        self._ensure_loop()

    def __del__(self):  # Serve's shutdown hook: end the tick loop
        self.controller.stop()


class RolloutSync:
    """One Gateway replica's link to the controller: push snapshots, apply the split."""

    def __init__(self, handle, *, replica_id: str, runtime, snapshot: Callable[[], dict],
                 period_s: float = SYNC_PERIOD_S):
        self._handle, self._replica_id, self._runtime = handle, replica_id, runtime
        self._snapshot, self._period_s = snapshot, period_s
        self._task: asyncio.Task | None = None
        self.phase: str | None = None

    def ensure_started(self) -> None:
        """Start the sync loop (idempotent; needs the running event loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                answer = await self._handle.sync.remote(self._replica_id, self._snapshot())
                self.phase = answer.get("phase")
                self.apply_weights(answer["weights"])
            except asyncio.CancelledError:
                raise
            except Exception:  # the controller restarting must not stop this replica's loop
                log.warning("rollout sync failed; retrying", exc_info=True)
            await asyncio.sleep(self._period_s)

    def apply_weights(self, weights: dict[str, float]) -> None:
        """Route with ``weights`` when they differ from the split in force."""
        config = self._runtime.config
        current = config.effective_weights()
        wanted = {name: float(weights.get(name, 0.0)) for name in current}
        if wanted != current:
            self._runtime.apply(config.with_weights(wanted), actor="rollout")
