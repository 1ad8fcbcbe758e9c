"""Leads: the pipeline, hottest first; one lead with its conversations; counts per stage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from urbana.application.ports import SubjectCipher
from urbana.projections.queries.conversations import (
    CONVERSATION_SELECT,
    ConversationItem,
    conversation_items,
)
from urbana.projections.queries.paging import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Conditions,
    InvalidCursor,
    Page,
    cursor_time,
    cursor_uuid,
    decode_cursor,
    fetch_page,
    fetch_row,
    fetch_rows,
)
from urbana.projections.queries.sealed import decrypt, field_text
from urbana.projections.queries.tables import LEADS


@dataclass(frozen=True, slots=True)
class LeadItem:
    id: UUID
    tenant_id: UUID
    score: int
    stage: str
    name: str | None
    phone: str | None
    created_at: datetime | None
    last_activity_at: datetime | None
    conversations: int
    messages_in: int
    position: int
    over_plan_limit: bool  # past the plan's monthly limit: recorded, not answered by the AI


@dataclass(frozen=True, slots=True)
class LeadDetail:
    lead: LeadItem
    conversations: list[ConversationItem]  # latest activity first


async def _leads(cipher: SubjectCipher | None, rows: list[dict[str, Any]]) -> list[LeadItem]:
    profiles = await decrypt(cipher, [r["profile_sealed"] for r in rows])
    names = await decrypt(cipher, [r["name_sealed"] for r in rows])
    return [
        LeadItem(
            id=r["id"],
            tenant_id=r["tenant_id"],
            score=r["score"] or 0,
            stage=r["stage"] or "new",
            name=field_text(n, "name") if n else field_text(p, "name"),
            phone=field_text(p, "phone"),
            created_at=r["created_at"],
            last_activity_at=r["last_activity_at"],
            conversations=r["conversations"],
            messages_in=r["messages_in"],
            position=r["last_position"],
            over_plan_limit=bool(r.get("over_plan_limit")),
        )
        for r, p, n in zip(rows, profiles, names, strict=True)
    ]


async def list_leads(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    *,
    stage: str | None = None,
    min_score: int | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    cipher: SubjectCipher | None = None,
) -> Page[LeadItem]:
    """A tenant's leads, hottest first (score, then latest activity)."""
    where = Conditions("tenant_id = %s", "created_at IS NOT NULL", params=[str(tenant_id)])
    where.when(stage, "stage = %s")
    where.when(min_score, "score >= %s")
    if cursor is not None:
        score, at, after = decode_cursor(cursor, 3)
        if not isinstance(score, int):
            raise InvalidCursor("malformed cursor")
        where.add(
            "(score, last_activity_at, id) < (%s, %s, %s::uuid)",
            score,
            cursor_time(at),
            cursor_uuid(after),
        )
    rows, next_cursor = await fetch_page(
        conn,
        f"SELECT * FROM {LEADS} {where.sql()} "  # noqa: S608
        "ORDER BY score DESC, last_activity_at DESC, id DESC",
        where.params,
        limit,
        ("score", "last_activity_at", "id"),
    )
    return Page(await _leads(cipher, rows), next_cursor)


async def get_lead(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    lead_id: UUID | str,
    *,
    cipher: SubjectCipher | None = None,
) -> LeadDetail | None:
    """One lead of the tenant with its conversations; None when there is no such lead."""
    row = await fetch_row(
        conn,
        f"SELECT * FROM {LEADS} WHERE tenant_id = %s AND id = %s "  # noqa: S608
        "AND created_at IS NOT NULL",
        (str(tenant_id), str(lead_id)),
    )
    if row is None:
        return None
    conversations = await fetch_rows(
        conn,
        CONVERSATION_SELECT + "WHERE c.tenant_id = %s AND c.lead_id = %s "
        "ORDER BY c.activity_at DESC, c.id DESC LIMIT %s",
        (str(tenant_id), str(lead_id), MAX_LIMIT),
    )
    (lead,) = await _leads(cipher, [row])
    return LeadDetail(lead, await conversation_items(cipher, conversations))


async def pipeline_counts(conn: AsyncConnection[Any], tenant_id: UUID | str) -> dict[str, int]:
    """Leads per stage for a tenant."""
    cur = await conn.execute(
        f"SELECT COALESCE(stage, 'new'), count(*) FROM {LEADS} "  # noqa: S608
        "WHERE tenant_id = %s AND created_at IS NOT NULL GROUP BY 1",
        (str(tenant_id),),
    )
    return {str(stage): int(n) for stage, n in await cur.fetchall()}
