"""/v1 read routes of the workspace: conversations, the queue, leads, KPIs, the team.

Every answer comes from the read models, in one `tenant_read` transaction (row-level
security on the caller's tenant), with personal text decrypted on the way out; no
aggregate is loaded. Another tenant's id is simply not found (404). Who may read what:
attendants, supervisors and admins work conversations, auditors read everything;
analysts see the pipeline (leads, KPIs, queues), never a conversation's text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import HTTPException, Query, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, ConfigDict, Field

from urbana.adapters.bootstrap import Container
from urbana.adapters.http.auth import allow, v1_router
from urbana.application.access import Principal
from urbana.domain.conversation import Status
from urbana.domain.lead import Stage
from urbana.domain.user import Role
from urbana.errors import Unavailable
from urbana.projections import queries
from urbana.projections.access import tenant_read

router = v1_router(tags=["workspace"])

# Conversation text: those who work conversations, and the auditor who reads them.
Reader = Annotated[Principal, allow(Role.ATTENDANT, Role.SUPERVISOR, Role.ADMIN, Role.AUDITOR)]
Everyone = Annotated[Principal, allow(*Role)]
# KPIs are for those who steer the team, not for the attendants in it.
Steering = Annotated[Principal, allow(Role.SUPERVISOR, Role.ADMIN, Role.ANALYST, Role.AUDITOR)]

MAX_KPI_DAYS = 366
# PostgreSQL text cannot hold NUL: such a parameter is the client's error, not a 500.
NO_NUL = r"^[^\x00]*$"
Limit = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT, description="Items per page")]
Cursor = Annotated[
    str | None,
    Query(
        max_length=512, pattern=NO_NUL, description="`next_cursor` of the previous page (opaque)"
    ),
]
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A cursor this API did not write"},
    401: {"description": "Missing, wrong, expired, disabled or revoked credentials"},
    403: {"description": "The caller's role may not read this"},
    422: {"description": "A query parameter out of its range or format"},
    503: {"description": "The read models cannot be reached; retry after Retry-After"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"description": "No such resource in the caller's tenant"},
}


class ReadModelsUnavailable(Unavailable):
    """The read models' database did not answer (or no connection was free in time)."""


@asynccontextmanager
async def reading(request: Request, tenant_id: UUID) -> AsyncIterator[AsyncConnection[Any]]:
    """A read-only, tenant-scoped transaction on the API's read pool."""
    pool: AsyncConnectionPool[Any] = request.app.state.reads
    try:
        async with tenant_read(pool, tenant_id) as conn:
            yield conn
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise ReadModelsUnavailable(f"the read models cannot be read: {exc}") from exc


def _cipher(request: Request) -> Any:
    container: Container = request.app.state.container
    return container.store.cipher


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)}, from_attributes=True)


TENANT = "5f0c6f1e-3a57-4b5e-9d0e-0b7a1c9f2e41"
CONVERSATION = "3d6f0e8a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
LEAD = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
USER = "0b8f6a3e-2a51-4c3e-9a43-1d2b3c4d5e6f"
AT = "2026-11-30T14:05:00Z"

# ------------------------------------------------------------------ models


class LastMessage(BaseModel):
    author: str | None = Field(description="lead, ai, human or system")
    direction: str | None
    kind: str | None
    preview: str | None
    at: datetime | None


_CONVERSATION_EXAMPLE: dict[str, Any] = {
    "id": CONVERSATION,
    "status": "waiting_human",
    "channel": "cloud",
    "contact_name": "Maria",
    "lead_id": LEAD,
    "lead_score": 55,
    "lead_stage": "qualified",
    "assignee": None,
    "queue": "vendas",
    "labels": ["vip"],
    "last_message": {
        "author": "lead",
        "direction": "inbound",
        "kind": "text",
        "preview": "Quero falar com alguém",
        "at": AT,
    },
    "unread": 1,
    "waiting_since": AT,
    "assigned_at": None,
    "last_inbound_at": AT,
    "handoff_reason": "asked_for_human",
    "started_at": AT,
    "closed_at": None,
    "updated_at": AT,
    "position": 1842,
}


class ConversationOut(BaseModel):
    model_config = _examples(_CONVERSATION_EXAMPLE)
    id: UUID
    status: str
    channel: str | None
    contact_name: str | None
    lead_id: UUID | None
    lead_score: int | None
    lead_stage: str | None
    assignee: str | None
    queue: str | None
    labels: list[str]
    last_message: LastMessage | None
    unread: int
    waiting_since: datetime | None
    assigned_at: datetime | None
    last_inbound_at: datetime | None = Field(description="WhatsApp's 24-hour window runs from it")
    handoff_reason: str | None
    started_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime | None
    position: int = Field(description="Global position of the last event applied to it")

    @classmethod
    def of(cls, c: queries.ConversationItem) -> ConversationOut:
        last = None
        if c.last_message_at is not None:
            author = c.last_message_author
            last = LastMessage(
                author=author,
                direction=c.last_message_direction,
                kind=c.last_message_kind,
                preview=c.last_message_preview,
                at=c.last_message_at,
            )
        return cls(
            id=c.id,
            status=c.status,
            channel=c.channel,
            contact_name=c.contact_name,
            lead_id=c.lead_id,
            lead_score=c.lead_score,
            lead_stage=c.lead_stage,
            assignee=c.assignee,
            queue=c.queue,
            labels=c.labels,
            last_message=last,
            unread=c.unread,
            waiting_since=c.waiting_since,
            assigned_at=c.assigned_at,
            last_inbound_at=c.last_inbound_at,
            handoff_reason=c.handoff_reason,
            started_at=c.started_at,
            closed_at=c.closed_at,
            updated_at=c.updated_at,
            position=c.position,
        )


class ConversationPage(BaseModel):
    model_config = _examples({"items": [_CONVERSATION_EXAMPLE], "next_cursor": None})
    items: list[ConversationOut]
    next_cursor: str | None


class MessageOut(BaseModel):
    model_config = _examples(
        {
            "key": "in:wamid.HBgN",
            "direction": "inbound",
            "author": "lead",
            "attendant": None,
            "kind": "text",
            "text": "Quanto custa o plano?",
            "status": None,
            "error": None,
            "intent": "pricing",
            "confidence": 0.82,
            "at": AT,
            "sent_at": None,
            "delivered_at": None,
            "read_at": None,
            "position": 1840,
        }
    )
    key: str
    direction: str
    author: str
    attendant: str | None
    kind: str | None
    text: str | None
    status: str | None = Field(description="Delivery status of an outbound message")
    error: str | None
    intent: str | None
    confidence: float | None
    at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    position: int


class NoteOut(BaseModel):
    model_config = _examples(
        {"id": "b1c2", "author": USER, "text": "Cliente antiga", "at": AT, "position": 1843}
    )
    id: str
    author: str | None
    text: str | None
    at: datetime
    position: int


class ConversationDetailOut(ConversationOut):
    model_config = _examples(
        {
            **_CONVERSATION_EXAMPLE,
            "handoff_summary": "Quer o plano anual",
            "messages": [],
            "older_messages": None,
            "notes": [],
        }
    )
    handoff_summary: str | None
    messages: list[MessageOut] = Field(description="The latest messages, oldest first")
    older_messages: str | None = Field(description="Set when older messages exist")
    notes: list[NoteOut] = Field(description="Private notes, never sent to the lead")


_LEAD_EXAMPLE: dict[str, Any] = {
    "id": LEAD,
    "name": "Maria",
    "phone": "5511911110001",
    "score": 55,
    "stage": "qualified",
    "conversations": 1,
    "messages_in": 4,
    "created_at": AT,
    "last_activity_at": AT,
    "position": 1842,
}


class LeadOut(BaseModel):
    model_config = _examples(_LEAD_EXAMPLE)
    id: UUID
    name: str | None
    phone: str | None
    score: int
    stage: str
    conversations: int
    messages_in: int
    created_at: datetime | None
    last_activity_at: datetime | None
    position: int


class LeadPage(BaseModel):
    model_config = _examples({"items": [_LEAD_EXAMPLE], "next_cursor": None})
    items: list[LeadOut]
    next_cursor: str | None


class LeadConversation(BaseModel):
    """A lead's conversation without its text (analysts read leads, not conversations)."""

    model_config = ConfigDict(from_attributes=True)
    id: UUID
    status: str
    channel: str | None
    assignee: str | None
    queue: str | None
    labels: list[str]
    last_message_at: datetime | None
    position: int


class LeadDetailOut(LeadOut):
    model_config = _examples(
        {
            **_LEAD_EXAMPLE,
            "conversation_list": [
                {
                    "id": CONVERSATION,
                    "status": "human",
                    "channel": "cloud",
                    "assignee": USER,
                    "queue": "vendas",
                    "labels": [],
                    "last_message_at": AT,
                    "position": 1842,
                }
            ],
        }
    )
    conversation_list: list[LeadConversation] = Field(description="Latest activity first")


class ResponseTimes(BaseModel):
    p50_s: float | None
    p90_s: float | None


class KpiFigures(BaseModel):
    day: date | None = Field(description="None for the range's totals")
    conversations: int
    inbound: int
    ai_replies: int
    human_replies: int
    handoffs: int
    handoff_rate: float | None
    ai_resolution_rate: float | None
    first_response_ai: ResponseTimes
    first_response_human: ResponseTimes
    avg_first_response_s: float | None
    avg_resolution_s: float | None
    resolved: int
    tokens_in: int
    tokens_out: int
    cost_usd: Decimal

    @classmethod
    def of(cls, k: queries.KpiDay) -> KpiFigures:
        c = k.counts
        return cls(
            day=k.day,
            conversations=c["conversations_started"],
            inbound=c["inbound"],
            ai_replies=c["ai_replies"],
            human_replies=c["human_replies"],
            handoffs=c["handoffs"],
            handoff_rate=k.handoff_rate,
            ai_resolution_rate=k.ai_resolution_rate,
            first_response_ai=ResponseTimes(
                p50_s=k.ai_first_response_p50_s, p90_s=k.ai_first_response_p90_s
            ),
            first_response_human=ResponseTimes(
                p50_s=k.human_first_response_p50_s, p90_s=k.human_first_response_p90_s
            ),
            avg_first_response_s=k.avg_first_response_s,
            avg_resolution_s=k.avg_resolution_s,
            resolved=c["resolved"],
            tokens_in=c["tokens_in"],
            tokens_out=c["tokens_out"],
            cost_usd=k.cost_usd,
        )


_KPI_EXAMPLE: dict[str, Any] = {
    "day": "2026-11-30",
    "conversations": 12,
    "inbound": 80,
    "ai_replies": 60,
    "human_replies": 9,
    "handoffs": 3,
    "handoff_rate": 0.25,
    "ai_resolution_rate": 0.7,
    "first_response_ai": {"p50_s": 2.1, "p90_s": 4.8},
    "first_response_human": {"p50_s": 95.0, "p90_s": 410.0},
    "avg_first_response_s": 12.4,
    "avg_resolution_s": 1800.0,
    "resolved": 7,
    "tokens_in": 52000,
    "tokens_out": 9100,
    "cost_usd": "0.0421",
}


class KpiReportOut(BaseModel):
    model_config = _examples(
        {
            "from": "2026-11-01",
            "to": "2026-11-30",
            "days": [_KPI_EXAMPLE],
            "totals": {**_KPI_EXAMPLE, "day": None},
        }
    )
    since: date = Field(alias="from")
    until: date = Field(alias="to")
    days: list[KpiFigures] = Field(description="The days with any figure, in order")
    totals: KpiFigures


_MEMBER_EXAMPLE: dict[str, Any] = {
    "id": USER,
    "email": "ana@imobiliaria.com.br",
    "name": "Ana",
    "role": "attendant",
    "disabled": False,
    "availability": "online",
    "availability_since": AT,
    "queues": ["vendas"],
    "open_conversations": 3,
    "last_assigned_at": AT,
    "position": 1799,
}


class MemberOut(BaseModel):
    model_config = _examples(_MEMBER_EXAMPLE)
    id: UUID
    email: str | None
    name: str | None
    role: str | None
    disabled: bool
    availability: str
    availability_since: datetime | None
    queues: list[str]
    open_conversations: int = Field(description="Conversations in human mode it holds")
    last_assigned_at: datetime | None
    position: int


class MemberPage(BaseModel):
    model_config = _examples({"items": [_MEMBER_EXAMPLE], "next_cursor": None})
    items: list[MemberOut]
    next_cursor: str | None


class QueueOut(BaseModel):
    model_config = _examples(
        {
            "id": "vendas",
            "name": "Vendas",
            "intents": ["pricing", "purchase"],
            "waiting": 2,
            "online": 1,
            "created_at": AT,
            "position": 1700,
        }
    )
    id: str
    name: str | None
    intents: list[str]
    waiting: int = Field(description="Conversations waiting in it for a person")
    online: int = Field(description="Enabled attendants of it who are online")
    created_at: datetime | None
    position: int


class CannedOut(BaseModel):
    model_config = _examples(
        {"shortcut": "ola", "text": "Olá! Em que posso ajudar?", "updated_at": AT, "position": 9}
    )
    shortcut: str
    text: str | None
    updated_at: datetime
    position: int


# ------------------------------------------------------------------ routes


def _assignee(raw: str | None) -> str | None:
    """`me`, `none` or a user id; anything else is the client's error (422)."""
    if raw is None or raw in (queries.ME, queries.NO_ASSIGNEE):
        return raw
    try:
        return str(UUID(raw))
    except ValueError as exc:
        raise HTTPException(422, "assignee is `me`, `none` or a user id") from exc


@router.get(
    "/conversations",
    response_model=ConversationPage,
    responses=ERRORS,
    summary="The tenant's conversations, latest activity first",
)
async def conversations(
    principal: Reader,
    request: Request,
    status: Annotated[Status | None, Query(description="Only this status")] = None,
    assignee: Annotated[
        str | None, Query(max_length=64, description="`me`, `none` or a user id")
    ] = None,
    label: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    queue: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> ConversationPage:
    """A page of conversations; follow `next_cursor` until it is null."""
    who = _assignee(assignee)
    async with reading(request, principal.tenant_id) as conn:
        page = await queries.list_conversations(
            conn,
            principal.tenant_id,
            status=status.value if status is not None else None,
            assignee=who,
            me=str(principal.subject_id),
            label=label.strip().lower() if label is not None else None,
            queue=queue,
            limit=limit,
            cursor=cursor,
            cipher=_cipher(request),
        )
    return ConversationPage(
        items=[ConversationOut.of(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationDetailOut,
    responses=NOT_FOUND,
    summary="One conversation with its messages, notes and handoff summary",
)
async def conversation(
    conversation_id: UUID, principal: Reader, request: Request
) -> ConversationDetailOut:
    """The conversation, its latest messages (with delivery status) and private notes."""
    async with reading(request, principal.tenant_id) as conn:
        found = await queries.get_conversation(
            conn, principal.tenant_id, conversation_id, cipher=_cipher(request)
        )
    if found is None:
        raise HTTPException(404, "no such conversation")
    return ConversationDetailOut(
        **ConversationOut.of(found.conversation).model_dump(),
        handoff_summary=found.summary,
        messages=[MessageOut.model_validate(m) for m in found.messages],
        older_messages=found.older_messages,
        notes=[NoteOut.model_validate(n) for n in found.notes],
    )


@router.get(
    "/queue",
    response_model=ConversationPage,
    responses=ERRORS,
    summary="Conversations waiting for a person, longest wait first",
)
async def waiting(
    principal: Reader,
    request: Request,
    queue: Annotated[
        str | None, Query(max_length=128, pattern=NO_NUL, description="Only this queue")
    ] = None,
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> ConversationPage:
    """The waiting line: who has waited longest comes first."""
    async with reading(request, principal.tenant_id) as conn:
        page = await queries.waiting_queue(
            conn,
            principal.tenant_id,
            queue=queue,
            limit=limit,
            cursor=cursor,
            cipher=_cipher(request),
        )
    return ConversationPage(
        items=[ConversationOut.of(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/leads", response_model=LeadPage, responses=ERRORS, summary="The tenant's leads, hottest first"
)
async def leads(
    principal: Everyone,
    request: Request,
    stage: Annotated[Stage | None, Query(description="Only this stage")] = None,
    min_score: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> LeadPage:
    """Leads by score, then latest activity."""
    async with reading(request, principal.tenant_id) as conn:
        page = await queries.list_leads(
            conn,
            principal.tenant_id,
            stage=stage.value if stage is not None else None,
            min_score=min_score,
            limit=limit,
            cursor=cursor,
            cipher=_cipher(request),
        )
    return LeadPage(
        items=[LeadOut.model_validate(item) for item in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/leads/{lead_id}",
    response_model=LeadDetailOut,
    responses=NOT_FOUND,
    summary="One lead with its conversations",
)
async def lead(lead_id: UUID, principal: Everyone, request: Request) -> LeadDetailOut:
    """The lead, and its conversations without their text."""
    async with reading(request, principal.tenant_id) as conn:
        found = await queries.get_lead(conn, principal.tenant_id, lead_id, cipher=_cipher(request))
    if found is None:
        raise HTTPException(404, "no such lead")
    return LeadDetailOut(
        **LeadOut.model_validate(found.lead).model_dump(),
        conversation_list=[LeadConversation.model_validate(c) for c in found.conversations],
    )


@router.get(
    "/kpis",
    response_model=KpiReportOut,
    response_model_by_alias=True,
    responses=ERRORS,
    summary="KPIs per day (UTC) and for the range",
)
async def kpis(
    principal: Steering,
    request: Request,
    since: Annotated[
        date | None, Query(alias="from", description="First day; default 29 days before `to`")
    ] = None,
    until: Annotated[date | None, Query(alias="to", description="Last day; default today")] = None,
) -> KpiReportOut:
    """Conversations, messages, handoff and AI resolution rates, first response times
    (median and p90, AI and attendants apart), resolution time, tokens and cost."""
    last = until or datetime.now(UTC).date()
    first = since or last - timedelta(days=29)
    if first > last:
        raise HTTPException(422, "`from` is after `to`")
    if (last - first).days >= MAX_KPI_DAYS:
        raise HTTPException(422, f"at most {MAX_KPI_DAYS} days at once")
    async with reading(request, principal.tenant_id) as conn:
        report = await queries.kpi_report(conn, principal.tenant_id, first, last)
    return KpiReportOut.model_validate(
        {
            "from": first,
            "to": last,
            "days": [KpiFigures.of(d) for d in report.days],
            "totals": KpiFigures.of(report.totals),
        }
    )


@router.get(
    "/users",
    response_model=MemberPage,
    responses=ERRORS,
    summary="The team: role, availability, queues and open conversations",
)
async def users(
    principal: Reader,
    request: Request,
    limit: Limit = queries.MAX_LIMIT,
    cursor: Cursor = None,
) -> MemberPage:
    """The tenant's users, oldest invitation first."""
    async with reading(request, principal.tenant_id) as conn:
        page = await queries.team(
            conn, principal.tenant_id, limit=limit, cursor=cursor, cipher=_cipher(request)
        )
    return MemberPage(
        items=[MemberOut.model_validate(m) for m in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/queues",
    response_model=list[QueueOut],
    responses=ERRORS,
    summary="The tenant's queues, with who waits and who is online in each",
)
async def queues(principal: Everyone, request: Request) -> list[QueueOut]:
    """Every queue by name."""
    async with reading(request, principal.tenant_id) as conn:
        found = await queries.list_queues(conn, principal.tenant_id)
    return [QueueOut.model_validate(q) for q in found]


@router.get(
    "/canned-responses",
    response_model=list[CannedOut],
    responses=ERRORS,
    summary="The tenant's canned responses (respostas prontas)",
)
async def canned_responses(
    principal: Reader,
    request: Request,
    prefix: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="Shortcuts starting so")
    ] = None,
) -> list[CannedOut]:
    """Canned responses by shortcut; an attendant's `/shortcut` expands to one."""
    async with reading(request, principal.tenant_id) as conn:
        found = await queries.list_canned_responses(conn, principal.tenant_id, prefix=prefix)
    return [CannedOut.model_validate(c) for c in found]
