"""Dynamic batching that never makes a lone request wait.

Ray Serve's ``@serve.batch`` (2.60) waits the full ``batch_wait_timeout_s`` for a batch
to fill even when nothing else is queued, so at concurrency 1 every request pays the
window. :class:`EagerBatcher` flushes at once when a request finds the queue empty; only
when others were queued with it (requests are arriving) does it keep the batch open for
more, for at most ``wait_timeout_s``. Requests that arrive while a batch runs form the
next one, so under load batches fill by themselves.

Example::

    async def run(xs: list[np.ndarray]) -> list[np.ndarray]: ...
    batcher = EagerBatcher(run, max_batch_size=32, wait_timeout_s=0.002)
    y = await batcher.submit(x)
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

BatchFn = Callable[[list[Any]], Awaitable[Sequence[Any]]]


class EagerBatcher:
    """One batch at a time; see the module docstring. ``max_batch_size``/``wait_timeout_s``
    may be changed at any time (they apply from the next batch)."""

    def __init__(self, run: BatchFn, *, max_batch_size: int, wait_timeout_s: float,
                 clock: Callable[[], float] = time.perf_counter):
        self.max_batch_size = max_batch_size
        self.wait_timeout_s = wait_timeout_s
        self._run = run
        self._clock = clock
        self._queue: deque[tuple[Any, asyncio.Future]] = deque()
        self._drainer: asyncio.Task | None = None
        self._arrived = asyncio.Event()

    async def submit(self, item: Any) -> Any:
        """Answer for ``item``, computed in a batch with whatever else is queued."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._arrived.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = await self._collect()
            await self._run_batch(batch)

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        """Take what is queued; while others were queued too, wait for more up to the limits.

        A request that found the queue otherwise empty is flushed at once, with no wait.
        """
        batch = self._take()
        deadline = self._clock() + self.wait_timeout_s
        while 1 < len(batch) < self.max_batch_size and (remaining := deadline - self._clock()) > 0:
            if not self._queue:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch.extend(self._take(self.max_batch_size - len(batch)))
        return batch

    def _take(self, limit: int | None = None) -> list[tuple[Any, asyncio.Future]]:
        n = min(len(self._queue), self.max_batch_size if limit is None else limit)
        return [self._queue.popleft() for _ in range(n)]

    async def _run_batch(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} inputs")
        except Exception as err:  # every waiter learns about the failure, the drainer carries on
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():  # a cancelled caller (timeout) no longer wants its answer
                future.set_result(result)
