"""The per-tenant send rate limit, shared by every dispatcher through Redis, and the
attempt limiter the login throttle counts failed sign-ins with.

A sliding-window log: each send takes a timestamped slot in a sorted set, and a send
goes only while fewer than `per_second` slots lie in the last second. Unlike a counter
per calendar second, it never lets two full seconds' worth through around a second's
boundary (Meta counts throughput per second per phone number). Redis's own clock
stamps the slots, so dispatchers on different machines agree.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from uuid import UUID

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from urbana.application.ports import CoordinationUnavailable

WINDOW_MS = 1000

# Returns 0 when a slot was taken, else the milliseconds until the oldest slot expires.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


class RedisRateLimiter:
    """The `RateLimiter` port over a Redis sorted set per tenant."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "urbana") -> None:
        self._redis = client
        self._prefix = prefix

    async def acquire(self, tenant_id: UUID, per_second: int) -> None:
        """Wait until the tenant may send one more message within the last second."""
        key = f"{self._prefix}:sendrate:{tenant_id}"
        member = uuid.uuid4().hex
        limit = max(int(per_second), 1)
        while True:
            try:
                wait_ms = int(
                    await self._redis.eval(_TAKE, 1, key, str(limit), str(WINDOW_MS), member)
                )
            except RedisError as exc:
                raise CoordinationUnavailable(f"taking a send slot: {exc}") from exc
            if wait_ms == 0:
                return
            # A little jitter, so the waiters of one tenant do not all retry at once.
            await asyncio.sleep(wait_ms / 1000 + random.uniform(0, 0.005))  # noqa: S311


class RedisAttemptLimiter:
    """The `AttemptLimiter` port over the same sliding-window log, one sorted set a key."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "urbana") -> None:
        self._redis = client
        self._prefix = prefix

    async def take(self, key: str, limit: int, window_s: float, attempt: str) -> float:
        window_ms = max(1, round(window_s * 1000))
        try:
            wait_ms = int(
                await self._redis.eval(
                    _TAKE, 1, self._key(key), str(max(limit, 1)), str(window_ms), attempt
                )
            )
        except RedisError as exc:
            raise CoordinationUnavailable(f"counting an attempt: {exc}") from exc
        return wait_ms / 1000

    async def forget(self, key: str, attempt: str) -> None:
        try:
            await self._redis.zrem(self._key(key), attempt)
        except RedisError as exc:
            raise CoordinationUnavailable(f"forgetting an attempt: {exc}") from exc

    def _key(self, key: str) -> str:
        return f"{self._prefix}:attempts:{key}"
