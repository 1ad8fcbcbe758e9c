"""SubjectStreams on PostgreSQL: a data subject's streams read whole from the event table.

One indexed query per call (the table's primary key is the stream id and version),
however many streams; the records come back sealed, in commit order (notification id).
The conversation view is asked only for the conversations that cannot be derived from
the lead's key (see `urbana.application.privacy`).
"""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from urbana.adapters.postgres.faults import store_call
from urbana.adapters.postgres.schema import EVENTS_TABLE, qualified
from urbana.application.privacy import StoredRecord
from urbana.config import DEFAULT_STORE_WAIT_S
from urbana.projections.queries.tables import CONVERSATIONS


class PostgresSubjectStreams:
    """SubjectStreams over the event store's table and the conversation view."""

    def __init__(
        self, pool: ConnectionPool, schema: str | None, wait_s: float = DEFAULT_STORE_WAIT_S
    ) -> None:
        self._pool = pool
        self._timeout_ms = int(wait_s * 1000)
        self._records = sql.SQL(
            "SELECT notification_id, originator_id::text, originator_version, topic, state "
            "FROM {} WHERE originator_id = ANY(%s::uuid[]) ORDER BY notification_id"
        ).format(qualified(schema, EVENTS_TABLE))
        self._conversations = sql.SQL(
            "SELECT id FROM {} WHERE tenant_id = %s AND lead_id = %s"
        ).format(sql.Identifier(CONVERSATIONS))

    def records(self, stream_ids: Collection[UUID]) -> list[StoredRecord]:
        """Every stored event of these streams, in global (commit) order."""
        if not stream_ids:
            return []
        with store_call("reading a subject's streams"), self._pool.connection() as conn:
            conn.execute(f"SET LOCAL statement_timeout = {self._timeout_ms}")
            cur = conn.execute(self._records, (list(stream_ids),), binary=True)
            return [StoredRecord(r[0], r[1], r[2], r[3], bytes(r[4])) for r in cur.fetchall()]

    def conversations_of(self, tenant_id: UUID, lead_id: UUID) -> list[UUID]:
        """The conversations the conversation view attributes to the lead (may lag)."""
        with store_call("finding a subject's conversations"), self._pool.connection() as conn:
            conn.execute(f"SET LOCAL statement_timeout = {self._timeout_ms}")
            rows = conn.execute(self._conversations, (tenant_id, lead_id)).fetchall()
        return [r[0] for r in rows]
