"""The workspace: its team (users and the conversations each holds), queues and
canned responses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from urbana.application.ports import SubjectCipher
from urbana.projections.queries.paging import MAX_LIMIT, Conditions, Page, fetch_page, fetch_rows
from urbana.projections.queries.sealed import decrypt, field_text
from urbana.projections.queries.tables import CANNED, CONVERSATIONS, QUEUES, USERS


@dataclass(frozen=True, slots=True)
class TeamMember:
    id: UUID
    tenant_id: UUID
    email: str | None
    name: str | None
    role: str | None
    disabled: bool
    availability: str
    availability_since: datetime | None
    queues: list[str]
    open_conversations: int  # conversations in human mode it holds
    last_assigned_at: datetime | None
    invited_at: datetime
    position: int


async def team(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    *,
    availability: str | None = None,
    queue: str | None = None,
    include_disabled: bool = True,
    limit: int = MAX_LIMIT,
    cursor: str | None = None,
    cipher: SubjectCipher | None = None,
) -> Page[TeamMember]:
    """A tenant's users, oldest invitation first, with the conversations each holds.

    `availability="online", queue=Q, include_disabled=False` are the candidates of the
    auto-assignment policy for queue Q (fewest open conversations, then idle longest).
    """
    where = Conditions("u.tenant_id = %s", "u.invited_at IS NOT NULL", params=[str(tenant_id)])
    where.when(availability, "u.availability = %s")
    where.when(queue, "u.queues @> ARRAY[%s]::text[]")
    if not include_disabled:
        where.add("NOT u.disabled")
    where.after(cursor, "(u.invited_at, u.id) > (%s, %s::uuid)")
    rows, next_cursor = await fetch_page(
        conn,
        "SELECT u.*, COALESCE(o.open, 0) AS open_conversations "  # noqa: S608
        f"FROM {USERS} u LEFT JOIN (SELECT assignee, count(*) AS open "
        f"FROM {CONVERSATIONS} WHERE tenant_id = %s AND status = 'human' "
        f"GROUP BY assignee) o ON o.assignee = u.id::text {where.sql()} "
        "ORDER BY u.invited_at, u.id",
        [str(tenant_id), *where.params],  # the subquery's tenant first
        limit,
        ("invited_at", "id"),
    )
    profiles = await decrypt(cipher, [r["profile_sealed"] for r in rows])
    return Page(
        [
            TeamMember(
                id=r["id"],
                tenant_id=r["tenant_id"],
                email=r["email"] if r["email"] is not None else field_text(p, "email"),
                name=r["name"] if r["name"] is not None else field_text(p, "name"),
                role=r["role"],
                disabled=bool(r["disabled"]),
                availability=r["availability"] or "offline",
                availability_since=r["availability_since"],
                queues=list(r["queues"] or ()),
                open_conversations=int(r["open_conversations"]),
                last_assigned_at=r["last_assigned_at"],
                invited_at=r["invited_at"],
                position=r["last_position"],
            )
            for r, p in zip(rows, profiles, strict=True)
        ],
        next_cursor,
    )


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: str
    name: str | None
    intents: list[str]
    waiting: int  # conversations waiting in it for a human
    online: int  # enabled attendants in it who are online
    created_at: datetime | None
    position: int


@dataclass(frozen=True, slots=True)
class CannedResponse:
    shortcut: str
    text: str | None
    updated_at: datetime
    position: int


async def list_queues(conn: AsyncConnection[Any], tenant_id: UUID | str) -> list[QueueItem]:
    """A tenant's queues by name, with how many wait in each and who is online for it."""
    tenant = str(tenant_id)
    rows = await fetch_rows(
        conn,
        "SELECT q.*, "  # noqa: S608
        f"(SELECT count(*) FROM {CONVERSATIONS} c WHERE c.tenant_id = %s "
        "AND c.status = 'waiting_human' AND c.queue = q.queue_id) AS waiting, "
        f"(SELECT count(*) FROM {USERS} u WHERE u.tenant_id = %s "
        "AND u.availability = 'online' AND NOT u.disabled "
        "AND u.queues @> ARRAY[q.queue_id]) AS online "
        f"FROM {QUEUES} q WHERE q.tenant_id = %s ORDER BY q.name, q.queue_id",
        (tenant, tenant, tenant),
    )
    return [
        QueueItem(
            id=r["queue_id"],
            name=r["name"],
            intents=list(r["intents"] or ()),
            waiting=int(r["waiting"]),
            online=int(r["online"]),
            created_at=r["created_at"],
            position=r["last_position"],
        )
        for r in rows
    ]


async def list_canned_responses(
    conn: AsyncConnection[Any], tenant_id: UUID | str, *, prefix: str | None = None
) -> list[CannedResponse]:
    """A tenant's canned responses by shortcut (those starting with `prefix`, if given)."""
    rows = await fetch_rows(
        conn,
        f"SELECT * FROM {CANNED} WHERE tenant_id = %s "  # noqa: S608
        "AND (%s::text IS NULL OR starts_with(shortcut, %s)) ORDER BY shortcut",
        (str(tenant_id), prefix, prefix),
    )
    return [
        CannedResponse(
            shortcut=r["shortcut"],
            text=r["text"],
            updated_at=r["updated_at"],
            position=r["last_position"],
        )
        for r in rows
    ]
