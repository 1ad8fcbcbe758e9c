"""Read-model queries for the attendant API and dashboards.

Every function takes the caller's tenant and only returns that tenant's rows: it says
`WHERE tenant_id = ...` itself, and the API runs it inside `access.tenant_read`, where
row-level security would hide other tenants' rows even if it did not. Personal text is
stored sealed in the read models and decrypted here, with the `SubjectCipher` the
caller passes (in a worker thread: the cipher may read its key table). A lead whose
key was destroyed reads as `ERASED`; without a cipher, personal fields are None.

Lists are pages: `Page(items, next_cursor)`, ordered by a unique key; `next_cursor`
(None on the last page) is that key of the page's last item, base64url-encoded JSON,
opaque to clients. A cursor that does not decode raises `InvalidCursor`.
Every item carries `position`: the global position of the last event applied to it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from urbana.application.ports import SubjectCipher
from urbana.application.store import open_sealed
from urbana.errors import Rejected
from urbana.projections.base import physical_name
from urbana.projections.conversation_view import ConversationView
from urbana.projections.kpis import BUCKETS, COUNTERS, Kpis
from urbana.projections.lead_pipeline import LeadPipeline
from urbana.projections.team import Team
from urbana.projections.workspace import Workspace

PREVIEW_CHARS = 120
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
NO_ASSIGNEE = "none"  # `assignee=none`: conversations nobody holds
ME = "me"  # `assignee=me`: the caller's (`me=`)

_CONVERSATIONS = physical_name(ConversationView(), "conversations")
_MESSAGES = physical_name(ConversationView(), "messages")
_NOTES = physical_name(ConversationView(), "notes")
_LEADS = physical_name(LeadPipeline(), "leads")
_KPI_DAILY = physical_name(Kpis(), "kpi_daily")
_KPI_RESPONSES = physical_name(Kpis(), "kpi_responses")
_USERS = physical_name(Team(), "users")
_QUEUES = physical_name(Workspace(), "queues")
_CANNED = physical_name(Workspace(), "canned_responses")

T = TypeVar("T")


class InvalidCursor(Rejected):
    """A pagination cursor this module did not write (a client error: 400)."""

    def __init__(self, reason: str = "malformed cursor") -> None:
        super().__init__(400, reason)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(key: Sequence[Any]) -> str:
    raw = orjson.dumps([v.isoformat() if isinstance(v, datetime) else v for v in key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, size: int) -> list[Any]:
    """The sort key a cursor holds (`size` values), or InvalidCursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("malformed cursor") from exc
    if not isinstance(key, list) or len(key) != size:
        raise InvalidCursor("malformed cursor")
    if not all(isinstance(v, (str, int, float)) for v in key):
        raise InvalidCursor("malformed cursor")
    return key


def _limit(limit: int) -> int:
    return max(1, min(MAX_LIMIT, limit))


def _page(
    rows: list[dict[str, Any]], limit: int, key: Sequence[str]
) -> tuple[list[Any], str | None]:
    """The page's rows and the cursor after them (rows were fetched with limit + 1)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor([_plain(last[k]) for k in key])


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    return value


def _key_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidCursor("malformed cursor")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidCursor("malformed cursor") from exc


def _key_uuid(value: Any) -> str:
    try:
        return str(UUID(str(value)))
    except ValueError as exc:
        raise InvalidCursor("malformed cursor") from exc


# ------------------------------------------------------------------ decryption


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


# --------------------------------------------------------------- conversations


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
    at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
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


_CONVERSATION_SELECT = (
    f"SELECT c.*, l.score AS lead_score, l.stage AS lead_stage FROM {_CONVERSATIONS} c "  # noqa: S608
    f"LEFT JOIN {_LEADS} l ON l.id = c.lead_id AND l.created_at IS NOT NULL "
)


def _conversation(
    row: dict[str, Any], last: dict[str, Any], contact: dict[str, Any]
) -> ConversationItem:
    return ConversationItem(
        id=row["id"],
        tenant_id=row["tenant_id"],
        lead_id=row["lead_id"],
        channel=row["channel"],
        status=row["status"],
        contact_name=_text(contact, "contact_name"),
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
        last_message_preview=_preview(_text(last, "text")),
        handoff_reason=row["handoff_reason"],
        handoffs=row["handoffs"],
        inbound_count=row["inbound_count"],
        outbound_count=row["outbound_count"],
        started_at=row["started_at"],
        closed_at=row["closed_at"],
        updated_at=row["updated_at"],
        position=row["last_position"],
    )


async def _conversations(
    cipher: SubjectCipher | None, rows: list[dict[str, Any]]
) -> list[ConversationItem]:
    opened = await _decrypt(
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
    limit = _limit(limit)
    where = ["c.tenant_id = %s"]
    params: list[Any] = [str(tenant_id)]
    if len(statuses) == 1:  # an equality the (tenant, status, activity) index serves
        where.append("c.status = %s")
        params.append(statuses[0])
    elif statuses:
        where.append("c.status = ANY(%s::text[])")
        params.append(statuses)
    if assignee == NO_ASSIGNEE:
        where.append("c.assignee IS NULL")
    elif assignee is not None:
        where.append("c.assignee = %s")
        params.append(assignee)
    if label is not None:
        where.append("c.labels @> ARRAY[%s]::text[]")
        params.append(label)
    if queue is not None:
        where.append("c.queue = %s")
        params.append(queue)
    if cursor is not None:
        at, after = decode_cursor(cursor, 2)
        where.append("(c.activity_at, c.id) < (%s, %s::uuid)")
        params += [_key_time(at), _key_uuid(after)]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _CONVERSATION_SELECT
            + "WHERE "
            + " AND ".join(where)
            + " ORDER BY c.activity_at DESC, c.id DESC LIMIT %s",
            (*params, limit + 1),
        )
        rows, next_cursor = _page(await cur.fetchall(), limit, ("activity_at", "id"))
    return Page(await _conversations(cipher, rows), next_cursor)


async def waiting_queue(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    *,
    queue: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    cipher: SubjectCipher | None = None,
) -> Page[ConversationItem]:
    """Conversations waiting for a human (in one queue, or any), longest wait first."""
    limit = _limit(limit)
    where = ["c.tenant_id = %s", "c.status = 'waiting_human'"]
    params: list[Any] = [str(tenant_id)]
    if queue is not None:
        where.append("c.queue = %s")
        params.append(queue)
    if cursor is not None:
        since, after = decode_cursor(cursor, 2)
        where.append("(c.waiting_since, c.id) > (%s, %s::uuid)")
        params += [_key_time(since), _key_uuid(after)]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _CONVERSATION_SELECT
            + "WHERE "
            + " AND ".join(where)
            + " ORDER BY c.waiting_since, c.id LIMIT %s",
            (*params, limit + 1),
        )
        rows, next_cursor = _page(await cur.fetchall(), limit, ("waiting_since", "id"))
    return Page(await _conversations(cipher, rows), next_cursor)


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
        text=_text(o, "text"),
        contact_name=_text(o, "contact_name"),
        media_url=_text(o, "media_url"),
        media_mime=m["media_mime"],
        reply_to=m["reply_to"],
        intent=m["intent"],
        confidence=m["confidence"],
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
    limit = _limit(limit)
    where = ["tenant_id = %s", "conversation_id = %s"]
    params: list[Any] = [str(tenant_id), str(conversation_id)]
    if cursor is not None:
        (before,) = decode_cursor(cursor, 1)
        if not isinstance(before, int):
            raise InvalidCursor("malformed cursor")
        where.append("position < %s")
        params.append(before)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {_MESSAGES} WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY position DESC LIMIT %s",
            (*params, limit + 1),
        )
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit][::-1]
    opened = await _decrypt(cipher, [m["sealed"] for m in rows])
    items = [_message(m, o) for m, o in zip(rows, opened, strict=True)]
    return Page(items, encode_cursor([rows[0]["position"]]) if more else None)


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
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _CONVERSATION_SELECT + "WHERE c.tenant_id = %s AND c.id = %s",
            (str(tenant_id), str(conversation_id)),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            f"SELECT * FROM {_NOTES} WHERE tenant_id = %s AND conversation_id = %s "  # noqa: S608
            "ORDER BY position",
            (str(tenant_id), str(conversation_id)),
        )
        notes = await cur.fetchall()
    messages = await list_messages(conn, tenant_id, conversation_id, limit=limit, cipher=cipher)
    opened = await _decrypt(
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
        summary=_text(opened[2], "summary"),
        messages=messages.items,
        older_messages=messages.next_cursor,
        notes=[
            NoteItem(
                id=n["note_id"],
                author=n["author"],
                text=_text(o, "text"),
                at=n["at"],
                position=n["position"],
            )
            for n, o in zip(notes, opened[3:], strict=True)
        ],
    )


# ----------------------------------------------------------------------- leads


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


@dataclass(frozen=True, slots=True)
class LeadDetail:
    lead: LeadItem
    conversations: list[ConversationItem]  # latest activity first


async def _leads(cipher: SubjectCipher | None, rows: list[dict[str, Any]]) -> list[LeadItem]:
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
            position=r["last_position"],
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
    limit = _limit(limit)
    where = ["tenant_id = %s", "created_at IS NOT NULL"]
    params: list[Any] = [str(tenant_id)]
    if stage is not None:
        where.append("stage = %s")
        params.append(stage)
    if min_score is not None:
        where.append("score >= %s")
        params.append(min_score)
    if cursor is not None:
        score, at, after = decode_cursor(cursor, 3)
        if not isinstance(score, int):
            raise InvalidCursor("malformed cursor")
        where.append("(score, last_activity_at, id) < (%s, %s, %s::uuid)")
        params += [score, _key_time(at), _key_uuid(after)]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {_LEADS} WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY score DESC, last_activity_at DESC, id DESC LIMIT %s",
            (*params, limit + 1),
        )
        rows, next_cursor = _page(await cur.fetchall(), limit, ("score", "last_activity_at", "id"))
    return Page(await _leads(cipher, rows), next_cursor)


async def get_lead(
    conn: AsyncConnection[Any],
    tenant_id: UUID | str,
    lead_id: UUID | str,
    *,
    cipher: SubjectCipher | None = None,
) -> LeadDetail | None:
    """One lead of the tenant with its conversations; None when there is no such lead."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {_LEADS} WHERE tenant_id = %s AND id = %s "  # noqa: S608
            "AND created_at IS NOT NULL",
            (str(tenant_id), str(lead_id)),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            _CONVERSATION_SELECT + "WHERE c.tenant_id = %s AND c.lead_id = %s "
            "ORDER BY c.activity_at DESC, c.id DESC LIMIT %s",
            (str(tenant_id), str(lead_id), MAX_LIMIT),
        )
        conversations = await cur.fetchall()
    (lead,) = await _leads(cipher, [row])
    return LeadDetail(lead, await _conversations(cipher, conversations))


async def pipeline_counts(conn: AsyncConnection[Any], tenant_id: UUID | str) -> dict[str, int]:
    """Leads per stage for a tenant."""
    cur = await conn.execute(
        f"SELECT COALESCE(stage, 'new'), count(*) FROM {_LEADS} "  # noqa: S608
        "WHERE tenant_id = %s AND created_at IS NOT NULL GROUP BY 1",
        (str(tenant_id),),
    )
    return {str(stage): int(n) for stage, n in await cur.fetchall()}


# ------------------------------------------------------------------------ team


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
    limit = _limit(limit)
    where = ["u.tenant_id = %s", "u.invited_at IS NOT NULL"]
    params: list[Any] = [str(tenant_id), str(tenant_id)]
    if availability is not None:
        where.append("u.availability = %s")
        params.append(availability)
    if queue is not None:
        where.append("u.queues @> ARRAY[%s]::text[]")
        params.append(queue)
    if not include_disabled:
        where.append("NOT u.disabled")
    if cursor is not None:
        at, after = decode_cursor(cursor, 2)
        where.append("(u.invited_at, u.id) > (%s, %s::uuid)")
        params += [_key_time(at), _key_uuid(after)]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT u.*, COALESCE(o.open, 0) AS open_conversations "  # noqa: S608
            f"FROM {_USERS} u LEFT JOIN (SELECT assignee, count(*) AS open "
            f"FROM {_CONVERSATIONS} WHERE tenant_id = %s AND status = 'human' "
            "GROUP BY assignee) o ON o.assignee = u.id::text "
            "WHERE " + " AND ".join(where) + " ORDER BY u.invited_at, u.id LIMIT %s",
            (*params, limit + 1),
        )
        rows, next_cursor = _page(await cur.fetchall(), limit, ("invited_at", "id"))
    profiles = await _decrypt(cipher, [r["profile_sealed"] for r in rows])
    return Page(
        [
            TeamMember(
                id=r["id"],
                tenant_id=r["tenant_id"],
                email=r["email"] if r["email"] is not None else _text(p, "email"),
                name=r["name"] if r["name"] is not None else _text(p, "name"),
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


# ------------------------------------------------------------------- workspace


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
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT q.*, "  # noqa: S608
            f"(SELECT count(*) FROM {_CONVERSATIONS} c WHERE c.tenant_id = %s "
            "AND c.status = 'waiting_human' AND c.queue = q.queue_id) AS waiting, "
            f"(SELECT count(*) FROM {_USERS} u WHERE u.tenant_id = %s "
            "AND u.availability = 'online' AND NOT u.disabled "
            "AND u.queues @> ARRAY[q.queue_id]) AS online "
            f"FROM {_QUEUES} q WHERE q.tenant_id = %s ORDER BY q.name, q.queue_id",
            (tenant, tenant, tenant),
        )
        rows = await cur.fetchall()
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
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {_CANNED} WHERE tenant_id = %s "  # noqa: S608
            "AND (%s::text IS NULL OR starts_with(shortcut, %s)) ORDER BY shortcut",
            (str(tenant_id), prefix, prefix),
        )
        rows = await cur.fetchall()
    return [
        CannedResponse(
            shortcut=r["shortcut"],
            text=r["text"],
            updated_at=r["updated_at"],
            position=r["last_position"],
        )
        for r in rows
    ]


# ------------------------------------------------------------------------ KPIs


@dataclass(frozen=True, slots=True)
class KpiDay:
    """One day's KPIs of a tenant (or, with `day` None, a range's totals), as
    `urbana.projections.kpis` defines them. A figure whose denominator is zero is None.
    """

    tenant_id: UUID
    day: date | None
    counts: dict[str, int]  # every counter of `kpis.COUNTERS`
    cost_usd: Decimal
    first_response: dict[str, int]  # bucket -> responses (`kpis.BUCKETS` order)
    avg_first_response_s: float | None  # frt_ms_sum / frt_count
    avg_resolution_s: float | None  # resolution_ms_sum / resolved
    handoff_rate: float | None  # handed_off / ai_handled
    ai_resolution_rate: float | None  # ai_resolved / ai_closed
    # first response time, median and 90th percentile, of the AI's and the attendants'
    ai_first_response_p50_s: float | None = None
    ai_first_response_p90_s: float | None = None
    human_first_response_p50_s: float | None = None
    human_first_response_p90_s: float | None = None


@dataclass(frozen=True, slots=True)
class KpiReport:
    days: list[KpiDay]  # the days that have any figure, in order
    totals: KpiDay  # the whole range (`day` None)


def _figures(
    tenant_id: UUID,
    day: date | None,
    counts: dict[str, int],
    cost: Decimal,
    percentiles: dict[str, float | None],
) -> KpiDay:
    return KpiDay(
        tenant_id=tenant_id,
        day=day,
        counts=counts,
        cost_usd=cost,
        first_response={b: counts[b] for b, _ in BUCKETS},
        avg_first_response_s=_ratio(counts["frt_ms_sum"], counts["frt_count"], 1000),
        avg_resolution_s=_ratio(counts["resolution_ms_sum"], counts["resolved"], 1000),
        handoff_rate=_ratio(counts["handed_off"], counts["ai_handled"]),
        ai_resolution_rate=_ratio(counts["ai_resolved"], counts["ai_closed"]),
        **percentiles,
    )


_PERCENTILES = (
    "responder, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
    "percentile_cont(0.9) WITHIN GROUP (ORDER BY ms) "
    f"FROM {_KPI_RESPONSES} WHERE tenant_id = %s AND day BETWEEN %s AND %s "
    "AND responder IN ('ai', 'human') "
)


def _percentile_fields(found: dict[str, tuple[float, float]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for responder in ("ai", "human"):
        p50, p90 = found.get(responder, (None, None))
        out[f"{responder}_first_response_p50_s"] = None if p50 is None else p50 / 1000
        out[f"{responder}_first_response_p90_s"] = None if p90 is None else p90 / 1000
    return out


async def kpi_report(
    conn: AsyncConnection[Any], tenant_id: UUID | str, since: date, until: date
) -> KpiReport:
    """A tenant's KPIs for each day (UTC) from `since` to `until` inclusive that has
    any, and for the range as a whole (sums, and percentiles over every response)."""
    tenant = UUID(str(tenant_id))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {_KPI_DAILY} WHERE tenant_id = %s "  # noqa: S608
            "AND day BETWEEN %s AND %s ORDER BY day",
            (str(tenant), since, until),
        )
        rows = await cur.fetchall()
    by_day: dict[date, dict[str, tuple[float, float]]] = {}
    cur2 = await conn.execute(
        "SELECT day, " + _PERCENTILES + "GROUP BY day, responder", (str(tenant), since, until)
    )
    for day, responder, p50, p90 in await cur2.fetchall():
        by_day.setdefault(day, {})[responder] = (float(p50), float(p90))
    cur2 = await conn.execute(
        "SELECT " + _PERCENTILES + "GROUP BY responder", (str(tenant), since, until)
    )
    overall = {r: (float(p50), float(p90)) for r, p50, p90 in await cur2.fetchall()}
    days = []
    totals = dict.fromkeys(COUNTERS, 0)
    cost = Decimal(0)
    for r in rows:
        counts = {c: int(r[c]) for c in COUNTERS}
        for c in COUNTERS:
            totals[c] += counts[c]
        cost += Decimal(r["cost_usd"])
        days.append(
            _figures(
                tenant,
                r["day"],
                counts,
                Decimal(r["cost_usd"]),
                _percentile_fields(by_day.get(r["day"], {})),
            )
        )
    return KpiReport(days, _figures(tenant, None, totals, cost, _percentile_fields(overall)))


async def kpis_by_day(
    conn: AsyncConnection[Any], tenant_id: UUID | str, since: date, until: date
) -> list[KpiDay]:
    """`kpi_report`'s days."""
    return (await kpi_report(conn, tenant_id, since, until)).days


def _ratio(part: int, whole: int, unit: int = 1) -> float | None:
    return part / whole / unit if whole else None
