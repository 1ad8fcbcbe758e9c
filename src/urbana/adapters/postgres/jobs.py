"""The scheduler's ports on PostgreSQL: candidates, the runs ledger, and leadership.

- `PgJobSources` reads the jobs' candidates from the read models (conversations, leads),
  always `WHERE tenant_id`; the jobs check each one on its aggregate.
- `PgJobLedger` keeps one row of `urbana_job_runs` per job, tenant and period, so a
  period runs once however many ticks or schedulers see it.
- `PgLeadership` is a session-level advisory lock on a connection of its own: the lock
  ends with the session, so when the leading process dies (or loses its connection)
  the next `pg_try_advisory_lock` of a waiting scheduler succeeds.

See docs/architecture.md, Scheduled jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg_pool import ConnectionPool

from urbana.adapters.postgres.faults import STORE_FAULTS, store_call
from urbana.adapters.postgres.rows import as_uuid, select_ids
from urbana.adapters.postgres.schema import JOB_RUNS_TABLE, qualified
from urbana.application.ingest import StoreUnavailable
from urbana.projections.base import physical_name
from urbana.projections.conversation_view import ConversationView
from urbana.projections.lead_pipeline import LeadPipeline

log = logging.getLogger(__name__)

LEADERSHIP_LOCK = "urbana.scheduler"
_CONVERSATIONS = physical_name(ConversationView(), "conversations")
_LEADS = physical_name(LeadPipeline(), "leads")


class PgJobSources:
    """The jobs' candidates, from the read models."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def tenants(self) -> list[UUID]:
        with store_call("listing tenants for the jobs"), self._pool.connection() as conn:
            rows = conn.execute(f"SELECT DISTINCT tenant_id FROM {_CONVERSATIONS}").fetchall()  # noqa: S608
        return [as_uuid(r[0]) for r in rows if r[0] is not None]

    def silent_leads(self, tenant_id: UUID, before: datetime) -> list[tuple[UUID, list[UUID]]]:
        query = (
            f"SELECT c.lead_id, array_agg(c.id) FROM {_CONVERSATIONS} c "  # noqa: S608
            f"JOIN {_LEADS} l ON l.id = c.lead_id "
            "WHERE c.tenant_id = %s AND l.tenant_id = %s AND l.score > 0 "
            "AND c.last_inbound_at IS NOT NULL "
            "GROUP BY c.lead_id HAVING max(c.last_inbound_at) < %s ORDER BY c.lead_id"
        )
        with store_call("finding silent leads"), self._pool.connection() as conn:
            rows = conn.execute(query, (tenant_id, tenant_id, before)).fetchall()
        return [
            (as_uuid(lead), [as_uuid(c) for c in conversations]) for lead, conversations in rows
        ]

    def stale_conversations(self, tenant_id: UUID, before: datetime) -> list[UUID]:
        query = (
            f"SELECT id FROM {_CONVERSATIONS} "  # noqa: S608
            "WHERE tenant_id = %s AND status <> 'closed' AND activity_at < %s ORDER BY id"
        )
        return select_ids(self._pool, "finding stale conversations", query, (tenant_id, before))

    def cold_conversations(self, tenant_id: UUID, before: datetime) -> list[UUID]:
        query = (
            f"SELECT id FROM {_CONVERSATIONS} "  # noqa: S608
            "WHERE tenant_id = %s AND status = 'ai' AND last_message_direction = 'out' "
            "AND activity_at < %s ORDER BY id"
        )
        return select_ids(self._pool, "finding conversations gone cold", query, (tenant_id, before))


class PgJobLedger:
    """`urbana_job_runs`: a period of a job for a tenant is claimed once."""

    def __init__(self, pool: ConnectionPool, schema: str | None) -> None:
        self._pool = pool
        t = qualified(schema, JOB_RUNS_TABLE)
        self._claim = sql.SQL(
            "INSERT INTO {t} (job, tenant_id, period, state) VALUES (%s, %s, %s, 'running') "
            "ON CONFLICT DO NOTHING RETURNING job"
        ).format(t=t)
        self._finish = sql.SQL(
            "UPDATE {t} SET state = 'done', counts = %s, finished_at = now() "
            "WHERE job = %s AND tenant_id = %s AND period = %s"
        ).format(t=t)
        self._release = sql.SQL(
            "DELETE FROM {t} WHERE job = %s AND tenant_id = %s AND period = %s "
            "AND state = 'running'"
        ).format(t=t)
        self._abandon = sql.SQL("DELETE FROM {t} WHERE state = 'running'").format(t=t)
        self._last = sql.SQL(
            "SELECT DISTINCT ON (job, tenant_id) job, tenant_id, period, counts, finished_at "
            "FROM {t} WHERE state = 'done' ORDER BY job, tenant_id, period DESC"
        ).format(t=t)

    def claim(self, job: str, tenant_id: UUID, period: datetime) -> bool:
        with store_call(f"claiming job {job}"), self._pool.connection() as conn:
            return conn.execute(self._claim, (job, tenant_id, period)).fetchone() is not None

    def finish(
        self, job: str, tenant_id: UUID, period: datetime, counts: Mapping[str, int]
    ) -> None:
        with store_call(f"finishing job {job}"), self._pool.connection() as conn:
            counted = orjson.dumps(dict(counts)).decode()
            conn.execute(self._finish, (counted, job, tenant_id, period))

    def release(self, job: str, tenant_id: UUID, period: datetime) -> None:
        with store_call(f"releasing job {job}"), self._pool.connection() as conn:
            conn.execute(self._release, (job, tenant_id, period))

    def abandon_running(self) -> int:
        # Called only by the leader: whoever left a run taken is dead or no longer leads.
        with store_call("giving back abandoned job runs"), self._pool.connection() as conn:
            return conn.execute(self._abandon).rowcount

    def last_runs(self) -> list[dict[str, object]]:
        with store_call("reading job runs"), self._pool.connection() as conn:
            rows = conn.execute(self._last).fetchall()
        return [
            {
                "job": job,
                "tenant_id": str(tenant_id),
                "period": period.isoformat(),
                "counts": counts,
                "finished_at": finished.isoformat() if finished else None,
            }
            for job, tenant_id, period, counts, finished in rows
        ]


class PgLeadership:
    """Leadership as a session advisory lock, polled every `poll_s` while waiting."""

    def __init__(self, conninfo: str, schema: str | None, *, poll_s: float = 1.0) -> None:
        self._conninfo = conninfo
        # Advisory locks are per database: installations on schemas of one database
        # (the tests do that) each have their own scheduler.
        self.lock_name = f"{LEADERSHIP_LOCK}:{schema or 'public'}"
        self._poll_s = poll_s
        self._conn: AsyncConnection[Any] | None = None

    async def acquire(self, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await AsyncConnection.connect(self._conninfo, autocommit=True)
                cur = await self._conn.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s))", (self.lock_name,)
                )
                row = await cur.fetchone()
                if row is not None and row[0]:
                    return True
            except STORE_FAULTS as exc:
                log.warning("scheduler leadership: store unavailable (%s); retrying", exc)
                await self._drop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._poll_s)
        return False

    async def check(self) -> None:
        if self._conn is None:
            raise StoreUnavailable("scheduler leadership: no session")
        try:
            await self._conn.execute("SELECT 1")
        except STORE_FAULTS as exc:
            await self._drop()
            raise StoreUnavailable(f"scheduler leadership lost: {exc}") from exc

    async def release(self) -> None:
        # Closing the session releases its advisory locks.
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
