"""One projection of the runner's feed: its connection, its transactions, its poison.

The runner (`urbana.adapters.kafka.projector`) fetches and decodes each batch once and
hands it to every projection's worker. A worker applies it in one transaction with
its tracking; when that fails for the event's sake (not the database's), it retries
event by event and sends what still fails to the dead-letter topic, with the error in
the record's headers, and marks its position handled so the partition moves on.
Database connection failures are retried after a reconnect, with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from aiokafka import ConsumerRecord
from psycopg import AsyncConnection

from urbana.adapters import tracing
from urbana.adapters.kafka.producer import Record
from urbana.adapters.retry import retrying
from urbana.application.envelope import Envelope
from urbana.config import conninfo
from urbana.projections.apply import Applied, apply_tracked, mark_handled
from urbana.projections.base import Projection

if TYPE_CHECKING:
    from urbana.adapters.kafka.projector import ProjectionRunner

log = logging.getLogger(__name__)


@dataclass
class ProjectionMetrics:
    applied: int = 0  # events newer than the tracking, applied
    skipped: int = 0  # redelivered or already covered by a replay
    dead_lettered: int = 0
    batches: int = 0
    db_retries: int = 0
    lag_records: int = 0  # as of the last fetch (or caught-up check)
    positions: dict[int, int] = field(default_factory=dict)  # partition -> tracked position


class ProjectionWorker:
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
