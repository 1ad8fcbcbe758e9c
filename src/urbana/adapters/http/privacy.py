"""/v1/privacy: data subject requests (LGPD) for auditors.

Find a subject by phone, lead id or contact id; export every event of it (JSON or a
Portuguese transcript in HTML), recorded as `SubjectDataExported`; read the access log.
Auditors and admins may (an admin may do everything in the tenant, and every read is
logged with who did it). Lookup and export answer a subject's personal data in clear,
so each is recorded in the access log before it is answered (see `audit`). Another
tenant's subject is not found (404), an unknown one too; neither appends anything.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from urbana.adapters.http.audit import PurposeHeader, PurposeQuery, purpose_of, record_access
from urbana.adapters.http.auth import Auditor, v1_router
from urbana.adapters.http.common import Responses, container_of, examples
from urbana.adapters.http.reads import ERRORS as READ_ERRORS
from urbana.adapters.http.reads import NO_NUL, Cursor, Limit
from urbana.adapters.http.tenant_reads import reading
from urbana.adapters.postgres import access_log
from urbana.adapters.postgres.subjects import PostgresSubjectStreams
from urbana.adapters.transcript import TranscriptRenderer, export_json
from urbana.application.privacy import SubjectQuery, SubjectRequests
from urbana.projections import queries

router = v1_router(tags=["privacy"])

ERRORS: Responses = {
    **READ_ERRORS,
    404: {"description": "No such data subject in the caller's tenant"},
    422: {"description": "Not exactly one of phone, lead_id, contact_id, or a malformed one"},
    503: {"description": "The store or the access log did not answer; retry after Retry-After"},
}


class ConversationOut(BaseModel):
    id: UUID
    channel: str
    contact: Any = Field(description="The address on the channel; `[erased]` once erased")
    started_at: str
    last_event_at: str
    events: int
    messages: int


class SubjectOut(BaseModel):
    """A data subject (a lead) and every conversation of it, on every channel."""

    model_config = examples(
        {
            "tenant_id": "3f1c1e0e-5f6a-5b7c-8d9e-0a1b2c3d4e5f",
            "lead_id": "9b2d6c1a-4e3f-5a6b-8c7d-1e2f3a4b5c6d",
            "key": "phone:5511987654321",
            "phone": "5511987654321",
            "name": "Joana Prado",
            "score": 40,
            "stage": "qualified",
            "created_at": "2026-12-01T12:00:00.000000+00:00",
            "erased": False,
            "conversations": [
                {
                    "id": "0c8e7d6f-5a4b-5c3d-9e2f-1a0b9c8d7e6f",
                    "channel": "cloud",
                    "contact": "5511987654321",
                    "started_at": "2026-12-01T12:00:00.000000+00:00",
                    "last_event_at": "2026-12-01T12:05:00.000000+00:00",
                    "events": 9,
                    "messages": 4,
                }
            ],
            "message_refs": 4,
        }
    )

    tenant_id: UUID
    lead_id: UUID
    key: Any = Field(description="`phone:<digits>`, `lid:<id>` or `bsuid:<id>`")
    phone: Any
    name: Any
    score: int
    stage: str
    created_at: str
    erased: bool = Field(description="The subject's key is gone: personal fields read `[erased]`")
    conversations: list[ConversationOut]
    message_refs: int = Field(description="How many provider message ids index its messages")


class ExportedEventOut(BaseModel):
    position: int = Field(description="Global position in the event store (commit order)")
    stream_id: UUID
    aggregate: str
    type: str
    schema_version: int
    stream_version: int
    occurred_at: str
    data: dict[str, Any] = Field(description="The event's data, personal fields decrypted")


class ExportOut(BaseModel):
    """`format=json`: the portable document of everything stored about the subject."""

    export_version: Literal[1]
    tenant_id: UUID
    lead_id: UUID
    exported_at: datetime
    exported_by: str
    role: str
    purpose: str | None
    subject: SubjectOut
    events: list[ExportedEventOut]


class AccessEntryOut(BaseModel):
    model_config = examples(
        {
            "id": "5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c",
            "at": "2026-12-02T09:30:00Z",
            "actor": "7a6b5c4d-3e2f-5a1b-9c8d-7e6f5a4b3c2d",
            "actor_kind": "user",
            "role": "auditor",
            "lead_id": "9b2d6c1a-4e3f-5a6b-8c7d-1e2f3a4b5c6d",
            "resource": "9b2d6c1a-4e3f-5a6b-8c7d-1e2f3a4b5c6d",
            "route": "GET /v1/privacy/subjects/{lead_id}/export",
            "purpose": "LGPD art. 18, pedido 123",
        }
    )

    id: UUID
    at: datetime
    actor: str = Field(description="The user id or API key id that read")
    actor_kind: str
    role: str
    lead_id: UUID | None
    resource: str = Field(description="The conversation or lead read")
    route: str = Field(description="Method and route template, e.g. `GET /v1/conversations/{id}`")
    purpose: str | None


class AccessLogPage(BaseModel):
    items: list[AccessEntryOut]
    next_cursor: str | None


def _requests(request: Request) -> SubjectRequests:
    """The process's SubjectRequests, made on first use."""
    made: SubjectRequests | None = getattr(request.app.state, "subject_requests", None)
    if made is None:
        container = container_of(request)
        store, settings = container.store, container.settings
        streams = PostgresSubjectStreams(store.pool, store.schema, settings.store_wait_s)
        made = SubjectRequests(store.app, streams, store.cipher, container.clock)
        request.app.state.subject_requests = made
    return made


def _renderer(request: Request) -> TranscriptRenderer:
    made: TranscriptRenderer | None = getattr(request.app.state, "transcripts", None)
    if made is None:
        made = request.app.state.transcripts = TranscriptRenderer()
    return made


@router.get(
    "/privacy/subjects",
    responses=ERRORS,
    summary="Find a data subject by phone, lead id or contact id",
)
async def find_subject(
    principal: Auditor,
    request: Request,
    phone: Annotated[
        str | None,
        Query(
            max_length=32,
            pattern=NO_NUL,
            description="Either Brazilian mobile form, with or without +55",
        ),
    ] = None,
    lead_id: Annotated[UUID | None, Query()] = None,
    contact_id: Annotated[
        str | None,
        Query(
            max_length=128,
            pattern=NO_NUL,
            description="A gateway contact: phone JID, `...@lid` or `bsuid:...`",
        ),
    ] = None,
    purpose: PurposeQuery = None,
    x_purpose: PurposeHeader = None,
) -> SubjectOut:
    """The lead and every conversation of it, read from the event store (decrypted)."""
    query = SubjectQuery(phone=phone, lead_id=lead_id, contact_id=contact_id)
    subject = await asyncio.to_thread(_requests(request).find, principal.tenant_id, query)
    await record_access(
        request,
        principal,
        lead_id=subject.lead_id,
        resource=subject.lead_id,
        purpose=purpose_of(purpose, x_purpose),
    )
    return SubjectOut.model_validate(subject.as_dict())


@router.get(
    "/privacy/subjects/{lead_id}/export",
    response_class=Response,
    responses={
        **ERRORS,
        200: {
            "description": "The export: JSON (`format=json`) or an HTML transcript",
            "model": ExportOut,
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
    },
    summary="Export every event of a data subject, decrypted (recorded as SubjectDataExported)",
)
async def export_subject(
    lead_id: UUID,
    principal: Auditor,
    request: Request,
    export_format: Annotated[
        Literal["json", "html"], Query(alias="format", description="json or html")
    ] = "json",
    purpose: PurposeQuery = None,
    x_purpose: PurposeHeader = None,
) -> Response:
    """The lead's, its conversations' and its message refs' events in commit order, with
    type, time, stream and version; personal fields decrypted (`[erased]` once erased)."""
    why = purpose_of(purpose, x_purpose)
    done = await asyncio.to_thread(
        _requests(request).export,
        principal.tenant_id,
        SubjectQuery(lead_id=lead_id),
        by=str(principal.subject_id),
        role=principal.role.value,
        purpose=why,
        rendering=export_format,
    )
    await record_access(request, principal, lead_id=lead_id, resource=lead_id, purpose=why)
    if export_format == "html":
        page = await asyncio.to_thread(_renderer(request).html, done)
        return HTMLResponse(page)
    body = await asyncio.to_thread(export_json, done)
    return Response(body, media_type="application/json")


@router.get(
    "/privacy/access-log",
    responses={k: v for k, v in ERRORS.items() if k != 404},
    summary="Who read which subject's data, when and why (newest first)",
)
async def read_access_log(
    principal: Auditor,
    request: Request,
    lead_id: Annotated[UUID | None, Query(description="Only reads of this subject")] = None,
    since: Annotated[
        datetime | None, Query(alias="from", description="From this time (inclusive)")
    ] = None,
    until: Annotated[
        datetime | None, Query(alias="to", description="Up to this time (exclusive)")
    ] = None,
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> AccessLogPage:
    """A page of the tenant's access log; follow `next_cursor` until it is null."""
    for moment in (since, until):
        if moment is not None and moment.tzinfo is None:
            raise HTTPException(422, "`from` and `to` need a time zone (e.g. Z)")
    if since is not None and until is not None and since > until:
        raise HTTPException(422, "`from` is after `to`")
    async with reading(request, principal.tenant_id) as conn:
        page = await access_log.entries(
            conn,
            principal.tenant_id,
            lead_id=lead_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    return AccessLogPage(
        items=[AccessEntryOut.model_validate(e, from_attributes=True) for e in page.items],
        next_cursor=page.next_cursor,
    )
