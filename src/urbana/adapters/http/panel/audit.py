"""The auditor's screens: a data subject found by phone, its export (JSON or HTML
download), its erasure with a confirmation and the receipt, and the access log.

Each screen is one /v1/privacy call made as the signed-in user, so the API decides who
may (auditors and admins; anyone else gets its 403 as a page) and records every read in
the access log with the purpose the form asked for. The panel keeps no copy of what it
shows: a conversation's transcript here is read from the subject's export (the event
store), which is also what shows the `[erased]` text once the subject is erased (the
read models have no rows of it left then).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from urbana.adapters.http.panel.common import Api, me_who_may, page, team_of
from urbana.adapters.http.panel.session import PREFIX, OurForm
from urbana.adapters.http.panel.v1 import V1, PanelError, Refused

router = APIRouter(prefix=f"{PREFIX}/privacy", include_in_schema=False)

LOG_PAGE = 50
# The API's reason categories (never free text: the record of an erasure holds no
# personal data), as an auditor reads them.
REASONS = {
    "subject_request": "Pedido do titular",
    "consent_withdrawn": "Consentimento revogado",
    "purpose_fulfilled": "Finalidade cumprida",
    "legal_order": "Ordem legal ou judicial",
    "retention": "Prazo de retenção vencido",
}
REMOVED = {
    "conversations": "conversas",
    "messages": "mensagens",
    "notes": "notas privadas",
    "leads": "leads",
    "data_keys": "chaves de dados destruídas",
    "events_appended": "eventos registrados",
    "redis_keys": "chaves no Redis",
}
# The conversation events a transcript shows as messages, and who wrote them.
MESSAGE_EVENTS = {"MessageReceived", "OutboundMessageQueued", "NoteAdded"}

Purpose = Annotated[str, Query(min_length=1, max_length=200)]


def masked(phone: Any) -> str:
    """The phone with all but its last four digits hidden (`[erased]` stays as it is)."""
    text = str(phone or "")
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) < 8:
        return text or "—"
    return f"+{digits[:2]} {digits[2:4]} " + "•" * (len(digits) - 8) + f"-{digits[-4:]}"


def _footprint(subject: dict[str, Any]) -> dict[str, int]:
    """What an erasure destroys, as the subject lookup counts it."""
    conversations = subject["conversations"]
    return {
        "conversations": len(conversations),
        "messages": sum(int(c["messages"]) for c in conversations),
        "leads": 0 if subject["erased"] else 1,
    }


async def _auditor(v1: V1) -> dict[str, Any]:
    """Who is signed in, refused (403, as the API would) unless they may audit."""
    return await me_who_may(v1, "audit", "only auditors and admins handle data subject requests")


async def _screen(
    request: Request, v1: V1, me: dict[str, Any], template: str, **context: Any
) -> Response:
    status = context.pop("status_code", 200)
    return await page(
        request, v1, template, status_code=status, me=me, ERASE_REASONS=REASONS, **context
    )


async def _subject_screen(
    request: Request,
    v1: V1,
    me: dict[str, Any],
    subject: dict[str, Any] | None,
    *,
    phone: str,
    purpose: str,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """The search screen, with the subject found (and what erasing it would destroy)."""
    return await _screen(
        request,
        v1,
        me,
        "privacy.html",
        status_code=status_code,
        phone=phone,
        purpose=purpose,
        subject=subject,
        counts=_footprint(subject) if subject else None,
        masked=masked,
        error=error,
    )


@router.get("")
async def search(
    request: Request,
    v1: Api,
    phone: Annotated[str, Query(max_length=32)] = "",
    purpose: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    me = await _auditor(v1)
    subject, error, status = None, None, 200
    if phone.strip() and purpose.strip():
        try:
            subject = await v1.get("/privacy/subjects", phone=phone, purpose=purpose)
        except Refused:
            error, status = "Telefone em formato inválido.", 422
        except PanelError as exc:
            if exc.status != 404:
                raise
            error, status = "Nenhum titular com este telefone.", 404
    elif phone.strip() or purpose.strip():
        error, status = "Informe o telefone e a finalidade da consulta.", 422
    return await _subject_screen(
        request, v1, me, subject, phone=phone, purpose=purpose, error=error, status_code=status
    )


@router.get("/subjects/{lead_id}")
async def subject_page(request: Request, v1: Api, lead_id: UUID, purpose: Purpose) -> Response:
    me = await _auditor(v1)
    subject = await v1.get("/privacy/subjects", lead_id=lead_id, purpose=purpose)
    return await _subject_screen(request, v1, me, subject, phone="", purpose=purpose)


@router.get("/subjects/{lead_id}/export")
async def export(
    v1: Api,
    lead_id: UUID,
    purpose: Purpose,
    export_format: Annotated[str, Query(alias="format", pattern="^(json|html)$")] = "json",
) -> Response:
    await _auditor(v1)
    answer = await v1.fetch(
        "GET",
        f"/privacy/subjects/{lead_id}/export",
        params={"format": export_format, "purpose": purpose},
    )
    media = "application/json" if export_format == "json" else "text/html; charset=utf-8"
    name = f"titular-{lead_id}.{export_format}"
    return Response(
        answer.content,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/subjects/{lead_id}/conversations/{conversation_id}")
async def transcript(
    request: Request, v1: Api, lead_id: UUID, conversation_id: UUID, purpose: Purpose
) -> Response:
    """A conversation as the event store holds it (read through the subject's export)."""
    me = await _auditor(v1)
    exported = await v1.get(f"/privacy/subjects/{lead_id}/export", format="json", purpose=purpose)
    found = [c for c in exported["subject"]["conversations"] if c["id"] == str(conversation_id)]
    if not found:
        raise PanelError(404, "no such conversation of this subject")
    events = [e for e in exported["events"] if e["stream_id"] == str(conversation_id)]
    lines = [
        {
            "author": "note" if e["type"] == "NoteAdded" else e["data"].get("author", "lead"),
            "at": e["occurred_at"],
            "text": e["data"].get("text") or f"[{e['data'].get('kind') or 'mídia'}]",
        }
        for e in events
        if e["type"] in MESSAGE_EVENTS
    ]
    return await _screen(
        request,
        v1,
        me,
        "privacy_conversation.html",
        subject=exported["subject"],
        conversation=found[0],
        lines=lines,
        purpose=purpose,
    )


@router.get("/subjects/{lead_id}/erase")
async def confirm_erase(request: Request, v1: Api, lead_id: UUID, purpose: Purpose) -> Response:
    me = await _auditor(v1)
    subject = await v1.get("/privacy/subjects", lead_id=lead_id, purpose=purpose)
    return await _screen(
        request,
        v1,
        me,
        "privacy_erase.html",
        subject=subject,
        counts=_footprint(subject),
        phone=masked(subject["phone"]),
        purpose=purpose,
    )


@router.post("/subjects/{lead_id}/erase", dependencies=[OurForm])
async def erase(
    request: Request,
    v1: Api,
    lead_id: UUID,
    reason: Annotated[str, Form(max_length=40)],
    purpose: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    me = await _auditor(v1)
    receipt = await v1.post(f"/privacy/subjects/{lead_id}/erase", {"reason": reason})
    removed = [(REMOVED.get(k, k), n) for k, n in receipt["removed"].items()]
    return await _screen(
        request,
        v1,
        me,
        "privacy_receipt.html",
        receipt=receipt,
        removed=removed,
        purpose=purpose,
    )


@router.get("/access-log")
async def access_log(
    request: Request,
    v1: Api,
    cursor: Annotated[str, Query(max_length=512)] = "",
    lead_id: UUID | None = None,
) -> Response:
    me = await _auditor(v1)
    found = await v1.get("/privacy/access-log", limit=LOG_PAGE, cursor=cursor, lead_id=lead_id)
    _, names = await team_of(v1)
    return await _screen(
        request,
        v1,
        me,
        "privacy_log.html",
        entries=found["items"],
        next_cursor=found["next_cursor"],
        names=names,
        lead_id=lead_id,
    )
