"""/v1 attendant commands on conversations and leads: assign, reply, notes, labels,
transfer, return to the AI, close, reopen, move a lead's stage.

Each route checks that the conversation (or lead) belongs to the caller's tenant before
it acts (another tenant's answers 404, as a missing one), then runs one application
command; the conversation's state machine decides what is allowed (a refusal is 409 or
422 problem+json and appends nothing). The synchronous store is called through the
process's store gate, in a worker thread, within the store wait: a store that does not
answer is a 503 with Retry-After. The acting user (the principal's subject id) is the
`by` or `attendant` of every event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from uuid import UUID

from fastapi import Header, HTTPException, Request
from pydantic import BaseModel, Field

from urbana.adapters.http.auth import Worker, v1_router
from urbana.adapters.http.common import ERRORS, container_of, examples, on_store, scoped
from urbana.application.access import Principal
from urbana.application.app import UrbanaApp
from urbana.domain.conversation import Conversation
from urbana.domain.errors import InvalidInput, NotFound
from urbana.domain.lead import Lead, Stage
from urbana.domain.reply import MAX_REPLY
from urbana.domain.tenant import Tenant
from urbana.domain.user import HOLDERS, OVERSEERS, User

router = v1_router(tags=["conversations"], responses=ERRORS)

R = TypeVar("R")

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="A retry with the same key finds the same message and appends nothing",
    ),
]


def tenant_user(app: UrbanaApp, tenant_id: UUID, user_id: UUID) -> str:
    """A user of the tenant named in a body (an assignee, a transfer's target), as an id."""
    try:
        user = scoped(app, User, user_id, tenant_id)
    except NotFound:
        raise InvalidInput(f"no user {user_id} in this tenant") from None
    if user.disabled:
        raise InvalidInput(f"user {user_id} is disabled")
    if user.role not in HOLDERS:
        raise InvalidInput(f"user {user_id} is an {user.role}: they do not hold conversations")
    return str(user.id)


def me(principal: Principal) -> str:
    return str(principal.subject_id)


class ConversationOut(BaseModel):
    model_config = examples(
        {
            "conversation_id": "3c5b8f0e-6a1d-4e59-9a2b-0f1e2d3c4b5a",
            "status": "human",
            "assignee": "0b8f6a3e-2a51-4c3e-9a43-1d2b3c4d5e6f",
            "queue": "e4d9a1c2-7b3f-5e60-8a91-2c3d4e5f6a7b",
            "labels": ["vip"],
        }
    )
    conversation_id: UUID
    status: str
    assignee: str | None
    queue: str | None
    labels: list[str]

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationOut:
        return cls(
            conversation_id=conversation.id,
            status=conversation.status.value,
            assignee=conversation.assignee,
            queue=conversation.queue,
            labels=list(conversation.labels),
        )


class AssignIn(BaseModel):
    model_config = examples({}, {"user_id": "0b8f6a3e-2a51-4c3e-9a43-1d2b3c4d5e6f"})
    user_id: UUID | None = Field(
        default=None, description="Who takes it; default the caller (others: supervisors, admins)"
    )


class MessageIn(BaseModel):
    model_config = examples({"text": "Olá! Sou a Ana, vou te ajudar."}, {"text": "/preco"})
    text: str = Field(min_length=1, max_length=MAX_REPLY, description="`/shortcut`s are expanded")


class MessageOut(BaseModel):
    model_config = examples({"outbound_id": "9a1f3c5e-0b2d-5e4f-8a6b-7c8d9e0f1a2b"})
    outbound_id: str


class NoteIn(BaseModel):
    model_config = examples({"text": "Cliente quer visitar o imóvel no sábado."})
    text: str = Field(min_length=1, max_length=MAX_REPLY)


class NoteOut(BaseModel):
    model_config = examples({"note_id": "5d2e7f10-3a4b-4c5d-8e9f-0a1b2c3d4e5f"})
    note_id: str


class LabelsIn(BaseModel):
    model_config = examples({"add": ["vip", "financiamento"], "remove": ["novo"]})
    add: list[str] = Field(default_factory=list, max_length=50)
    remove: list[str] = Field(default_factory=list, max_length=50)


class LabelsOut(BaseModel):
    model_config = examples({"labels": ["financiamento", "vip"]})
    labels: list[str]


class TransferIn(BaseModel):
    model_config = examples(
        {"to_queue": "e4d9a1c2-7b3f-5e60-8a91-2c3d4e5f6a7b", "note": "Dúvida de financiamento"},
        {"to_user": "0b8f6a3e-2a51-4c3e-9a43-1d2b3c4d5e6f"},
    )
    to_user: UUID | None = None
    to_queue: str | None = Field(default=None, max_length=100)
    note: str | None = Field(default=None, min_length=1, max_length=MAX_REPLY)


class TransferOut(ConversationOut):
    model_config = examples(
        {
            "conversation_id": "3c5b8f0e-6a1d-4e59-9a2b-0f1e2d3c4b5a",
            "status": "waiting_human",
            "assignee": None,
            "queue": "e4d9a1c2-7b3f-5e60-8a91-2c3d4e5f6a7b",
            "labels": [],
            "note_id": "5d2e7f10-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
        }
    )
    note_id: str | None


class CloseIn(BaseModel):
    model_config = examples({}, {"resolution": "sold"})
    resolution: str = Field(default="resolved", min_length=1, max_length=100)


class StageIn(BaseModel):
    model_config = examples({"stage": "qualified"})
    stage: Stage


class LeadOut(BaseModel):
    model_config = examples(
        {"lead_id": "7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2910", "stage": "qualified", "score": 45}
    )
    lead_id: UUID
    stage: Stage
    score: int


async def on_conversation(
    request: Request,
    principal: Principal,
    conversation_id: UUID,
    act: Callable[[UrbanaApp], R],
) -> R:
    """Check the conversation is the caller's tenant's, then run `act` (one command and
    what it reads) on the store, through the store gate; what `act` answers."""
    app = container_of(request).store.app

    def work() -> R:
        scoped(app, Conversation, conversation_id, principal.tenant_id)
        return act(app)

    return await on_store(request, work)


async def _act_on(
    request: Request,
    principal: Principal,
    conversation_id: UUID,
    act: Callable[[UrbanaApp], Any],
) -> ConversationOut:
    """Run one command on the tenant's conversation and answer its state afterwards."""

    def act_then_read(app: UrbanaApp) -> Conversation:
        act(app)
        return app.get(Conversation, conversation_id)

    done = await on_conversation(request, principal, conversation_id, act_then_read)
    return ConversationOut.of(done)


@router.post(
    "/conversations/{conversation_id}/assign",
    responses={409: {"description": "Someone else holds it, or it is closed"}},
    summary="Take a conversation (or give it to someone: supervisors, admins)",
)
async def assign(
    conversation_id: UUID, principal: Worker, request: Request, body: AssignIn | None = None
) -> ConversationOut:
    """The caller (or `user_id`) holds the conversation from now on; the AI falls silent.

    Assigning it to its holder again changes nothing; held by someone else: 409 (that is
    a transfer)."""
    target = body.user_id if body is not None else None
    if target is not None and target != principal.subject_id and principal.role not in OVERSEERS:
        raise HTTPException(403, "only supervisors and admins assign others")
    tenant_id, by = principal.tenant_id, me(principal)

    def take(app: UrbanaApp) -> None:
        assignee = tenant_user(app, tenant_id, target) if target is not None else by
        app.assign(conversation_id, assignee=assignee, by=by)

    return await _act_on(request, principal, conversation_id, take)


@router.post(
    "/conversations/{conversation_id}/messages",
    status_code=202,
    responses={
        409: {
            "description": "Not held by the caller, not in human mode, or outside WhatsApp's "
            "24-hour window (a template is needed)"
        },
    },
    summary="Reply to the lead",
)
async def reply(
    conversation_id: UUID,
    body: MessageIn,
    principal: Worker,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> MessageOut:
    """Queue the attendant's answer; the dispatcher sends it through the gateway (202).

    With an `Idempotency-Key`, a retry answers the same `outbound_id` and appends nothing.
    """
    now = container_of(request).clock.now()
    outbound_id = await on_conversation(
        request,
        principal,
        conversation_id,
        lambda app: app.attendant_reply(
            conversation_id,
            attendant=me(principal),
            text=body.text,
            idempotency_key=idempotency_key,
            now=now,
            as_supervisor=principal.role in OVERSEERS,
        ),
    )
    return MessageOut(outbound_id=outbound_id)


@router.post(
    "/conversations/{conversation_id}/notes",
    status_code=201,
    summary="Add a private note (never sent to the lead)",
)
async def add_note(
    conversation_id: UUID,
    body: NoteIn,
    principal: Worker,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> NoteOut:
    """A note for the attendants, sealed under the lead's key like every message."""
    note_id = await on_conversation(
        request,
        principal,
        conversation_id,
        lambda app: app.add_note(
            conversation_id, author=me(principal), text=body.text, idempotency_key=idempotency_key
        ),
    )
    return NoteOut(note_id=note_id)


@router.post(
    "/conversations/{conversation_id}/labels",
    summary="Add and remove labels",
)
async def change_labels(
    conversation_id: UUID, body: LabelsIn, principal: Worker, request: Request
) -> LabelsOut:
    """Only what really changes is recorded; the answer lists the labels afterwards."""
    labels = await on_conversation(
        request,
        principal,
        conversation_id,
        lambda app: app.change_labels(
            conversation_id, by=me(principal), add=body.add, remove=body.remove
        ),
    )
    return LabelsOut(labels=list(labels))


@router.post(
    "/conversations/{conversation_id}/transfer",
    responses={
        409: {"description": "Not held by the caller, or not with a person (ai, closed)"},
        422: {"description": "Neither a user nor a queue, or one this tenant does not have"},
    },
    summary="Transfer to another attendant or queue, with a note",
)
async def transfer(
    conversation_id: UUID, body: TransferIn, principal: Worker, request: Request
) -> TransferOut:
    """To a user it stays with a person; to a queue only, it waits there for one."""
    tenant_id = principal.tenant_id

    def work(app: UrbanaApp) -> tuple[Conversation, str | None]:
        to_user = tenant_user(app, tenant_id, body.to_user) if body.to_user else None
        if body.to_queue is not None and body.to_queue not in app.get(Tenant, tenant_id).queues:
            raise InvalidInput(f"no queue {body.to_queue} in this tenant")
        note_id = app.transfer(
            conversation_id,
            by=me(principal),
            to_user=to_user,
            to_queue=body.to_queue,
            note=body.note,
            as_supervisor=principal.role in OVERSEERS,
        )
        return app.get(Conversation, conversation_id), note_id

    conversation, note_id = await on_conversation(request, principal, conversation_id, work)
    return TransferOut(**ConversationOut.of(conversation).model_dump(), note_id=note_id)


@router.post(
    "/conversations/{conversation_id}/return-to-ai",
    summary="Give the conversation back to the AI",
)
async def return_to_ai(
    conversation_id: UUID, principal: Worker, request: Request
) -> ConversationOut:
    """The AI answers the lead's next message, knowing where the human stretch ended."""
    return await _act_on(
        request,
        principal,
        conversation_id,
        lambda app: app.return_to_ai(conversation_id, by=me(principal)),
    )


@router.post(
    "/conversations/{conversation_id}/close",
    summary="Close the conversation",
)
async def close(
    conversation_id: UUID, principal: Worker, request: Request, body: CloseIn | None = None
) -> ConversationOut:
    """Closed until the lead writes again or someone reopens it."""
    resolution = body.resolution if body is not None else "resolved"
    return await _act_on(
        request,
        principal,
        conversation_id,
        lambda app: app.close_conversation(
            conversation_id, by=me(principal), resolution=resolution
        ),
    )


@router.post(
    "/conversations/{conversation_id}/reopen",
    summary="Reopen a closed conversation",
)
async def reopen(conversation_id: UUID, principal: Worker, request: Request) -> ConversationOut:
    """The AI answers it again."""
    return await _act_on(
        request,
        principal,
        conversation_id,
        lambda app: app.reopen_conversation(conversation_id, by=me(principal)),
    )


@router.post(
    "/leads/{lead_id}/stage",
    responses={
        404: {"description": "No such lead in this tenant"},
        409: {"description": "The lead is already in that stage"},
    },
    tags=["leads"],
    summary="Move a lead in the pipeline",
)
async def move_stage(lead_id: UUID, body: StageIn, principal: Worker, request: Request) -> LeadOut:
    """A `LeadStageChanged` by the caller (forward or back)."""
    app, tenant_id = container_of(request).store.app, principal.tenant_id

    def work() -> Lead:
        scoped(app, Lead, lead_id, tenant_id)
        app.move_lead_stage(lead_id, stage=body.stage, by=me(principal))
        return app.get(Lead, lead_id)

    lead = await on_store(request, work)
    return LeadOut(lead_id=lead.id, stage=lead.stage, score=lead.score)
