"""/v1 console routes: an admin talks to the tenant's bot as a lead would (the panel's
Testar, `urbana chat`).

A console message takes the webhooks' path: it is normalised into an `InboundMessage`
of the `console` channel and committed by the same group committer, so the relay, the
AI responder and the dispatcher handle it as any lead's (see docs/architecture.md,
The console channel). The answer is 202 once the message is durable; the bot's reply
and why it said it (intent, confidence, the knowledge passages, a handoff's reason)
are read from the conversation view, here or through `/v1/conversations/{id}` and
`/v1/stream`. Each session is its own contact, so its own conversation and lead.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from uuid import UUID, uuid4

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field

from urbana.adapters.http.auth import Admin, v1_router
from urbana.adapters.http.common import container_of, examples, route_errors
from urbana.adapters.http.reads import ERRORS as READ_ERRORS
from urbana.adapters.http.reads import disclosed
from urbana.adapters.http.tenant_reads import reading
from urbana.adapters.http.workspace import IdempotencyKey
from urbana.adapters.http.workspace_models import ConversationDetailOut
from urbana.application.app import Received, ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.domain.channels import CONSOLE
from urbana.domain.errors import DomainError
from urbana.domain.reply import MAX_REPLY
from urbana.errors import Rejected
from urbana.projections import queries

router = v1_router(tags=["console"])

SESSION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CONTACT_NAME = "Teste (console)"
ERRORS = route_errors(
    "Only admins test the bot",
    {422: {"description": "The message is malformed: nothing is recorded (problem+json)"}},
)


class ConsoleMessageIn(BaseModel):
    model_config = examples(
        {"text": "Qual o horário de atendimento?"},
        {"text": "E o endereço?", "session": "3f9a0c5e2b7d4e18"},
    )
    text: str = Field(min_length=1, max_length=MAX_REPLY, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$")
    session: str | None = Field(
        default=None,
        pattern=SESSION_PATTERN,
        description="Continue this session's conversation; omitted, a new session starts",
    )


class ConsoleMessageOut(BaseModel):
    model_config = examples(
        {
            "conversation_id": "6f1c2d3e-4a5b-5c6d-8e7f-9a0b1c2d3e4f",
            "session": "3f9a0c5e2b7d4e18",
            "seq": 1,
            "duplicate": False,
        }
    )
    conversation_id: UUID
    session: str
    seq: int = Field(description="The message's number in the conversation (`in:<seq>`)")
    duplicate: bool = Field(description="An `Idempotency-Key` seen before: nothing appended")


def _provider_id(session: str, idempotency_key: str | None) -> str:
    """A console message's provider id: from the retry key when given, so a retry dedupes."""
    if idempotency_key is None:
        return f"console.{uuid4().hex}"
    digest = hashlib.sha256(f"{session}\x00{idempotency_key}".encode()).hexdigest()[:32]
    return f"console.{digest}"


@router.post(
    "/console/messages",
    status_code=202,
    responses=ERRORS,
    summary="Say something to the tenant's bot, as a lead would",
)
async def console_message(
    body: ConsoleMessageIn,
    principal: Admin,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> ConsoleMessageOut:
    """Record the message as a console lead's (202 once durable); the reply follows."""
    session = body.session or uuid4().hex[:16]
    message = InboundMessage(
        provider_message_id=_provider_id(session, idempotency_key),
        contact=f"console:{session}",
        phone=None,
        sent_at=datetime.now(UTC),
        kind="text",
        text=body.text,
        contact_name=CONTACT_NAME,
    )
    command = ReceiveMessage(principal.tenant_id, CONSOLE, message)
    outcome = await container_of(request).ingestor.committer.submit(command)
    if isinstance(outcome, DomainError):
        raise Rejected(422, str(outcome))
    assert isinstance(outcome, Received)  # a ReceiveMessage's outcome
    return ConsoleMessageOut(
        conversation_id=outcome.conversation_id,
        session=session,
        seq=outcome.seq,
        duplicate=outcome.duplicate,
    )


@router.get(
    "/console/conversations/{conversation_id}",
    responses={**READ_ERRORS, 404: {"description": "No such console conversation here"}},
    summary="A console conversation: the bot's replies and why it gave them",
)
async def console_conversation(
    conversation_id: UUID, principal: Admin, request: Request
) -> ConversationDetailOut:
    """The conversation as the conversation view holds it: every AI reply with its intent,
    confidence and knowledge passages; the handoff reason and summary. Only console
    conversations: a lead's is read through `/v1/conversations/{id}`."""
    async with reading(request, principal.tenant_id) as conn:
        found = await queries.get_conversation(
            conn, principal.tenant_id, conversation_id, cipher=container_of(request).store.cipher
        )
    if found is None or found.conversation.channel != CONSOLE:
        raise HTTPException(404, "no such console conversation")
    return await disclosed(request, principal, found, "console")
