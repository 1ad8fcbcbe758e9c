"""Redis coordination for the AI responder and the dispatcher.

Debounce: every inbound message records its sequence number; a trigger waits for
the tenant's quiet time and goes on only if no later message arrived meanwhile,
so a burst of three messages gets one answer. Locks: one responder at a time per
conversation. Rate limit: a fixed one-second window per tenant.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import redis.asyncio as aioredis

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RAISE = """
local current = tonumber(redis.call('get', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return redis.call('get', KEYS[1])
"""


class RedisCoordinator:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "urbana") -> None:
        self._redis = client
        self._prefix = prefix

    async def note_message(self, conversation_id: UUID, seq: int, ttl_ms: int = 600_000) -> None:
        """Remember the latest inbound sequence number of a conversation."""
        await self._redis.eval(
            _RAISE, 1, f"{self._prefix}:burst:{conversation_id}", str(seq), str(ttl_ms)
        )

    async def quiet_after(self, conversation_id: UUID, seq: int, debounce_ms: int) -> bool:
        """Wait `debounce_ms`; True when `seq` is still the conversation's latest message."""
        await self.note_message(conversation_id, seq)
        if debounce_ms > 0:
            await asyncio.sleep(debounce_ms / 1000)
        latest = await self._redis.get(f"{self._prefix}:burst:{conversation_id}")
        return latest is None or int(latest) <= seq

    @asynccontextmanager
    async def lock(
        self, conversation_id: UUID, *, ttl_ms: int = 60_000, wait_s: float = 30.0
    ) -> AsyncIterator[None]:
        """Hold the conversation's lock (waiting for it up to `wait_s`)."""
        key = f"{self._prefix}:lock:{conversation_id}"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        while not await self._redis.set(key, token, nx=True, px=ttl_ms):
            if time.monotonic() > deadline:
                raise TimeoutError(f"lock of conversation {conversation_id} is busy")
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            await self._redis.eval(_RELEASE, 1, key, token)

    async def acquire(self, tenant_id: UUID, per_second: int) -> None:
        """Rate limit: wait until the tenant may send one more message this second."""
        while True:
            second = int(time.time())
            key = f"{self._prefix}:rate:{tenant_id}:{second}"
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 2)
                count, _ = await pipe.execute()
            if int(count) <= per_second:
                return
            await asyncio.sleep(max(0.0, second + 1 - time.time()))
