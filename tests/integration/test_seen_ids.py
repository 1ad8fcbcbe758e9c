"""The Redis fast path for redeliveries, on a real Redis: coalesced, never a lie, and
never a fault: when Redis does not answer, the event store decides alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from uuid import uuid4

import pytest
from redis.asyncio import Redis
from tests.redis_server import RedisServer

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.ingest import SeenIds
from urbana.adapters.redis_coord import redis_client

pytestmark = pytest.mark.integration


async def _mget_calls(client: Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


async def test_concurrent_lookups_share_one_mget(services: ServiceUrls) -> None:
    client = Redis.from_url(services.redis)
    try:
        seen = SeenIds(client)
        prefix = f"test:{uuid4().hex}"
        await client.set(f"{prefix}:3", b"1")
        before = await _mget_calls(client)
        answers = await asyncio.gather(*(seen.seen([f"{prefix}:{i}"]) for i in range(20)))
        assert await _mget_calls(client) - before == 1
        assert answers[3] == {f"{prefix}:3"}
        assert all(a == set() for i, a in enumerate(answers) if i != 3)
    finally:
        await client.aclose()


async def test_remembered_ids_are_seen_after_the_flush(services: ServiceUrls) -> None:
    client = Redis.from_url(services.redis)
    try:
        seen = SeenIds(client)
        keys = [f"test:{uuid4().hex}" for _ in range(5)]
        seen.remember(keys[:3])
        seen.remember(keys[3:])
        await seen.aclose()
        assert await seen.seen(keys) == set(keys)
        assert 0 < await client.ttl(keys[0]) <= 7 * 24 * 3600
    finally:
        await client.aclose()


async def test_an_unreachable_redis_leaves_every_lookup_to_the_store(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = redis_client(server.url)
    try:
        seen = SeenIds(client)
        key = f"test:{uuid4().hex}"
        seen.remember([key])
        await seen.aclose()
        assert await seen.seen([key]) == {key}
        server.stop()
        began = time.monotonic()
        results = await asyncio.gather(seen.seen([key]), seen.seen(["b"]))
        assert list(results) == [set(), set()]  # not a fault: the store decides
        assert time.monotonic() - began < 1.0
        seen.remember(["c"])  # logged, not raised: the store is the authority
        await seen.aclose()
    finally:
        await client.aclose()
        server.stop()


async def test_a_paused_redis_does_not_hold_a_lookup(tmp_path: Path) -> None:
    """SIGSTOP: connections are accepted and nothing answers; the lookup gives up fast."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = redis_client(server.url)
    try:
        seen = SeenIds(client)
        assert await seen.seen(["warm-up"]) == set()
        server.pause()
        began = time.monotonic()
        assert await seen.seen([f"test:{uuid4().hex}"]) == set()
        assert time.monotonic() - began < 1.0
    finally:
        server.resume()
        await client.aclose()
        server.stop()


async def test_lookups_use_redis_again_once_it_is_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = redis_client(server.url)
    try:
        seen = SeenIds(client, retry_after_s=0.2)
        server.stop()
        assert await seen.seen(["x"]) == set()
        server.start()
        key = f"test:{uuid4().hex}"
        await client.set(key, b"1")
        await asyncio.sleep(0.3)
        assert await seen.seen([key]) == {key}
    finally:
        await client.aclose()
        server.stop()
