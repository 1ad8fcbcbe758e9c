"""Redis's side of erasure: the keys named after a subject's conversations and messages.

What Redis holds per subject (see `redis_coord` and `ingest`): the burst counter and
the lock of each conversation (`urbana:burst:<id>`, `urbana:lock:<id>`), and the
recently seen provider message ids (`urbana:seen:<tenant>:<channel>:<digest>`: the id's
keyed digest, as the store records it, never the wamid that embeds the sender's phone).
The send-rate counters are per tenant and hold nothing of a subject.
"""

from __future__ import annotations

from uuid import UUID

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from urbana.application.ports import CoordinationUnavailable


class RedisSubjectCache:
    """`SubjectCache` on the process's Redis client."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "urbana") -> None:
        self._redis = client
        self._prefix = prefix

    async def drop(
        self, tenant_id: UUID, conversation_ids: list[UUID], provider_ids: list[tuple[str, str]]
    ) -> int:
        """Delete the subject's keys; how many existed."""
        kinds = ("burst", "lock")
        keys = [f"{self._prefix}:{kind}:{c}" for c in conversation_ids for kind in kinds]
        keys += [f"{self._prefix}:seen:{tenant_id}:{ch}:{pid}" for ch, pid in provider_ids]
        if not keys:
            return 0
        try:
            return int(await self._redis.delete(*keys))
        except RedisError as exc:
            raise CoordinationUnavailable(f"removing a subject's keys: {exc}") from exc
