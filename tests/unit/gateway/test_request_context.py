"""Request context: model time per request and work deferred until the response is sent."""
from __future__ import annotations

import asyncio

from gateway.request_context import add_model_time, after_response, start_request


def test_overhead_is_total_minus_model_calls_of_this_request_only():
    async def request(model_s: float):
        timing = start_request()
        add_model_time("student", model_s)
        await asyncio.sleep(0)
        return timing

    async def go():
        return await asyncio.gather(request(0.001), request(0.003))

    a, b = asyncio.run(go())
    assert (a.model_s, b.model_s) == (0.001, 0.003)
    assert a.overhead_s(total_s=0.0015) == 0.0015 - 0.001 and a.overhead_s(total_s=0.0) == 0.0


def test_after_response_waits_for_the_ingress_and_runs_at_once_outside_a_request():
    ran = []

    async def go():
        timing = start_request()
        after_response(lambda: ran.append("shadow"))
        assert ran == []
        timing.run_deferred()
        timing.run_deferred()  # once only

    asyncio.run(go())
    assert ran == ["shadow"]
    after_response(lambda: ran.append("direct"))  # no request context here
    assert ran == ["shadow", "direct"]
