"""The Redis fast path for redeliveries, on a real Redis: coalesced, and never a lie."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.ingest import SeenIds

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


async def test_unreachable_redis_fails_every_asker(services: ServiceUrls) -> None:
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        seen = SeenIds(client)
        results = await asyncio.gather(seen.seen(["a"]), seen.seen(["b"]), return_exceptions=True)
        assert all(isinstance(r, RedisError) for r in results)
        seen.remember(["c"])  # logged, not raised: the store is the authority
        await seen.aclose()
    finally:
        await client.aclose()
