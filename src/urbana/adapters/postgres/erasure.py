"""The read models' side of erasure and retention, on the database owner's connection.

The owner is not bound by row-level security (see docs/architecture.md, Read models and
replay), so every statement names its tenant. The rows deleted (and the tombstones
written) here are the ones the projections also delete (and write) when they consume
`SubjectErased`; doing it at once lets the receipt say what was removed, and the
projections' turn then finds nothing left to do.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from psycopg_pool import ConnectionPool

from urbana.adapters.postgres.faults import store_call
from urbana.adapters.postgres.rows import select_ids
from urbana.application.erasure import Footprint
from urbana.projections.base import physical_name
from urbana.projections.conversation_view import ConversationView
from urbana.projections.lead_pipeline import LeadPipeline


class PostgresSubjectRows:
    """`SubjectRows` on the live read-model tables."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        view = ConversationView()
        self._conversations = physical_name(view, "conversations")
        self._messages = physical_name(view, "messages")
        self._notes = physical_name(view, "notes")
        self._leads = physical_name(LeadPipeline(), "leads")
        self._erased_conversations = physical_name(view, "erased_conversations")
        self._erased_leads = physical_name(LeadPipeline(), "erased_leads")

    def footprint(self, tenant_id: UUID, lead_id: UUID) -> Footprint:
        """The subject's conversations, inbound message ids and rows per table, from the
        read models."""
        with store_call("finding a subject's rows"), self._pool.connection() as conn:
            conversations = conn.execute(
                f"SELECT id FROM {self._conversations} "  # noqa: S608
                "WHERE tenant_id = %s AND lead_id = %s ORDER BY id",
                (tenant_id, lead_id),
            ).fetchall()
            ids = [row[0] for row in conversations]
            counted = conn.execute(
                f"SELECT (SELECT count(*) FROM {self._messages} "  # noqa: S608
                "WHERE tenant_id = %s AND conversation_id = ANY(%s)), "
                f"(SELECT count(*) FROM {self._notes} "
                "WHERE tenant_id = %s AND conversation_id = ANY(%s)), "
                f"(SELECT count(*) FROM {self._leads} WHERE tenant_id = %s AND id = %s)",
                (tenant_id, ids, tenant_id, ids, tenant_id, lead_id),
            ).fetchone()
            provider = conn.execute(
                f"SELECT c.channel, m.provider_message_id FROM {self._messages} m "  # noqa: S608
                f"JOIN {self._conversations} c ON c.id = m.conversation_id "
                "WHERE c.id = ANY(%s) AND m.provider_message_id IS NOT NULL",
                (ids,),
            ).fetchall()
        messages, notes, leads = counted if counted is not None else (0, 0, 0)
        rows = {"conversations": len(ids), "messages": messages, "notes": notes, "leads": leads}
        return Footprint(ids, [(str(ch), str(pid)) for ch, pid in provider], rows)

    def drop(self, tenant_id: UUID, lead_id: UUID, conversation_ids: list[UUID]) -> dict[str, int]:
        """Delete the subject's conversations, messages, notes and lead row in one transaction."""
        counts: dict[str, int] = {}
        with store_call("removing a subject's rows"), self._pool.connection() as conn:
            for name, table, column in (
                ("messages", self._messages, "conversation_id"),
                ("notes", self._notes, "conversation_id"),
                ("conversations", self._conversations, "id"),
            ):
                counts[name] = conn.execute(
                    f"DELETE FROM {table} WHERE tenant_id = %s AND {column} = ANY(%s)",  # noqa: S608
                    (tenant_id, conversation_ids),
                ).rowcount
            counts["leads"] = conn.execute(
                f"DELETE FROM {self._leads} WHERE tenant_id = %s AND id = %s",  # noqa: S608
                (tenant_id, lead_id),
            ).rowcount
            # The tombstones the projections write when they consume `SubjectErased`,
            # so a lagging event of the subject finds them from now on.
            conn.execute(
                f"INSERT INTO {self._erased_conversations} (id, tenant_id) "
                "SELECT unnest(%s::uuid[]), %s ON CONFLICT (id) DO NOTHING",
                (conversation_ids, tenant_id),
            )
            conn.execute(
                f"INSERT INTO {self._erased_leads} (id, tenant_id) "  # noqa: S608
                "VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                (lead_id, tenant_id),
            )
        return counts

    def inactive_leads(self, tenant_id: UUID, before: datetime) -> list[UUID]:
        """The tenant's leads whose last activity (or creation) is before `before`."""
        return select_ids(
            self._pool,
            "finding inactive subjects",
            f"SELECT id FROM {self._leads} WHERE tenant_id = %s "  # noqa: S608
            "AND COALESCE(last_activity_at, created_at) < %s ORDER BY id",
            (tenant_id, before),
        )
