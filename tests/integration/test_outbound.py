"""Outbound commands on the real store: attempts, reconciliation from a status's callback
data, the dead letters and their retry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from tests.helpers import ai_reply

from urbana.adapters.postgres.store import Store
from urbana.application.app import (
    ReceiveMessage,
    RecordStatus,
    callback_data_for,
    parse_callback_data,
)
from urbana.application.channels import DeliveryStatus, InboundMessage, StatusUpdate
from urbana.domain.conversation import Conversation
from urbana.domain.errors import InvalidTransition
from urbana.domain.outbound import Delivery

pytestmark = pytest.mark.integration


def _now() -> datetime:
    return datetime.now(UTC)


def _queued(store: Store) -> tuple[UUID, UUID, str]:
    """A tenant, a conversation with one inbound message, and the AI's reply queued."""
    app = store.app
    tid, _ = app.register_tenant(f"Outbound {uuid4().hex[:8]}")
    phone = f"55119{uuid4().int % 10**8:08d}"
    got = app.receive_message(
        ReceiveMessage(
            tid,
            "cloud",
            InboundMessage(
                provider_message_id=f"wamid.{uuid4().hex}",
                contact=phone,
                phone=phone,
                sent_at=_now(),
                kind="text",
                text="oi",
            ),
        )
    )
    out = ai_reply(
        app, got.conversation_id, reply_to_seq=1, text="Olá!", intent="greeting", confidence=0.9
    )
    return tid, got.conversation_id, out


def _status(tid: UUID, wamid: str, status: DeliveryStatus, callback: str | None) -> RecordStatus:
    return RecordStatus(tid, "cloud", StatusUpdate(wamid, status, _now(), callback_data=callback))


def _names(store: Store, stream: UUID) -> list[str]:
    return [type(e).__name__ for e in store.app.stream(stream)]


def test_callback_data_names_the_conversation_and_the_outbound_message() -> None:
    conversation = uuid4()
    assert parse_callback_data(callback_data_for(conversation, "o-1")) == (conversation, "o-1")
    assert parse_callback_data("not ours") is None
    assert parse_callback_data(None) is None


def test_a_status_with_our_callback_data_marks_an_attempted_message_sent(store: Store) -> None:
    app = store.app
    tid, cid, out = _queued(store)
    assert app.record_send_attempt(cid, out, _now()) == 1
    callback = callback_data_for(cid, out)
    # The send's answer never came back; Meta's statuses do, in any order.
    results = app.record_statuses(
        [
            _status(tid, "wamid.LOST", DeliveryStatus.DELIVERED, callback),
            _status(tid, "wamid.LOST", DeliveryStatus.SENT, callback),
        ]
    )
    assert results == ["applied", "stale"]
    conv = app.get(Conversation, cid)
    assert conv.delivery(out) is Delivery.DELIVERED
    names = _names(store, cid)
    assert names[-3:] == ["OutboundSendAttempted", "OutboundMessageSent", "MessageDelivered"]
    sent: Any = next(e for e in app.stream(cid) if type(e).__name__ == "OutboundMessageSent")
    assert sent.provider_message_id == app.provider_key(tid, "cloud", "wamid.LOST")
    # The dispatcher's own mark_sent, arriving late, changes nothing.
    app.mark_sent(cid, out, "wamid.LOST")
    assert _names(store, cid) == names


def test_callback_data_of_another_tenant_or_an_unknown_message_is_only_held(
    store: Store,
) -> None:
    app = store.app
    tid, cid, out = _queued(store)
    other, _ = app.register_tenant(f"Other {uuid4().hex[:8]}")
    before = _names(store, cid)
    assert app.record_statuses(
        [
            _status(other, "wamid.X1", DeliveryStatus.SENT, callback_data_for(cid, out)),
            _status(tid, "wamid.X2", DeliveryStatus.SENT, callback_data_for(cid, "nope")),
            _status(tid, "wamid.X3", DeliveryStatus.SENT, "garbage"),
        ]
    ) == ["held", "held", "held"]
    assert _names(store, cid) == before
    assert app.get(Conversation, cid).delivery(out) is Delivery.QUEUED


def test_failed_messages_are_listed_and_a_retry_queues_them_again(store: Store) -> None:
    app = store.app
    tid, cid, out = _queued(store)
    app.record_send_attempt(cid, out, _now())
    app.mark_failed(cid, out, "gave up after 9 attempt(s): cloud: HTTP 500", "500")
    (failed,) = app.failed_outbounds(tid)
    assert (failed.conversation_id, failed.outbound_id, failed.author) == (cid, out, "ai")
    assert (failed.reason, failed.code, failed.retryable) == (
        "gave up after 9 attempt(s): cloud: HTTP 500",
        "500",
        True,
    )
    assert app.failed_outbounds(uuid4()) == []
    app.retry_outbound(cid, out, by="ops")
    assert app.failed_outbounds(tid) == []
    assert app.get(Conversation, cid).delivery(out) is Delivery.QUEUED
    with pytest.raises(InvalidTransition):
        app.retry_outbound(cid, out, by="ops")


def test_a_message_the_gateway_took_and_then_failed_is_listed_as_not_retryable(
    store: Store,
) -> None:
    app = store.app
    tid, cid, out = _queued(store)
    app.mark_sent(cid, out, "wamid.TAKEN")
    app.record_statuses(
        [
            RecordStatus(
                tid,
                "cloud",
                StatusUpdate(
                    "wamid.TAKEN",
                    DeliveryStatus.FAILED,
                    _now(),
                    error_code="131026",
                    error_title="Message undeliverable",
                ),
            )
        ]
    )
    (failed,) = app.failed_outbounds(tid)
    assert (failed.reason, failed.code, failed.retryable) == (
        "Message undeliverable",
        "131026",
        False,
    )
    assert failed.refusal == "the gateway accepted it and reported it undeliverable"
