"""`urbana replay --to-kafka`: republish a range of the event store for analysts.

Reads the store's notification log (not Kafka), filters by position range, time range
(the event's occurred-at) and/or conversation, and publishes the same records the relay
publishes (key = stream id, envelope JSON, headers) to a topic. Each page is published
and acknowledged before its position is saved in `rm_republish` under the job's name,
so an interrupted job resumes where it stopped; at-least-once, like the relay, and
consumers deduplicate by `position`. The job name defaults to a digest of the filters,
so running the same command again resumes it (`restart=True` starts over).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import psycopg

from urbana.adapters.kafka.producer import Producer, to_record
from urbana.adapters.kafka.topics import EVENTS_TOPIC
from urbana.adapters.postgres.log import PAGE_SIZE, LogReader, Page
from urbana.application.envelope import Envelope
from urbana.config import conninfo
from urbana.projections.base import parse_time

RepublishProgress = Callable[[int, int], None]
"""Called after each acknowledged page with (records published, last position read)."""


@dataclass(frozen=True, slots=True)
class RepublishResult:
    job: str
    published: int  # by this call
    position: int  # last position examined (the job's checkpoint)


def job_name(
    topic: str,
    from_pos: int | None,
    to_pos: int | None,
    since: datetime | None,
    until: datetime | None,
    conversation_id: UUID | str | None,
) -> str:
    """A stable name for a set of filters (the key of the job's checkpoint)."""
    spec = f"{topic}|{from_pos}|{to_pos}|{since}|{until}|{conversation_id}"
    return "republish-" + hashlib.sha256(spec.encode()).hexdigest()[:16]


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class _Store:
    """The synchronous side: checkpoint and pages (run in a worker thread)."""

    def __init__(self, dsn: str, schema: str | None) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.reader = LogReader(schema)

    def checkpoint(self, job: str, restart: bool) -> int | None:
        if restart:
            self.conn.execute("DELETE FROM rm_republish WHERE job = %s", (job,))
            return None
        row = self.conn.execute(
            "SELECT position FROM rm_republish WHERE job = %s", (job,)
        ).fetchone()
        return int(row[0]) if row else None

    def page(self, after: int, limit: int, upto: int | None) -> Page | None:
        return self.reader.page(self.conn.cursor(), after, limit, upto)

    def save(self, job: str, position: int, published: int) -> None:
        self.conn.execute(
            "INSERT INTO rm_republish (job, position, published) VALUES (%s, %s, %s) "
            "ON CONFLICT (job) DO UPDATE SET position = EXCLUDED.position, "
            "published = rm_republish.published + EXCLUDED.published, updated_at = now()",
            (job, position, published),
        )

    def close(self) -> None:
        self.conn.close()


async def republish(
    database_url: str,
    schema: str | None,
    bootstrap: str,
    topic: str = EVENTS_TOPIC,
    from_pos: int | None = None,
    to_pos: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    conversation_id: UUID | str | None = None,
    *,
    job: str | None = None,
    restart: bool = False,
    page_size: int = PAGE_SIZE,
    progress: RepublishProgress | None = None,
) -> RepublishResult:
    """Publish the stored events after `from_pos` up to `to_pos` (inclusive) that match.

    `since`/`until` bound the event's occurred-at (inclusive, exclusive); naive datetimes
    are taken as UTC. `conversation_id` keeps only that conversation's stream.
    """
    name = job or job_name(topic, from_pos, to_pos, since, until, conversation_id)
    since, until = _aware(since), _aware(until)
    stream = str(UUID(str(conversation_id))) if conversation_id is not None else None
    store = await asyncio.to_thread(_Store, conninfo(database_url, schema), schema)
    producer = Producer(bootstrap, client_id="urbana-republish", linger_ms=5)
    published = 0
    try:
        saved = await asyncio.to_thread(store.checkpoint, name, restart)
        position = saved if saved is not None else (from_pos or 0)
        await producer.start()  # an unreachable broker fails the job before it reads
        while to_pos is None or position < to_pos:
            page = await asyncio.to_thread(store.page, position, page_size, to_pos)
            if page is None:
                break
            records = [
                to_record(e, e.traceparent)  # a republished event stays in its trace
                for e in page.envelopes
                if _matches(e, stream, since, until)
            ]
            await producer.send_all(topic, records)
            await asyncio.to_thread(store.save, name, page.last, len(records))
            published += len(records)
            position = page.last
            if progress is not None:
                progress(published, position)
    finally:
        await producer.close()
        await asyncio.to_thread(store.close)
    return RepublishResult(job=name, published=published, position=position)


def _matches(
    envelope: Envelope, stream: str | None, since: datetime | None, until: datetime | None
) -> bool:
    if stream is not None and envelope.stream_id != stream:
        return False
    if since is None and until is None:
        return True
    at = parse_time(envelope.occurred_at)
    return (since is None or at >= since) and (until is None or at < until)
