"""Conversations: the attendants' lists, the waiting queue, and one conversation whole."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from urbana.application.ports import SubjectCipher
from urbana.projections.conversation_tables import CONVERSATION_COLUMNS
from urbana.projections.queries.messages import MessageItem, list_messages
from urbana.projections.queries.paging import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Conditions,
    Page,
    fetch_page,
    fetch_row,
    fetch_rows,
)
from urbana.projections.queries.sealed import decrypt, field_text
from urbana.projections.queries.tables import CONVERSATIONS, LEADS, NOTES

PREVIEW_CHARS = 120
NO_ASSIGNEE = "none"  # `assignee=none`: conversations nobody holds
ME = "me"  # `assignee=me`: the caller's (`me=`)


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[: PREVIEW_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class ConversationItem:
    id: UUID
    tenant_id: UUID
    lead_id: UUID | None
    channel: str | None
    status: str
    contact_name: str | None
    lead_score: int | None
    lead_stage: str | None
    assignee: str | None
    queue: str | None
    labels: list[str]
    unread: int
    waiting_since: datetime | None
    assigned_at: datetime | None
    last_inbound_at: datetime | None  # the 24-hour window runs from here
    last_intent: str | None
    last_confidence: float | None
    last_message_at: datetime | None
    last_message_direction: str | None
    last_message_author: str | None  # lead | ai | human | system
    last_message_kind: str | None
    last_message_preview: str | None
    handoff_reason: str | None
    handoffs: int
    inbound_count: int
    outbound_count: int
    started_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime | None
    position: int


@dataclass(frozen=True, slots=True)
class NoteItem:
    id: str
    author: str | None
    text: str | None
    at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    conversation: ConversationItem
    summary: str | None  # the handoff summary, decrypted
    messages: list[MessageItem]  # the latest ones, oldest first
    older_messages: str | None  # cursor for `list_messages`, None when all are here
    notes: list[NoteItem]


# A list reads what its items show: not the sealed handoff summary only the detail opens,
# nor the AI's last passages (the detail shows them on the reply's message row): every
# jsonb column read is one more blob to send and decode per row.
_UNLISTED = ("summary_sealed", "last_passages")
_LISTED = ", ".join(f"c.{name}" for name, _ in CONVERSATION_COLUMNS if name not in _UNLISTED)
_FROM = (
    f"l.score AS lead_score, l.stage AS lead_stage FROM {CONVERSATIONS} c "
    f"LEFT JOIN {LEADS} l ON l.id = c.lead_id AND l.created_at IS NOT NULL "
)
CONVERSATION_SELECT = f"SELECT {_LISTED}, {_FROM}"
DETAIL_SELECT = f"SELECT {_LISTED}, c.summary_sealed, {_FROM}"


def _conversation(
    row: dict[str, Any], last: dict[str, Any], contact: dict[str, Any]
) -> ConversationItem:
    return ConversationItem(
        id=row["id"],
        tenant_id=row["tenant_id"],
        lead_id=row["lead_id"],
        channel=row["channel"],
        status=row["status"],
        contact_name=field_text(contact, "contact_name"),
        lead_score=row["lead_score"],
        lead_stage=row["lead_stage"],
        assignee=row["assignee"],
        queue=row["queue"],
        labels=list(row["labels"] or ()),
        unread=row["unread"],
        waiting_since=row["waiting_since"],
        assigned_at=row["assigned_at"],
        last_inbound_at=row["last_inbound_at"],
        last_intent=row["last_intent"],
        last_confidence=row["last_confidence"],
        last_message_at=row["last_message_at"],
        last_message_direction=row["last_message_direction"],
        last_message_author=row["last_message_author"],
        last_message_kind=row["last_message_kind"],
        last_message_preview=_preview(field_text(last, "text")),
        handoff_reason=row["handoff_reason"],
        handoffs=row["handoffs"],
        inbound_count=row["inbound_count"],
        outbound_count=row["outbound_count"],
        started_at=row["started_at"],
        closed_at=row["closed_at"],
        updated_at=row["updated_at"],
        position=row["last_position"],
    )


async def conversation_items(
    cipher: SubjectCipher | None, rows: list[dict[str, Any]]
) -> list[ConversationItem]:
    opened = await decrypt(
        cipher, [b for r in rows for b in (r["last_message_sealed"], r["contact_sealed"])]
    )
    return [_conversation(r, opened[2 * i], opened[2 * i + 1]) for i, r in enumerate(rows)]


async def list_conversations(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    *,
    status: str | Sequence[str] | None = None,
    assignee: str | None = None,
    me: str | None = None,
    label: str | None = None,
    queue: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    cipher: SubjectCipher | None = None,
) -> Page[ConversationItem]:
    """A tenant's conversations, latest activity first.

    Filters: status (one or several); assignee: a user id, `ME` (the user `me`) or
    `NO_ASSIGNEE`; a label; a queue.
    """
    statuses = [status] if isinstance(status, str) else list(status or [])
    if assignee == ME:
        if me is None:
            raise ValueError("assignee=me needs the caller's user id")
        assignee = me
    where = Conditions("c.tenant_id = %s", params=[str(tenant_id)])
    if len(statuses) == 1:  # an equality the (tenant, status, activity) index serves
        where.add("c.status = %s", statuses[0])
    elif statuses:
        where.add("c.status = ANY(%s::text[])", statuses)
    if assignee == NO_ASSIGNEE:
        where.add("c.assignee IS NULL")
    else:
        where.when(assignee, "c.assignee = %s")
    where.when(label, "c.labels @> ARRAY[%s]::text[]")
    where.when(queue, "c.queue = %s")
    where.after(cursor, "(c.activity_at, c.id) < (%s, %s::uuid)")
    return await _conversation_page(
        conn, where, ("activity_at DESC", "id DESC"), limit=limit, cipher=cipher
    )


async def _conversation_page(
    conn: AsyncConnection[Any],
    where: Conditions,
    order: tuple[str, str],
    *,
    limit: int,
    cipher: SubjectCipher | None,
) -> Page[ConversationItem]:
    """One page of conversations matching `where`, ordered by a column then the id (each
    with its direction): the cursor holds those two values of the page's last row."""
    rows, next_cursor = await fetch_page(
        conn,
        f"{CONVERSATION_SELECT}{where.sql()} ORDER BY c.{order[0]}, c.{order[1]}",
        where.params,
        limit,
        tuple(column.split()[0] for column in order),
    )
    return Page(await conversation_items(cipher, rows), next_cursor)


async def waiting_queue(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    *,
    queue: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    cipher: SubjectCipher | None = None,
) -> Page[ConversationItem]:
    """Conversations waiting for a human (in one queue, or any), longest wait first.

    Console conversations (the tenant testing its bot) wait for nobody: never listed.
    """
    where = Conditions(
        "c.tenant_id = %s",
        "c.status = 'waiting_human'",
        "c.channel <> 'console'",
        params=[str(tenant_id)],
    )
    where.when(queue, "c.queue = %s")
    where.after(cursor, "(c.waiting_since, c.id) > (%s, %s::uuid)")
    return await _conversation_page(
        conn, where, ("waiting_since", "id"), limit=limit, cipher=cipher
    )


async def get_conversation(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    conversation_id: UUID | str,
    *,
    cipher: SubjectCipher | None = None,
    limit: int = MAX_LIMIT,
) -> ConversationDetail | None:
    """One conversation of the tenant: its latest `limit` messages (oldest first), its
    notes, the handoff reason and summary. None when the tenant has no such conversation."""
    row = await fetch_row(
        conn,
        DETAIL_SELECT + "WHERE c.tenant_id = %s AND c.id = %s",
        (str(tenant_id), str(conversation_id)),
    )
    if row is None:
        return None
    notes = await fetch_rows(
        conn,
        f"SELECT * FROM {NOTES} WHERE tenant_id = %s AND conversation_id = %s "  # noqa: S608
        "ORDER BY position",
        (str(tenant_id), str(conversation_id)),
    )
    messages = await list_messages(conn, tenant_id, conversation_id, limit=limit, cipher=cipher)
    opened = await decrypt(
        cipher,
        [
            row["last_message_sealed"],
            row["contact_sealed"],
            row["summary_sealed"],
            *(n["sealed"] for n in notes),
        ],
    )
    return ConversationDetail(
        conversation=_conversation(row, opened[0], opened[1]),
        summary=field_text(opened[2], "summary"),
        messages=messages.items,
        older_messages=messages.next_cursor,
        notes=[
            NoteItem(
                id=n["note_id"],
                author=n["author"],
                text=field_text(o, "text"),
                at=n["at"],
                position=n["position"],
            )
            for n, o in zip(notes, opened[3:], strict=True)
        ],
    )
