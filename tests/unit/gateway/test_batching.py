"""EagerBatcher: a lone request is flushed at once; concurrent ones share batches."""
from __future__ import annotations

import asyncio

import pytest

from gateway.batching import EagerBatcher


class Recorder:
    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list[int]] = []
        self.delay_s = delay_s

    async def __call__(self, items):
        self.batches.append(list(items))
        await asyncio.sleep(self.delay_s)
        return [i * 10 for i in items]


def test_lone_request_does_not_wait_for_the_window():
    run = Recorder()
    batcher = EagerBatcher(run, max_batch_size=32, wait_timeout_s=5.0)

    async def go():
        loop = asyncio.get_running_loop()
        start = loop.time()
        answer = await batcher.submit(3)
        return answer, loop.time() - start

    answer, took = asyncio.run(go())
    assert answer == 30 and run.batches == [[3]]
    assert took < 0.5  # a 5 s window would show


def test_concurrent_requests_share_batches_up_to_the_limit():
    run = Recorder(delay_s=0.01)
    batcher = EagerBatcher(run, max_batch_size=4, wait_timeout_s=0.05)

    async def go():
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert asyncio.run(go()) == [i * 10 for i in range(10)]
    assert max(len(b) for b in run.batches) == 4 and len(run.batches) < 10
    assert sorted(i for b in run.batches for i in b) == list(range(10))


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs():
    calls = []

    async def run(items):
        calls.append(items)
        if len(calls) == 1:
            raise ValueError("backend down")
        return items

    batcher = EagerBatcher(run, max_batch_size=8, wait_timeout_s=0.0)

    async def go():
        with pytest.raises(ValueError, match="backend down"):
            await batcher.submit(1)
        return await batcher.submit(2)

    assert asyncio.run(go()) == 2
