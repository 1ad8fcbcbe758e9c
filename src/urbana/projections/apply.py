"""Apply a batch of envelopes set-based, with tracking in the same transaction.

`apply_sync` / `apply_async` run one projection's loads and set-based writes for a
batch: per table, one COPY into a temporary staging table and one
`INSERT ... SELECT ... ON CONFLICT` merge, whatever the batch size. `apply_tracked` is the
Kafka runner's unit of work: in one transaction it locks the tracking rows of the
batch's partitions, drops every event at or below the tracked position (a
redelivery, or an event a replay already covered), applies the rest and moves the
tracking forward. Committing the Kafka offsets afterwards is the runner's business:
if it crashes in between, the redelivered events are skipped here.
"""

from __future__ import annotations

import weakref
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection, AsyncCursor, Cursor
from psycopg.pq import TransactionStatus

from urbana.application.envelope import Envelope
from urbana.projections.base import Projection, Row, Write, relevant, stage_ddl, table_names
from urbana.projections.schema import FLOOR, lock_key, render


@dataclass(frozen=True, slots=True)
class Applied:
    """What one tracked batch did."""

    applied: int  # events newer than the tracking (relevant to the projection or not)
    skipped: int  # at or below the tracked position: already applied
    positions: dict[int, int]  # partition -> tracked position after the batch


def _stage(write: Write) -> tuple[str, str, str]:
    """(staging table, its DDL, COPY statement) for a write's table and columns."""
    digest = zlib.crc32(repr((write.table, write.columns)).encode())
    stage = f"stage_{write.table}_{digest:08x}"
    cols = ", ".join(c for c, _ in write.columns)
    return stage, stage_ddl(stage, write.columns), f"COPY {stage} ({cols}) FROM STDIN"


def apply_sync(
    cur: Cursor[Row], projection: Projection, names: dict[str, str], envelopes: Sequence[Envelope]
) -> int:
    """Apply envelopes (in position order) to the tables `names`; returns how many mattered.

    Must run inside a transaction (the staging tables empty themselves at commit).
    """
    mine = relevant(projection, envelopes)
    if not mine:
        return 0
    loaded: dict[str, list[Row]] = {}
    for load in projection.loads(mine):
        cur.execute(render(load.sql, names), load.params)
        loaded[load.name] = cur.fetchall()
    for write in projection.fold(mine, loaded):
        stage, ddl, copy_sql = _stage(write)
        cur.execute(ddl)
        with cur.copy(copy_sql) as copy:
            for row in write.rows:
                copy.write_row(row)
        cur.execute(render(write.sql, {**names, "stage": stage}))
    return len(mine)


async def apply_async(
    cur: AsyncCursor[Row],
    projection: Projection,
    names: dict[str, str],
    envelopes: Sequence[Envelope],
    staged: set[str] | None = None,
) -> int:
    """`apply_sync` on an async cursor (the event loop never blocks on the database).

    `staged` names the staging tables this session already has: their DDL is not sent
    again; the ones created here are added to it (the caller keeps them once the
    transaction commits).
    """
    mine = relevant(projection, envelopes)
    if not mine:
        return 0
    loaded: dict[str, list[Row]] = {}
    for load in projection.loads(mine):
        await cur.execute(render(load.sql, names), load.params)
        loaded[load.name] = await cur.fetchall()
    for write in projection.fold(mine, loaded):
        stage, ddl, copy_sql = _stage(write)
        if staged is None or stage not in staged:
            await cur.execute(ddl)
            if staged is not None:
                staged.add(stage)
        async with cur.copy(copy_sql) as copy:
            for row in write.rows:
                await copy.write_row(row)
        await cur.execute(render(write.sql, {**names, "stage": stage}))
    return len(mine)


def fresh_events(
    batches: Mapping[int, Sequence[Envelope]], tracked: Mapping[int, int]
) -> tuple[list[Envelope], dict[int, int], int]:
    """Events newer than the tracking, in position order; new positions; how many skipped.

    Positions only grow within a partition, so anything at or below the last position
    seen (tracked, or earlier in this batch) is a redelivery.
    """
    floor = tracked.get(FLOOR, 0)
    fresh: list[Envelope] = []
    positions: dict[int, int] = {}
    skipped = 0
    for partition, envelopes in batches.items():
        last = max(floor, tracked.get(partition, 0))
        for e in envelopes:
            if e.position <= last:
                skipped += 1
                continue
            fresh.append(e)
            last = e.position
        positions[partition] = last
    fresh.sort(key=lambda e: e.position)
    return fresh, positions, skipped


# The staging tables each session has created (temporary tables outlive the
# transactions that made them, `ON COMMIT DELETE ROWS` empties them): a new connection
# starts with none.
_STAGED: weakref.WeakKeyDictionary[AsyncConnection[Row], set[str]] = weakref.WeakKeyDictionary()


async def apply_tracked(
    conn: AsyncConnection[Row],
    projection: Projection,
    batches: Mapping[int, Sequence[Envelope]],
) -> Applied:
    """Apply per-partition batches and move their tracking, in one transaction.

    Besides the projection's own statements, two round trips (pipeline mode): BEGIN,
    the lock and the tracking rows in one; the tracking's move and COMMIT in the other.
    Only these small statements are pipelined, never the loads or writes, whose size
    grows with the batch. A failure half-way rolls back (or, when even that fails,
    closes the connection, which the runner then opens again).
    """
    partitions = sorted(batches)
    staged = _STAGED.setdefault(conn, set())
    made = set(staged)
    cur = conn.cursor()
    try:
        async with conn.pipeline():
            await cur.execute("BEGIN", prepare=False)
            await cur.execute(
                "SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (lock_key(projection),)
            )
            await cur.execute(
                "INSERT INTO rm_tracking (projection, version, partition, position) "
                "SELECT %s, %s, p, 0 FROM unnest(%s::int[]) AS p ON CONFLICT DO NOTHING",
                (projection.name, projection.version, partitions),
            )
            # Locks the partitions' rows: a second consumer of the same partition (a
            # zombie after a rebalance) waits here, then sees the advanced position and
            # skips.
            await cur.execute(
                "SELECT partition, position FROM rm_tracking "
                "WHERE projection = %s AND version = %s "
                "AND partition = ANY(%s::int[]) ORDER BY partition FOR UPDATE",
                (projection.name, projection.version, [FLOOR, *partitions]),
            )
        tracked = {int(p): int(pos) for p, pos in await cur.fetchall()}
        fresh, positions, skipped = fresh_events(batches, tracked)
        if fresh:
            await apply_async(cur, projection, table_names(projection), fresh, made)
        async with conn.pipeline():
            await cur.execute(
                "UPDATE rm_tracking AS t SET position = v.position, updated_at = now() "
                "FROM unnest(%s::int[], %s::bigint[]) AS v(partition, position) "
                "WHERE t.projection = %s AND t.version = %s AND t.partition = v.partition "
                "AND v.position > t.position",
                (
                    list(positions),
                    list(positions.values()),
                    projection.name,
                    projection.version,
                ),
            )
            await cur.execute("COMMIT", prepare=False)
    except BaseException:
        await _roll_back(conn)
        raise
    staged |= made  # committed: the tables made in it stay
    return Applied(applied=len(fresh), skipped=skipped, positions=positions)


async def _roll_back(conn: AsyncConnection[Row]) -> None:
    """End a transaction that failed half-way (a poison event, a lost connection)."""
    if conn.closed or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        await conn.execute("ROLLBACK", prepare=False)
    except Exception:
        await conn.close()  # in no known state: the runner connects again


async def tracked_positions(conn: AsyncConnection[Row], projection: Projection) -> dict[int, int]:
    """partition -> tracked position (partition -1: the floor a replay left)."""
    cur = await conn.execute(
        "SELECT partition, position FROM rm_tracking WHERE projection = %s AND version = %s",
        (projection.name, projection.version),
    )
    return {int(p): int(pos) for p, pos in await cur.fetchall()}


async def mark_handled(
    conn: AsyncConnection[Row], projection: Projection, partition: int, position: int
) -> None:
    """Move a partition's tracking past an event without applying it (sent to the DLQ)."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (lock_key(projection),)
        )
        await conn.execute(
            "INSERT INTO rm_tracking AS t (projection, version, partition, position) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (projection, version, partition) "
            "DO UPDATE SET position = GREATEST(t.position, EXCLUDED.position), updated_at = now()",
            (projection.name, projection.version, partition, position),
        )
