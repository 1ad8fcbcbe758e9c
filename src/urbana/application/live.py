"""What attendants see change live: store events as the stream's event types.

`live_event` turns one public envelope into a `LiveEvent` (or None for the events an
attendant's screen does not change on). Its `id` is the event's global position, so a
client that reconnects with `Last-Event-ID` names exactly where it stopped. `data` is
built from a list of fields per event type, never copied: ids, status, assignee,
author, counts, score and stage; no personal data (names, phones, text), which clients
fetch from the API, where reads are access-controlled and logged.

Events are matched by their stored name (`Aggregate.Event`), so event types another
part of the system adds (assignment, transfer, labels...) are streamed as soon as they
exist, without importing their classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from urbana.application.envelope import Envelope
from urbana.domain.lead import Stage
from urbana.domain.user import Role

CONVERSATION_UPDATED = "conversation.updated"
MESSAGE_CREATED = "message.created"
HANDOFF_REQUESTED = "handoff.requested"
LEAD_UPDATED = "lead.updated"
CHANNEL_UPDATED = "channel.updated"  # a channel's link state (see docs: Channel state)
LIVE_TYPES = (
    CONVERSATION_UPDATED,
    MESSAGE_CREATED,
    HANDOFF_REQUESTED,
    LEAD_UPDATED,
    CHANNEL_UPDATED,
)

_WORKSPACE = frozenset({CONVERSATION_UPDATED, MESSAGE_CREATED, HANDOFF_REQUESTED, LEAD_UPDATED})
# Analysts work on the pipeline, not on conversations; only admins manage channels.
# `Role` is a StrEnum, so a role given as its plain string finds its entry too.
ROLE_SEES: Mapping[str, frozenset[str]] = {
    Role.ATTENDANT: _WORKSPACE,
    Role.SUPERVISOR: _WORKSPACE,
    Role.ADMIN: frozenset(LIVE_TYPES),
    Role.AUDITOR: _WORKSPACE,
    Role.ANALYST: frozenset({LEAD_UPDATED}),
}


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One server-sent event: `id` is the global position of the event it comes from."""

    id: int
    type: str  # one of LIVE_TYPES
    tenant_id: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing happened for a while; `position` is where the subscriber stands."""

    position: int


def visible_to(role: str, live_type: str) -> bool:
    """Whether a principal of `role` receives events of `live_type` (unknown roles: none)."""
    return live_type in ROLE_SEES.get(str(role), frozenset())


Fields = Callable[[Envelope], dict[str, Any]]


def _pick(envelope: Envelope, *names: str) -> dict[str, Any]:
    data = envelope.data
    return {name: data[name] for name in names if name in data}


def _conversation(*names: str, **fixed: Any) -> Fields:
    def fields(envelope: Envelope) -> dict[str, Any]:
        return {"conversation_id": envelope.stream_id, **_pick(envelope, *names), **fixed}

    return fields


def _delivery(state: str) -> Fields:
    return _conversation("outbound_id", delivery=state)


def _lead(*names: str, **renamed: str) -> Fields:
    def fields(envelope: Envelope) -> dict[str, Any]:
        data = envelope.data
        out = {"lead_id": envelope.stream_id, **_pick(envelope, *names)}
        out.update({new: data[old] for new, old in renamed.items() if old in data})
        return out

    return fields


def _assigned(envelope: Envelope) -> dict[str, Any]:
    out = _conversation("by", "queue", status="human")(envelope)
    out["assignee"] = envelope.data.get("assignee", envelope.data.get("attendant"))
    return out


def _transferred(envelope: Envelope) -> dict[str, Any]:
    # To a person: that person holds it. To a queue alone: it waits there for one.
    data = envelope.data
    to_user = data.get("to_user")
    return {
        "conversation_id": envelope.stream_id,
        "status": "human" if to_user else "waiting_human",
        "assignee": to_user,
        "queue": data.get("to_queue"),
        **_pick(envelope, "by", "note_id"),
    }


def _message(author: str | None) -> Fields:
    def fields(envelope: Envelope) -> dict[str, Any]:
        out = _conversation("lead_id", "outbound_id", "seq", "kind", "attendant")(envelope)
        out["author"] = author or envelope.data.get("author")
        return out

    return fields


# By stored name. Events left out (AIReplyGenerated, OutboundSendAttempted, ...) change
# nothing an attendant sees: the AI's reply shows up as its OutboundMessageQueued.
_MAP: dict[str, tuple[str, Fields]] = {
    "Conversation.ConversationStarted": (
        CONVERSATION_UPDATED,
        _conversation("lead_id", "channel", status="ai"),
    ),
    "Conversation.MessageReceived": (MESSAGE_CREATED, _message("lead")),
    "Conversation.OutboundMessageQueued": (MESSAGE_CREATED, _message(None)),
    "Conversation.HandoffRequested": (
        HANDOFF_REQUESTED,
        _conversation("lead_id", "reason", "queue", status="waiting_human"),
    ),
    "Conversation.HandoffAccepted": (CONVERSATION_UPDATED, _assigned),
    "Conversation.ConversationAssigned": (CONVERSATION_UPDATED, _assigned),
    "Conversation.ConversationTransferred": (CONVERSATION_UPDATED, _transferred),
    "Conversation.ReturnedToQueue": (
        CONVERSATION_UPDATED,
        _conversation("queue", "reason", status="waiting_human", assignee=None),
    ),
    "Conversation.ReturnedToAI": (
        CONVERSATION_UPDATED,
        _conversation("by", status="ai", assignee=None),
    ),
    "Conversation.ConversationClosed": (
        CONVERSATION_UPDATED,
        _conversation("by", "resolution", status="closed", assignee=None),
    ),
    "Conversation.ConversationReopened": (
        CONVERSATION_UPDATED,
        _conversation("by", status="ai"),
    ),
    "Conversation.LabelsChanged": (CONVERSATION_UPDATED, _conversation("added", "removed", "by")),
    "Conversation.NoteAdded": (CONVERSATION_UPDATED, _conversation("note_id", "author")),
    "Conversation.OutboundMessageSent": (CONVERSATION_UPDATED, _delivery("sent")),
    "Conversation.OutboundMessageFailed": (CONVERSATION_UPDATED, _delivery("failed")),
    "Conversation.OutboundMessageCancelled": (CONVERSATION_UPDATED, _delivery("cancelled")),
    "Conversation.MessageDelivered": (CONVERSATION_UPDATED, _delivery("delivered")),
    "Conversation.MessageRead": (CONVERSATION_UPDATED, _delivery("read")),
    "Lead.LeadCreated": (LEAD_UPDATED, _lead()),
    "Lead.LeadScored": (LEAD_UPDATED, _lead("score", "delta")),
    "Lead.LeadStageChanged": (LEAD_UPDATED, _lead("from_stage", "by", stage="to_stage")),
    "Lead.LeadProfileUpdated": (LEAD_UPDATED, _lead()),
    # The state only: the QR code stays sealed (admins read it from GET /v1/channels).
    "ChannelRoute.ChannelStateChanged": (
        CHANNEL_UPDATED,
        lambda e: {"channel_id": e.stream_id, **_pick(e, "state", "reason")},
    ),
}

LIVE_SOURCES = frozenset(_MAP)
"""The stored event names that become live events (what a log reader needs to decode)."""


def live_event(envelope: Envelope) -> LiveEvent | None:
    """The live event of one envelope; None when it changes nothing on screen or has no tenant."""
    entry = _MAP.get(f"{envelope.aggregate}.{envelope.type}")
    if entry is None or envelope.tenant_id is None:
        return None
    live_type, fields = entry
    data = fields(envelope)
    if envelope.type == "LeadCreated":  # a new lead starts at the bottom of the pipeline
        data.update(score=0, stage=Stage.NEW.value)
    return LiveEvent(envelope.position, live_type, envelope.tenant_id, data)
