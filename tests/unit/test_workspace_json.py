"""The list routes' JSON (`conversation_page_json`) is `ConversationPage.of(page)`'s,
byte for byte: what the response model documents and schemathesis checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4
from zoneinfo import ZoneInfo

import orjson
import pytest

from urbana.adapters.http.workspace_json import conversation_page_json
from urbana.adapters.http.workspace_models import ConversationPage
from urbana.projections import queries

AT = datetime(2026, 11, 30, 14, 5, 7, 123456, tzinfo=UTC)


def item(**changes: object) -> queries.ConversationItem:
    base = queries.ConversationItem(
        id=uuid4(),
        tenant_id=uuid4(),
        lead_id=uuid4(),
        channel="cloud",
        status="waiting_human",
        contact_name="Maria da Conceição",
        lead_score=42,
        lead_stage="qualified",
        assignee=str(uuid4()),
        queue="vendas",
        labels=["vip", "renovar"],
        unread=3,
        waiting_since=AT,
        assigned_at=AT + timedelta(minutes=1),
        last_inbound_at=AT,
        last_intent="pricing",
        last_confidence=0.87,
        last_message_at=AT,
        last_message_direction="inbound",
        last_message_author="lead",
        last_message_kind="text",
        last_message_preview='Olá! "Quanto" custa?\n\u2028 </script> 🙂',
        handoff_reason="hot_lead",
        handoffs=1,
        inbound_count=5,
        outbound_count=4,
        started_at=AT - timedelta(days=1),
        closed_at=None,
        updated_at=AT,
        position=1840,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


ZONES = [
    UTC,
    ZoneInfo("UTC"),
    ZoneInfo("Europe/London"),  # a zero offset that is not UTC
    ZoneInfo("America/Sao_Paulo"),
    timezone(timedelta(hours=5, minutes=30)),
]


@pytest.mark.parametrize("zone", ZONES, ids=str)
def test_a_page_is_written_as_its_model_writes_it(zone: timezone) -> None:
    local = AT.astimezone(zone)
    items = [
        item(),
        item(last_message_at=None, last_message_preview=None),  # no last message
        item(
            lead_id=None,
            channel=None,
            contact_name=None,
            lead_score=None,
            lead_stage=None,
            assignee=None,
            queue=None,
            labels=[],
            waiting_since=None,
            assigned_at=None,
            last_inbound_at=None,
            handoff_reason=None,
            started_at=None,
            updated_at=None,
            closed_at=local,
        ),
        item(
            last_message_at=local.replace(microsecond=0),
            waiting_since=local.replace(microsecond=120000),
            position=2**62,
        ),
    ]
    for page in (queries.Page(items, "opaque-cursor"), queries.Page([], None)):
        expected = ConversationPage.of(page).model_dump_json().encode()
        assert conversation_page_json(page) == expected
        ConversationPage.model_validate(orjson.loads(conversation_page_json(page)))
