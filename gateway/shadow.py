"""Background shadow work on a bounded queue: the caller never waits for it.

Work beyond ``queue_size`` is dropped (and reported through ``on_drop``) so a slow
shadow variant under overload costs nothing on the primary path.

Example::

    shadow = ShadowQueue(queue_size=64, workers=2, on_drop=lambda label: ...)
    shadow.submit(job, label="student")  # job is an ``async def`` callable taking no argument
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

ShadowJob = Callable[[], Awaitable[None]]


class ShadowQueue:
    """A bounded asyncio queue drained by a few worker tasks in the replica's event loop.

    Workers start lazily on the first :meth:`submit` so the queue can be built before
    an event loop runs (Ray Serve constructs replicas outside their request loop).
    """

    queue_size: int

    def __init__(self, *, queue_size: int, workers: int, on_drop: Callable[[str], None]):
        self.queue_size = queue_size
        self._workers = workers
        self._on_drop = on_drop
        self._queue: asyncio.Queue[ShadowJob] | None = None
        self._tasks: list[asyncio.Task] = []

    def submit(self, job: ShadowJob, *, label: str) -> bool:
        """Queue ``job``; when the queue is full drop it, call ``on_drop(label)``, return False."""
        if self._queue is None:
            self._start()
        # The bound is checked here rather than by Queue(maxsize) so that a reconfigured
        # queue_size applies at once without rebuilding the queue under running workers.
        if self._queue.qsize() >= self.queue_size:
            self._on_drop(label)
            return False
        self._queue.put_nowait(job)
        return True

    def pending(self) -> int:
        """Jobs waiting in the queue."""
        return 0 if self._queue is None else self._queue.qsize()

    def _start(self) -> None:
        self._queue = asyncio.Queue()
        self._spawn_workers()

    def _spawn_workers(self) -> None:
        queue = self._queue
        self._tasks = [asyncio.get_running_loop().create_task(self._work(queue)) for _ in range(self._workers)]

    async def _work(self, queue: asyncio.Queue) -> None:
        while True:
            job = await queue.get()
            await asyncio.sleep(0)  # lower priority: requests ready to run on the loop go first
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # the shadow loop must never die on one bad job
                log.exception("shadow job failed")
