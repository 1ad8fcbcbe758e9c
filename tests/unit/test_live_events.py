"""Store events as live events: types, fields (never personal data), and who sees them."""

from __future__ import annotations

from typing import Any

import pytest

from urbana.application.envelope import Envelope
from urbana.application.live import (
    CHANNEL_UPDATED,
    CONVERSATION_UPDATED,
    HANDOFF_REQUESTED,
    LEAD_UPDATED,
    LIVE_TYPES,
    MESSAGE_CREATED,
    live_event,
    visible_to,
)

TENANT = "6f1c2a4e-0000-4000-8000-000000000001"
STREAM = "6f1c2a4e-0000-4000-8000-0000000000aa"


def envelope(
    name: str, data: dict[str, Any], *, aggregate: str = "Conversation", tenant: str | None = TENANT
) -> Envelope:
    return Envelope(
        event_id="",
        type=name,
        aggregate=aggregate,
        schema_version=2,
        stream_id=STREAM,
        stream_version=3,
        position=42,
        tenant_id=tenant,
        occurred_at="2026-12-01T12:00:00+00:00",
        data={"tenant_id": tenant, **data},
        encrypted={"key_id": "k", "fields": ["text"], "ciphertext": "..."},
    )


def test_an_attendants_reply_is_a_message_by_a_human_with_the_attendant() -> None:
    event = live_event(
        envelope(
            "OutboundMessageQueued",
            {"lead_id": "L", "outbound_id": "o1", "author": "human", "attendant": "u1"},
        )
    )
    assert event is not None
    assert (event.id, event.type, event.tenant_id) == (42, MESSAGE_CREATED, TENANT)
    assert event.data == {
        "conversation_id": STREAM,
        "lead_id": "L",
        "outbound_id": "o1",
        "attendant": "u1",
        "author": "human",
    }


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("HandoffAccepted", {"attendant": "u1"}, {"status": "human", "assignee": "u1"}),
        (
            "ConversationAssigned",
            {"assignee": "u2", "by": "u9", "queue": "vendas"},
            {"status": "human", "assignee": "u2", "by": "u9", "queue": "vendas"},
        ),
        (
            "ConversationTransferred",
            {"to_user": None, "to_queue": "suporte", "by": "u1", "note_id": "n1"},
            {
                "status": "waiting_human",
                "assignee": None,
                "queue": "suporte",
                "by": "u1",
                "note_id": "n1",
            },
        ),
        (
            "ConversationTransferred",
            {"to_user": "u3", "to_queue": None, "by": "u1", "note_id": None},
            {"status": "human", "assignee": "u3", "queue": None, "by": "u1", "note_id": None},
        ),
        (
            "ReturnedToQueue",
            {"queue": "vendas", "reason": "inactivity"},
            {
                "status": "waiting_human",
                "assignee": None,
                "queue": "vendas",
                "reason": "inactivity",
            },
        ),
        (
            "ReturnedToAI",
            {"answered_seq": 4, "by": "u1"},
            {"status": "ai", "assignee": None, "by": "u1"},
        ),
        (
            "ConversationClosed",
            {"by": "u1", "resolution": "resolved"},
            {"status": "closed", "assignee": None, "by": "u1", "resolution": "resolved"},
        ),
        ("ConversationReopened", {}, {"status": "ai"}),
        (
            "LabelsChanged",
            {"added": ["vip"], "removed": [], "by": "u1"},
            {"added": ["vip"], "removed": [], "by": "u1"},
        ),
        ("NoteAdded", {"note_id": "n1", "author": "u1"}, {"note_id": "n1", "author": "u1"}),
        (
            "MessageRead",
            {"outbound_id": "o1", "at": "..."},
            {"outbound_id": "o1", "delivery": "read"},
        ),
    ],
)
def test_conversation_changes_are_conversation_updated(
    name: str, data: dict[str, Any], expected: dict[str, Any]
) -> None:
    event = live_event(envelope(name, data))
    assert event is not None
    assert event.type == CONVERSATION_UPDATED
    assert event.data == {"conversation_id": STREAM, **expected}


def test_a_handoff_carries_its_reason_but_not_its_summary() -> None:
    event = live_event(envelope("HandoffRequested", {"lead_id": "L", "reason": "lead_request"}))
    assert event is not None
    assert event.type == HANDOFF_REQUESTED
    assert event.data == {
        "conversation_id": STREAM,
        "lead_id": "L",
        "reason": "lead_request",
        "status": "waiting_human",
    }


def test_lead_events_are_lead_updated_with_score_and_stage() -> None:
    created = live_event(envelope("LeadCreated", {}, aggregate="Lead"))
    moved = live_event(
        envelope(
            "LeadStageChanged",
            {"from_stage": "new", "to_stage": "hot", "reason": "x", "by": "u1"},
            aggregate="Lead",
        )
    )
    assert created is not None
    assert moved is not None
    assert (created.type, created.data) == (
        LEAD_UPDATED,
        {"lead_id": STREAM, "score": 0, "stage": "new"},
    )
    assert moved.data == {"lead_id": STREAM, "from_stage": "new", "by": "u1", "stage": "hot"}


def test_a_channel_state_streams_without_its_qr_code() -> None:
    changed = live_event(
        envelope(
            "ChannelStateChanged", {"state": "waiting_qr", "reason": None}, aggregate="ChannelRoute"
        )
    )
    assert changed is not None
    assert changed.type == CHANNEL_UPDATED
    assert changed.data == {"channel_id": STREAM, "state": "waiting_qr", "reason": None}


def test_events_that_change_nothing_on_screen_or_have_no_tenant_are_not_live() -> None:
    assert live_event(envelope("AIReplyGenerated", {"text": "..."})) is None
    assert live_event(envelope("OutboundSendAttempted", {"attempt": 1})) is None
    assert live_event(envelope("TenantRegistered", {}, aggregate="Tenant")) is None
    assert live_event(envelope("MessageReceived", {"seq": 1}, tenant=None)) is None


def test_analysts_see_the_pipeline_only_and_unknown_roles_nothing() -> None:
    for role in ("attendant", "supervisor", "auditor"):
        assert [t for t in LIVE_TYPES if not visible_to(role, t)] == [CHANNEL_UPDATED]
    assert all(visible_to("admin", t) for t in LIVE_TYPES)
    assert [t for t in LIVE_TYPES if visible_to("analyst", t)] == [LEAD_UPDATED]
    assert not any(visible_to("intruder", t) for t in LIVE_TYPES)
