"""Webhook ingest: Redis fast path for redeliveries, group commit into the store.

The event store is the authority on duplicates (MessageRef streams); Redis only
remembers recently committed provider ids so a redelivery is answered without a
trip through the writer. An id is written to Redis only after its batch
committed, so Redis can never claim something the store does not hold. And
Redis is never a reason to refuse a webhook: when it does not answer, ids are
looked up in the store alone (`SeenIds`).

Redis is asked and told once per event-loop turn, not once per request: the
requests parsed in one turn share one MGET, and the ids committed meanwhile are
remembered by one pipelined write that nobody waits for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from urbana.adapters import metrics, tracing
from urbana.application.app import Received, ReceiveMessage, RecordStatus, UrbanaApp
from urbana.application.ingest import GroupCommitter, StoreGate
from urbana.domain.errors import DomainError
from urbana.errors import Unavailable

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
    """Redis's name for a keyed command's provider id (its digest, never the id itself)."""
    return (
        f"urbana:seen:{command.tenant_id}:{command.channel}:{command.message.provider_message_id}"
    )


class SeenIds:
    """The Redis fast path, coalesced: one MGET per loop turn, one write per flush.

    Never a fault: when Redis does not answer within `timeout_s` (down, paused, pool
    exhausted), every id counts as unseen and the store decides; Redis is then left
    alone for `retry_after_s`, so an outage costs each webhook nothing, not a timeout.
    """

    def __init__(
        self, redis: aioredis.Redis, *, timeout_s: float = 0.25, retry_after_s: float = 1.0
    ) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._down_until = 0.0  # monotonic; Redis is skipped until then
        self._down = False  # for logging the outage once, and its end
        self._asks: list[tuple[list[str], asyncio.Future[set[str]]]] = []
        self._to_remember: list[str] = []
        self._flushing: asyncio.Task[None] | None = None
        self._lookups: set[asyncio.Task[None]] = set()  # held so they are not collected

    def _skipping(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, doing: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_after_s
        if not self._down:
            self._down = True
            log.warning(
                "Redis unreachable while %s (%s: %s); redeliveries are deduplicated by the "
                "event store alone until it answers",
                doing,
                type(exc).__name__,
                exc,
            )

    def _answered(self) -> None:
        if self._down:
            self._down = False
            log.info("Redis answers again; the redelivery fast path is back")

    async def seen(self, keys: list[str]) -> set[str]:
        """Which of `keys` were committed recently, as far as Redis knows (empty if it is down)."""
        if self._skipping():
            return set()
        future: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._asks.append((keys, future))
        if len(self._asks) == 1:
            asyncio.get_running_loop().call_soon(self._ask_all)
        return await future

    def _ask_all(self) -> None:
        asks, self._asks = self._asks, []
        task = asyncio.ensure_future(self._mget(asks))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _mget(self, asks: list[tuple[list[str], asyncio.Future[set[str]]]]) -> None:
        keys = list(dict.fromkeys(k for ks, _ in asks for k in ks))
        hits: set[str] = set()
        try:
            async with asyncio.timeout(self._timeout_s):
                flags = await self._redis.mget(keys)
        except (RedisError, TimeoutError) as exc:
            self._failed("looking up ids", exc)
        else:
            self._answered()
            hits = {k for k, flag in zip(keys, flags, strict=True) if flag is not None}
        for ks, future in asks:
            if not future.done():
                future.set_result(hits.intersection(ks))

    def remember(self, keys: list[str]) -> None:
        """Note committed ids; they are written to Redis soon, in one round trip."""
        if self._skipping():
            return  # durable already: the store still refuses a redelivery, only slower
        self._to_remember.extend(keys)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name="seen-ids-flush")

    async def _flush(self) -> None:
        while self._to_remember:
            keys, self._to_remember = self._to_remember, []
            try:
                async with asyncio.timeout(self._timeout_s * 4):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for key in keys:
                            pipe.set(key, b"1", ex=SEEN_TTL_S)
                        await pipe.execute()
            except (RedisError, TimeoutError) as exc:
                # Already durable: the store still refuses a redelivery, only slower.
                self._failed(f"remembering {len(keys)} ids", exc)
                self._to_remember.clear()
                return

    async def aclose(self) -> None:
        if self._flushing is not None:
            await self._flushing


class Ingestor:
    """Turns parsed webhook items into durable events, exactly once."""

    def __init__(
        self,
        app: UrbanaApp,
        redis: aioredis.Redis | None,
        *,
        window_ms: float = 2.0,
        max_batch: int = 256,
        gate: StoreGate | None = None,
    ) -> None:
        self._app = app
        self._seen = SeenIds(redis) if redis is not None else None
        self.committer: GroupCommitter[Command, Outcome] = GroupCommitter(
            app.ingest,
            window_ms=window_ms,
            max_batch=max_batch,
            name="ingest-writer",
            gate=gate,
            on_commit=metrics.observe_batch,
        )

    def start(self) -> None:
        self.committer.start()

    async def aclose(self) -> None:
        await self.committer.aclose()
        if self._seen is not None:
            await self._seen.aclose()

    async def ingest(self, commands: Sequence[Command]) -> IngestResult:
        """Commit the commands (skipping recently seen ids); raises on infrastructure faults.

        Waits for the store no longer than the committer's gate allows
        (`StoreUnavailable`); all of one request's commands wait together.
        """
        result = IngestResult()
        commands = [self._app.keyed(c) for c in commands]
        messages = [c for c in commands if isinstance(c, ReceiveMessage)]
        seen: set[str] = set()
        if self._seen is not None and messages:
            seen = await self._seen.seen([_seen_key(c) for c in messages])
        todo = [c for c in commands if not (isinstance(c, ReceiveMessage) and _seen_key(c) in seen)]
        result.duplicates += len(commands) - len(todo)
        with tracing.span("urbana.store.append") as span:
            if span is not None:
                # The writer saves many requests in one transaction: each command carries
                # its own request's trace to the events it appends.
                trace = tracing.traceparent_of(span)
                todo = [dataclasses.replace(c, trace=trace) for c in todo]
            started = time.perf_counter()
            try:
                outcomes = await self.committer.submit_all(todo)
            except Unavailable:
                metrics.INGEST_UNAVAILABLE.inc()
                raise
            metrics.INGEST_SECONDS.observe(time.perf_counter() - started)
            tracing.note(span, commands=len(todo), duplicates=result.duplicates)
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
            elif outcome == "duplicate":
                result.duplicates += 1  # a redelivered status, like a redelivered message
            else:
                result.statuses[outcome] = result.statuses.get(outcome, 0) + 1
        if self._seen is not None and committed:
            self._seen.remember(committed)
        _count(result)
        return result


def _count(result: IngestResult) -> None:
    for outcome, n in (
        ("received", result.received),
        ("duplicate", result.duplicates),
        ("status", sum(result.statuses.values())),
        ("refused", len(result.errors)),
    ):
        if n:
            metrics.INGEST_OUTCOMES.labels(outcome).inc(n)
