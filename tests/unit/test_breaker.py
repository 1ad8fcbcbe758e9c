"""The dispatcher's circuit breaker: closed, open, half-open with one probe."""

from __future__ import annotations

import asyncio

import pytest

from urbana.application.breaker import ChannelBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, failures: int = 3) -> ChannelBreaker:
    return ChannelBreaker(failures=failures, open_s=5.0, max_open_s=12.0, clock=clock)


async def test_it_opens_after_consecutive_failures_and_probes_once_after_the_open_period() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(2):
        b.failure()
        assert await b.admit(0)
    b.failure()
    assert b.state == "open"
    assert not await b.admit(0)
    clock.now += 5.0
    assert b.state == "half_open"
    assert await b.admit(0)  # the probe
    assert not await b.admit(0)  # the others wait for it
    b.success()
    assert b.state == "closed"
    assert await b.admit(0)
    assert await b.admit(0)


async def test_a_failed_probe_opens_it_for_twice_as_long_up_to_the_cap() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    b.failure()
    for expected in (10.0, 12.0, 12.0):
        clock.now += 100
        assert await b.admit(0)
        b.failure()
        clock.now += expected - 0.01
        assert not await b.admit(0)
        clock.now += 0.01
        assert b.state == "half_open"


async def test_a_success_in_between_resets_the_count() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert b.state == "closed"


async def test_retry_after_opens_it_at_once_for_that_long() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure(retry_after=7.0)
    assert b.state == "open"
    clock.now += 6.9
    assert not await b.admit(0)
    clock.now += 0.1
    assert await b.admit(0)


async def test_a_probe_that_made_no_call_lets_another_caller_probe() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    b.failure()
    clock.now += 5.0
    assert await b.admit(0)
    b.release()
    assert await b.admit(0)


async def test_waiters_go_as_soon_as_the_probe_succeeds() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    b.failure()
    clock.now += 5.0
    assert await b.admit(0)
    waiting = asyncio.create_task(b.admit(30.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    b.success()
    assert await asyncio.wait_for(waiting, timeout=5)


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="failures"):
        ChannelBreaker(failures=0)
