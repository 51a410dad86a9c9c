"""ShadowBatcher: groups by key, flushes at the window's end or at max_rows, alone without a loop."""
from __future__ import annotations

import asyncio

from gateway.shadow import ShadowBatcher


def _batcher(window_s: float, max_rows: int):
    flushed = []
    return ShadowBatcher(flush=lambda key, items: flushed.append((key, items)), window_s=window_s,
                         max_rows=max_rows), flushed


def test_groups_flush_by_key_at_the_window_end_or_at_max_rows():
    batcher, flushed = _batcher(0.05, max_rows=4)

    async def scenario():
        batcher.add("a", 1, rows=1)
        batcher.add("b", 2, rows=1)
        batcher.add("a", 3, rows=3)          # "a" reaches 4 rows: goes at once
        early = list(flushed)
        pending = batcher.pending()
        await asyncio.sleep(0.1)             # "b" goes at its window's end
        return early, pending

    early, pending = asyncio.run(scenario())
    assert early == [("a", [1, 3])] and pending == 1
    assert flushed == [("a", [1, 3]), ("b", [2])] and batcher.pending() == 0


def test_a_zero_window_or_no_event_loop_flushes_each_item_alone():
    batcher, flushed = _batcher(0.0, max_rows=32)
    batcher.add("a", 1, rows=1)
    outside, outside_flushed = _batcher(0.05, max_rows=32)
    outside.add("a", 2, rows=1)              # no running loop: nothing could flush it later
    assert flushed == [("a", [1])] and outside_flushed == [("a", [2])]


def test_a_batch_joins_its_requests_rows_or_texts_in_order():
    import numpy as np

    from gateway.runtime import _join
    from gateway.text import TextBatch

    joined = _join([TextBatch(("a", "b")), TextBatch(("c",))])
    assert isinstance(joined, TextBatch) and joined.texts == ("a", "b", "c")
    rows = _join([np.zeros((2, 3), np.float32), np.ones((1, 3), np.float32)])
    assert rows.shape == (3, 3) and rows[2].tolist() == [1, 1, 1]
    single = np.zeros((1, 3))
    assert _join([single]) is single
