"""Retrying our own transient faults (a database or broker that is down) with backoff.

    async for attempt in retrying(psycopg.OperationalError, stop=stop, on_retry=note):
        with attempt:
            await work()

Waits grow from `start` (0.2 s), doubling, to `cap` (5 s), or stay at a fixed `wait`.
There is no limit on attempts: the fault is ours, so the work waits for it to end
rather than give up.
With a `stop` event, a wait ends as soon as it is set, raising `Stopped`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_fixed,
)
from tenacity.wait import wait_base

BACKOFF_START_S = 0.2
BACKOFF_CAP_S = 5.0

Faults = type[BaseException] | tuple[type[BaseException], ...]
OnRetry = Callable[[int, BaseException, float], None]
"""Called before each wait with (failed attempts so far, the fault, seconds to wait)."""


class Stopped(Exception):
    """The stop event was set while waiting."""


async def pause(stop: asyncio.Event | None, seconds: float) -> None:
    """Sleep `seconds`, or raise `Stopped` as soon as `stop` is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    if stop.is_set():
        raise Stopped
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
    raise Stopped


def retrying(
    faults: Faults,
    *,
    stop: asyncio.Event | None = None,
    on_retry: OnRetry | None = None,
    wait: float | None = None,
    start: float = BACKOFF_START_S,
    cap: float = BACKOFF_CAP_S,
) -> AsyncRetrying:
    """Attempts that retry `faults` forever, waiting with backoff (or `wait` seconds)."""
    strategy: wait_base = (
        wait_fixed(wait) if wait is not None else wait_exponential(multiplier=start, max=cap)
    )

    async def sleep(seconds: float) -> None:
        await pause(stop, seconds)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is None or state.outcome is None:
            return
        fault = state.outcome.exception()
        seconds = state.next_action.sleep if state.next_action is not None else 0.0
        if fault is not None:
            on_retry(state.attempt_number, fault, seconds)

    return AsyncRetrying(
        retry=retry_if_exception_type(faults),
        wait=strategy,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
