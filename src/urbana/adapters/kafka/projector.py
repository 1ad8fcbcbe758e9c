"""The projection runner: a Kafka consumer that keeps the read models up to date.

One consumer feeds every projection the runner holds: each fetched batch is decoded
once and applied to the projections concurrently, each on its own connection, in one
PostgreSQL transaction together with the tracking of its partitions
(`urbana.projections.apply.apply_tracked`). Its group is named after the projections and
their versions (`feed_group_id`: `urbana.projection.<name>.v<version>` for one), so a
version bump is a new group that starts from the beginning of the topic; the
projections already at the head skip what they hold by their tracking. The Kafka offsets
are committed only after every projection's transaction commits (batched: at most once
a second, and when the runner closes). A crash in between makes Kafka redeliver the
batch, and the tracking skips it: exactly-once effect.

Five consumers (one group per projection, as before) fetched and decoded every record
five times: that, not the projections' SQL, was most of the projector's CPU
(bench/relay.py).

Kafka offsets are not store positions, so the runner cannot seek by its tracking; it
starts from the group's committed offsets (earliest for a new group) and relies on the
position skip. After a replay, the floor it leaves makes that skip cover everything the
rebuilt tables already hold.

A poison event (one whose application raises) must not stall its partition: when a
batch fails, it is retried event by event; each event that still fails goes to the
dead-letter topic with the error in its headers, is counted and logged, its position
is marked handled, and the partition moves on. Database connection failures are not
poison: the batch is retried after a reconnect, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from psycopg import AsyncConnection

from urbana.adapters import tracing
from urbana.adapters.kafka.consumer import GroupTimeouts, group_consumer, stop_consumer
from urbana.adapters.kafka.producer import Producer, Record
from urbana.adapters.kafka.topics import DLQ_TOPIC, EVENTS_TOPIC
from urbana.adapters.retry import retrying
from urbana.application.envelope import Envelope
from urbana.config import conninfo
from urbana.projections.apply import Applied, apply_tracked, mark_handled
from urbana.projections.base import Projection
from urbana.projections.schema import select

log = logging.getLogger(__name__)

AfterCommit = Callable[[str, Applied], Awaitable[None]]

# Kafka offsets only spare the tracking skip some redelivered records (the tracking in
# PostgreSQL is what makes a batch apply once), so they are committed at most this
# often, off the path of every batch, and when the runner closes.
OFFSET_COMMIT_EVERY_S = 1.0


class RunnerTimeout(TimeoutError):
    """`run_until_caught_up` did not reach the end of the topic in time."""


@dataclass
class ProjectionMetrics:
    applied: int = 0  # events newer than the tracking, applied
    skipped: int = 0  # redelivered or already covered by a replay
    dead_lettered: int = 0
    batches: int = 0
    db_retries: int = 0
    lag_records: int = 0  # as of the last fetch (or caught-up check)
    positions: dict[int, int] = field(default_factory=dict)  # partition -> tracked position


def group_id(projection: Projection, prefix: str = "urbana.projection") -> str:
    return f"{prefix}.{projection.name}.v{projection.version}"


def feed_group_id(projections: Sequence[Projection], prefix: str = "urbana.projection") -> str:
    """The group of one runner's consumer: every projection it feeds, with its version.

    One projection: `group_id` (`<prefix>.<name>.v<version>`). Several: their
    `<name>.v<version>` joined by `+`, in name order, so a version bump (or another set of
    projections) is a new group, which starts from the beginning of the topic.
    """
    if len(projections) == 1:
        return group_id(projections[0], prefix)
    return (
        prefix
        + "."
        + "+".join(f"{p.name}.v{p.version}" for p in sorted(projections, key=lambda p: p.name))
    )


class _Worker:
    """One projection: its database connection, its metrics, its poison handling."""

    def __init__(self, runner: ProjectionRunner, projection: Projection) -> None:
        self.runner = runner
        self.projection = projection
        self.metrics = ProjectionMetrics()
        self.conn: AsyncConnection[Any] | None = None

    async def start(self) -> None:
        self.conn = await self._connect()

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.close()

    async def _connect(self) -> AsyncConnection[Any]:
        r = self.runner
        return await AsyncConnection.connect(conninfo(r.database_url, r.schema), autocommit=True)

    async def apply(
        self,
        records: dict[int, list[tuple[ConsumerRecord[Any, Any], Envelope]]],
        undecodable: list[tuple[ConsumerRecord[Any, Any], Exception]],
        handled: int,
    ) -> Applied | None:
        """Apply one fetched batch (None when it held no envelope); dead-letter what
        could not be decoded."""
        for record, exc in undecodable:
            await self._dead_letter(record, exc)
        if not any(records.values()):
            return None
        with tracing.fan_out(
            f"project {self.projection.name}",
            (tracing.header(r.headers) for items in records.values() for r, _ in items),
            kind=tracing.SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "urbana.batch": handled},
        ):
            return await self._apply(records)

    async def _apply(
        self, records: dict[int, list[tuple[ConsumerRecord[Any, Any], Envelope]]]
    ) -> Applied:
        batches = {p: [e for _, e in items] for p, items in records.items()}
        try:
            applied: Applied = await self._with_db(
                lambda conn: apply_tracked(conn, self.projection, batches)
            )
        except _Poison as poison:
            log.warning(
                "projection %s: batch of %d failed (%s); retrying event by event",
                self.projection.name,
                sum(len(b) for b in batches.values()),
                poison.cause,
            )
            applied = await self._one_by_one(records)
        self._count(applied)
        return applied

    async def _one_by_one(
        self, records: dict[int, list[tuple[ConsumerRecord[Any, Any], Envelope]]]
    ) -> Applied:
        total_applied = total_skipped = 0
        positions: dict[int, int] = {}
        for partition, items in records.items():
            for record, envelope in items:
                try:
                    one = await self._with_db(
                        lambda conn, p=partition, e=envelope: apply_tracked(  # type: ignore[misc]
                            conn, self.projection, {p: [e]}
                        )
                    )
                except _Poison as poison:
                    await self._dead_letter(record, poison.cause, envelope)
                    await self._with_db(
                        lambda conn, p=partition, e=envelope: mark_handled(  # type: ignore[misc]
                            conn, self.projection, p, e.position
                        )
                    )
                    positions[partition] = max(positions.get(partition, 0), envelope.position)
                    continue
                total_applied += one.applied
                total_skipped += one.skipped
                positions.update(one.positions)
        return Applied(applied=total_applied, skipped=total_skipped, positions=positions)

    async def _with_db(self, work: Callable[[AsyncConnection[Any]], Awaitable[Any]]) -> Any:
        """Run a transaction; retry connection failures, report anything else as poison."""
        # Lost connection, deadlock, serialization failure: not the event's fault.
        async for attempt in retrying(psycopg.OperationalError, on_retry=self._db_failed):
            with attempt:
                if self.conn is None or self.conn.closed:
                    self.conn = await self._connect()
                conn = self.conn
                try:
                    return await work(conn)
                except psycopg.OperationalError:
                    if conn.broken:
                        with contextlib.suppress(Exception):
                            await conn.close()
                        self.conn = None
                    raise
                except Exception as exc:
                    raise _Poison(exc) from exc
        raise AssertionError("unreachable: retrying never gives up")

    def _db_failed(self, attempt: int, fault: BaseException, seconds: float) -> None:
        self.metrics.db_retries += 1
        log.warning(
            "projection %s: database error, retrying in %.1f s: %s",
            self.projection.name,
            seconds,
            fault,
        )

    async def _dead_letter(
        self,
        record: ConsumerRecord[Any, Any],
        error: BaseException,
        envelope: Envelope | None = None,
    ) -> None:
        detail = f"{type(error).__name__}: {error}"
        log.error(
            "projection %s: poison event at %s[%d]@%d (position %s) sent to %s: %s",
            self.projection.name,
            record.topic,
            record.partition,
            record.offset,
            envelope.position if envelope else "?",
            self.runner.dlq_topic,
            detail,
        )
        headers = [
            *(record.headers or ()),
            ("error", detail[:2000].encode()),
            ("error_trace", "".join(traceback.format_exception(error))[-4000:].encode()),
            ("projection", self.projection.name.encode()),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
        ]
        await self.runner.dead_letters.send_all(
            self.runner.dlq_topic, [Record(record.key, record.value, headers)]
        )
        self.metrics.dead_lettered += 1

    def _count(self, applied: Applied) -> None:
        self.metrics.batches += 1
        self.metrics.applied += applied.applied
        self.metrics.skipped += applied.skipped
        for partition, position in applied.positions.items():
            old = self.metrics.positions.get(partition, 0)
            self.metrics.positions[partition] = max(old, position)


class _Poison(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ProjectionRunner:
    """Feeds the projections from one consumer, against one database schema and topic."""

    def __init__(
        self,
        *,
        database_url: str,
        schema: str | None,
        bootstrap: str,
        topic: str = EVENTS_TOPIC,
        projections: Sequence[str] | None = None,
        dlq_topic: str = DLQ_TOPIC,
        batch_size: int = 2000,
        poll_ms: int = 200,
        group_prefix: str = "urbana.projection",
        assign: bool = False,
        after_db_commit: AfterCommit | None = None,
        timeouts: GroupTimeouts | None = None,
    ) -> None:
        """`assign=True` takes every partition of the topic without group rebalancing (one
        instance per set of projections; offsets still committed to the group).
        `after_db_commit` is called between the database commit and the offset commit (a
        seam for tests that simulate a crash there). `timeouts` are the consumer group's
        (the workers' too), see `urbana.adapters.kafka.consumer`.
        """
        self.database_url = database_url
        self.schema = schema
        self.bootstrap = bootstrap
        self.topic = topic
        self.projections = select(list(projections or []))
        self.dlq_topic = dlq_topic
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.group_prefix = group_prefix
        self.group_id = feed_group_id(self.projections, group_prefix)
        self.assign = assign
        self.after_db_commit = after_db_commit
        self.timeouts = timeouts or GroupTimeouts()
        self.dead_letters = Producer(bootstrap, client_id="urbana-projection-dlq")
        self.consumer: AIOKafkaConsumer | None = None
        self._workers: list[_Worker] = []
        self._offsets: dict[TopicPartition, int] = {}  # applied, not yet committed
        self._committed_at = time.monotonic()
        self._lag: dict[int, int] = {}  # partition -> records behind, as of its last fetch
        self.metrics: dict[str, ProjectionMetrics] = {
            p.name: ProjectionMetrics() for p in self.projections
        }

    async def _start(self) -> None:
        self._workers = []
        try:
            for projection in self.projections:
                worker = _Worker(self, projection)
                worker.metrics = self.metrics[projection.name]
                self._workers.append(worker)
                await worker.start()
            self.consumer = group_consumer(
                bootstrap=self.bootstrap,
                group_id=self.group_id,
                timeouts=self.timeouts,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            await self.consumer.start()
            if self.assign:
                await self._assign_all()
            else:
                self.consumer.subscribe([self.topic])
        except BaseException:
            await self._close()
            raise

    async def _assign_all(self) -> None:
        assert self.consumer is not None
        for _ in range(50):
            await self.consumer.topics()  # refreshes metadata
            partitions = self.consumer.partitions_for_topic(self.topic)
            if partitions:
                self.consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {self.topic} has no partitions")

    async def _close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):  # redelivery is harmless, only slower
                await self.commit_offsets()
            consumer, self.consumer = self.consumer, None
            with contextlib.suppress(Exception):
                await stop_consumer(consumer)
        workers, self._workers = self._workers, []
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.close()
        await self.dead_letters.close()

    def assigned(self) -> bool:
        """Whether the consumer holds partitions (its group has joined)."""
        return self.consumer is not None and bool(self.consumer.assignment())

    # ------------------------------------------------------------------ the loop

    async def step(self) -> int:
        """Fetch one batch, apply it to every projection, note its offsets; returns the
        records handled.

        The batch is decoded once and applied to the projections concurrently, each on its
        own connection in its own transaction with its tracking (a poison event falls back
        to one by one in that projection only). The offsets move on once every projection
        has committed.
        """
        assert self.consumer is not None
        got = await self.consumer.getmany(timeout_ms=self.poll_ms, max_records=self.batch_size)
        if time.monotonic() - self._committed_at >= OFFSET_COMMIT_EVERY_S:
            await self.commit_offsets()
        if not got:
            return 0
        records: dict[int, list[tuple[ConsumerRecord[Any, Any], Envelope]]] = {}
        undecodable: list[tuple[ConsumerRecord[Any, Any], Exception]] = []
        offsets: dict[TopicPartition, int] = {}
        handled = 0
        for tp, batch in got.items():
            offsets[tp] = batch[-1].offset + 1
            handled += len(batch)
            decoded = records.setdefault(tp.partition, [])
            for record in batch:
                try:
                    decoded.append((record, Envelope.from_json(record.value)))
                except Exception as exc:
                    undecodable.append((record, exc))
        results = await asyncio.gather(
            *(w.apply(records, undecodable, handled) for w in self._workers),
            return_exceptions=True,
        )
        applied: list[tuple[str, Applied]] = []
        for worker, result in zip(self._workers, results, strict=True):
            # Every projection has finished (none is left running) before a failure ends
            # the step; the offsets stay where they were, and the tracking skips what
            # the others committed when the batch comes again.
            if isinstance(result, BaseException):
                raise result
            if result is not None:
                applied.append((worker.projection.name, result))
        if self.after_db_commit is not None:
            for name, result in applied:
                await self.after_db_commit(name, result)
        self._offsets.update(offsets)
        self._note_lag(offsets)
        return handled

    def _note_lag(self, consumed: dict[TopicPartition, int]) -> None:
        """The records behind each partition's end, from the fetch's high watermark
        (what the broker told with the records, so no extra request)."""
        assert self.consumer is not None
        for tp, next_offset in consumed.items():
            high = self.consumer.highwater(tp)
            if high is not None:
                self._lag[tp.partition] = max(0, high - next_offset)
        lag = sum(self._lag.values())
        for metrics in self.metrics.values():
            metrics.lag_records = lag

    async def commit_offsets(self) -> None:
        """Commit the offsets of what has been applied (and dead-lettered)."""
        self._committed_at = time.monotonic()
        if self._offsets and self.consumer is not None:
            offsets, self._offsets = self._offsets, {}
            await self.consumer.commit(offsets)

    async def caught_up(self) -> bool:
        """Whether every assigned partition has been consumed up to its end offset."""
        assert self.consumer is not None
        assigned = list(self.consumer.assignment())
        if not assigned:
            return False
        ends = await self.consumer.end_offsets(assigned)
        lag = 0
        for tp in assigned:
            lag += max(0, ends[tp] - await self.consumer.position(tp))
        for metrics in self.metrics.values():
            metrics.lag_records = lag
        return lag == 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume and apply until `stop` is set; then close every client."""
        await self._start()
        try:
            while not stop.is_set():
                await self.step()
        finally:
            await self._close()

    async def run_until_caught_up(
        self,
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for tests and benchmarks
    ) -> dict[str, ProjectionMetrics]:
        """Consume until every projection reached the end of the topic (tests, benchmarks)."""
        await self._start()
        deadline = time.monotonic() + timeout
        try:
            while not (await self.step() == 0 and await self.caught_up()):
                if time.monotonic() > deadline:
                    names = [p.name for p in self.projections]
                    raise RunnerTimeout(f"not caught up after {timeout}s: {names}")
        finally:
            await self._close()
        return self.metrics
