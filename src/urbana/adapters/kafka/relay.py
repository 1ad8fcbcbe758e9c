"""The outbox relay: the event store's notification log, published to Kafka in order.

It follows the log (`urbana.adapters.postgres.log`: commit-ordered, read `> last
position` in batches) and sleeps on the LISTEN channel the eventsourcing library
NOTIFYs on each save (with a timed poll as a fallback). Each event is published as its
public envelope (`urbana.adapters.kafka.producer.to_record`), keyed by its stream id so
a conversation stays on one partition.

Delivery is at-least-once. The position is saved in PostgreSQL
(`urbana.adapters.postgres.relay_position`) only after the broker acknowledged the
whole batch, so a crash in between republishes the batch; consumers deduplicate by
`position`. Broker errors are retried with backoff, never skipped.

A broker that loses acknowledged records (the dev broker keeps topics in memory and
forgets them on restart) shows up as partition offsets going backwards; the relay then
re-creates its topic if needed and republishes from the start of the store, so the
topic ends up holding every event again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection

from urbana.adapters import tracing
from urbana.adapters.kafka.producer import Idempotence, Producer, to_record
from urbana.adapters.kafka.topics import EVENTS_TOPIC, ensure_topic
from urbana.adapters.lifecycle import Service
from urbana.adapters.postgres.log import AsyncLogReader, Page, listen_channel
from urbana.adapters.postgres.relay_position import PositionStore
from urbana.adapters.retry import Stopped, retrying
from urbana.config import conninfo
from urbana.errors import Unavailable

log = logging.getLogger(__name__)

# Worth waiting out: the broker (or the way to it) is down or slow, as the producer and
# the topic admin report it.
PUBLISH_FAULTS = (Unavailable,)
_WAIT_SLICE = 0.25  # how often a sleeping relay looks at its stop event


class RelayError(Unavailable):
    """Another relay with the same name holds the position: this one waits its turn."""


class Relay(Service):
    """Publishes the event store's notification log to a Kafka topic (outbox relay)."""

    def __init__(
        self,
        *,
        database_url: str,
        schema: str | None,
        bootstrap: str,
        topic: str = EVENTS_TOPIC,
        name: str = "relay",
        batch_size: int = 500,
        topics_file: Path | str | None = None,
        poll_interval: float = 1.0,
        idempotence: Idempotence = "auto",
        request_timeout_ms: int = 15_000,
        tenant_cache_size: int = 100_000,
        republish_on_loss: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.database_url = database_url
        self.schema = schema
        self.bootstrap = bootstrap
        self.topic = topic
        self.name = name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._topics_file = topics_file
        self._log = AsyncLogReader(schema, tenant_cache_size=tenant_cache_size)
        self._positions = PositionStore(schema, name)
        self._producer = Producer(
            bootstrap,
            client_id=f"urbana-{name}",
            idempotence=idempotence,
            request_timeout_ms=request_timeout_ms,
        )
        self._acked_offsets: dict[int, int] = {}  # partition -> highest acknowledged offset
        self._conn: AsyncConnection[Any] | None = None
        self._listener: AsyncConnection[Any] | None = None
        self._topic_ready = False
        self._topic_lost = False
        self._republish_on_loss = republish_on_loss

        # Metrics (read them, or `metrics()`).
        self.published = 0  # records acknowledged by the broker since start (with republished)
        self.last_position = 0  # every event up to here is acknowledged and saved
        self.head_position = 0  # newest position seen in the store
        self.lag_events = 0  # stored events not yet acknowledged (as of the last read)
        self.lag_seconds = 0.0  # age of the oldest unacknowledged event; 0 when caught up
        self.batches = 0
        self.errors = 0  # failed publish attempts (each one retried)
        self.broker_resets = 0  # times the broker was found to have lost acknowledged records

    @property
    def idempotent(self) -> bool | None:
        """Whether the producer runs idempotent (None until it started)."""
        return self._producer.idempotent

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect to PostgreSQL, claim the relay name, and load the saved position."""
        if self._conn is not None:
            return
        conn = await AsyncConnection.connect(
            conninfo(self.database_url, self.schema), autocommit=True
        )
        try:
            if not await self._positions.claim(conn):
                raise RelayError(f"another relay named {self.name!r} is running on this store")
            self.last_position = await self._positions.load(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        log.info("relay %s: starts after position %d", self.name, self.last_position)

    async def aclose(self) -> None:
        """Stop the producer and close the database connections."""
        await self._producer.close()
        await self._disconnect()

    def metrics(self) -> dict[str, Any]:
        """Position and lag figures, for logs, health endpoints and benchmarks."""
        return {
            "name": self.name,
            "topic": self.topic,
            "published": self.published,
            "last_position": self.last_position,
            "head_position": self.head_position,
            "lag_events": self.lag_events,
            "lag_seconds": round(self.lag_seconds, 3),
            "batches": self.batches,
            "errors": self.errors,
            "broker_resets": self.broker_resets,
            "idempotent": self.idempotent,
        }

    # ------------------------------------------------------------------- running

    async def run_once(self) -> int:
        """Publish everything stored past the saved position; returns how many were sent."""
        await self.start()
        sent = 0
        while (page := await self._read()) is not None:
            await self._publish(page, None)
            sent += page.size
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the store until `stop` is set (catch-up reads, then LISTEN/NOTIFY)."""
        try:
            await self._claim(stop)
            while not stop.is_set():
                try:
                    await self._follow(stop)
                except psycopg.OperationalError as exc:
                    # PostgreSQL restarted or the network dropped: reconnect, keep going.
                    self.errors += 1
                    log.warning("relay %s lost PostgreSQL (%s); reconnecting", self.name, exc)
                    await self._reconnect(stop)
        except Stopped:
            pass
        finally:
            await self._close_listener()

    async def _claim(self, stop: asyncio.Event) -> None:
        """`start()`, waiting while another relay of the same name holds the position."""

        def waiting(attempt: int, fault: BaseException, seconds: float) -> None:
            if attempt == 1:
                log.info("relay %s waits: another instance holds the position", self.name)

        async for attempt in retrying(
            RelayError, stop=stop, wait=self.poll_interval, on_retry=waiting
        ):
            with attempt:
                await self.start()

    async def _follow(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        while not stop.is_set():
            page = await self._read()
            if page is not None:
                await self._publish(page, stop)
                continue
            await self._wait_for_notify(listener, stop)

    async def _reconnect(self, stop: asyncio.Event) -> None:
        await self._disconnect()

        def unreachable(attempt: int, fault: BaseException, seconds: float) -> None:
            log.warning("relay %s: PostgreSQL still unreachable (%s)", self.name, fault)

        async for attempt in retrying(psycopg.OperationalError, stop=stop, on_retry=unreachable):
            with attempt:
                await self.start()

    async def _disconnect(self) -> None:
        await self._close_listener()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    # ------------------------------------------------------------------ reading

    async def _read(self) -> Page | None:
        conn = self._require_conn()
        try:
            page = await self._log.page(conn, self.last_position, self.batch_size)
            head = await self._log.head(conn)
        except psycopg.errors.UndefinedTable:
            return None  # the application has not created its tables yet
        self.head_position = head
        self.lag_events = max(0, head - self.last_position)
        if page is None:
            self.lag_seconds = 0.0
        return page

    async def _listen(self) -> AsyncConnection[Any]:
        if self._listener is None:
            listener = await AsyncConnection.connect(
                conninfo(self.database_url, self.schema), autocommit=True
            )
            await listener.execute(listen_channel())
            self._listener = listener
        return self._listener

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()

    async def _wait_for_notify(self, listener: AsyncConnection[Any], stop: asyncio.Event) -> None:
        """Return on a NOTIFY, after `poll_interval` (fallback poll), or when stopped."""
        deadline = time.monotonic() + self.poll_interval
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            async for _ in listener.notifies(timeout=min(_WAIT_SLICE, remaining), stop_after=1):
                return

    # --------------------------------------------------------------- publishing

    async def _publish(self, page: Page, stop: asyncio.Event | None) -> None:
        """Publish one batch until the broker acknowledges all of it, then save the position."""
        envelopes = page.envelopes
        self.lag_seconds = max(0.0, (datetime.now(UTC) - envelopes[0].occurred).total_seconds())
        offsets: list[tuple[int, int]] = []
        failed = functools.partial(self._publish_failed, envelopes[0].position, page.last)
        # A span per trace the batch's events were appended under; each record carries
        # its own (or the stored traceparent, when this process does not trace).
        with tracing.fan_out(
            f"publish {self.topic}",
            (e.traceparent for e in envelopes),
            kind=tracing.SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": self.topic},
        ) as traces:
            records = [
                to_record(e, traces.get(e.traceparent or "") or e.traceparent) for e in envelopes
            ]
            async for attempt in retrying(PUBLISH_FAULTS, stop=stop, on_retry=failed):
                with attempt:
                    if not self._topic_ready:
                        await self._ensure_topic()
                    offsets = await self._producer.send_all(self.topic, records)
        self.published += len(records)
        self.batches += 1
        lost = self._broker_lost_records(offsets, known_lost=self._topic_lost)
        await self.save_position(page.last)
        self.last_position = page.last
        self.lag_events = max(0, self.head_position - self.last_position)
        if lost:
            await self._broker_lost()

    def _publish_failed(
        self, first: int, last: int, attempt: int, fault: BaseException, seconds: float
    ) -> None:
        self.errors += 1
        log.warning(
            "relay %s: publishing positions %d..%d failed (attempt %d): %r; retrying",
            self.name,
            first,
            last,
            attempt,
            fault,
        )
        self._topic_ready = False  # the broker may have lost it: make sure again

    async def _ensure_topic(self) -> None:
        """Create the topic if it is missing; notice when it lost what we published."""
        created, partitions = await ensure_topic(self.bootstrap, self.topic, self._topics_file)
        if self._acked_offsets and (created or max(self._acked_offsets) >= partitions):
            # The topic we had published to is gone (or came back smaller).
            self._topic_lost = True
        self._topic_ready = True

    def _broker_lost_records(
        self, offsets: Iterable[tuple[int, int]], *, known_lost: bool = False
    ) -> bool:
        """Whether a partition's offsets went backwards: its log was lost or re-created.

        Either way the offsets of this batch become the baseline for the next check.
        """
        lowest: dict[int, int] = {}
        highest: dict[int, int] = {}
        for partition, offset in offsets:
            lowest[partition] = min(offset, lowest.get(partition, offset))
            highest[partition] = max(offset, highest.get(partition, offset))
        lost = known_lost or any(lowest[p] <= self._acked_offsets.get(p, -1) for p in lowest)
        if lost:
            self._acked_offsets = {}
        for partition, offset in highest.items():
            self._acked_offsets[partition] = max(offset, self._acked_offsets.get(partition, -1))
        return lost

    async def _broker_lost(self) -> None:
        self.broker_resets += 1
        self._topic_lost = False
        self._acked_offsets = {}  # a new log: offsets start again
        if not self._republish_on_loss:
            log.error(
                "relay %s: the broker lost acknowledged records of %s; not republishing "
                "(use `urbana replay --to-kafka`)",
                self.name,
                self.topic,
            )
            return
        log.warning(
            "relay %s: the broker lost acknowledged records of %s; "
            "republishing from the start of the store",
            self.name,
            self.topic,
        )
        # A fresh producer re-reads the topic's partitions; the topic is checked again.
        await self._producer.reset()
        self._topic_ready = False
        await self.save_position(0)
        self.last_position = 0

    # ------------------------------------------------------------------ position

    async def save_position(self, position: int) -> None:
        """Record that every event up to `position` was acknowledged by the broker."""
        await self._positions.save(self._require_conn(), position)

    def _require_conn(self) -> AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("the relay is not started")
        return self._conn
