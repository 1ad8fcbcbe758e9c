"""The notification log: the event store's events in commit order, as public envelopes.

Every reader of the events table goes through here: the relay and the live feed
(`urbana.adapters.live`) follow the log on async connections (`AsyncLogReader`), the
replay reads it in pages decoded ahead in a thread (`LogReader` + `ReadAhead`), and
`replay --to-kafka` reads a position range in a worker thread (`LogReader`). A page is
the events after a position (up to another, if given), in notification id order, which
is commit order: every save holds the table lock (see docs/architecture.md, the event
store). Each record becomes its envelope through
`urbana.application.envelope.envelope_from_stored`, the only decoder.

Legacy tenants. Records written before every event carried `tenant_id` (class_version
1 of most Conversation, Lead and MessageRef events) name their tenant only in their
stream's first event. This module is the one place that still resolves them: the tenant
of a stream is learnt from its first event as the log goes by (a bounded cache), or
fetched from the store when that event came before the page; a Tenant's own stream
belongs to that tenant. Events that carry `tenant_id` never take this path.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import psycopg
from psycopg import AsyncConnection, sql

from urbana.adapters.postgres.schema import EVENTS_TABLE, qualified
from urbana.application.envelope import Envelope, envelope_from_stored, event_names

PAGE_SIZE = 20_000
TENANT_CACHE_SIZE = 100_000  # streams whose legacy tenant is remembered

_LAST = 2**63 - 1  # no upper bound: the largest bigint

Row = tuple[int, str, int, str, bytes]
"""One stored record: position, stream id (text), stream version, topic, state."""


class Page(NamedTuple):
    """One page of the log: its last position, how many records it held, their envelopes.

    `envelopes` leaves out the event types the reader was told to skip, so it may be
    shorter than `size`.
    """

    last: int
    size: int
    envelopes: list[Envelope]


def listen_channel() -> sql.Composed:
    """LISTEN to the channel the store NOTIFYs after each save (named without the schema).

    The eventsourcing library NOTIFYs on a channel named like the events table.
    """
    return sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_TABLE))


class _Decoder:
    """What both readers share: their statements, and rows to envelopes (no I/O here)."""

    def __init__(
        self,
        schema: str | None,
        *,
        handles: frozenset[str] | None = None,
        event_ids: bool = True,
        tenant_cache_size: int = TENANT_CACHE_SIZE,
    ) -> None:
        table = qualified(schema, EVENTS_TABLE)
        self._select = sql.SQL(
            "SELECT notification_id, originator_id::text, originator_version, topic, state "
            "FROM {} WHERE notification_id > %s AND notification_id <= %s "
            "ORDER BY notification_id LIMIT %s"
        ).format(table)
        self._first_events = sql.SQL(
            "SELECT notification_id, originator_id::text, originator_version, topic, state "
            "FROM {} WHERE originator_id = ANY(%s::uuid[]) AND originator_version = 1"
        ).format(table)
        self._head = sql.SQL("SELECT max(notification_id) FROM {}").format(table)
        self._count = sql.SQL("SELECT count(*) FROM {} WHERE notification_id > %s").format(table)
        self._handles = handles
        self._event_ids = event_ids
        self._cache_size = tenant_cache_size
        # stream -> tenant (None: its first event names none; not asked for again)
        self._tenants: OrderedDict[str, str | None] = OrderedDict()
        self._kinds: dict[str, tuple[bool, bool]] = {}  # topic -> (wanted, a Tenant's own)

    def _kind(self, topic: str) -> tuple[bool, bool]:
        aggregate, name = event_names(topic)
        handles = self._handles
        kind = (handles is None or f"{aggregate}.{name}" in handles, aggregate == "Tenant")
        self._kinds[topic] = kind
        return kind

    def _decode(self, rows: Sequence[Row]) -> tuple[list[Envelope], dict[str, list[int]]]:
        """The envelopes of the wanted rows, and (by stream) those still without tenant."""
        kinds, tenants, ids = self._kinds, self._tenants, self._event_ids
        out: list[Envelope] = []
        unknown: dict[str, list[int]] = {}
        for position, stream, version, topic, state in rows:
            kind = kinds.get(topic) or self._kind(topic)
            if not kind[0]:
                continue
            fallback = stream if kind[1] else tenants.get(stream)
            envelope = envelope_from_stored(
                position, stream, version, topic, state, fallback, event_id=ids
            )
            if envelope.tenant_id is None:
                if stream not in tenants:
                    unknown.setdefault(stream, []).append(len(out))
            elif version == 1 and not kind[1]:
                self._remember(stream, envelope.tenant_id)
            out.append(envelope)
        return out, unknown

    def _settle(
        self, out: list[Envelope], unknown: dict[str, list[int]], first: Sequence[Row]
    ) -> list[Envelope]:
        """Give the legacy envelopes of `unknown` the tenant of their stream's first event."""
        found = {
            stream: envelope_from_stored(position, stream, version, topic, state).tenant_id
            for position, stream, version, topic, state in first
        }
        for stream, indexes in unknown.items():
            tenant = found.get(stream)
            self._remember(stream, tenant)
            if tenant is not None:
                for index in indexes:
                    out[index] = replace(out[index], tenant_id=tenant)
        return out

    def _remember(self, stream: str, tenant: str | None) -> None:
        tenants = self._tenants
        tenants[stream] = tenant
        if len(tenants) > self._cache_size:
            tenants.popitem(last=False)


class LogReader(_Decoder):
    """The log read on a synchronous connection (replay, republish)."""

    def page(
        self, cur: psycopg.Cursor[Any], after: int, limit: int = PAGE_SIZE, upto: int | None = None
    ) -> Page | None:
        """The records after position `after` (up to `upto`), at most `limit`; None at the end."""
        cur.execute(self._select, (after, _LAST if upto is None else upto, limit), binary=True)
        rows: list[Row] = cur.fetchall()
        if not rows:
            return None
        out, unknown = self._decode(rows)
        if unknown:
            cur.execute(self._first_events, (list(unknown),), binary=True)
            out = self._settle(out, unknown, cur.fetchall())
        return Page(rows[-1][0], len(rows), out)

    def pages(
        self, cur: psycopg.Cursor[Any], after: int, limit: int = PAGE_SIZE, upto: int | None = None
    ) -> Iterator[Page]:
        """Every page after `after` (up to `upto`), until the end of the log."""
        while (page := self.page(cur, after, limit, upto)) is not None:
            yield page
            after = page.last

    def count_after(self, cur: psycopg.Cursor[Any], after: int) -> int:
        """How many events the log holds after position `after`."""
        cur.execute(self._count, (after,))
        row = cur.fetchone()
        return int(row[0]) if row else 0


class AsyncLogReader(_Decoder):
    """The log read on an async connection (the relay, the live feed)."""

    async def page(
        self,
        conn: AsyncConnection[Any],
        after: int,
        limit: int = PAGE_SIZE,
        upto: int | None = None,
    ) -> Page | None:
        """The records after position `after` (up to `upto`), at most `limit`; None at the end."""
        last = _LAST if upto is None else upto
        cur = await conn.execute(self._select, (after, last, limit), binary=True)
        rows: list[Row] = await cur.fetchall()
        if not rows:
            return None
        out, unknown = self._decode(rows)
        if unknown:
            cur = await conn.execute(self._first_events, (list(unknown),), binary=True)
            out = self._settle(out, unknown, await cur.fetchall())
        return Page(rows[-1][0], len(rows), out)

    async def head(self, conn: AsyncConnection[Any]) -> int:
        """The newest position in the log (0 when it is empty)."""
        cur = await conn.execute(self._head)
        row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0


_END = object()


class ReadAhead:
    """Reads and decodes the next pages in a thread, on its own connection.

    The decoding (Python) then overlaps with whatever the caller does with the previous
    page (the replay's writes wait on PostgreSQL, which runs on another core).

        with ReadAhead(dsn, reader, after) as pages:
            for page in pages: ...
    """

    def __init__(self, dsn: str, reader: LogReader, after: int, page_size: int = PAGE_SIZE) -> None:
        self._dsn = dsn
        self._reader = reader
        self._after = after
        self._page_size = page_size
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-read-ahead", daemon=True)

    def __enter__(self) -> Iterator[Page]:
        self._thread.start()
        return self._pages()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            with psycopg.connect(self._dsn, autocommit=True) as conn:
                for page in self._reader.pages(conn.cursor(), self._after, self._page_size):
                    if not self._put(page):
                        return
            self._put(_END)
        except BaseException as exc:  # handed to the consuming thread, which raises it
            self._put(exc)

    def _pages(self) -> Iterator[Page]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
