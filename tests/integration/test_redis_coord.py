"""Conversation locks and the Redis client's pool, on a real Redis.

A lock must never outlive its work by more than its short TTL: not when its release
fails, not when its holder is killed; it is renewed while the work runs; and a pool
at its limit makes a command wait for a connection instead of failing.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from redis.asyncio import Redis
from tests.redis_server import RedisServer

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.redis_coord import LOCK_TTL_MS, RedisCoordinator, redis_client
from urbana.application.ports import CoordinationUnavailable, LockBusy

pytestmark = pytest.mark.integration

TTL_S = LOCK_TTL_MS / 1000


@pytest.fixture
async def client(services: ServiceUrls) -> AsyncIterator[Redis]:
    made = redis_client(services.redis)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_locks_are_short_lived() -> None:
    assert 5_000 <= LOCK_TTL_MS <= 10_000


async def test_a_pool_at_its_limit_waits_for_a_connection(services: ServiceUrls) -> None:
    small = redis_client(services.redis, max_connections=2, pool_timeout_s=5.0)
    pool = small.connection_pool
    try:
        taken = [await pool.get_connection() for _ in range(2)]  # the pool is at its limit

        async def give_back() -> None:
            await asyncio.sleep(0.5)
            for connection in taken:
                await pool.release(connection)

        returning = asyncio.create_task(give_back())
        began = time.monotonic()
        assert await small.set(f"test:{uuid4().hex}", b"1", ex=60)
        assert time.monotonic() - began >= 0.4  # it waited for a connection to come back
        await returning
    finally:
        await small.aclose()


async def test_a_lock_is_renewed_while_its_work_runs(client: Redis) -> None:
    prefix = f"test:{uuid4().hex}"
    coordinator = RedisCoordinator(client, prefix=prefix)
    rival = RedisCoordinator(client, prefix=prefix)
    conversation = uuid4()
    async with coordinator.lock(conversation, ttl_ms=600):
        await asyncio.sleep(0.3)
        with pytest.raises(LockBusy):  # 2.5 TTLs of work: the lock is still held
            async with rival.lock(conversation, ttl_ms=600, wait_s=1.2):
                pass
    began = time.monotonic()
    async with rival.lock(conversation, ttl_ms=600, wait_s=1.0):
        assert time.monotonic() - began < 0.5  # released at once on the way out


async def test_a_lock_whose_release_failed_expires_within_its_ttl(services: ServiceUrls) -> None:
    """The release cannot get a connection (the pool is held by other work): the lock is
    given up, not held for a minute, and the next holder gets it within the TTL."""
    starved = redis_client(services.redis, max_connections=1, pool_timeout_s=0.2)
    other = redis_client(services.redis)
    prefix = f"test:{uuid4().hex}"
    conversation = uuid4()
    taken = None
    try:
        async with RedisCoordinator(starved, prefix=prefix).lock(conversation):
            taken = await starved.connection_pool.get_connection()  # the only one
        released_at = time.monotonic()
        async with RedisCoordinator(other, prefix=prefix).lock(conversation, wait_s=TTL_S + 3):
            waited = time.monotonic() - released_at
        assert waited <= TTL_S + 1.0
    finally:
        if taken is not None:
            await starved.connection_pool.release(taken)
        await starved.aclose()
        await other.aclose()


HOLDER = """
import asyncio, sys, time
from uuid import UUID
from urbana.adapters.redis_coord import RedisCoordinator, redis_client

async def main() -> None:
    client = redis_client(sys.argv[1])
    async with RedisCoordinator(client, prefix=sys.argv[2]).lock(UUID(sys.argv[3])):
        print("held", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_holder_killed_mid_work_frees_the_conversation_within_the_ttl(
    services: ServiceUrls, client: Redis
) -> None:
    prefix = f"test:{uuid4().hex}"
    conversation = uuid4()
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        services.redis,
        prefix,
        str(conversation),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"held\n"
        await asyncio.sleep(TTL_S)  # long enough for the holder to have renewed its lock
        coordinator = RedisCoordinator(client, prefix=prefix)
        with pytest.raises(LockBusy):
            async with coordinator.lock(conversation, wait_s=0.5):
                pass
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        killed_at = time.monotonic()
        async with coordinator.lock(conversation, wait_s=TTL_S + 3):
            waited = time.monotonic() - killed_at
        assert waited <= TTL_S + 1.0
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_an_unreachable_redis_is_reported_as_coordination_unavailable(
    own_redis: RedisServer,
) -> None:
    down = redis_client(own_redis.url)
    try:
        coordinator = RedisCoordinator(down, prefix=f"test:{uuid4().hex}")
        own_redis.stop()
        for attempt in (
            coordinator.note_messages({uuid4(): 1}),
            coordinator.quiet_after(uuid4(), 1, 0),
        ):
            with pytest.raises(CoordinationUnavailable):
                await attempt
        with pytest.raises(CoordinationUnavailable):
            async with coordinator.lock(uuid4()):
                pass
    finally:
        await down.aclose()


async def test_locks_through_a_paused_redis_wait_or_fail_over_never_overflow(
    own_redis: RedisServer,
) -> None:
    """Redis stops answering (SIGSTOP) under many conversations' work: with a small pool
    every lock user either waits for a connection or gets CoordinationUnavailable and
    retries, as the workers do; after Redis resumes, every conversation is worked once
    and no lock is left to a holder that gave up."""
    client = redis_client(own_redis.url, max_connections=4, pool_timeout_s=5.0)
    coordinator = RedisCoordinator(client, prefix=f"test:{uuid4().hex}")
    worked: list[int] = []

    async def work(n: int) -> None:
        conversation = uuid4()
        while True:
            try:
                async with coordinator.lock(conversation, wait_s=TTL_S + 3):
                    await asyncio.sleep(0.05)
                    worked.append(n)
                    return
            except CoordinationUnavailable:
                await asyncio.sleep(0.2)

    try:
        tasks = [asyncio.create_task(work(n)) for n in range(30)]
        await asyncio.sleep(0.01)
        own_redis.pause()
        await asyncio.sleep(2.0)
        own_redis.resume()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        assert sorted(worked) == list(range(30))
    finally:
        own_redis.resume()
        await client.aclose()
