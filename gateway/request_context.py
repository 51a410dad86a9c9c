"""What one request carries past the runtime: its model time, and work for after the answer.

The ingress opens a :class:`RequestTiming` per request (:func:`start_request`); the
runtime adds each primary model call to it (:func:`add_model_time`), so the ingress can
tell its own overhead apart, and hands it work that must not run before the response is
sent (:func:`after_response`: the answer's window stats and metrics, shadow jobs). Both run
in the request's own asyncio task, so a context variable carries it without threading it
through every signature; shadow jobs run in other tasks and add nothing.

Example::

    timing = start_request()
    add_model_time("student", 0.00004)          # inside the runtime
    timing.overhead_s(total_s=0.00025)          # -> 0.00021
    after_response(lambda: queue.submit(job))   # run by the ingress once the answer is sent
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field

_CURRENT: contextvars.ContextVar["RequestTiming | None"] = contextvars.ContextVar("kdgate_request_timing",
                                                                                  default=None)


@dataclass
class RequestTiming:
    """Model seconds of one request and the variant that answered last (a fallback's teacher)."""

    model_s: float = 0.0
    variant: str | None = None
    deferred: list[Callable[[], object]] = field(default_factory=list)

    def run_deferred(self) -> None:
        """Run the work queued with :func:`after_response` (once: the list empties)."""
        work, self.deferred = self.deferred, []
        for fn in work:
            fn()

    def overhead_s(self, total_s: float) -> float:
        """The request's time outside model calls (never below zero)."""
        return max(0.0, total_s - self.model_s)


def start_request() -> RequestTiming:
    """A fresh timing for the request running in this context."""
    timing = RequestTiming()
    _CURRENT.set(timing)
    return timing


def add_model_time(variant: str, seconds: float) -> None:
    """Count one model call against the current request (no-op outside a request)."""
    timing = _CURRENT.get()
    if timing is not None:
        timing.model_s += seconds
        timing.variant = variant


def after_response(fn: Callable[[], object]) -> None:
    """Run ``fn`` once the current request's response is sent; at once outside a request."""
    timing = _CURRENT.get()
    if timing is None:
        fn()
    else:
        timing.deferred.append(fn)
