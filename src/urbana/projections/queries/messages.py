"""A conversation's messages, a page at a time going back in time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from urbana.application.ports import SubjectCipher
from urbana.projections.queries.paging import (
    MAX_LIMIT,
    InvalidCursor,
    Page,
    clamp_limit,
    decode_cursor,
    encode_cursor,
    fetch_rows,
)
from urbana.projections.queries.sealed import decrypt, field_text
from urbana.projections.queries.tables import MESSAGES


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
    intent: str | None
    confidence: float | None
    passages: list[dict[str, Any]]  # an AI reply's knowledge (empty for other messages)
    at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    position: int


def _message(m: dict[str, Any], o: dict[str, Any]) -> MessageItem:
    return MessageItem(
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
        text=field_text(o, "text"),
        contact_name=field_text(o, "contact_name"),
        media_url=field_text(o, "media_url"),
        media_mime=m["media_mime"],
        reply_to=m["reply_to"],
        intent=m["intent"],
        confidence=m["confidence"],
        passages=list(m["passages"] or ()),
        at=m["at"],
        sent_at=m["sent_at"],
        delivered_at=m["delivered_at"],
        read_at=m["read_at"],
        position=m["last_position"],
    )


async def list_messages(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    conversation_id: UUID | str,
    *,
    limit: int = MAX_LIMIT,
    cursor: str | None = None,
    cipher: SubjectCipher | None = None,
) -> Page[MessageItem]:
    """A conversation's messages going back in time: each page the `limit` messages
    before the cursor (the latest ones without), oldest first within the page."""
    limit = clamp_limit(limit)
    where = ["tenant_id = %s", "conversation_id = %s"]
    params: list[Any] = [str(tenant_id), str(conversation_id)]
    if cursor is not None:
        (before,) = decode_cursor(cursor, 1)
        if not isinstance(before, int):
            raise InvalidCursor("malformed cursor")
        where.append("position < %s")
        params.append(before)
    rows = await fetch_rows(
        conn,
        f"SELECT * FROM {MESSAGES} WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY position DESC LIMIT %s",
        (*params, limit + 1),
    )
    more = len(rows) > limit
    rows = rows[:limit][::-1]
    opened = await decrypt(cipher, [m["sealed"] for m in rows])
    items = [_message(m, o) for m, o in zip(rows, opened, strict=True)]
    return Page(items, encode_cursor([rows[0]["position"]]) if more else None)
