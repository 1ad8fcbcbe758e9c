"""Rebuild read models from the event store (not Kafka) and swap them in atomically.

    replay(url, schema)                       # every projection
    replay(url, schema, ["kpis"], progress=cb)

Reads the store's notification log in pages (`urbana.adapters.postgres.log`, decoded
ahead in a thread) and applies each page set-based to fresh tables
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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from urbana.adapters.postgres.log import PAGE_SIZE, LogReader, ReadAhead
from urbana.application.envelope import Envelope
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
        reader = LogReader(
            schema, handles=frozenset().union(*(p.handles for p in chosen)), event_ids=False
        )
        cur = conn.cursor()
        total = reader.count_after(cur, start)
        done = 0
        position = start
        # Pages are checkpointed with their rows: losing the last few to a crash before
        # the WAL flush only means replaying them again.
        conn.execute("SET synchronous_commit = off")
        with ReadAhead(conninfo(database_url, schema), reader, start, page_size) as pages:
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
    seconds = time.perf_counter() - started
    if progress is not None:  # the tail applied under the locks counts too
        progress(done, done, done / seconds if seconds > 0 else 0.0)
    return ReplayResult(
        projections=[p.name for p in chosen],
        events=done,
        position=position,
        seconds=seconds,
        resumed_from=resumed,
    )


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
    reader: LogReader,
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
