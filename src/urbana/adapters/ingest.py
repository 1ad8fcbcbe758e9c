"""Webhook ingest: Redis fast path for redeliveries, group commit into the store.

The event store is the authority on duplicates (MessageRef streams); Redis only
remembers recently committed provider ids so a redelivery is answered without a
trip through the writer. An id is written to Redis only after its batch
committed, so Redis can never claim something the store does not hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from urbana.application.app import Received, ReceiveMessage, RecordStatus, UrbanaApp
from urbana.application.ingest import GroupCommitter
from urbana.domain.errors import DomainError

log = logging.getLogger(__name__)

SEEN_TTL_S = 7 * 24 * 3600

Command = ReceiveMessage | RecordStatus
Outcome = Received | str | DomainError


@dataclass
class IngestResult:
    received: int = 0
    duplicates: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    conversations: list[UUID] = field(default_factory=list)


def _seen_key(command: ReceiveMessage) -> str:
    return (
        f"urbana:seen:{command.tenant_id}:{command.channel}:{command.message.provider_message_id}"
    )


class Ingestor:
    """Turns parsed webhook items into durable events, exactly once."""

    def __init__(
        self,
        app: UrbanaApp,
        redis: aioredis.Redis | None,
        *,
        window_ms: float = 2.0,
        max_batch: int = 256,
    ) -> None:
        self._redis = redis
        self.committer: GroupCommitter[Command, Outcome] = GroupCommitter(
            app.ingest, window_ms=window_ms, max_batch=max_batch, name="ingest-writer"
        )

    def start(self) -> None:
        self.committer.start()

    async def aclose(self) -> None:
        await self.committer.aclose()

    async def ingest(self, commands: Sequence[Command]) -> IngestResult:
        """Commit the commands (skipping recently seen ids); raises on infrastructure faults."""
        result = IngestResult()
        messages = [c for c in commands if isinstance(c, ReceiveMessage)]
        seen: set[str] = set()
        if self._redis is not None and messages:
            keys = [_seen_key(c) for c in messages]
            flags = await self._redis.mget(keys)
            seen = {k for k, flag in zip(keys, flags, strict=True) if flag is not None}
        todo = [c for c in commands if not (isinstance(c, ReceiveMessage) and _seen_key(c) in seen)]
        result.duplicates += len(commands) - len(todo)
        outcomes = await asyncio.gather(*(self.committer.submit(c) for c in todo))
        committed: list[str] = []
        for command, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, DomainError):
                result.errors.append(f"{type(outcome).__name__}: {outcome}")
            elif isinstance(outcome, Received):
                if outcome.duplicate:
                    result.duplicates += 1
                else:
                    result.received += 1
                    result.conversations.append(outcome.conversation_id)
                assert isinstance(command, ReceiveMessage)
                committed.append(_seen_key(command))
            else:
                result.statuses[outcome] = result.statuses.get(outcome, 0) + 1
        if self._redis is not None and committed:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in committed:
                        pipe.set(key, b"1", ex=SEEN_TTL_S)
                    await pipe.execute()
            except RedisError as exc:
                # Already durable: the store still refuses a redelivery, only slower.
                log.warning("could not remember %d ids in Redis: %s", len(committed), exc)
        return result
