"""The application's control deployment: the shared split/config change log and the rollout controller.

:func:`gateway.serve.app.build_app` always adds one ``rollout`` deployment (:class:`RolloutHost`, a
single replica). It owns the :class:`~gateway.rollout.split_store.SharedConfig` change log (SQLite at
``split_state_path``): every admin change, ``serve deploy`` and rollout step is recorded there, and
the most recent one is what every Gateway replica serves. With a ``rollout:`` policy it also holds
the :class:`~gateway.rollout.controller.RolloutController` and its tick loop.

Every Gateway replica runs a :class:`RolloutSync` task: twice a second it sends the sequence
number of the change it serves (and, once a second with a rollout, its ``WindowStats`` snapshot), and
applies the newer change the host answers, so a change made on one replica (or by the
rollout) reaches every replica within one sync period; in-flight requests finish on the config
that took them. A restarted replica, host or application reads the last change back.

Example::

    sync = RolloutSync(controller_caller(handle), replica_id="abc", runtime=runtime,
                       snapshot=stats.snapshot, rollout=True)
    sync.ensure_started()          # from inside the replica's event loop
    row, changes = await sync.publish({"routing": {"weights": {...}}}, source="admin-api", actor="ops")
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ray import serve

from gateway.core.errors import BadRequest, GatewayConfigError, NotFound

log = logging.getLogger(__name__)

SYNC_PERIOD_S = 0.5     # how soon a replica serves a new change
SNAPSHOT_PERIOD_S = 1.0  # how often it sends the controller its window stats (with a rollout)
DEPLOY_REPORT_TIMEOUT_S = 20.0  # a replica starting while the host is down serves the file meanwhile


@serve.deployment(name="rollout", num_replicas=1, ray_actor_options={"num_cpus": 0},
                  graceful_shutdown_timeout_s=2, graceful_shutdown_wait_loop_s=0.5)
class RolloutHost:
    """The one change log (and rollout controller, if any) of the application."""

    def __init__(self, gateway_config: dict):
        from gateway.core.config import load_gateway_config
        from gateway.rollout.split_store import SharedConfig, SplitStore

        config = load_gateway_config(gateway_config)
        store = SplitStore(config.split_state_file, scope=serve.get_replica_context().app_name)
        self.shared = SharedConfig(store, gateway_config,
                                   rollout_owns_weights=config.rollout is not None)
        self.controller = None if config.rollout is None else self._controller(config)
        self._task: asyncio.Task | None = None

    def _controller(self, config):
        from gateway.rollout.controller import RolloutController
        from gateway.model_store import with_local_manifests
        from gateway.rollout.notify import WebhookNotifier
        from gateway.serve.rollout_metrics import ServeRolloutMetrics

        # The controller reads the student's manifest from a path: fetch a remote one first.
        config = with_local_manifests(config)
        spec = config.rollout
        notify = WebhookNotifier(spec.webhook_url, spec.webhook_timeout_s) if spec.webhook_url else None
        return RolloutController(config, metrics=ServeRolloutMetrics(config.model_name, config.rollout_student),
                                 notify=notify, publish=self.shared.set_weights)

    def _ensure_loop(self) -> None:
        if self.controller is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.controller.run())

    async def sync(self, replica_id: str, snapshot: dict | None, seq: int = 0) -> dict:
        """A replica's snapshot (None: none this time) and served change in; the rollout phase
        (None without a snapshot) and any newer change out."""
        self._ensure_loop()
        phase = None
        if self.controller is not None and snapshot is not None:
            phase = self.controller.sync(replica_id, snapshot)["phase"]
        latest = self.shared.latest
        return {"phase": phase, "change": latest if latest is not None and latest["seq"] != seq else None}

    async def change(self, overlay: dict, source: str, actor: str) -> dict:
        """Record an overlay merged into the config in force (InvalidInput 422, 409 under a rollout)."""
        return await asyncio.to_thread(self.shared.change, overlay, source=source, actor=actor)

    async def deploy(self, deployed: dict) -> dict | None:
        """A replica's deployed config (recorded when new); answers the change in force."""
        return await asyncio.to_thread(self.shared.deploy, deployed)

    async def command(self, name: str, actor: str, weight: float | None = None) -> dict:
        """pause | resume | abort | promote | set_weight ...; InvalidCommand (409) when not applicable."""
        self._ensure_loop()
        return await asyncio.to_thread(self._rollout().command, name, actor=actor, weight=weight)

    async def status(self) -> dict:
        """The rollout's status and recent history."""
        self._ensure_loop()
        return await asyncio.to_thread(self._rollout().reconciler.history, 50)

    def _rollout(self):
        if self.controller is None:
            raise NotFound("no rollout policy in this gateway's config (rollout: null)")
        return self.controller

    async def check_health(self) -> None:
        """Serve's periodic probe doubles as the tick loop's starter (no traffic needed)."""
        self._ensure_loop()

    def __del__(self):  # Serve's shutdown hook: end the tick loop
        if getattr(self, "controller", None) is not None:
            self.controller.stop()


ControlCall = Callable[..., Awaitable[Any]]


def controller_caller(handle) -> ControlCall:
    """``call(method, *args)`` on the host; its refusals (4xx) arrive as themselves, an outage as a 503."""
    async def call(method: str, *args) -> Any:
        try:
            return await getattr(handle, method).remote(*args)
        except BadRequest:
            raise  # InvalidCommand (409) arrives as itself (Ray's error subclasses the cause)
        except Exception as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BadRequest):
                raise cause from err
            raise BadRequest(f"rollout controller unavailable: {err}", status=503) from err

    return call


class RolloutSync:
    """One Gateway replica's link to the host: push snapshots, serve the latest change."""

    def __init__(self, call: ControlCall, *, replica_id: str, runtime, snapshot: Callable[[], dict],
                 rollout: bool, period_s: float = SYNC_PERIOD_S):
        self.call, self._replica_id, self._runtime = call, replica_id, runtime
        self._snapshot, self._rollout, self._period_s = snapshot, rollout, period_s
        self._task: asyncio.Task | None = None
        self._snapshot_at = float("-inf")
        self.phase: str | None = None
        self.seq = 0               # the change this replica serves (0: the deployed file, not yet recorded)
        self.change: dict | None = None  # {seq, at, actor, source} of that change
        self.last_rejection: str | None = None

    def ensure_started(self) -> None:
        """Start the sync loop (idempotent; needs the running event loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                answer = await self.call("sync", self._replica_id, self._due_snapshot(), self.seq)
                self.phase = answer.get("phase") or self.phase
                if answer.get("change"):
                    self.apply_change(answer["change"])
            except asyncio.CancelledError:
                raise
            except Exception:  # the host restarting must not stop this replica's loop
                log.warning("split sync failed; retrying", exc_info=True)
            await asyncio.sleep(self._period_s)

    def _due_snapshot(self) -> dict | None:
        """This replica's window stats once per :data:`SNAPSHOT_PERIOD_S` (with a rollout), else None."""
        now = time.monotonic()
        if not self._rollout or now - self._snapshot_at < SNAPSHOT_PERIOD_S:
            return None
        self._snapshot_at = now
        return self._snapshot()

    def apply_change(self, row: dict) -> list[str]:
        """Serve ``row``'s config when it is newer than the change in force; returns the changes."""
        if row["seq"] <= self.seq:
            return []
        self.seq = row["seq"]  # a config this replica cannot serve is not retried every period
        try:
            changes = self._runtime.apply(row["config"], actor=row["source"])
        except GatewayConfigError as err:  # audited by the runtime; e.g. an old replica mid-redeploy
            self.last_rejection = str(err)
            return []
        self.change = {k: row[k] for k in ("seq", "at", "actor", "source")}
        self.last_rejection = None
        return changes

    async def publish(self, overlay: dict, *, source: str, actor: str) -> tuple[dict, list[str]]:
        """Record a change with the host and serve it here at once: (its row, the changes applied here;
        empty when the sync loop was faster)."""
        row = await self.call("change", overlay, source, actor)
        return row, self.apply_change(row)

    async def report_deploy(self, deployed: dict) -> bool:
        """Report this replica's deployed config; serve the change in force. False: host unreachable."""
        try:
            row = await asyncio.wait_for(self.call("deploy", deployed), DEPLOY_REPORT_TIMEOUT_S)
        except (BadRequest, asyncio.TimeoutError) as err:
            log.warning("could not report the deployed config to the rollout host: %s", err)
            return False
        if row is not None:
            self.apply_change(row)
        return True
