"""Background shadow work on a bounded queue: the caller never waits for it.

Work beyond ``queue_size`` is dropped (and reported through ``on_drop``) so a slow
shadow variant under overload costs nothing on the primary path. :class:`ShadowBatcher`
gathers shadow requests that share a key (the runtime batches those to the teacher alone) for a
short window and hands them on as one group: one model call (one hop to a remote teacher) per
group instead of per request.

Example::

    shadow = ShadowQueue(queue_size=64, workers=2, on_drop=lambda label, requests: ...)
    shadow.submit(job, label="student")  # job is an ``async def`` callable taking no argument
    batcher = ShadowBatcher(flush=lambda key, items: ..., window_s=0.1, max_rows=32)
    batcher.add(("student", ("teacher",)), item, rows=1)  # flushed within 0.1 s, or at 32 rows
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ShadowJob = Callable[[], Awaitable[None]]


class ShadowQueue:
    """A bounded asyncio queue drained by a few worker tasks in the replica's event loop.

    Workers start lazily on the first :meth:`submit` so the queue can be built before
    an event loop runs (Ray Serve constructs replicas outside their request loop).
    """

    queue_size: int

    def __init__(self, *, queue_size: int, workers: int, on_drop: Callable[[str, int], None]):
        self.queue_size = queue_size
        self._workers = workers
        self._on_drop = on_drop
        self._queue: asyncio.Queue[ShadowJob] | None = None
        self._tasks: list[asyncio.Task] = []

    def submit(self, job: ShadowJob, *, label: str, requests: int = 1) -> bool:
        """Queue ``job``; when the queue is full drop it, call ``on_drop(label, requests)`` (the
        requests it carries), return False."""
        if self._queue is None:
            self._start()
        # The bound is checked here rather than by Queue(maxsize) so that a reconfigured
        # queue_size applies at once without rebuilding the queue under running workers.
        if self._queue.qsize() >= self.queue_size:
            self._on_drop(label, requests)
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


@dataclass
class _Group:
    items: list[Any] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class ShadowBatcher:
    """Groups shadow items by key: ``flush(key, items)`` runs ``window_s`` after a group's first
    item, or at once when the group reaches ``max_rows`` rows.

    Each shadow request to a remote teacher is a hop between processes: on a 2-core machine one
    costs about a millisecond of CPU spread over the gateway, the teacher's replica and Ray, and
    primary requests arriving meanwhile wait. Grouped, a 10 % shadow share costs a tenth of the
    hops. ``window_s`` 0 (or no running event loop) flushes each item alone. The answers lag by at
    most ``window_s``: nothing a rollout's gates, which read windows of seconds, can notice.
    """

    def __init__(self, *, flush: Callable[[Hashable, list[Any]], None], window_s: float, max_rows: int):
        self._flush_group = flush
        self.window_s, self.max_rows = window_s, max_rows
        self._groups: dict[Hashable, _Group] = {}

    def add(self, key: Hashable, item: Any, *, rows: int) -> None:
        """Add ``item`` (``rows`` rows) to ``key``'s group."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
            if self.window_s > 0:
                try:
                    group.timer = asyncio.get_running_loop().call_later(self.window_s, self.flush, key)
                except RuntimeError:   # no event loop: nothing could flush the group later
                    pass
        group.items.append(item)
        group.rows += rows
        if group.timer is None or group.rows >= self.max_rows:
            self.flush(key)

    def flush(self, key: Hashable) -> None:
        """Hand ``key``'s group on now (nothing when it is empty)."""
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        self._flush_group(key, group.items)

    def pending(self) -> int:
        """Items waiting in groups."""
        return sum(len(g.items) for g in self._groups.values())
