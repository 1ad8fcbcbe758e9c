"""The group committer and its store gate: bounded waits, fail fast while the store is down."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import pytest

from urbana.application.ingest import GroupCommitter, StoreGate, StoreUnavailable
from urbana.domain.errors import InvalidInput


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class StoreFault(Exception):
    """Stands for a connection refused by the store."""


class Batches:
    """A batch function whose store can hang (until released) or fail."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail: Exception | None = None

    def __call__(self, commands: Sequence[str]) -> list[str]:
        self.seen.append(list(commands))
        self.started.set()
        self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        return [f"ok:{c}" for c in commands]


def gate(clock: Clock, wait_s: float = 0.05) -> StoreGate:
    return StoreGate(wait_s, probe_s=1.0, is_fault=lambda e: isinstance(e, StoreFault), clock=clock)


T = TypeVar("T")


async def bounded(awaitable: Awaitable[T]) -> T:
    """Whatever the committer does, a test never hangs."""
    return await asyncio.wait_for(awaitable, 5)


# A wait long enough that a loaded machine's writer thread has begun the stuck batch
# before half of it has passed (only then is the store taken as down: `_stuck`).
STUCK_WAIT_S = 0.5


async def test_a_batch_that_does_not_commit_in_time_is_answered_unavailable() -> None:
    batches, clock = Batches(), Clock()
    committer: GroupCommitter[str, str] = GroupCommitter(
        batches, gate=gate(clock, wait_s=STUCK_WAIT_S)
    )
    committer.start()
    batches.release.clear()
    with pytest.raises(StoreUnavailable):
        await bounded(committer.submit_all(["a", "b"]))
    assert committer.gate.down
    batches.release.set()
    await committer.aclose()


async def test_while_down_callers_are_refused_at_once_and_never_queued() -> None:
    batches, clock = Batches(), Clock()
    committer: GroupCommitter[str, str] = GroupCommitter(
        batches, gate=gate(clock, wait_s=STUCK_WAIT_S)
    )
    committer.start()
    batches.release.clear()
    with pytest.raises(StoreUnavailable):
        await bounded(committer.submit("stuck"))
    for n in range(5):
        with pytest.raises(StoreUnavailable, match="down"):
            await bounded(committer.submit(f"refused {n}"))
    batches.release.set()
    await committer.aclose()
    assert all("refused" not in c for batch in batches.seen for c in batch)
    assert committer.gate.refused == 5


async def test_one_probe_per_interval_and_its_success_brings_the_store_back() -> None:
    batches, clock = Batches(), Clock()
    committer: GroupCommitter[str, str] = GroupCommitter(batches, gate=gate(clock))
    committer.start()
    batches.fail = StoreFault("connection refused")
    with pytest.raises(StoreFault):
        await bounded(committer.submit("first"))
    assert committer.gate.down
    clock.now += 1.0
    with pytest.raises(StoreFault):
        await bounded(committer.submit("probe while still down"))
    with pytest.raises(StoreUnavailable):
        await bounded(committer.submit("refused: the probe slot is taken"))
    batches.fail = None
    clock.now += 1.0
    assert await bounded(committer.submit("probe once back")) == "ok:probe once back"
    assert not committer.gate.down
    assert await bounded(committer.submit_all(["x", "y"])) == ["ok:x", "ok:y"]
    await committer.aclose()


async def test_a_failure_that_is_not_a_store_fault_does_not_take_the_store_down() -> None:
    batches, clock = Batches(), Clock()
    committer: GroupCommitter[str, str] = GroupCommitter(batches, gate=gate(clock))
    committer.start()
    batches.fail = ValueError("a bug in one batch")
    with pytest.raises(ValueError, match="bug"):
        await bounded(committer.submit("a"))
    assert not committer.gate.down
    await committer.aclose()


async def test_commands_whose_callers_gave_up_are_not_run() -> None:
    batches, clock = Batches(), Clock()
    committer: GroupCommitter[str, str] = GroupCommitter(batches, gate=gate(clock))
    committer.start()
    batches.release.clear()
    first = asyncio.ensure_future(committer.submit("in flight"))
    assert await asyncio.to_thread(batches.started.wait, 5)
    with pytest.raises(StoreUnavailable):
        await bounded(committer.submit("queued behind it"))  # times out while queued
    with pytest.raises(StoreUnavailable):
        await bounded(first)
    batches.release.set()
    await committer.aclose()
    assert batches.seen == [["in flight"]]


async def test_a_call_within_the_wait_returns_and_a_domain_refusal_is_no_fault() -> None:
    clock = Clock()
    g = gate(clock)
    assert await bounded(g.call(lambda x: x * 2, 21)) == 42

    def refuse() -> None:
        raise InvalidInput("no tenant")

    with pytest.raises(InvalidInput):
        await bounded(g.call(refuse))
    assert not g.down


async def test_a_call_that_outlasts_the_wait_is_unavailable_and_takes_the_store_down() -> None:
    clock = Clock()
    g = gate(clock)
    release = threading.Event()
    with pytest.raises(StoreUnavailable):
        await bounded(g.call(release.wait, 10))
    release.set()
    assert g.down
    with pytest.raises(StoreUnavailable, match="down"):
        await bounded(g.call(lambda: 1))


async def test_callers_queued_behind_a_busy_but_working_writer_do_not_take_the_store_down() -> None:
    def quick(commands: Sequence[str]) -> list[str]:
        time.sleep(0.005)  # every batch commits, one small batch at a time
        return list(commands)

    clock = Clock()
    committer: GroupCommitter[str, str] = GroupCommitter(
        quick, max_batch=1, gate=gate(clock, wait_s=0.2)
    )
    committer.start()
    outcomes = await bounded(
        asyncio.gather(*(committer.submit(str(n)) for n in range(100)), return_exceptions=True)
    )
    assert any(isinstance(o, StoreUnavailable) for o in outcomes)  # the wait is still kept
    assert "0" in outcomes
    assert not committer.gate.down
    assert await bounded(committer.submit("next")) == "next"
    await committer.aclose()
