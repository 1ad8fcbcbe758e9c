"""Redis coordination for the AI responder, and the process's Redis client.

Debounce: every inbound message records its sequence number; a trigger waits for
the tenant's quiet time and goes on only if no later message arrived meanwhile,
so a burst of three messages gets one answer. Locks: one responder at a time per
conversation. (The send rate limit is `urbana.adapters.rate_limit`.)

Redis is a coordinator here, never an authority: one reply per burst is a domain
invariant the event store enforces, so a lock only spares duplicate work (two LLM
calls for one burst). That is why locks are short-lived: a lock lives `LOCK_TTL_MS`
and its holder renews it every third of that while the work runs, so a holder that
dies (killed, or its release failed) frees the conversation within one TTL.

A Redis fault is raised as `CoordinationUnavailable`; the workers retry the event with
a short capped backoff, so they resume within seconds of Redis's return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from uuid import UUID

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import LockError, RedisError
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from urbana.application.ports import CoordinationUnavailable, LockBusy

log = logging.getLogger(__name__)

LOCK_TTL_MS = 6_000
LOCK_WAIT_S = 30.0
RELEASE_ATTEMPTS = 3

_RAISE = """
local current = tonumber(redis.call('get', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return redis.call('get', KEYS[1])
"""


def redis_client(
    url: str,
    *,
    max_connections: int = 100,
    pool_timeout_s: float = 5.0,
    socket_timeout_s: float = 1.0,
) -> aioredis.Redis:
    """The process's Redis client: a bounded pool that makes callers wait, fast failures.

    At its limit the pool makes a command wait up to `pool_timeout_s` for a connection
    (a burst of work queues up instead of failing). A command gets one quick retry on a
    broken connection (the usual aftermath of a Redis restart), not redis-py's default
    ten, so an outage is reported in about a second and callers fall back or retry on
    their own terms.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        health_check_interval=10,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.1, base=0.01), retries=1),
    )
    return aioredis.Redis.from_pool(pool)


class RedisCoordinator:
    """The `Coordination` port on Redis: burst counters and renewed locks."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "urbana") -> None:
        self._redis = client
        self._prefix = prefix

    def _burst_key(self, conversation_id: UUID) -> str:
        return f"{self._prefix}:burst:{conversation_id}"

    async def note_messages(self, latest: Mapping[UUID, int], ttl_ms: int = 600_000) -> None:
        """Remember the latest inbound sequence number of each conversation (one round trip)."""
        if not latest:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for conversation_id, seq in latest.items():
                    pipe.eval(_RAISE, 1, self._burst_key(conversation_id), str(seq), str(ttl_ms))
                await pipe.execute()
        except RedisError as exc:
            raise CoordinationUnavailable(f"noting messages: {exc}") from exc

    async def quiet_after(self, conversation_id: UUID, seq: int, debounce_ms: int) -> bool:
        """Wait `debounce_ms`; True when `seq` is still the conversation's latest message."""
        await self.note_messages({conversation_id: seq})
        if debounce_ms > 0:
            await asyncio.sleep(debounce_ms / 1000)
        try:
            latest = await self._redis.get(self._burst_key(conversation_id))
        except RedisError as exc:
            raise CoordinationUnavailable(f"reading the burst: {exc}") from exc
        return latest is None or int(latest) <= seq

    @asynccontextmanager
    async def lock(
        self, conversation_id: UUID, *, ttl_ms: int = LOCK_TTL_MS, wait_s: float = LOCK_WAIT_S
    ) -> AsyncIterator[None]:
        """Hold the conversation's lock (waiting for it up to `wait_s`), renewed while held.

        The release is retried; if it still fails, the lock is left to expire, which it
        does within `ttl_ms` because the renewal stopped with the work.
        """
        lock = Lock(
            self._redis,
            f"{self._prefix}:lock:{conversation_id}",
            timeout=ttl_ms / 1000,
            sleep=0.05,
            blocking_timeout=wait_s,
            thread_local=False,
        )
        try:
            acquired = await lock.acquire()
        except RedisError as exc:
            raise CoordinationUnavailable(f"taking the lock of {conversation_id}: {exc}") from exc
        if not acquired:
            raise LockBusy(f"lock of conversation {conversation_id} is busy")
        renewal = asyncio.create_task(
            _renew(lock, ttl_ms / 3000), name=f"lock-renewal:{conversation_id}"
        )
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            await _release(lock, conversation_id, ttl_ms)


async def _renew(lock: Lock, every_s: float) -> None:
    """Reset the lock's TTL every `every_s` until cancelled, or until it is no longer ours."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await lock.reacquire()
        except LockError:
            # Expired (the loop stalled past the TTL) or taken: the store's invariants
            # still hold, the work just is no longer exclusive. Say so and stop.
            log.warning("lost the lock %s while holding it", lock.name)
            return
        except RedisError as exc:  # keep trying: the TTL left may outlast a blip
            log.warning("could not renew the lock %s: %s", lock.name, exc)


async def _release(lock: Lock, conversation_id: UUID, ttl_ms: int) -> None:
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(RedisError) & retry_if_not_exception_type(LockError),
        stop=stop_after_attempt(RELEASE_ATTEMPTS),
        wait=wait_exponential(multiplier=0.05, max=0.5),
    )
    try:
        async for attempt in retrying:
            with attempt:
                await lock.release()
    except LockError:  # expired meanwhile, or taken over: nothing of ours to release
        log.warning("lock of conversation %s had expired before its release", conversation_id)
    except RetryError as exc:
        log.warning(
            "could not release the lock of conversation %s (%s); it expires within %d ms",
            conversation_id,
            exc.last_attempt.exception(),
            ttl_ms,
        )
