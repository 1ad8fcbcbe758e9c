"""The consumer group of a role that acts on events (the AI responder, the outbound
dispatcher, the knowledge indexer and the handoff notifier, whose handlers are in
`urbana.adapters.kafka.role_workers`; the assigner's in `.assignment`).

Each worker reads `urbana.events.v1` in its own consumer group, handles the events
it cares about (events of one conversation in order, different conversations
concurrently) and commits offsets only after handling (those that moved, at most
once a second, and when it stops), so a crash redelivers; the handlers are
idempotent (one reply per burst is a domain invariant, and a message is dispatched
only while queued).

A handler that fails on our own fault (store, Redis, gateway down) is retried with
a jittered backoff capped at `RETRY_CAP_S`, so the work resumes within a couple of
seconds of the fault's end; the event is never skipped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential,
    wait_random,
)

from urbana.adapters import tracing
from urbana.adapters.kafka.consumer import (
    GroupTimeouts,
    describe_fault,
    group_consumer,
    stop_consumer,
)
from urbana.adapters.kafka.topics import (
    EVENTS_TOPIC,
    create_topics,
    load_topics,
    spec_for,
)
from urbana.application.envelope import Envelope
from urbana.application.ports import (
    LockBusy,
)
from urbana.domain.errors import DomainError
from urbana.errors import Unavailable

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]
Arrivals = Callable[[Sequence[Envelope]], Awaitable[None]]

RETRY_CAP_S = 2.0
# Offsets that moved are committed at most this often (and when the consumer stops):
# a crash then redelivers up to a second more of events, which the handlers take as
# redeliveries anyway, instead of asking the broker to write offsets on every fetch.
COMMIT_EVERY_S = 1.0


@dataclass(frozen=True)
class Subscription:
    """Where a worker reads: the broker, the topic, and its consumer group (by default
    `urbana.worker.<name>`)."""

    bootstrap: str
    topic: str = EVENTS_TOPIC
    group_id: str | None = None
    timeouts: GroupTimeouts | None = None


@dataclass
class WorkerMetrics:
    handled: int = 0
    skipped: int = 0
    failed: int = 0
    restarts: int = 0
    retries: int = 0


class EventWorker:
    """One consumer group; `handle` is called for envelopes whose type is in `types`.

    The consumer never waits for handlers (a responder may sleep out a debounce):
    each envelope becomes a task, chained behind the previous one of its stream when
    `ordered`, and offsets are committed only below the oldest unfinished task of
    each partition, so a crash redelivers exactly what was not finished.
    `on_arrival` sees each fetched batch's envelopes before their tasks start; it runs
    in the consumer loop, so it should be quick, and its failures are only logged.
    """

    def __init__(
        self,
        *,
        name: str,
        subscription: Subscription,
        handle: Handler,
        types: Sequence[str],
        max_records: int = 500,
        ordered: bool = True,
        on_arrival: Arrivals | None = None,
        retry_cap_s: float = RETRY_CAP_S,
        background: bool = False,
    ) -> None:
        self.name = name
        self._background = background
        self._bootstrap = subscription.bootstrap
        self._handle = handle
        self._types = frozenset(types)
        self._topic = subscription.topic
        self._group_id = subscription.group_id or f"urbana.worker.{name}"
        self._max_records = max_records
        self._ordered = ordered
        self._on_arrival = on_arrival
        self._timeouts = subscription.timeouts or GroupTimeouts()
        self._retry_cap_s = retry_cap_s
        self.metrics = WorkerMetrics()
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._in_flight: dict[TopicPartition, dict[int, asyncio.Task[None]]] = defaultdict(dict)
        self._seen: dict[TopicPartition, int] = {}
        # What this consumer last committed: an unchanged commit is not sent again (an idle
        # worker loops ten times a second, and each commit costs the broker a write).
        self._committed: dict[TopicPartition, int] = {}
        self._committed_at = 0.0  # monotonic

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; broker faults restart the consumer after a pause."""
        delay = 0.5
        while not stop.is_set():
            consumer = group_consumer(
                self._topic,
                bootstrap=self._bootstrap,
                group_id=self._group_id,
                timeouts=self._timeouts,
                background=self._background,
                max_poll_records=self._max_records,
            )
            try:
                # Subscribing to a topic that does not exist yet would wait for a
                # metadata refresh (minutes); create it first, idempotently.
                await create_topics(self._bootstrap, [spec_for(self._topic, load_topics())])
                await consumer.start()
                delay = 0.5
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=100, max_records=self._max_records)
                    await self._accept(batch)
                    if time.monotonic() - self._committed_at >= COMMIT_EVERY_S:
                        await self._commit(consumer)
                await self._drain()
                await self._commit(consumer)
            except (KafkaError, OSError, Unavailable) as exc:
                self.metrics.restarts += 1
                log.warning("%s: broker fault, restarting: %s", self.name, describe_fault(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                await self._drain()
                self._in_flight.clear()
                self._seen.clear()
                self._committed.clear()
                await stop_consumer(consumer)

    async def _accept(self, batch: dict[TopicPartition, list[Any]]) -> None:
        accepted: list[tuple[TopicPartition, int, Envelope, str | None]] = []
        for tp, records in batch.items():
            for record in records:
                self._seen[tp] = record.offset
                # The relay names the type in a header: records of other types are not
                # decoded at all (a worker handles one or two types of the topic's dozens).
                named = _event_type(record.headers)
                if named is not None and named not in self._types:
                    self.metrics.skipped += 1
                    continue
                try:
                    envelope = Envelope.from_json(record.value)
                except (ValueError, TypeError) as exc:
                    self.metrics.skipped += 1
                    log.warning(
                        "%s: undecodable record at offset %s: %s", self.name, record.offset, exc
                    )
                    continue
                if envelope.type not in self._types:
                    self.metrics.skipped += 1
                    continue
                parent = tracing.header(record.headers)
                accepted.append((tp, record.offset, envelope, parent))
        if accepted and self._on_arrival is not None:
            try:
                await self._on_arrival([envelope for _, _, envelope, _ in accepted])
            except Exception:
                # Advisory (the responder notes arrivals for its debounce): a fault here
                # must not stop the consumer, and the handlers run regardless.
                log.exception("%s: arrival hook failed for %d events", self.name, len(accepted))
        for tp, offset, envelope, parent in accepted:
            previous = self._tails.get(envelope.stream_id) if self._ordered else None
            task = asyncio.create_task(self._run_one(envelope, previous, parent))
            self._tails[envelope.stream_id] = task
            self._in_flight[tp][offset] = task
            task.add_done_callback(functools.partial(self._done, tp, offset, envelope))

    def _done(
        self, tp: TopicPartition, offset: int, envelope: Envelope, _task: asyncio.Task[None]
    ) -> None:
        self._in_flight[tp].pop(offset, None)
        tail = self._tails.get(envelope.stream_id)
        if tail is not None and tail.done():
            self._tails.pop(envelope.stream_id, None)

    async def _run_one(
        self, envelope: Envelope, previous: asyncio.Task[None] | None, parent: str | None = None
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        # What the handler appends is stored under this span: the trace goes on from there.
        with tracing.span(
            f"{self.name} {envelope.type}",
            kind=tracing.SpanKind.CONSUMER,
            parent=parent,
            attributes={"messaging.system": "kafka", "urbana.position": envelope.position},
            entry=True,
        ):
            await self._handle_retrying(envelope)

    async def _handle_retrying(self, envelope: Envelope) -> None:
        # Our own faults (store, cache, gateway down) keep the offset uncommitted and are
        # retried; the event is never skipped. A DomainError means the state moved on.
        retrying = AsyncRetrying(
            retry=retry_if_exception(_ours),
            wait=wait_exponential(multiplier=0.2, max=self._retry_cap_s) + wait_random(0, 0.2),
            before_sleep=functools.partial(self._retrying, envelope),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._handle(envelope)
        except DomainError as exc:  # the event is simply moot
            self.metrics.failed += 1
            log.info("%s: %s at %s: %s", self.name, envelope.type, envelope.position, exc)
            return
        self.metrics.handled += 1

    def _retrying(self, envelope: Envelope, state: RetryCallState) -> None:
        self.metrics.retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        # Redis down or a busy lock are expected; anything else gets its trace.
        expected = isinstance(exc, Unavailable | LockBusy)
        log.log(
            logging.WARNING if expected else logging.ERROR,
            "%s: %s at %s failed (%s); retrying in %.1f s",
            self.name,
            envelope.type,
            envelope.position,
            exc,
            wait,
            exc_info=None if expected else exc,
        )

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        self._committed_at = time.monotonic()
        offsets = {}
        for tp, last in self._seen.items():
            pending = self._in_flight.get(tp)
            offset = min(pending) if pending else last + 1
            if self._committed.get(tp) != offset:
                offsets[tp] = offset
        if offsets:
            await consumer.commit(offsets)
            self._committed.update(offsets)

    async def _drain(self, grace: float = 5.0) -> None:
        """Let running handlers finish for `grace` seconds, then cancel the rest
        (uncommitted, so redelivered on the next start)."""
        tasks = [t for by_offset in self._in_flight.values() for t in by_offset.values()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _event_type(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The `event_type` header of a record (see `producer.to_record`), or None without one."""
    for key, value in headers or ():
        if key == "event_type":
            return value.decode("utf-8", "replace")
    return None


def _ours(exc: BaseException) -> bool:
    """Retried: any failure but a domain refusal (and cancellation, not an Exception)."""
    return isinstance(exc, Exception) and not isinstance(exc, DomainError)
