"""Read-model queries for the attendant API and dashboards.

Every function takes the caller's tenant and only returns that tenant's rows.
Personal text is stored sealed in the read models and decrypted here, with the
`SubjectCipher` the caller passes (in a worker thread: the cipher may read its key
table). A lead whose key was destroyed reads as `ERASED`; without a cipher, personal
fields are None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from urbana.application.ports import SubjectCipher
from urbana.application.store import open_sealed
from urbana.projections.base import physical_name
from urbana.projections.conversation_view import ConversationView
from urbana.projections.kpis import BUCKETS, COUNTERS, Kpis
from urbana.projections.lead_pipeline import LeadPipeline

PREVIEW_CHARS = 120

_CONVERSATIONS = physical_name(ConversationView(), "conversations")
_MESSAGES = physical_name(ConversationView(), "messages")
_LEADS = physical_name(LeadPipeline(), "leads")
_KPI_DAILY = physical_name(Kpis(), "kpi_daily")


@dataclass(frozen=True, slots=True)
class ConversationItem:
    id: UUID
    tenant_id: UUID
    lead_id: UUID | None
    channel: str | None
    status: str
    assignee: str | None
    unread: int
    last_message_at: datetime | None
    last_message_direction: str | None
    last_message_author: str | None
    last_message_kind: str | None
    last_message_preview: str | None
    handoff_reason: str | None
    handoffs: int
    inbound_count: int
    outbound_count: int
    started_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class MessageItem:
    key: str
    direction: str
    author: str
    attendant: str | None
    kind: str | None
    status: str | None
    seq: int | None
    outbound_id: str | None
    provider_message_id: str | None
    error: str | None
    text: str | None
    contact_name: str | None
    media_url: str | None
    media_mime: str | None
    reply_to: str | None
    at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    conversation: ConversationItem
    summary: str | None  # the handoff summary, decrypted
    messages: list[MessageItem]


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


@dataclass(frozen=True, slots=True)
class KpiDay:
    """One day's KPIs of a tenant, as `urbana.projections.kpis` defines them.

    A figure whose denominator is zero that day is None.
    """

    tenant_id: UUID
    day: date
    counts: dict[str, int]  # every counter of `kpis.COUNTERS`
    cost_usd: Decimal
    first_response: dict[str, int]  # bucket -> responses (`kpis.BUCKETS` order)
    avg_first_response_s: float | None  # frt_ms_sum / frt_count
    avg_resolution_s: float | None  # resolution_ms_sum / resolved
    handoff_rate: float | None  # handed_off / ai_handled
    ai_resolution_rate: float | None  # ai_resolved / ai_closed


def _open_all(cipher: SubjectCipher | None, blobs: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cache: dict[str, dict[str, Any]] = {}
    for blob in blobs:
        if not blob or cipher is None:
            out.append({})
            continue
        marker = blob["ciphertext"]
        opened = cache.get(marker)
        if opened is None:
            opened = cache[marker] = open_sealed(
                cipher, {"k": blob["key_id"], "f": blob["fields"], "c": blob["ciphertext"]}
            )
        out.append(opened)
    return out


async def _decrypt(cipher: SubjectCipher | None, blobs: list[Any]) -> list[dict[str, Any]]:
    if cipher is None or not any(blobs):
        return [{} for _ in blobs]
    return await asyncio.to_thread(_open_all, cipher, blobs)


def _text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    return None if value is None else str(value)


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[: PREVIEW_CHARS - 1] + "…"


def _conversation(row: dict[str, Any], opened: dict[str, Any]) -> ConversationItem:
    return ConversationItem(
        id=row["id"],
        tenant_id=row["tenant_id"],
        lead_id=row["lead_id"],
        channel=row["channel"],
        status=row["status"],
        assignee=row["assignee"],
        unread=row["unread"],
        last_message_at=row["last_message_at"],
        last_message_direction=row["last_message_direction"],
        last_message_author=row["last_message_author"],
        last_message_kind=row["last_message_kind"],
        last_message_preview=_preview(_text(opened, "text")),
        handoff_reason=row["handoff_reason"],
        handoffs=row["handoffs"],
        inbound_count=row["inbound_count"],
        outbound_count=row["outbound_count"],
        started_at=row["started_at"],
        closed_at=row["closed_at"],
        updated_at=row["updated_at"],
    )


async def list_conversations(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    *,
    status: str | Sequence[str] | None = None,
    assignee: str | None = None,
    before: datetime | None = None,
    limit: int = 50,
    cipher: SubjectCipher | None = None,
) -> list[ConversationItem]:
    """A tenant's conversations, latest message first; filter by status(es)/assignee.

    Page with `before` = the `last_message_at` of the last item of the previous page.
    """
    statuses = [status] if isinstance(status, str) else list(status or [])
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {_CONVERSATIONS} WHERE tenant_id = %s "  # noqa: S608
            "AND (cardinality(%s::text[]) = 0 OR status = ANY(%s::text[])) "
            "AND (%s::text IS NULL OR assignee = %s) "
            "AND (%s::timestamptz IS NULL OR last_message_at < %s) "
            "ORDER BY last_message_at DESC NULLS LAST, id LIMIT %s",
            (str(tenant_id), statuses, statuses, assignee, assignee, before, before, limit),
        )
        rows = await cur.fetchall()
    opened = await _decrypt(cipher, [r["last_message_sealed"] for r in rows])
    return [_conversation(r, o) for r, o in zip(rows, opened, strict=True)]


async def get_conversation(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    conversation_id: UUID | str,
    *,
    cipher: SubjectCipher | None = None,
    limit: int = 200,
) -> ConversationDetail | None:
    """One conversation of the tenant with its latest `limit` messages (oldest first)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {_CONVERSATIONS} WHERE tenant_id = %s AND id = %s",  # noqa: S608
            (str(tenant_id), str(conversation_id)),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            f"SELECT * FROM (SELECT * FROM {_MESSAGES} "  # noqa: S608
            "WHERE tenant_id = %s AND conversation_id = %s "
            "ORDER BY position DESC LIMIT %s) m ORDER BY position",
            (str(tenant_id), str(conversation_id), limit),
        )
        messages = await cur.fetchall()
    opened = await _decrypt(
        cipher,
        [row["last_message_sealed"], row["summary_sealed"], *(m["sealed"] for m in messages)],
    )
    items = [
        MessageItem(
            key=m["msg_key"],
            direction=m["direction"],
            author=m["author"],
            attendant=m["attendant"],
            kind=m["kind"],
            status=m["status"],
            seq=m["seq"],
            outbound_id=m["outbound_id"],
            provider_message_id=m["provider_message_id"],
            error=m["error"],
            text=_text(o, "text"),
            contact_name=_text(o, "contact_name"),
            media_url=_text(o, "media_url"),
            media_mime=m["media_mime"],
            reply_to=m["reply_to"],
            at=m["at"],
            sent_at=m["sent_at"],
            delivered_at=m["delivered_at"],
            read_at=m["read_at"],
        )
        for m, o in zip(messages, opened[2:], strict=True)
    ]
    return ConversationDetail(
        conversation=_conversation(row, opened[0]),
        summary=_text(opened[1], "summary"),
        messages=items,
    )


async def leads_pipeline(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    *,
    stage: str | None = None,
    limit: int = 100,
    cipher: SubjectCipher | None = None,
) -> list[LeadItem]:
    """A tenant's leads, hottest first (score, then latest activity)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {_LEADS} WHERE tenant_id = %s AND created_at IS NOT NULL "  # noqa: S608
            "AND (%s::text IS NULL OR stage = %s) "
            "ORDER BY score DESC, last_activity_at DESC NULLS LAST, id LIMIT %s",
            (str(tenant_id), stage, stage, limit),
        )
        rows = await cur.fetchall()
    profiles = await _decrypt(cipher, [r["profile_sealed"] for r in rows])
    names = await _decrypt(cipher, [r["name_sealed"] for r in rows])
    return [
        LeadItem(
            id=r["id"],
            tenant_id=r["tenant_id"],
            score=r["score"] or 0,
            stage=r["stage"] or "new",
            name=_text(n, "name") if n else _text(p, "name"),
            phone=_text(p, "phone"),
            created_at=r["created_at"],
            last_activity_at=r["last_activity_at"],
            conversations=r["conversations"],
            messages_in=r["messages_in"],
        )
        for r, p, n in zip(rows, profiles, names, strict=True)
    ]


async def pipeline_counts(conn: AsyncConnection[Any], tenant_id: UUID | str) -> dict[str, int]:
    """Leads per stage for a tenant."""
    cur = await conn.execute(
        f"SELECT COALESCE(stage, 'new'), count(*) FROM {_LEADS} "  # noqa: S608
        "WHERE tenant_id = %s AND created_at IS NOT NULL GROUP BY 1",
        (str(tenant_id),),
    )
    return {str(stage): int(n) for stage, n in await cur.fetchall()}


async def kpis_by_day(
    conn: AsyncConnection[Any], tenant_id: UUID | str, since: date, until: date
) -> list[KpiDay]:
    """A tenant's KPIs for each day (UTC) from `since` to `until` inclusive that has any."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {_KPI_DAILY} WHERE tenant_id = %s "  # noqa: S608
            "AND day BETWEEN %s AND %s ORDER BY day",
            (str(tenant_id), since, until),
        )
        rows = await cur.fetchall()
    out = []
    for r in rows:
        counts = {c: int(r[c]) for c in COUNTERS}
        out.append(
            KpiDay(
                tenant_id=r["tenant_id"],
                day=r["day"],
                counts=counts,
                cost_usd=Decimal(r["cost_usd"]),
                first_response={b: counts[b] for b, _ in BUCKETS},
                avg_first_response_s=_ratio(counts["frt_ms_sum"], counts["frt_count"], 1000),
                avg_resolution_s=_ratio(counts["resolution_ms_sum"], counts["resolved"], 1000),
                handoff_rate=_ratio(counts["handed_off"], counts["ai_handled"]),
                ai_resolution_rate=_ratio(counts["ai_resolved"], counts["ai_closed"]),
            )
        )
    return out


def _ratio(part: int, whole: int, unit: int = 1) -> float | None:
    return part / whole / unit if whole else None
