"""The response models of the /v1 read routes, each with an OpenAPI example.

Built from the read-model query results (`urbana.projections.queries`), so a route
returns exactly what its model documents and schemathesis can check it.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from urbana.adapters.http.common import examples
from urbana.adapters.http.plans import PLAN_EXAMPLE, PlanUsageOut
from urbana.adapters.http.workspace_json import conversation_json
from urbana.projections import queries


def _examples(*given: dict[str, Any]) -> ConfigDict:
    return examples(*given, from_attributes=True)


CONVERSATION = "3d6f0e8a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
LEAD = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
USER = "0b8f6a3e-2a51-4c3e-9a43-1d2b3c4d5e6f"
AT = "2026-11-30T14:05:00Z"


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
        return cls.model_validate(conversation_json(c))


class ConversationPage(BaseModel):
    model_config = _examples({"items": [_CONVERSATION_EXAMPLE], "next_cursor": None})
    items: list[ConversationOut]
    next_cursor: str | None

    @classmethod
    def of(cls, page: queries.Page[queries.ConversationItem]) -> ConversationPage:
        return cls(items=[ConversationOut.of(c) for c in page.items], next_cursor=page.next_cursor)


class PassageOut(BaseModel):
    """A knowledge passage an AI reply was given, and how similar it was to the lead's words."""

    document_id: str | None
    document: str | None = Field(description="The knowledge document's name, when known")
    chunk_no: int
    title: str = Field(description="The passage's heading trail, or its first words")
    similarity: float = Field(description="Cosine similarity to the burst, higher is closer")


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
    passages: list[PassageOut] = Field(
        default_factory=list, description="An AI reply's knowledge passages (else empty)"
    )
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
    "over_plan_limit": False,
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
    over_plan_limit: bool = Field(description="Past the plan's monthly limit: not answered by AI")


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
            "plan": PLAN_EXAMPLE,
        }
    )
    since: date = Field(alias="from")
    until: date = Field(alias="to")
    days: list[KpiFigures] = Field(description="The days with any figure, in order")
    totals: KpiFigures
    plan: PlanUsageOut = Field(description="The plan and this month's new leads (São Paulo)")


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
