"""The attendants' commands on a Conversation: assign, transfer, notes, labels, reply, release."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from urbana.domain.conversation import MAX_LABELS, Conversation, Status
from urbana.domain.errors import (
    AlreadyAssigned,
    DomainError,
    InvalidInput,
    InvalidTransition,
    NotAssignee,
    TemplateRequired,
)

NOW = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)


def started() -> Conversation:
    conv = Conversation.start(
        tenant_id=uuid4(), channel="cloud", contact="5511988887777", lead_id=uuid4()
    )
    conv.receive(provider_message_id="wamid.1", kind="text", sent_at=NOW, text="oi")
    conv.collect_events()
    return conv


def waiting() -> Conversation:
    conv = started()
    conv.request_handoff(reason="explicit_request")
    conv.collect_events()
    return conv


def held_by(user: str) -> Conversation:
    conv = waiting()
    conv.assign(assignee=user)
    conv.collect_events()
    return conv


def recorded(conv: Conversation) -> list[Any]:
    """The events the conversation recorded since the last call (typed loosely to read)."""
    return list(conv.collect_events())


def names(events: Sequence[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def state(conv: Conversation) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in vars(conv).items() if k != "_pending_events"})


def assert_refused(
    conv: Conversation, error: type[DomainError], command: Callable[[], object]
) -> None:
    before = state(conv)
    with pytest.raises(error):
        command()
    assert conv.collect_events() == []
    assert state(conv) == before


# ------------------------------------------------------------------ assign


def test_assigning_a_waiting_conversation_makes_it_human_with_that_assignee() -> None:
    conv = waiting()
    conv.assign(assignee="ana", by="sup", queue="vendas")
    events = recorded(conv)
    assert names(events) == ["ConversationAssigned"]
    assert (events[0].assignee, events[0].by, events[0].queue) == ("ana", "sup", "vendas")
    assert (conv.status, conv.assignee, conv.queue) == (Status.HUMAN, "ana", "vendas")


def test_assigning_straight_from_the_ai_voids_the_ais_queued_answer() -> None:
    conv = started()
    conv.record_ai_reply(
        outbound_id="ai-1", reply_to_seq=1, text="Olá!", intent="greeting", confidence=0.9
    )
    conv.assign(assignee="ana")
    assert conv.status is Status.HUMAN
    assert not conv.may_send("ai-1")


def test_assigning_it_to_its_holder_again_records_nothing() -> None:
    conv = held_by("ana")
    conv.assign(assignee="ana")
    assert conv.collect_events() == []


def test_assigning_a_conversation_someone_else_holds_is_refused() -> None:
    conv = held_by("ana")
    assert_refused(conv, AlreadyAssigned, lambda: conv.assign(assignee="bia"))


def test_already_assigned_is_a_refused_transition() -> None:
    assert issubclass(AlreadyAssigned, InvalidTransition)
    assert issubclass(NotAssignee, InvalidTransition)
    assert issubclass(TemplateRequired, InvalidTransition)


def test_a_closed_conversation_cannot_be_assigned() -> None:
    conv = started()
    conv.close(by="ana")
    conv.collect_events()
    assert_refused(conv, InvalidTransition, lambda: conv.assign(assignee="ana"))


def test_assign_requires_an_assignee() -> None:
    conv = waiting()
    assert_refused(conv, InvalidInput, lambda: conv.assign(assignee=""))


def test_assignment_keeps_the_queue_it_waited_in() -> None:
    conv = waiting()
    conv.transfer(by="system", to_queue="suporte")
    conv.assign(assignee="ana")
    assert conv.queue == "suporte"


# ---------------------------------------------------------------- transfer


def test_transfer_to_another_attendant_keeps_it_human_with_a_note() -> None:
    conv = held_by("ana")
    conv.transfer(by="ana", to_user="bia", note_id="n-1", note="cliente quer parcelar")
    events = recorded(conv)
    assert names(events) == ["NoteAdded", "ConversationTransferred"]
    assert events[0].text == "cliente quer parcelar"
    assert events[0].lead_id == conv.lead_id
    assert (events[1].to_user, events[1].to_queue, events[1].note_id) == ("bia", None, "n-1")
    assert (conv.status, conv.assignee) == (Status.HUMAN, "bia")
    assert "n-1" in conv.note_ids


def test_transfer_to_a_queue_leaves_it_waiting_there_without_an_assignee() -> None:
    conv = held_by("ana")
    conv.transfer(by="ana", to_queue="financeiro")
    assert (conv.status, conv.assignee, conv.queue) == (Status.WAITING_HUMAN, None, "financeiro")
    assert conv.awaiting_attendant_since is None


def test_a_transfer_between_attendants_does_not_count_as_a_new_takeover() -> None:
    conv = held_by("ana")
    takeovers = conv.takeovers
    conv.transfer(by="ana", to_user="bia")
    assert conv.takeovers == takeovers


def test_only_the_holder_or_a_supervisor_transfers() -> None:
    conv = held_by("ana")
    assert_refused(conv, NotAssignee, lambda: conv.transfer(by="bia", to_user="bia"))
    conv.transfer(by="sup", to_user="bia", as_supervisor=True)
    assert conv.assignee == "bia"


def test_transfer_needs_a_destination() -> None:
    conv = held_by("ana")
    assert_refused(conv, InvalidInput, lambda: conv.transfer(by="ana"))


def test_transfer_to_its_own_holder_is_refused() -> None:
    conv = held_by("ana")
    assert_refused(conv, InvalidTransition, lambda: conv.transfer(by="ana", to_user="ana"))


def test_transfer_to_the_queue_it_already_waits_in_is_refused() -> None:
    conv = waiting()
    conv.transfer(by="system", to_queue="vendas")
    conv.collect_events()
    assert_refused(conv, InvalidTransition, lambda: conv.transfer(by="system", to_queue="vendas"))


def test_an_ai_conversation_is_not_transferred() -> None:
    conv = started()
    assert_refused(conv, InvalidTransition, lambda: conv.transfer(by="ana", to_user="bia"))


def test_a_transfer_note_needs_an_id_and_text() -> None:
    conv = held_by("ana")
    assert_refused(conv, InvalidInput, lambda: conv.transfer(by="ana", to_user="bia", note="x"))
    assert_refused(
        conv,
        InvalidInput,
        lambda: conv.transfer(by="ana", to_user="bia", note_id="n-1", note="  "),
    )


# ------------------------------------------------------------ notes, labels


def test_a_note_is_recorded_in_any_status_and_never_queued_to_the_lead() -> None:
    conv = started()
    conv.add_note(note_id="n-1", author="ana", text="lead antigo")
    assert names(conv.collect_events()) == ["NoteAdded"]
    assert conv.outbound == {}


def test_a_note_id_is_used_once() -> None:
    conv = started()
    conv.add_note(note_id="n-1", author="ana", text="um")
    conv.collect_events()
    assert_refused(
        conv, InvalidInput, lambda: conv.add_note(note_id="n-1", author="ana", text="dois")
    )


def test_labels_are_normalised_and_only_real_changes_are_recorded() -> None:
    conv = started()
    conv.change_labels(by="ana", add=[" VIP", "atraso", "vip"])
    events = recorded(conv)
    assert events[0].added == ["atraso", "vip"]
    assert conv.labels == ("atraso", "vip")
    conv.change_labels(by="ana", add=["vip"], remove=["nunca-teve"])
    assert conv.collect_events() == []
    conv.change_labels(by="ana", remove=["Atraso"])
    events = recorded(conv)
    assert (events[0].added, events[0].removed) == ([], ["atraso"])
    assert list(conv.labels) == ["vip"]


@pytest.mark.parametrize(
    ("add", "remove"),
    [(["vip"], ["VIP"]), ([""], []), (["x" * 51], [])],
    ids=["both", "empty", "too-long"],
)
def test_bad_label_changes_are_refused(add: list[str], remove: list[str]) -> None:
    conv = started()
    assert_refused(conv, InvalidInput, lambda: conv.change_labels(by="ana", add=add, remove=remove))


def test_a_conversation_has_a_bounded_number_of_labels() -> None:
    conv = started()
    conv.change_labels(by="ana", add=[f"l{i}" for i in range(MAX_LABELS)])
    conv.collect_events()
    assert_refused(conv, InvalidInput, lambda: conv.change_labels(by="ana", add=["um-a-mais"]))


# ------------------------------------------------------------------- reply


def test_only_the_holder_replies_unless_a_supervisor() -> None:
    conv = held_by("ana")
    assert_refused(
        conv,
        NotAssignee,
        lambda: conv.attendant_reply(outbound_id="h-1", attendant="bia", text="oi", now=NOW),
    )
    conv.attendant_reply(outbound_id="h-1", attendant="sup", text="oi", now=NOW, as_supervisor=True)
    assert conv.message("h-1").author == "human"


def test_a_reply_after_24_hours_of_silence_needs_a_template() -> None:
    conv = held_by("ana")
    late = NOW + timedelta(hours=24)
    assert_refused(
        conv,
        TemplateRequired,
        lambda: conv.attendant_reply(outbound_id="h-1", attendant="ana", text="oi", now=late),
    )
    conv.attendant_reply(
        outbound_id="h-1", attendant="ana", text="oi", now=late - timedelta(seconds=1)
    )


# ------------------------------------------------------------- inactivity


def test_the_attendant_clock_starts_at_assignment_and_stops_at_their_reply() -> None:
    conv = waiting()
    conv.assign(assignee="ana")
    since = conv.awaiting_attendant_since
    assert since is not None
    assert recorded(conv)[0].timestamp == since
    conv.attendant_reply(outbound_id="h-1", attendant="ana", text="oi", now=NOW)
    assert conv.awaiting_attendant_since is None
    later = NOW + timedelta(minutes=3)
    conv.receive(provider_message_id="wamid.2", kind="text", sent_at=later, text="e aí?")
    conv.receive(
        provider_message_id="wamid.3", kind="text", sent_at=later + timedelta(minutes=1), text="?"
    )
    assert conv.awaiting_attendant_since == later  # from the first unanswered message


def test_an_attendant_silent_past_the_limit_loses_the_conversation_to_its_queue() -> None:
    conv = waiting()
    conv.transfer(by="system", to_queue="vendas")
    conv.assign(assignee="ana")
    conv.attendant_reply(outbound_id="h-1", attendant="ana", text="oi", now=NOW)
    conv.receive(provider_message_id="wamid.2", kind="text", sent_at=NOW, text="e o preço?")
    conv.collect_events()
    limit = timedelta(minutes=15)
    assert not conv.is_inactive(NOW + limit - timedelta(seconds=1), limit)
    assert_refused(
        conv,
        InvalidTransition,
        lambda: conv.release_inactive(now=NOW + timedelta(minutes=14), limit=limit),
    )
    conv.release_inactive(now=NOW + limit, limit=limit)
    events = recorded(conv)
    assert names(events) == ["ReturnedToQueue"]
    assert (events[0].queue, events[0].reason) == ("vendas", "inactivity")
    assert (conv.status, conv.assignee, conv.queue) == (Status.WAITING_HUMAN, None, "vendas")


def test_a_conversation_the_ai_owns_is_never_inactive() -> None:
    conv = started()
    assert not conv.is_inactive(NOW + timedelta(days=2), timedelta(minutes=1))


# ------------------------------------------------- return, close, reopen


def test_return_to_ai_and_reopen_record_who_acted() -> None:
    conv = held_by("ana")
    conv.return_to_ai(by="ana")
    conv.close(by="ana")
    conv.reopen(by="sup")
    events = recorded(conv)
    assert names(events) == ["ReturnedToAI", "ConversationClosed", "ConversationReopened"]
    assert (events[0].by, events[2].by) == ("ana", "sup")
    assert conv.status is Status.AI


def test_a_new_message_reopens_with_nobody_acting() -> None:
    conv = started()
    conv.close(by="ana")
    conv.receive(provider_message_id="wamid.2", kind="text", sent_at=NOW, text="voltei")
    reopened = [e for e in recorded(conv) if type(e).__name__ == "ConversationReopened"]
    assert reopened[0].by is None


def test_only_a_closed_conversation_is_reopened() -> None:
    conv = started()
    assert_refused(conv, InvalidTransition, lambda: conv.reopen(by="ana"))
    conv.close(by="ana")
    conv.collect_events()
    assert_refused(conv, InvalidInput, lambda: conv.reopen(by=""))


def test_the_ai_intent_and_handoff_reason_are_remembered_for_routing() -> None:
    conv = started()
    conv.record_ai_reply(
        outbound_id="ai-1", reply_to_seq=1, text="Custa 10.", intent="pricing", confidence=0.4
    )
    conv.request_handoff(reason="low_confidence")
    assert (conv.last_intent, conv.handoff_reason) == ("pricing", "low_confidence")
