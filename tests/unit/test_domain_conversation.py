"""The Conversation aggregate: state machine, bursts, delivery and the send gate."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from urbana.domain.contacts import conversation_id_for
from urbana.domain.conversation import MAX_TEXT, Conversation, Status
from urbana.domain.errors import (
    AIReplyNotAllowed,
    BurstAlreadyAnswered,
    DomainError,
    InvalidInput,
    InvalidTransition,
    StaleStatus,
    UnknownMessage,
)
from urbana.domain.outbound import Delivery

NOW = datetime.now(UTC)


# ------------------------------------------------------------------ helpers


def started() -> Conversation:
    conv = Conversation.start(
        tenant_id=uuid4(), channel="cloud", contact="5511988887777", lead_id=uuid4()
    )
    conv.collect_events()
    return conv


def receive(conv: Conversation, *, at: datetime | None = None, text: str = "oi") -> None:
    conv.receive(
        provider_message_id=f"wamid.{uuid4().hex}", kind="text", sent_at=at or NOW, text=text
    )


def ai_reply(
    conv: Conversation, outbound_id: str = "ai-1", reply_to_seq: int | None = None
) -> None:
    conv.record_ai_reply(
        outbound_id=outbound_id,
        reply_to_seq=conv.inbound_seq if reply_to_seq is None else reply_to_seq,
        text="Olá! Como posso ajudar?",
        intent="greeting",
        confidence=0.9,
    )


def in_status(status: Status) -> Conversation:
    """A conversation with one inbound message, driven into `status`."""
    conv = started()
    receive(conv)
    if status in (Status.WAITING_HUMAN, Status.HUMAN):
        conv.request_handoff(reason="asked for a human")
    if status is Status.HUMAN:
        conv.accept_handoff(attendant="ana")
    if status is Status.CLOSED:
        conv.close(by="ana")
    conv.collect_events()
    assert conv.status is status
    return conv


def names(events: Sequence[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def state(conv: Conversation) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in vars(conv).items() if k != "_pending_events"})


def assert_refused(
    conv: Conversation, error: type[DomainError], command: Callable[[], object]
) -> None:
    """The command raises `error`, records nothing and leaves the state as it was."""
    assert conv.pending_events == []
    before = state(conv)
    with pytest.raises(error):
        command()
    assert conv.collect_events() == []
    assert state(conv) == before


# -------------------------------------------------------------- transitions


def test_start_records_conversation_started_in_ai_mode() -> None:
    tenant, lead = uuid4(), uuid4()
    conv = Conversation.start(
        tenant_id=tenant, channel="zapi", contact="551188887777", lead_id=lead
    )
    assert names(conv.collect_events()) == ["ConversationStarted"]
    assert conv.status is Status.AI
    assert conv.id == conversation_id_for(tenant, "zapi", "5511988887777")


def test_start_rejects_unknown_channel() -> None:
    with pytest.raises(InvalidInput):
        Conversation.start(tenant_id=uuid4(), channel="telegram", contact="x@lid", lead_id=uuid4())


def test_request_handoff_moves_ai_to_waiting_human() -> None:
    conv = in_status(Status.AI)
    conv.request_handoff(reason="intent:complaint", summary="quer cancelar")
    assert names(conv.collect_events()) == ["HandoffRequested"]
    assert conv.status is Status.WAITING_HUMAN
    assert conv.handoffs == 1


def test_accept_handoff_moves_waiting_human_to_human() -> None:
    conv = in_status(Status.WAITING_HUMAN)
    conv.accept_handoff(attendant="ana")
    assert names(conv.collect_events()) == ["HandoffAccepted"]
    assert conv.status is Status.HUMAN
    assert conv.assignee == "ana"


def test_accept_handoff_straight_from_ai() -> None:
    conv = in_status(Status.AI)
    conv.accept_handoff(attendant="ana")
    assert names(conv.collect_events()) == ["HandoffAccepted"]
    assert conv.status is Status.HUMAN


def test_return_to_ai_moves_human_to_ai() -> None:
    conv = in_status(Status.HUMAN)
    conv.return_to_ai()
    assert names(conv.collect_events()) == ["ReturnedToAI"]
    assert conv.status is Status.AI
    assert conv.assignee is None


def test_return_to_ai_from_waiting_human_withdraws_the_handoff() -> None:
    conv = in_status(Status.WAITING_HUMAN)
    conv.return_to_ai()
    assert names(conv.collect_events()) == ["ReturnedToAI"]
    assert conv.status is Status.AI


@pytest.mark.parametrize("status", [Status.AI, Status.WAITING_HUMAN, Status.HUMAN])
def test_close_from_every_open_status(status: Status) -> None:
    conv = in_status(status)
    conv.close(by="ana", resolution="resolved")
    assert names(conv.collect_events()) == ["ConversationClosed"]
    assert conv.status is Status.CLOSED
    assert conv.assignee is None


def test_inbound_message_reopens_closed_conversation_in_ai_mode() -> None:
    conv = in_status(Status.CLOSED)
    receive(conv, text="voltei")
    assert names(conv.collect_events()) == ["ConversationReopened", "MessageReceived"]
    assert conv.status is Status.AI


def test_reopened_conversation_keeps_the_last_messages_as_context() -> None:
    conv = in_status(Status.CLOSED)
    receive(conv, text="voltei")
    assert [m["text"] for m in conv.history if m["role"] == "lead"] == ["oi", "voltei"]


def test_close_covers_the_pending_burst() -> None:
    conv = in_status(Status.AI)
    conv.close(by="system")
    assert conv.pending_burst == 0


def test_reopening_inbound_opens_a_burst_of_one() -> None:
    conv = in_status(Status.CLOSED)
    receive(conv)
    assert conv.pending_burst == 1


REFUSED_TRANSITIONS: list[tuple[Status, str, Callable[[Conversation], object]]] = [
    (Status.WAITING_HUMAN, "request_handoff", lambda c: c.request_handoff(reason="again")),
    (Status.HUMAN, "request_handoff", lambda c: c.request_handoff(reason="again")),
    (Status.CLOSED, "request_handoff", lambda c: c.request_handoff(reason="again")),
    (Status.HUMAN, "accept_handoff", lambda c: c.accept_handoff(attendant="bia")),
    (Status.CLOSED, "accept_handoff", lambda c: c.accept_handoff(attendant="bia")),
    (Status.AI, "return_to_ai", lambda c: c.return_to_ai()),
    (Status.CLOSED, "return_to_ai", lambda c: c.return_to_ai()),
    (Status.CLOSED, "close", lambda c: c.close(by="ana")),
    (
        Status.AI,
        "attendant_reply",
        lambda c: c.attendant_reply(now=NOW, outbound_id="h-1", attendant="ana", text="oi"),
    ),
    (
        Status.WAITING_HUMAN,
        "attendant_reply",
        lambda c: c.attendant_reply(now=NOW, outbound_id="h-1", attendant="ana", text="oi"),
    ),
    (
        Status.CLOSED,
        "attendant_reply",
        lambda c: c.attendant_reply(now=NOW, outbound_id="h-1", attendant="ana", text="oi"),
    ),
    (
        Status.HUMAN,
        "queue_system_message",
        lambda c: c.queue_system_message(outbound_id="s-1", text="aguarde"),
    ),
    (
        Status.CLOSED,
        "queue_system_message",
        lambda c: c.queue_system_message(outbound_id="s-1", text="aguarde"),
    ),
]


@pytest.mark.parametrize(
    ("status", "command"),
    [(s, c) for s, _, c in REFUSED_TRANSITIONS],
    ids=[f"{n}-in-{s.value}" for s, n, _ in REFUSED_TRANSITIONS],
)
def test_transition_not_allowed_from_status_is_refused(
    status: Status, command: Callable[[Conversation], object]
) -> None:
    conv = in_status(status)
    assert_refused(conv, InvalidTransition, lambda: command(conv))


def test_handoff_requires_a_reason() -> None:
    conv = in_status(Status.AI)
    assert_refused(conv, InvalidInput, lambda: conv.request_handoff(reason=""))


def test_accept_handoff_requires_an_attendant() -> None:
    conv = in_status(Status.WAITING_HUMAN)
    assert_refused(conv, InvalidInput, lambda: conv.accept_handoff(attendant=""))


def test_attendant_reply_is_queued_as_human() -> None:
    conv = in_status(Status.HUMAN)
    conv.attendant_reply(now=NOW, outbound_id="h-1", attendant="ana", text="Oi, sou a Ana")
    assert names(conv.collect_events()) == ["OutboundMessageQueued"]
    assert conv.message("h-1").author == "human"
    assert conv.delivery("h-1") is Delivery.QUEUED


def test_attendant_reply_requires_text() -> None:
    conv = in_status(Status.HUMAN)
    assert_refused(
        conv,
        InvalidInput,
        lambda: conv.attendant_reply(now=NOW, outbound_id="h-1", attendant="ana", text=" "),
    )


# ------------------------------------------------------------------ inbound


def test_receive_counts_inbound_messages() -> None:
    conv = started()
    receive(conv)
    receive(conv)
    assert names(conv.collect_events()) == ["MessageReceived", "MessageReceived"]
    assert conv.inbound_seq == 2
    assert conv.pending_burst == 2


@pytest.mark.parametrize("status", [Status.WAITING_HUMAN, Status.HUMAN])
def test_inbound_is_recorded_while_a_human_owns_the_conversation(status: Status) -> None:
    conv = in_status(status)
    receive(conv)
    assert names(conv.collect_events()) == ["MessageReceived"]
    assert conv.status is status


def test_media_message_needs_no_text() -> None:
    conv = started()
    conv.receive(provider_message_id="wamid.1", kind="image", sent_at=NOW, media_url="https://x")
    assert names(conv.collect_events()) == ["MessageReceived"]


BAD_RECEIVES: dict[str, dict[str, Any]] = {
    "no-provider-id": {"provider_message_id": "", "kind": "text", "sent_at": NOW, "text": "oi"},
    "no-kind": {"provider_message_id": "w", "kind": "", "sent_at": NOW, "text": "oi"},
    "naive-sent-at": {
        "provider_message_id": "w",
        "kind": "text",
        "sent_at": datetime(2025, 1, 1, 12, 0),  # naive on purpose
        "text": "oi",
    },
    "text-missing": {"provider_message_id": "w", "kind": "text", "sent_at": NOW},
    "text-blank": {"provider_message_id": "w", "kind": "text", "sent_at": NOW, "text": "  "},
    "text-too-long": {
        "provider_message_id": "w",
        "kind": "text",
        "sent_at": NOW,
        "text": "a" * (MAX_TEXT + 1),
    },
    "caption-too-long": {
        "provider_message_id": "w",
        "kind": "image",
        "sent_at": NOW,
        "text": "a" * (MAX_TEXT + 1),
    },
}


@pytest.mark.parametrize("kwargs", list(BAD_RECEIVES.values()), ids=list(BAD_RECEIVES))
def test_malformed_inbound_is_invalid_input(kwargs: dict[str, Any]) -> None:
    conv = in_status(Status.AI)
    assert_refused(conv, InvalidInput, lambda: conv.receive(**kwargs))


def test_malformed_inbound_does_not_reopen_a_closed_conversation() -> None:
    conv = in_status(Status.CLOSED)
    assert_refused(
        conv,
        InvalidInput,
        lambda: conv.receive(provider_message_id="w", kind="text", sent_at=NOW, text=""),
    )


def test_inbound_from_a_new_address_updates_the_contact() -> None:
    conv = started()
    conv.receive(
        provider_message_id="w", kind="text", sent_at=NOW, text="oi", contact="123456789@lid"
    )
    received: Any
    (received,) = conv.collect_events()
    assert received.contact == "123456789@lid"
    assert conv.contact == "123456789@lid"


def test_inbound_from_the_known_address_records_no_contact() -> None:
    conv = started()
    conv.receive(provider_message_id="w", kind="text", sent_at=NOW, text="oi", contact=conv.contact)
    received: Any
    (received,) = conv.collect_events()
    assert received.contact is None


# ----------------------------------------------------------------- AI reply


def test_ai_reply_records_the_reply_and_queues_it() -> None:
    conv = in_status(Status.AI)
    ai_reply(conv)
    assert names(conv.collect_events()) == ["AIReplyGenerated", "OutboundMessageQueued"]
    assert conv.pending_burst == 0
    assert conv.delivery("ai-1") is Delivery.QUEUED
    assert conv.message("ai-1").author == "ai"


@pytest.mark.parametrize("status", [Status.WAITING_HUMAN, Status.HUMAN, Status.CLOSED])
def test_ai_never_replies_unless_in_ai_mode(status: Status) -> None:
    conv = in_status(status)
    if status is not Status.CLOSED:
        receive(conv)
        conv.collect_events()
    assert_refused(conv, AIReplyNotAllowed, lambda: ai_reply(conv))


@pytest.mark.parametrize("status", [Status.WAITING_HUMAN, Status.HUMAN, Status.CLOSED])
def test_ai_reply_cannot_be_rejected_unless_in_ai_mode(status: Status) -> None:
    conv = in_status(status)
    assert_refused(
        conv,
        AIReplyNotAllowed,
        lambda: conv.reject_ai_reply(reply_to_seq=conv.inbound_seq, text="x", reason="guard"),
    )


def test_second_ai_reply_to_the_same_burst_is_refused() -> None:
    conv = in_status(Status.AI)
    ai_reply(conv, "ai-1")
    conv.collect_events()
    assert_refused(conv, BurstAlreadyAnswered, lambda: ai_reply(conv, "ai-2"))


def test_ai_reply_to_an_earlier_part_of_an_answered_burst_is_refused() -> None:
    conv = in_status(Status.AI)
    receive(conv)
    ai_reply(conv, "ai-1", reply_to_seq=2)
    conv.collect_events()
    assert_refused(conv, BurstAlreadyAnswered, lambda: ai_reply(conv, "ai-2", reply_to_seq=1))


def test_ai_reply_after_the_burst_was_rejected_is_refused() -> None:
    conv = in_status(Status.AI)
    conv.reject_ai_reply(reply_to_seq=1, text="resposta ruim", reason="guard")
    assert names(conv.collect_events()) == ["AIReplyRejected"]
    assert_refused(conv, BurstAlreadyAnswered, lambda: ai_reply(conv))


def test_rejecting_an_answered_burst_is_refused() -> None:
    conv = in_status(Status.AI)
    ai_reply(conv)
    conv.collect_events()
    assert_refused(
        conv,
        BurstAlreadyAnswered,
        lambda: conv.reject_ai_reply(reply_to_seq=1, text="x", reason="guard"),
    )


def test_new_inbound_message_opens_a_new_burst() -> None:
    conv = in_status(Status.AI)
    ai_reply(conv, "ai-1")
    receive(conv)
    assert conv.pending_burst == 1
    ai_reply(conv, "ai-2")
    assert conv.answered_seq == 2


def test_ai_reply_covers_the_whole_burst() -> None:
    conv = in_status(Status.AI)
    receive(conv)
    receive(conv)
    ai_reply(conv, reply_to_seq=3)
    assert conv.pending_burst == 0


@pytest.mark.parametrize("beyond", [2, 99])
def test_ai_reply_to_a_message_not_received_is_invalid_input(beyond: int) -> None:
    conv = in_status(Status.AI)
    assert_refused(conv, InvalidInput, lambda: ai_reply(conv, reply_to_seq=beyond))


def test_ai_reply_rejection_beyond_received_is_invalid_input() -> None:
    conv = in_status(Status.AI)
    assert_refused(
        conv, InvalidInput, lambda: conv.reject_ai_reply(reply_to_seq=2, text="x", reason="g")
    )


def test_ai_reply_without_any_inbound_message_is_refused() -> None:
    conv = started()
    assert_refused(conv, BurstAlreadyAnswered, lambda: ai_reply(conv, reply_to_seq=0))
    assert_refused(conv, InvalidInput, lambda: ai_reply(conv, reply_to_seq=1))


@pytest.mark.parametrize("confidence", [-0.01, 1.01, float("nan")])
def test_ai_reply_confidence_outside_unit_interval_is_invalid_input(confidence: float) -> None:
    conv = in_status(Status.AI)
    assert_refused(
        conv,
        InvalidInput,
        lambda: conv.record_ai_reply(
            outbound_id="ai-1", reply_to_seq=1, text="oi", intent="x", confidence=confidence
        ),
    )


@pytest.mark.parametrize("text", ["", "   ", "a" * (MAX_TEXT + 1)])
def test_ai_reply_text_must_be_present_and_bounded(text: str) -> None:
    conv = in_status(Status.AI)
    assert_refused(
        conv,
        InvalidInput,
        lambda: conv.record_ai_reply(
            outbound_id="ai-1", reply_to_seq=1, text=text, intent="x", confidence=0.5
        ),
    )


def test_ai_reply_requires_an_outbound_id() -> None:
    conv = in_status(Status.AI)
    assert_refused(conv, InvalidInput, lambda: ai_reply(conv, outbound_id=""))


def test_ai_reply_with_an_existing_outbound_id_is_invalid_input() -> None:
    conv = in_status(Status.AI)
    ai_reply(conv, "ai-1")
    receive(conv)
    conv.collect_events()
    assert_refused(conv, InvalidInput, lambda: ai_reply(conv, "ai-1"))


# ------------------------------------------------------------ system messages


@pytest.mark.parametrize("status", [Status.AI, Status.WAITING_HUMAN])
def test_system_message_is_queued_while_no_human_owns_the_thread(status: Status) -> None:
    conv = in_status(status)
    conv.queue_system_message(outbound_id="s-1", text="Vou chamar um atendente.")
    assert names(conv.collect_events()) == ["OutboundMessageQueued"]
    assert conv.message("s-1").author == "system"


def test_system_message_requires_text() -> None:
    conv = in_status(Status.AI)
    assert_refused(
        conv, InvalidInput, lambda: conv.queue_system_message(outbound_id="s-1", text="")
    )


# ------------------------------------------------------------------ delivery


def queued(outbound_id: str = "ai-1") -> Conversation:
    conv = in_status(Status.AI)
    ai_reply(conv, outbound_id)
    conv.collect_events()
    return conv


def test_delivery_moves_forward_queued_sent_delivered_read() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    assert conv.delivery("ai-1") is Delivery.SENT
    conv.mark_delivered(outbound_id="ai-1", at=NOW)
    assert conv.delivery("ai-1") is Delivery.DELIVERED
    conv.mark_read(outbound_id="ai-1", at=NOW)
    assert conv.delivery("ai-1") is Delivery.READ
    assert names(conv.collect_events()) == [
        "OutboundMessageSent",
        "MessageDelivered",
        "MessageRead",
    ]


def test_read_may_arrive_without_delivered() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.mark_read(outbound_id="ai-1", at=NOW)
    assert conv.delivery("ai-1") is Delivery.READ


def test_delivered_after_read_is_stale() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.mark_read(outbound_id="ai-1", at=NOW)
    conv.collect_events()
    assert_refused(conv, StaleStatus, lambda: conv.mark_delivered(outbound_id="ai-1", at=NOW))


def test_sent_twice_is_stale() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.collect_events()
    assert_refused(
        conv, StaleStatus, lambda: conv.mark_sent(outbound_id="ai-1", provider_message_id="w2")
    )


def test_delivered_twice_is_stale() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.mark_delivered(outbound_id="ai-1", at=NOW)
    conv.collect_events()
    assert_refused(conv, StaleStatus, lambda: conv.mark_delivered(outbound_id="ai-1", at=NOW))


def test_failed_after_read_is_stale() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.mark_read(outbound_id="ai-1", at=NOW)
    conv.collect_events()
    assert_refused(
        conv, StaleStatus, lambda: conv.mark_failed(outbound_id="ai-1", reason="x", code="131")
    )


def test_failed_after_delivered_is_recorded() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.mark_delivered(outbound_id="ai-1", at=NOW)
    conv.mark_failed(outbound_id="ai-1", reason="x")
    assert conv.delivery("ai-1") is Delivery.FAILED


def test_cancel_after_sent_is_stale() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.collect_events()
    assert_refused(
        conv, StaleStatus, lambda: conv.cancel_outbound(outbound_id="ai-1", reason="handoff")
    )


def test_a_gateway_status_that_moves_the_message_forward_is_applied() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.collect_events()
    assert conv.apply_status("ai-1", "delivered", NOW) is True
    assert conv.apply_status("ai-1", "failed", NOW, code="131026", title="undeliverable")
    events: Sequence[Any] = conv.collect_events()
    assert names(events) == ["MessageDelivered", "OutboundMessageFailed"]
    assert (events[1].reason, events[1].code) == ("undeliverable", "131026")


@pytest.mark.parametrize("status", ["sent", "delivered", "read"], ids=lambda s: f"{s}-after-read")
def test_a_gateway_status_that_does_not_move_the_message_is_stale_not_refused(
    status: str,
) -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.mark_read(outbound_id="ai-1", at=NOW)
    conv.collect_events()
    before = state(conv)
    assert conv.apply_status("ai-1", status, NOW) is False
    assert conv.collect_events() == []
    assert state(conv) == before


def test_a_gateway_status_of_an_unknown_kind_or_message_is_refused() -> None:
    conv = queued()
    assert_refused(conv, InvalidInput, lambda: conv.apply_status("ai-1", "seen", NOW))
    assert_refused(conv, UnknownMessage, lambda: conv.apply_status("nope", "sent", NOW))
    assert_refused(conv, UnknownMessage, lambda: conv.apply_status("nope", "read", NOW))


STATUS_COMMANDS: dict[str, Callable[[Conversation], object]] = {
    "sent": lambda c: c.mark_sent(outbound_id="ai-1", provider_message_id="w"),
    "delivered": lambda c: c.mark_delivered(outbound_id="ai-1", at=NOW),
    "read": lambda c: c.mark_read(outbound_id="ai-1", at=NOW),
    "failed": lambda c: c.mark_failed(outbound_id="ai-1", reason="again"),
    "cancelled": lambda c: c.cancel_outbound(outbound_id="ai-1", reason="again"),
}


@pytest.mark.parametrize(
    "command", list(STATUS_COMMANDS.values()), ids=[f"then-{k}" for k in STATUS_COMMANDS]
)
def test_failed_is_final(command: Callable[[Conversation], object]) -> None:
    conv = queued()
    conv.mark_failed(outbound_id="ai-1", reason="131047", code="131047")
    conv.collect_events()
    assert_refused(conv, StaleStatus, lambda: command(conv))


@pytest.mark.parametrize(
    "command", list(STATUS_COMMANDS.values()), ids=[f"then-{k}" for k in STATUS_COMMANDS]
)
def test_cancelled_is_final(command: Callable[[Conversation], object]) -> None:
    conv = queued()
    conv.cancel_outbound(outbound_id="ai-1", reason="handoff")
    conv.collect_events()
    assert_refused(conv, StaleStatus, lambda: command(conv))


@pytest.mark.parametrize(
    "command", list(STATUS_COMMANDS.values()), ids=[f"then-{k}" for k in STATUS_COMMANDS]
)
def test_status_of_an_unknown_outbound_message_is_refused(
    command: Callable[[Conversation], object],
) -> None:
    conv = in_status(Status.AI)
    assert_refused(conv, UnknownMessage, lambda: command(conv))


# ----------------------------------------------------------------- send gate


def test_ai_message_is_sendable_in_ai_mode() -> None:
    assert queued().may_send("ai-1")


@pytest.mark.parametrize(
    "take_over",
    [
        lambda c: c.accept_handoff(attendant="ana"),
        lambda c: c.close(by="ana"),
    ],
    ids=["handoff-accepted", "closed"],
)
def test_ai_message_is_not_sendable_once_the_ai_lost_the_thread(
    take_over: Callable[[Conversation], object],
) -> None:
    conv = queued()
    take_over(conv)
    assert not conv.may_send("ai-1")


def test_ai_answer_still_goes_out_while_waiting_for_a_human() -> None:
    # The AI's own handoff: its answer is sent first, then the transition message.
    conv = queued()
    conv.request_handoff(reason="explicit_request")
    assert conv.may_send("ai-1")


def test_ai_message_queued_before_a_takeover_stays_unsendable_after_return_to_ai() -> None:
    conv = queued()
    conv.accept_handoff(attendant="ana")
    conv.attendant_reply(now=NOW, outbound_id="h-1", attendant="ana", text="Oi, sou a Ana")
    conv.return_to_ai()
    assert not conv.may_send("ai-1")


def test_system_message_is_sendable_while_waiting_for_a_human() -> None:
    conv = in_status(Status.WAITING_HUMAN)
    conv.queue_system_message(outbound_id="s-1", text="Vou chamar um atendente.")
    assert conv.may_send("s-1")


def test_system_message_is_not_sendable_in_human_mode() -> None:
    conv = in_status(Status.WAITING_HUMAN)
    conv.queue_system_message(outbound_id="s-1", text="Vou chamar um atendente.")
    conv.accept_handoff(attendant="ana")
    assert not conv.may_send("s-1")


def test_human_message_is_sendable_in_human_mode() -> None:
    conv = in_status(Status.HUMAN)
    conv.attendant_reply(now=NOW, outbound_id="h-1", attendant="ana", text="Oi")
    assert conv.may_send("h-1")


def test_message_already_sent_is_not_sendable() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    assert not conv.may_send("ai-1")


def test_send_gate_of_an_unknown_message_is_refused() -> None:
    with pytest.raises(UnknownMessage):
        in_status(Status.AI).may_send("nope")


# --------------------------------------------------------- business phone


def business_message(
    conv: Conversation, outbound_id: str = "b-1", provider_id: str = "wamid.b"
) -> None:
    conv.record_business_message(
        outbound_id=outbound_id,
        provider_message_id=provider_id,
        text="oi, aqui é o dono",
        sent_at=NOW,
    )


@pytest.mark.parametrize("status", [Status.AI, Status.WAITING_HUMAN])
def test_business_phone_message_takes_over_from_the_ai(status: Status) -> None:
    conv = in_status(status)
    business_message(conv)
    assert names(conv.collect_events()) == ["HandoffAccepted", "OutboundMessageQueued"]
    assert conv.status is Status.HUMAN
    assert conv.assignee == "business_phone"


def test_business_phone_message_in_human_mode_keeps_the_assignee() -> None:
    conv = in_status(Status.HUMAN)
    business_message(conv)
    assert names(conv.collect_events()) == ["OutboundMessageQueued"]
    assert conv.assignee == "ana"


def test_business_phone_message_is_already_sent() -> None:
    conv = in_status(Status.AI)
    business_message(conv)
    assert conv.delivery("b-1") is Delivery.SENT
    assert not conv.may_send("b-1")


def test_ai_may_not_reply_after_the_business_phone_wrote() -> None:
    conv = in_status(Status.AI)
    business_message(conv)
    conv.collect_events()
    assert_refused(conv, AIReplyNotAllowed, lambda: ai_reply(conv))


def test_business_phone_message_with_an_existing_outbound_id_is_invalid_input() -> None:
    conv = queued("ai-1")
    assert_refused(conv, InvalidInput, lambda: business_message(conv, outbound_id="ai-1"))


def test_business_phone_message_requires_the_provider_message_id() -> None:
    conv = in_status(Status.AI)
    assert_refused(conv, InvalidInput, lambda: business_message(conv, provider_id=""))


# ------------------------------------------------------------- return to AI


def test_return_to_ai_marks_where_the_human_stretch_ended() -> None:
    conv = in_status(Status.HUMAN)
    receive(conv)
    conv.return_to_ai()
    assert conv.human_stretch_ended_seq == 2
    assert conv.history[-1] == {"role": "marker", "text": "human_stretch_ended", "seq": 2}


def test_return_to_ai_does_not_leave_the_old_burst_pending() -> None:
    conv = in_status(Status.HUMAN)
    receive(conv)
    conv.return_to_ai()
    conv.collect_events()
    assert conv.pending_burst == 0
    assert_refused(conv, BurstAlreadyAnswered, lambda: ai_reply(conv))


def test_ai_answers_the_first_inbound_after_return_to_ai() -> None:
    conv = in_status(Status.HUMAN)
    conv.return_to_ai()
    receive(conv)
    ai_reply(conv)
    assert names(conv.collect_events()) == [
        "ReturnedToAI",
        "MessageReceived",
        "AIReplyGenerated",
        "OutboundMessageQueued",
    ]


# ------------------------------------------------------------ service window


def test_service_window_is_closed_before_any_inbound_message() -> None:
    assert not started().within_service_window(NOW)


def test_service_window_is_open_within_24_hours_of_the_last_inbound() -> None:
    conv = started()
    receive(conv, at=NOW)
    assert conv.within_service_window(NOW + timedelta(hours=23, minutes=59))


def test_service_window_closes_at_24_hours() -> None:
    conv = started()
    receive(conv, at=NOW)
    assert not conv.within_service_window(NOW + timedelta(hours=24))


def test_service_window_is_reopened_by_a_new_inbound_message() -> None:
    conv = started()
    receive(conv, at=NOW - timedelta(days=3))
    receive(conv, at=NOW)
    assert conv.within_service_window(NOW + timedelta(hours=1))


def test_late_arriving_older_message_does_not_shrink_the_window() -> None:
    conv = started()
    receive(conv, at=NOW)
    receive(conv, at=NOW - timedelta(hours=20))
    assert conv.last_inbound_at == NOW
    assert conv.within_service_window(NOW + timedelta(hours=10))


def test_outbound_messages_do_not_extend_the_window() -> None:
    conv = started()
    receive(conv, at=NOW - timedelta(hours=25))
    ai_reply(conv)
    business_message(conv)
    assert not conv.within_service_window(NOW)


# ------------------------------------------------------- attempts and retries


def test_a_send_attempt_is_recorded_before_the_call_and_counted() -> None:
    conv = queued()
    assert conv.record_send_attempt(outbound_id="ai-1", at=NOW) == 1
    assert conv.record_send_attempt(outbound_id="ai-1", at=NOW + timedelta(seconds=5)) == 2
    assert names(conv.collect_events()) == ["OutboundSendAttempted", "OutboundSendAttempted"]
    assert conv.message("ai-1").first_attempt_at == NOW
    assert conv.message("ai-1").last_attempt_at == NOW + timedelta(seconds=5)
    assert conv.delivery("ai-1") is Delivery.QUEUED


def test_an_attempt_is_refused_once_the_message_left_the_queue() -> None:
    conv = queued()
    conv.mark_sent(outbound_id="ai-1", provider_message_id="wamid.out")
    conv.collect_events()
    assert_refused(conv, StaleStatus, lambda: conv.record_send_attempt(outbound_id="ai-1", at=NOW))


def test_an_attempt_is_refused_when_the_send_time_gate_is_closed() -> None:
    conv = queued()
    conv.accept_handoff(attendant="ana")
    conv.collect_events()
    assert_refused(
        conv, InvalidTransition, lambda: conv.record_send_attempt(outbound_id="ai-1", at=NOW)
    )


def test_a_message_failed_before_the_gateway_took_it_may_be_retried() -> None:
    conv = queued()
    conv.record_send_attempt(outbound_id="ai-1", at=NOW)
    conv.mark_failed(outbound_id="ai-1", reason="gave up", code="500")
    assert conv.retry_refusal("ai-1", NOW) is None
    conv.retry_outbound(outbound_id="ai-1", by="ops", now=NOW)
    assert names(conv.collect_events())[-1] == "OutboundMessageRetried"
    assert conv.delivery("ai-1") is Delivery.QUEUED
    retried = conv.message("ai-1")  # a fresh start: horizon and attempts
    assert (retried.attempts, retried.first_attempt_at, retried.failure) == (0, None, None)
    assert retried.text == "Olá! Como posso ajudar?"
    assert conv.may_send("ai-1")


@pytest.mark.parametrize(
    ("setup", "refusal"),
    [
        (lambda c: None, "it is queued, not failed"),
        (
            lambda c: (
                c.mark_sent(outbound_id="ai-1", provider_message_id="w"),
                c.mark_failed(outbound_id="ai-1", reason="131026", code="131026"),
            ),
            "the gateway accepted it and reported it undeliverable",
        ),
        (
            lambda c: (
                c.mark_failed(outbound_id="ai-1", reason="x"),
                c.accept_handoff(attendant="ana"),
            ),
            "the conversation moved on (a human took over, or it is closed)",
        ),
    ],
    ids=["not-failed", "failed-after-sent", "human-took-over"],
)
def test_the_domain_refuses_retries_that_would_be_wrong(
    setup: Callable[[Conversation], object], refusal: str
) -> None:
    conv = queued()
    setup(conv)
    conv.collect_events()
    assert conv.retry_refusal("ai-1", NOW) == refusal
    assert_refused(
        conv, InvalidTransition, lambda: conv.retry_outbound(outbound_id="ai-1", by="ops", now=NOW)
    )


def test_a_retry_outside_the_24h_window_is_refused() -> None:
    conv = queued()
    conv.mark_failed(outbound_id="ai-1", reason="outside_window")
    conv.collect_events()
    later = NOW + timedelta(hours=25)
    assert conv.retry_refusal("ai-1", later) == "outside_window"
    assert_refused(
        conv,
        InvalidTransition,
        lambda: conv.retry_outbound(outbound_id="ai-1", by="ops", now=later),
    )
