"""The one retry helper: our own faults are waited out with backoff, others go through."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from tenacity import AsyncRetrying

from urbana.adapters.retry import Stopped, pause, retrying


class Down(Exception):
    pass


async def attempt_until_done(attempts: AsyncRetrying, work: Callable[[], Awaitable[str]]) -> str:
    async for attempt in attempts:
        with attempt:
            return await work()
    raise AssertionError("the attempts ended without a result")


def failing(times: int, fault: Callable[[int], BaseException]) -> Callable[[], Awaitable[str]]:
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise fault(calls)
        return f"up after {calls}"

    return work


async def test_listed_faults_are_retried_with_doubling_waits_up_to_the_cap() -> None:
    seen: list[tuple[int, str, float]] = []
    attempts = retrying(
        Down, start=0.001, cap=0.004, on_retry=lambda n, e, s: seen.append((n, str(e), s))
    )
    assert await attempt_until_done(attempts, failing(5, lambda n: Down(f"down {n}"))) == (
        "up after 6"
    )
    assert seen == [
        (1, "down 1", 0.001),
        (2, "down 2", 0.002),
        (3, "down 3", 0.004),
        (4, "down 4", 0.004),
        (5, "down 5", 0.004),
    ]


async def test_other_faults_are_raised_at_once() -> None:
    seen: list[int] = []
    attempts = retrying(Down, wait=0.0, on_retry=lambda n, e, s: seen.append(n))
    with pytest.raises(ValueError, match="refused 1"):
        await attempt_until_done(attempts, failing(1, lambda n: ValueError(f"refused {n}")))
    assert seen == []


async def test_a_stop_ends_the_wait_with_stopped() -> None:
    stop = asyncio.Event()
    seen: list[int] = []

    def stop_now(n: int, fault: BaseException, seconds: float) -> None:
        seen.append(n)
        stop.set()

    attempts = retrying(Down, stop=stop, wait=3600, on_retry=stop_now)
    with pytest.raises(Stopped):
        await attempt_until_done(attempts, failing(10, lambda n: Down()))
    assert seen == [1]


async def test_pause_raises_stopped_when_stopped_and_returns_otherwise() -> None:
    stop = asyncio.Event()
    await pause(stop, 0.0)
    await pause(None, 0.0)
    stop.set()
    with pytest.raises(Stopped):
        await pause(stop, 3600)
