"""The MessageRef aggregate: statuses held until their message is known, each once."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from urbana.domain.errors import StaleStatus, StatusAlreadyHeld
from urbana.domain.message_ref import MessageRef

NOW = datetime.now(UTC)


def unknown_ref() -> MessageRef:
    return MessageRef(
        tenant_id=uuid4(),
        channel="cloud",
        provider_message_id=f"wamid.{uuid4().hex}",
        conversation_id=None,
        outbound_id=None,
    )


def test_a_status_already_held_is_refused_and_records_nothing() -> None:
    ref = unknown_ref()
    ref.hold_status(status="delivered", at=NOW, code=None, title=None)
    version = ref.version
    with pytest.raises(StatusAlreadyHeld):
        ref.hold_status(status="delivered", at=NOW, code=None, title=None)
    assert ref.version == version
    assert [e.__class__.__name__ for e in ref.collect_events()] == [
        "MessageRefRecorded",
        "StatusHeld",
    ]


def test_an_already_held_status_is_a_stale_status() -> None:
    assert issubclass(StatusAlreadyHeld, StaleStatus)


def test_each_distinct_status_is_held_once_and_handed_over_on_link() -> None:
    ref = unknown_ref()
    for status in ("sent", "delivered", "read", "delivered", "sent", "read"):
        try:
            ref.hold_status(status=status, at=NOW, code=None, title=None)
        except StatusAlreadyHeld:
            continue
    assert [h["status"] for h in ref.held] == ["sent", "delivered", "read"]
    handed = ref.link(conversation_id=uuid4(), outbound_id="ext:x")
    assert [h["status"] for h in handed] == ["sent", "delivered", "read"]
    assert ref.held == []
