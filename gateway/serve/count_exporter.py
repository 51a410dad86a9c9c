"""One process per Ray cluster exports the gateway's many-series counters.

``kdgate_predictions_total`` (variant x class) and ``kdgate_input_bin_total`` (feature x bin:
440 series for MNIST-1D) are what the Prometheus rollout source's drift gates read. Exported
from each Gateway replica, every series would carry that replica's ``replica`` tag and its
process's ``WorkerId``. Ray's metrics agent (OpenTelemetry) keeps every label set a node ever
exported, up to 2,000 per metric: after about four Gateway replica lifetimes on a node
(redeploys, autoscaling, restarts) a new replica's input bins went to
``otel_metric_overflow="true"`` and the input-drift gate saw no data.

So replicas send each flush's growth (once a second, fire and forget) to one detached actor,
:class:`CountExporter`, which counts under ``application``, ``deployment`` and ``model`` only:
the label sets are per application and model, however many replicas come and go. If the
actor restarts (its node lost), its counters start again from zero under its new ``WorkerId``,
which PromQL's ``increase()`` reads as a counter reset (checked by hand: a killed exporter
restarted and lost no count; one killed for good was created again at the next send).
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# A detached actor keeps the code it was created with: a kdgate whose ``add`` changes bumps the
# protocol, so its replicas create a new exporter instead of calling an old one forever.
PROTOCOL = 1
ACTOR_NAME, NAMESPACE = f"kdgate-count-exporter-v{PROTOCOL}", "kdgate"
BASE_TAGS = ("application", "deployment", "model")


class CountExporter:
    """The actor's body: adds the replicas' growth to the two counters."""

    def __init__(self):
        from ray.util.metrics import Counter

        self.predictions = Counter("kdgate_predictions_total", tag_keys=(*BASE_TAGS, "variant", "class"),
                                   description="Answered rows by variant and predicted class (argmax).")
        self.input_bins = Counter("kdgate_input_bin_total", tag_keys=(*BASE_TAGS, "feature", "bin"),
                                  description="Live input rows per feature and reference bin "
                                              "(numpy.digitize with the manifest's edges).")

    def add(self, tags: dict[str, str], classes: dict[str, list[int]], bins: list[list[int]]) -> None:
        """``classes[variant][c]``: new rows predicted as class c; ``bins[feature][bin]``: new input rows."""
        for variant, counts in classes.items():
            for c, n in enumerate(counts):
                if n:
                    self.predictions.inc(n, {**tags, "variant": variant, "class": str(c)})
        for f, row in enumerate(bins):
            for b, n in enumerate(row):
                if n:
                    self.input_bins.inc(n, {**tags, "feature": str(f), "bin": str(b)})


class RemoteCounts:
    """A replica's side: sends growth to the cluster's :class:`CountExporter` (created on first use).

    Calls are not awaited; a failed one is logged at the next send and the actor looked up again.
    """

    def __init__(self, model: str):
        from ray import serve

        context = serve.get_replica_context()
        self._tags = {"application": context.app_name, "deployment": context.deployment, "model": model}
        self._actor, self._pending = None, None

    def __call__(self, classes: dict[str, list[int]], bins: list[list[int]]) -> None:
        import ray

        if self._pending is not None and ray.wait([self._pending], timeout=0)[0]:
            try:
                ray.get(self._pending)
            except Exception as exc:  # noqa: BLE001 - any failure: look the actor up again
                log.warning("count exporter call failed (%s); its counts are lost", exc)
                self._actor = None
        if self._actor is None:
            self._actor = ray.remote(CountExporter).options(
                name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                num_cpus=0, max_restarts=-1, max_task_retries=-1).remote()
        self._pending = self._actor.add.remote(self._tags, classes, bins)
