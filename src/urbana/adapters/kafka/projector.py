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

A poison event (one whose application raises) must not stall its partition: each
projection's worker (`urbana.adapters.kafka.projection_worker`) retries a failed batch
event by event and dead-letters what still fails; database connection failures are not
poison, and are retried after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from urbana.adapters.kafka.consumer import GroupTimeouts, group_consumer, stop_consumer
from urbana.adapters.kafka.producer import Producer
from urbana.adapters.kafka.projection_worker import ProjectionMetrics, ProjectionWorker
from urbana.adapters.kafka.topics import DLQ_TOPIC, EVENTS_TOPIC
from urbana.application.envelope import Envelope
from urbana.projections.apply import Applied
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
        self._workers: list[ProjectionWorker] = []
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
                worker = ProjectionWorker(self, projection)
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
