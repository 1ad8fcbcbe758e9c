"""Rebuild read models from the event store (not Kafka) and swap them in atomically.

    replay(url, schema)                       # every projection
    replay(url, schema, ["kpis"], progress=cb)

Reads the store's notification log in pages ordered by notification id, builds the
public envelopes (as `envelope_from_stored` does, tenant per stream from the event or the
stream's first event) and applies each page set-based to fresh tables
(`rm_<table>_v<version>_rebuild`), one transaction per page that also saves the
replay's checkpoint (`rm_replay`). Interrupted, a second call resumes after the last
committed page. At the end, one transaction takes the projections' advisory locks
exclusively (waiting for the Kafka runners' in-flight batches and holding back new
ones), applies whatever was appended meanwhile, swaps the tables, and replaces the
per-partition tracking by a floor.

Why a floor, not per-partition positions: a replay knows global positions, not Kafka
partitions. Notification ids are assigned in commit order (the store locks the table
on insert), so after reading the log to its end under the lock, *every* event at or
below that last position is in the new tables, on whichever partition it travels.
The runner skips an event when its position is at or below max(floor, its partition's
tracking), so it resumes from its committed Kafka offsets without applying anything
twice and without losing anything appended after the replay. (Adding partitions to
the topic moves keys between partitions; run a replay after doing so.)

`from_position`: events at or below it are not read (to leave out an archived or
known-bad prefix). Normally None: start at the beginning, or resume a checkpoint.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha1
from typing import Any
from uuid import UUID

import orjson
import psycopg

from urbana.application.envelope import _EVENT_ID_NS as _ENVELOPE_NS
from urbana.application.envelope import Envelope, event_names
from urbana.config import conninfo
from urbana.projections.apply import apply_sync
from urbana.projections.base import Projection, Row, table_names
from urbana.projections.schema import (
    FLOOR,
    REBUILD,
    create_indexes,
    create_tables,
    drop_rebuild,
    lock_key,
    select,
    swap_statements,
)

Progress = Callable[[int, int, float], None]
"""Called after each committed page with (events done, events total, events/s)."""

EVENTS_TABLE = "urbana_events"
PAGE_SIZE = 20_000

_SELECT_PAGE = (
    "SELECT notification_id, originator_id::text, originator_version, topic, state "  # noqa: S608
    f"FROM {EVENTS_TABLE} WHERE notification_id > %s "
    "ORDER BY notification_id LIMIT %s"
)
_META = frozenset({"timestamp", "originator_topic", "class_version"})
# The namespace of envelope event ids (`urbana.application.envelope`); a unit test checks
# that `decode` builds exactly the envelopes `envelope_from_stored` builds.
_EVENT_ID_NS = _ENVELOPE_NS.bytes


def _uuid_text(hex32: str) -> str:
    if len(hex32) != 32:
        return str(UUID(hex32))
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            data = value["_data_"]
            return _uuid_text(data.lower()) if value["_type_"] == "uuid" else data
        return {k: _plain(v) for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    return value


def _event_id(stream_id: str, version: int) -> str:
    """uuid5(namespace, "<stream>:<version>") as text, without building UUID objects."""
    digest = bytearray(sha1(_EVENT_ID_NS + f"{stream_id}:{version}".encode()).digest()[:16])  # noqa: S324
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return _uuid_text(digest.hex())


def decode(
    position: int,
    stream_id: str,
    version: int,
    aggregate: str,
    name: str,
    state: bytes,
    tenant_id: str | None,
    event_id: bool = True,
) -> Envelope:
    """`envelope_from_stored`, made cheap for replay's hot loop (same result).

    `event_id=False` leaves the event id empty: projections never read it, and hashing
    it is a fifth of the decoding cost.
    """
    raw = orjson.loads(state)
    sealed = raw.pop("_pii_", None)
    data = {
        k: (_plain(v) if type(v) in (dict, list) else v) for k, v in raw.items() if k not in _META
    }
    if tenant_id is None and "tenant_id" in data:
        tenant_id = data["tenant_id"]
    return Envelope(
        event_id=_event_id(stream_id, version) if event_id else "",
        type=name,
        aggregate=aggregate,
        schema_version=int(raw.get("class_version", 1)),
        stream_id=stream_id,
        stream_version=version,
        position=position,
        tenant_id=str(tenant_id) if tenant_id is not None else None,
        occurred_at=str(_plain(raw.get("timestamp"))),
        data=data,
        encrypted=(
            {"key_id": sealed["k"], "fields": sealed["f"], "ciphertext": sealed["c"]}
            if sealed
            else None
        ),
    )


def _tenant_value(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("_type_") == "uuid":
        return _uuid_text(str(value["_data_"]).lower())
    return str(value) if value is not None else None


@dataclass
class NotificationReader:
    """Pages of the notification log as envelopes, with the tenant of each stream."""

    handles: frozenset[str] | None = None  # "Aggregate.Type" to decode; None: all
    event_ids: bool = True  # False: envelopes without event id (only read by projections)
    tenants: dict[str, str | None] = field(default_factory=dict)
    _topics: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def rows(self, cur: psycopg.Cursor[Row], after: int, limit: int = PAGE_SIZE) -> list[Row]:
        cur.execute(_SELECT_PAGE, (after, limit), binary=True)
        return cur.fetchall()

    def pages(
        self, cur: psycopg.Cursor[Row], after: int, limit: int = PAGE_SIZE
    ) -> Iterator[tuple[int, int, list[Envelope]]]:
        """(last position, rows read, envelopes) per page, until the end of the log."""
        while True:
            rows = self.rows(cur, after, limit)
            if not rows:
                return
            after = rows[-1][0]
            yield after, len(rows), self.envelopes(cur, rows)

    def _names(self, topic: str) -> tuple[str, str, str]:
        names = self._topics.get(topic)
        if names is None:
            aggregate, name = event_names(topic)
            names = self._topics[topic] = (aggregate, name, f"{aggregate}.{name}")
        return names

    def envelopes(self, cur: psycopg.Cursor[Row], rows: Sequence[Row]) -> list[Envelope]:
        handles, tenants, names_of = self.handles, self.tenants, self._names
        ids = self.event_ids
        wanted = []
        unknown: set[str] = set()
        for row in rows:
            names = names_of(row[3])
            if handles is not None and names[2] not in handles:
                continue
            wanted.append((row, names))
            stream = row[1]
            if row[2] > 1 and stream not in tenants and names[0] != "Tenant":
                unknown.add(stream)
        if unknown:
            self._resolve(cur, unknown)
        out = []
        for (position, stream, version, _, state), (aggregate, name, _) in wanted:
            tenant = stream if aggregate == "Tenant" else tenants.get(stream)
            envelope = decode(position, stream, version, aggregate, name, state, tenant, ids)
            if tenant is None and envelope.tenant_id is not None:
                tenants[stream] = envelope.tenant_id
            out.append(envelope)
        return out

    def _resolve(self, cur: psycopg.Cursor[Row], streams: set[str]) -> None:
        """Tenants of streams whose first event this reader has not seen (one query)."""
        cur.execute(
            f"SELECT originator_id::text, state FROM {EVENTS_TABLE} "  # noqa: S608
            "WHERE originator_id = ANY(%s::uuid[]) AND originator_version = 1",
            (list(streams),),
            binary=True,
        )
        for stream, state in cur.fetchall():
            self.tenants[stream] = _tenant_value(orjson.loads(state).get("tenant_id"))
        for stream in streams:
            self.tenants.setdefault(stream, None)


_END = object()


class _Prefetch:
    """Reads and decodes the next pages in a thread, on its own connection.

    The decoding (Python) then overlaps with the writes of the previous page (waiting on
    PostgreSQL, which runs on another core).
    """

    def __init__(self, dsn: str, reader: NotificationReader, after: int, page_size: int) -> None:
        self._dsn = dsn
        self._reader = reader
        self._after = after
        self._page_size = page_size
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay-reader", daemon=True)

    def __enter__(self) -> Iterator[tuple[int, int, list[Envelope]]]:
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

    def _pages(self) -> Iterator[tuple[int, int, list[Envelope]]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


@dataclass(frozen=True, slots=True)
class ReplayResult:
    projections: list[str]
    events: int  # events read by this call
    position: int  # the floor the live tables now stand at
    seconds: float
    resumed_from: int | None  # the checkpoint this call resumed from, if any

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def replay(
    database_url: str,
    schema: str | None,
    projections: Sequence[str] | None = None,
    from_position: int | None = None,
    progress: Progress | None = None,
    *,
    page_size: int = PAGE_SIZE,
) -> ReplayResult:
    """Rebuild the named projections (all when None) from the store, then swap them in."""
    chosen = select(list(projections or []))
    started = time.perf_counter()
    with psycopg.connect(conninfo(database_url, schema), autocommit=True) as conn:
        checkpoints, resumed = _prepare(conn, chosen, from_position or 0)
        start = min(checkpoints.values())
        reader = NotificationReader(
            handles=frozenset().union(*(p.handles for p in chosen)), event_ids=False
        )
        cur = conn.cursor()
        total = _count_after(cur, start)
        done = 0
        position = start
        # Pages are checkpointed with their rows: losing the last few to a crash before
        # the WAL flush only means replaying them again.
        conn.execute("SET synchronous_commit = off")
        with _Prefetch(conninfo(database_url, schema), reader, start, page_size) as pages:
            for position, count, envelopes in pages:
                with conn.transaction():
                    _apply_page(cur, chosen, checkpoints, envelopes, REBUILD)
                    _checkpoint(cur, chosen, position, count)
                for p in chosen:
                    checkpoints[p.name] = max(checkpoints[p.name], position)
                done += count
                if progress is not None:
                    elapsed = time.perf_counter() - started
                    progress(done, max(total, done), done / elapsed if elapsed > 0 else 0.0)
        conn.execute("SET synchronous_commit = on")
        with conn.transaction():
            done, position = _swap(cur, reader, chosen, checkpoints, position, done, page_size)
    return ReplayResult(
        projections=[p.name for p in chosen],
        events=done,
        position=position,
        seconds=time.perf_counter() - started,
        resumed_from=resumed,
    )


def _count_after(cur: psycopg.Cursor[Row], start: int) -> int:
    cur.execute(f"SELECT count(*) FROM {EVENTS_TABLE} WHERE notification_id > %s", (start,))  # noqa: S608
    row = cur.fetchone()
    return int(row[0]) if row else 0


def _prepare(
    conn: psycopg.Connection[Row], chosen: list[Projection], from_position: int
) -> tuple[dict[str, int], int | None]:
    """Resume each projection's rebuild from its checkpoint, or start it afresh."""
    checkpoints: dict[str, int] = {}
    resumed: int | None = None
    with conn.transaction():
        for p in chosen:
            row = conn.execute(
                "SELECT position FROM rm_replay WHERE projection = %s AND version = %s",
                (p.name, p.version),
            ).fetchone()
            first_table = next(iter(table_names(p, REBUILD).values()))
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (first_table,)).fetchone()
            if row is not None and exists and exists[0]:
                checkpoints[p.name] = max(int(row[0]), from_position)
                resumed = int(row[0]) if resumed is None else min(resumed, int(row[0]))
                continue
            for statement in [*drop_rebuild(p), *create_tables(p, REBUILD, indexes=False)]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO rm_replay (projection, version, position) VALUES (%s, %s, %s) "
                "ON CONFLICT (projection, version) DO UPDATE SET position = EXCLUDED.position, "
                "events = 0, started_at = now(), updated_at = now()",
                (p.name, p.version, from_position),
            )
            checkpoints[p.name] = from_position
    return checkpoints, resumed


def _apply_page(
    cur: psycopg.Cursor[Row],
    chosen: list[Projection],
    checkpoints: dict[str, int],
    envelopes: list[Envelope],
    suffix: str,
) -> None:
    for p in chosen:
        floor = checkpoints[p.name]
        batch = (
            envelopes
            if not envelopes or envelopes[0].position > floor
            else [e for e in envelopes if e.position > floor]
        )
        if batch:
            apply_sync(cur, p, table_names(p, suffix), batch)


def _checkpoint(
    cur: psycopg.Cursor[Row], chosen: list[Projection], position: int, count: int
) -> None:
    cur.execute(
        "UPDATE rm_replay SET position = GREATEST(position, %s), events = events + %s, "
        "updated_at = now() WHERE (projection, version) IN "
        "(SELECT * FROM unnest(%s::text[], %s::int[]))",
        (position, count, [p.name for p in chosen], [p.version for p in chosen]),
    )


def _swap(
    cur: psycopg.Cursor[Row],
    reader: NotificationReader,
    chosen: list[Projection],
    checkpoints: dict[str, int],
    position: int,
    done: int,
    page_size: int,
) -> tuple[int, int]:
    """Under the exclusive locks: apply the tail, swap tables, set the floor."""
    for key in sorted(lock_key(p) for p in chosen):
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
    last = max(position, *checkpoints.values())
    for tail, count, envelopes in reader.pages(cur, last, page_size):
        _apply_page(cur, chosen, checkpoints, envelopes, REBUILD)
        done += count
        last = tail
    for p in chosen:
        for statement in create_indexes(p, REBUILD):
            cur.execute(statement)
        rebuilt = list(table_names(p, REBUILD).values())
        cur.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = ANY(%s)",
            (rebuilt,),
        )
        indexes = [r[0] for r in cur.fetchall()]
        for statement in swap_statements(p, indexes):
            cur.execute(statement)
        cur.execute(
            "DELETE FROM rm_tracking WHERE projection = %s AND version = %s",
            (p.name, p.version),
        )
        cur.execute(
            "INSERT INTO rm_tracking (projection, version, partition, position) "
            "VALUES (%s, %s, %s, %s)",
            (p.name, p.version, FLOOR, last),
        )
        cur.execute(
            "DELETE FROM rm_replay WHERE projection = %s AND version = %s", (p.name, p.version)
        )
    return done, last
