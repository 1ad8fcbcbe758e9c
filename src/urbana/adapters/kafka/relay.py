"""The outbox relay: the event store's notification log, published to Kafka in order.

It follows the log (`urbana.adapters.postgres.log`: commit-ordered, read `> last
position` in batches) and sleeps on the LISTEN channel the eventsourcing library
NOTIFYs on each save (with a timed poll as a fallback). Each event becomes the public
envelope, keyed by its stream id so a conversation stays on one partition, with headers
for type, schema version, position, tenant and a W3C `traceparent`.

Delivery is at-least-once. The position is saved in PostgreSQL only after the broker
acknowledged the whole batch, so a crash in between republishes the batch; consumers
deduplicate by `position`. Broker errors are retried with backoff, never skipped.

A broker that loses acknowledged records (the dev broker keeps topics in memory and
forgets them on restart) shows up as partition offsets going backwards; the relay then
re-creates its topic if needed and republishes from the start of the store, so the
topic ends up holding every event again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from uuid import UUID

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownError, UnsupportedVersionError
from psycopg import AsyncConnection, sql

from urbana.adapters.kafka.topics import (
    EVENTS_TOPIC,
    TopicsError,
    create_topics,
    load_topics,
    partition_counts,
    spec_for,
)
from urbana.adapters.postgres.log import AsyncLogReader, Page, listen_channel
from urbana.adapters.postgres.store import conninfo
from urbana.application.envelope import Envelope

log = logging.getLogger(__name__)

POSITION_TABLE = "urbana_relay_position"
Idempotence = Literal["auto", "on", "off"]

_BACKOFF_START = 0.2
_BACKOFF_MAX = 5.0
_WAIT_SLICE = 0.25  # how often a sleeping relay looks at its stop event
# Knowledge documents travel inside their events (up to 2 MB of text): allow records
# well above Kafka's 1 MB default (topics.yaml raises the topic's max.message.bytes).
MAX_RECORD_BYTES = 8 * 1024 * 1024


class RelayError(RuntimeError):
    """The relay cannot run (e.g. another relay with the same name holds the position)."""


class _Stopped(Exception):
    """The stop event was set while the relay was waiting or retrying."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One envelope and the Kafka record it becomes."""

    envelope: Envelope
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def traceparent(event_id: str) -> str:
    """A W3C traceparent: the trace id is the event id, so a republished event keeps it."""
    span_id = os.urandom(8).hex()
    return f"00-{UUID(event_id).hex}-{span_id}-01"


def to_record(envelope: Envelope, trace: str | None = None) -> Outgoing:
    """The Kafka record of an envelope: key = stream id, JSON value, headers."""
    headers = [
        ("event_type", envelope.type.encode()),
        ("schema_version", str(envelope.schema_version).encode()),
        ("position", str(envelope.position).encode()),
        ("tenant_id", (envelope.tenant_id or "").encode()),
        ("traceparent", (trace or traceparent(envelope.event_id)).encode()),
        ("event_id", envelope.event_id.encode()),
        ("content-type", b"application/json"),
    ]
    return Outgoing(envelope, envelope.stream_id.encode(), envelope.to_json(), headers)


class Relay:
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
        self._idempotence: Idempotence = idempotence
        self._request_timeout_ms = request_timeout_ms
        self._log = AsyncLogReader(schema, tenant_cache_size=tenant_cache_size)
        self._acked_offsets: dict[int, int] = {}  # partition -> highest acknowledged offset
        self._conn: AsyncConnection[Any] | None = None
        self._listener: AsyncConnection[Any] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._topic_ready = False
        self._topic_lost = False
        self._republish_on_loss = republish_on_loss
        self._positions = _table(schema, POSITION_TABLE)

        # Metrics (read them, or `metrics()`).
        self.published = 0  # records acknowledged by the broker since start (with republished)
        self.last_position = 0  # every event up to here is acknowledged and saved
        self.head_position = 0  # newest position seen in the store
        self.lag_events = 0  # stored events not yet acknowledged (as of the last read)
        self.lag_seconds = 0.0  # age of the oldest unacknowledged event; 0 when caught up
        self.batches = 0
        self.errors = 0  # failed publish attempts (each one retried)
        self.broker_resets = 0  # times the broker was found to have lost acknowledged records
        self.idempotent: bool | None = None  # whether the producer runs idempotent

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect to PostgreSQL, claim the relay name, and load the saved position."""
        if self._conn is not None:
            return
        conn = await AsyncConnection.connect(
            conninfo(self.database_url, self.schema), autocommit=True
        )
        try:
            await self._create_position_table(conn)
            if not await self._try_lock(conn):
                raise RelayError(f"another relay named {self.name!r} is running on this store")
            self.last_position = await self._load_position(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        log.info("relay %s starts after position %d", self.name, self.last_position)

    async def close(self) -> None:
        """Stop the producer and close the database connections."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        for attr in ("_listener", "_conn"):
            conn: AsyncConnection[Any] | None = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None:
                await conn.close()

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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
        never = asyncio.Event()
        sent = 0
        while (page := await self._read()) is not None:
            await self._publish(page, never)
            sent += page.size
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the store until `stop` is set (catch-up reads, then LISTEN/NOTIFY)."""
        if not await self._claim(stop):
            return
        try:
            while not stop.is_set():
                try:
                    await self._follow(stop)
                except _Stopped:
                    break
                except psycopg.OperationalError as exc:
                    # PostgreSQL restarted or the network dropped: reconnect, keep going.
                    self.errors += 1
                    log.warning("relay %s lost PostgreSQL (%s); reconnecting", self.name, exc)
                    await self._reconnect(stop)
        finally:
            await self._close_listener()

    async def _claim(self, stop: asyncio.Event) -> bool:
        """`start()`, waiting while another relay of the same name holds the position."""
        waiting = False
        while True:
            try:
                await self.start()
                return True
            except RelayError:
                if not waiting:
                    log.info("relay %s waits: another instance holds the position", self.name)
                    waiting = True
            try:
                await _sleep(stop, self.poll_interval)
            except _Stopped:
                return False

    async def _follow(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        while not stop.is_set():
            page = await self._read()
            if page is not None:
                await self._publish(page, stop)
                continue
            await self._wait_for_notify(listener, stop)

    async def _reconnect(self, stop: asyncio.Event) -> None:
        await self._close_listener()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        attempt = 0
        while not stop.is_set():
            attempt += 1
            try:
                await _sleep(stop, _backoff(attempt))
                await self.start()
                return
            except _Stopped:
                return
            except psycopg.OperationalError as exc:
                log.warning("relay %s: PostgreSQL still unreachable (%s)", self.name, exc)

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

    async def _publish(self, page: Page, stop: asyncio.Event) -> None:
        """Publish one batch until the broker acknowledges all of it, then save the position."""
        envelopes = page.envelopes
        oldest = envelopes[0].occurred
        self.lag_seconds = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        records = [to_record(e) for e in envelopes]
        attempt = 0
        while True:
            try:
                offsets = await self._send_all(records)
                break
            except (KafkaError, TopicsError, OSError, TimeoutError) as exc:
                attempt += 1
                self.errors += 1
                log.warning(
                    "relay %s: publishing positions %d..%d failed (attempt %d): %r; retrying",
                    self.name,
                    envelopes[0].position,
                    page.last,
                    attempt,
                    exc,
                )
                self._topic_ready = False  # the broker may have lost it: make sure again
                await _sleep(stop, _backoff(attempt))
        self.published += len(records)
        self.batches += 1
        lost = self._broker_lost_records(offsets, known_lost=self._topic_lost)
        await self.save_position(page.last)
        self.last_position = page.last
        self.lag_events = max(0, self.head_position - self.last_position)
        if lost:
            await self._broker_lost()

    async def _send_all(self, records: Sequence[Outgoing]) -> list[tuple[int, int]]:
        """Send every record and wait for all acknowledgements; (partition, offset) each."""
        producer = await self._ready_producer()
        futures: list[asyncio.Future[Any]] = []
        try:
            for record in records:
                futures.append(
                    await producer.send(
                        self.topic, record.value, key=record.key, headers=record.headers
                    )
                )
        finally:
            # Even when a send() failed, wait for those already queued: none is left unawaited.
            results = await asyncio.gather(*futures, return_exceptions=True)
        acks: list[tuple[int, int]] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            acks.append((result.partition, result.offset))
        return acks

    async def _ready_producer(self) -> AIOKafkaProducer:
        if not self._topic_ready:
            await self._ensure_topic()
        if self._producer is None:
            self._producer = await self._start_producer()
        return self._producer

    async def _ensure_topic(self) -> None:
        """Create the topic if it is missing; notice when it lost what we published."""
        spec = spec_for(self.topic, load_topics(self._topics_file))
        created = await create_topics(self.bootstrap, [spec])
        counts = await partition_counts(self.bootstrap)
        partitions = counts.get(self.topic, spec.partitions)
        if partitions != spec.partitions:
            log.warning(
                "topic %s has %d partitions, topics.yaml says %d (auto-created by the broker?)",
                self.topic,
                partitions,
                spec.partitions,
            )
        if self._acked_offsets and (created or max(self._acked_offsets) >= partitions):
            # The topic we had published to is gone (or came back smaller).
            self._topic_lost = True
        self._topic_ready = True

    async def _start_producer(self) -> AIOKafkaProducer:
        modes = {"auto": (True, False), "on": (True,), "off": (False,)}[self._idempotence]
        if self.idempotent is False:
            modes = (False,)  # this broker refused once already
        for idempotent in modes:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=f"urbana-{self.name}",
                acks="all",
                enable_idempotence=idempotent,
                request_timeout_ms=self._request_timeout_ms,
                retry_backoff_ms=200,
                linger_ms=0,
                max_request_size=MAX_RECORD_BYTES,
            )
            try:
                await producer.start()
            except (UnknownError, UnsupportedVersionError) as exc:
                await producer.stop()
                if not idempotent or self._idempotence == "on":
                    raise
                # Tansu 0.6 answers InitProducerId v0 (the only version aiokafka speaks)
                # with an error. Without idempotence aiokafka still keeps one request in
                # flight per partition, so order holds; a retry may duplicate, which the
                # at-least-once contract allows.
                log.warning(
                    "broker %s refuses idempotent producers (%r); "
                    "publishing with acks=all without idempotence",
                    self.bootstrap,
                    exc,
                )
                continue
            except BaseException:
                await producer.stop()
                raise
            self.idempotent = idempotent
            return producer
        raise AssertionError("unreachable")

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
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        self._topic_ready = False
        await self.save_position(0)
        self.last_position = 0

    # ------------------------------------------------------------------ position

    async def save_position(self, position: int) -> None:
        """Record that every event up to `position` was acknowledged by the broker."""
        await self._require_conn().execute(
            sql.SQL(
                "INSERT INTO {} (name, position, updated_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (name) DO UPDATE "
                "SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at"
            ).format(self._positions),
            (self.name, position),
        )

    async def _load_position(self, conn: AsyncConnection[Any]) -> int:
        cur = await conn.execute(
            sql.SQL("SELECT position FROM {} WHERE name = %s").format(self._positions),
            (self.name,),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _create_position_table(self, conn: AsyncConnection[Any]) -> None:
        # UniqueViolation: another relay created it at the same moment.
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    "name text PRIMARY KEY, position bigint NOT NULL, "
                    "updated_at timestamptz NOT NULL DEFAULT now())"
                ).format(self._positions)
            )

    async def _try_lock(self, conn: AsyncConnection[Any]) -> bool:
        """One relay per name and store: a session advisory lock, released on disconnect."""
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
            (f"urbana-relay:{self.schema or 'public'}:{self.name}",),
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    def _require_conn(self) -> AsyncConnection[Any]:
        if self._conn is None:
            raise RelayError("the relay is not started")
        return self._conn


def _table(schema: str | None, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def _backoff(attempt: int) -> float:
    return float(min(_BACKOFF_MAX, _BACKOFF_START * 2 ** min(attempt - 1, 8)))


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, or raise `_Stopped` as soon as `stop` is set."""
    if stop.is_set():
        raise _Stopped
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
    raise _Stopped
