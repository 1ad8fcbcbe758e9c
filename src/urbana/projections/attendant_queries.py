"""The `ConversationFinder` port over the conversation view.

The assignment and inactivity processes (urbana.application.assignment) ask which
conversations to look at; the conversation's aggregate decides what happens to each,
so these queries only have to include every conversation that matters.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from urbana.projections.base import physical_name
from urbana.projections.conversation_view import ConversationView

_CONVERSATIONS = physical_name(ConversationView(), "conversations")

Connect = Callable[[UUID], AbstractAsyncContextManager[AsyncConnection[Any]]]
"""A connection for reading one tenant's rows (the API's tenant-scoped reader)."""


class ReadModelFinder:
    """ConversationFinder on the conversation view."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    async def waiting(self, tenant_id: UUID) -> list[UUID]:
        """Conversations waiting for a person, longest wait first.

        The view has no waiting-since column yet: its last change approximates it.
        """
        return await self._ids(
            tenant_id,
            f"SELECT id FROM {_CONVERSATIONS} "  # noqa: S608
            "WHERE tenant_id = %s AND status = 'waiting_human' ORDER BY updated_at, id",
        )

    async def maybe_unanswered(self, tenant_id: UUID) -> list[UUID]:
        """Held conversations whose last message is not an attendant's."""
        return await self._ids(
            tenant_id,
            f"SELECT id FROM {_CONVERSATIONS} "  # noqa: S608
            "WHERE tenant_id = %s AND status = 'human' "
            "AND last_message_author IS DISTINCT FROM 'human' ORDER BY id",
        )

    async def _ids(self, tenant_id: UUID, sql: str) -> list[UUID]:
        async with self._connect(tenant_id) as conn:
            rows = await (await conn.execute(sql, (str(tenant_id),))).fetchall()
        return [row[0] if isinstance(row[0], UUID) else UUID(str(row[0])) for row in rows]
