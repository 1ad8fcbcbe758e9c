"""/v1 read routes of the workspace: conversations, the queue, leads, KPIs, the team.

Every answer comes from the read models, in one transaction on the read pool that
first checks the caller's credentials against current state, then drops to row-level
security on the caller's tenant (`allow_reading`, `TenantRead`), with personal text
decrypted on the way out; no aggregate is loaded. Another tenant's id is simply not
found (404). Who may read what: attendants, supervisors and admins work conversations,
auditors read everything; analysts see the pipeline (leads, KPIs, queues), never a
conversation's text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import HTTPException, Query, Request, Response

from urbana.adapters.http.audit import PurposeHeader, PurposeQuery, purpose_of, record_access
from urbana.adapters.http.auth import v1_router
from urbana.adapters.http.common import Responses, container_of, route_errors
from urbana.adapters.http.plans import plan_usage
from urbana.adapters.http.tenant_reads import Everyone, Reader, Steering, TenantRead
from urbana.adapters.http.workspace_json import conversation_page_json
from urbana.adapters.http.workspace_models import (
    CannedOut,
    ConversationDetailOut,
    ConversationOut,
    ConversationPage,
    KpiFigures,
    KpiReportOut,
    LeadConversation,
    LeadDetailOut,
    LeadOut,
    LeadPage,
    MemberOut,
    MemberPage,
    MessageOut,
    NoteOut,
    QueueOut,
)
from urbana.application.access import Principal
from urbana.application.ports import SubjectCipher
from urbana.domain.conversation import Status
from urbana.domain.lead import Stage
from urbana.projections import queries

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
ERRORS: Responses = {
    400: {"description": "A cursor this API did not write"},
    **route_errors(
        "The caller's role may not read this",
        {422: {"description": "A query parameter out of its range or format"}},
        unavailable="The read models cannot be reached; retry after Retry-After",
    ),
}
router = v1_router(tags=["workspace"], responses=ERRORS)
NOT_FOUND: Responses = {404: {"description": "No such resource in the caller's tenant"}}


def _cipher(request: Request) -> SubjectCipher:
    return container_of(request).store.cipher


async def _conversation_page(
    read: TenantRead,
    request: Request,
    query: Callable[..., Awaitable[queries.Page[queries.ConversationItem]]],
    **filters: Any,
) -> Response:
    """A page of conversations read with `query`, answered as its JSON (see `workspace_json`)."""
    page = await read.run(query, **filters, cipher=_cipher(request))
    return Response(conversation_page_json(page), media_type="application/json")


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
    summary="The tenant's conversations, latest activity first",
)
async def conversations(
    read: Reader,
    request: Request,
    status: Annotated[Status | None, Query(description="Only this status")] = None,
    assignee: Annotated[
        str | None, Query(max_length=64, description="`me`, `none` or a user id")
    ] = None,
    label: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    queue: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """A page of conversations; follow `next_cursor` until it is null."""
    return await _conversation_page(
        read,
        request,
        queries.list_conversations,
        status=status.value if status is not None else None,
        assignee=_assignee(assignee),
        me=str(read.principal.subject_id),
        label=label.strip().lower() if label is not None else None,
        queue=queue,
        limit=limit,
        cursor=cursor,
    )


@router.get(
    "/conversations/{conversation_id}",
    responses=NOT_FOUND,
    summary="One conversation with its messages, notes and handoff summary",
)
async def conversation(
    conversation_id: UUID,
    read: Reader,
    request: Request,
    purpose: PurposeQuery = None,
    x_purpose: PurposeHeader = None,
) -> ConversationDetailOut:
    """The conversation, its latest messages (with delivery status) and private notes.

    The read is recorded in the access log (the lead's text is answered in clear)."""
    found = await read.run(queries.get_conversation, conversation_id, cipher=_cipher(request))
    if found is None:
        raise HTTPException(404, "no such conversation")
    return await disclosed(request, read.principal, found, purpose_of(purpose, x_purpose))


async def disclosed(
    request: Request,
    principal: Principal,
    found: queries.ConversationDetail,
    purpose: str | None,
) -> ConversationDetailOut:
    """One conversation as the API shows it (here and on the console route): its text is
    in clear, so the read is first recorded in the access log."""
    await record_access(
        request,
        principal,
        lead_id=found.conversation.lead_id,
        resource=found.conversation.id,
        purpose=purpose,
    )
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
    summary="Conversations waiting for a person, longest wait first",
)
async def waiting(
    read: Reader,
    request: Request,
    queue: Annotated[
        str | None, Query(max_length=128, pattern=NO_NUL, description="Only this queue")
    ] = None,
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """The waiting line: who has waited longest comes first."""
    return await _conversation_page(
        read, request, queries.waiting_queue, queue=queue, limit=limit, cursor=cursor
    )


@router.get("/leads", summary="The tenant's leads, hottest first")
async def leads(
    read: Everyone,
    request: Request,
    stage: Annotated[Stage | None, Query(description="Only this stage")] = None,
    min_score: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> LeadPage:
    """Leads by score, then latest activity."""
    page = await read.run(
        queries.list_leads,
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
    responses=NOT_FOUND,
    summary="One lead with its conversations",
)
async def lead(lead_id: UUID, read: Everyone, request: Request) -> LeadDetailOut:
    """The lead, and its conversations without their text."""
    found = await read.run(queries.get_lead, lead_id, cipher=_cipher(request))
    if found is None:
        raise HTTPException(404, "no such lead")
    return LeadDetailOut(
        **LeadOut.model_validate(found.lead).model_dump(),
        conversation_list=[LeadConversation.model_validate(c) for c in found.conversations],
    )


@router.get(
    "/kpis",
    response_model_by_alias=True,
    summary="KPIs per day (UTC) and for the range",
)
async def kpis(
    read: Steering,
    request: Request,
    since: Annotated[
        date | None, Query(alias="from", description="First day; default 29 days before `to`")
    ] = None,
    until: Annotated[date | None, Query(alias="to", description="Last day; default today")] = None,
) -> KpiReportOut:
    """Conversations, messages, handoff and AI resolution rates, first response times
    (median and p90, AI and attendants apart), resolution time, tokens and cost."""
    last = until or datetime.now(UTC).date()
    # 29 days back, but never before the first representable day (`to=0001-01-01`).
    first = since or last - min(timedelta(days=29), last - date.min)
    if first > last:
        raise HTTPException(422, "`from` is after `to`")
    if (last - first).days >= MAX_KPI_DAYS:
        raise HTTPException(422, f"at most {MAX_KPI_DAYS} days at once")
    report = await read.run(queries.kpi_report, first, last)
    return KpiReportOut.model_validate(
        {
            "from": first,
            "to": last,
            "days": [KpiFigures.of(d) for d in report.days],
            "totals": KpiFigures.of(report.totals),
            "plan": await plan_usage(request, read.principal.tenant_id),
        }
    )


@router.get(
    "/users",
    summary="The team: role, availability, queues and open conversations",
)
async def users(
    read: Reader,
    request: Request,
    limit: Limit = queries.MAX_LIMIT,
    cursor: Cursor = None,
) -> MemberPage:
    """The tenant's users, oldest invitation first."""
    page = await read.run(queries.team, limit=limit, cursor=cursor, cipher=_cipher(request))
    return MemberPage(
        items=[MemberOut.model_validate(m) for m in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/queues",
    summary="The tenant's queues, with who waits and who is online in each",
)
async def queues(read: Everyone, request: Request) -> list[QueueOut]:
    """Every queue by name."""
    found = await read.run(queries.list_queues)
    return [QueueOut.model_validate(q) for q in found]


@router.get(
    "/canned-responses",
    summary="The tenant's canned responses (respostas prontas)",
)
async def canned_responses(
    read: Reader,
    request: Request,
    prefix: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="Shortcuts starting so")
    ] = None,
) -> list[CannedOut]:
    """Canned responses by shortcut; an attendant's `/shortcut` expands to one."""
    found = await read.run(queries.list_canned_responses, prefix=prefix)
    return [CannedOut.model_validate(c) for c in found]
