"""``model-<name>`` deployments: one remote variant (the teacher, or a non-colocated student).

Reached from the ingress through a DeploymentHandle, with dynamic batching
(:class:`~gateway.batching.EagerBatcher`: a lone request pays no batch window) when the
variant's ``batching.enabled`` is set (size and wait change in place through ``user_config``).
"""
from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from gateway.backends import OnnxBackend, build_backend
from gateway.batching import EagerBatcher
from gateway.core.config import BatchingConfig, VariantConfig
from gateway.serve.metrics import GatewayMetrics
from gateway.text import concat_rows, variant_pad_id

DEFAULT_REPLICA_CPUS = 0.5  # small enough that ingress + teacher fit a 2-core machine


@serve.deployment(ray_actor_options={"num_cpus": DEFAULT_REPLICA_CPUS})
class ModelDeployment:
    """One remote variant behind a handle."""

    def __init__(self, variant: dict, model_name: str):
        self.variant = VariantConfig.model_validate(variant)
        self.backend = build_backend(self.variant)
        self._pad_id = variant_pad_id(self.variant)  # token id batches of a text model are padded with it
        self.metrics = GatewayMetrics(model=model_name)
        self.batching = self.variant.batching
        self._batcher = EagerBatcher(self._batched, max_batch_size=self.batching.max_batch_size,
                                     wait_timeout_s=self.batching.wait_timeout_s)

    def reconfigure(self, user_config: dict) -> None:
        """``{"batching": {...}}``: batch size and wait change in place."""
        self.batching = BatchingConfig.model_validate(user_config.get("batching", {}))
        self._batcher.max_batch_size = self.batching.max_batch_size
        self._batcher.wait_timeout_s = self.batching.wait_timeout_s

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.batching.enabled:
            return await self._batcher.submit(x)
        return await self._infer(x)

    def __del__(self):  # Serve's shutdown hook: write the metrics still buffered
        self.metrics.close()

    async def _batched(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        y = await self._infer(concat_rows(xs, self._pad_id))
        return np.split(y, np.cumsum([len(x) for x in xs])[:-1])

    async def _infer(self, x: np.ndarray) -> np.ndarray:
        self.metrics.observe_batch(self.variant.name, len(x))
        if isinstance(self.backend, OnnxBackend):
            return self.backend.infer(x)  # microseconds for small models: cheaper than a thread hop
        return await asyncio.to_thread(self.backend.infer, x)
