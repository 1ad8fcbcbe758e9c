"""The attendants' commands through the application, on the in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from tests.fakes import in_memory_app
from tests.helpers import ai_reply

from urbana.application.app import ReceiveMessage, UrbanaApp
from urbana.application.attendants import reply_outbound_id
from urbana.application.channels import InboundMessage
from urbana.domain.conversation import Conversation, Status
from urbana.domain.errors import AlreadyAssigned, InvalidInput, TemplateRequired
from urbana.domain.lead import Lead, Stage

PHONE = "5511988887777"


def inbound(text: str, at: datetime | None = None) -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=PHONE,
        phone=PHONE,
        sent_at=at or datetime.now(UTC),
        kind="text",
        text=text,
    )


def handed_off(app: UrbanaApp, at: datetime | None = None) -> tuple[UUID, UUID]:
    """A tenant and a conversation waiting for a person; (tenant id, conversation id)."""
    tid, _ = app.register_tenant(f"Loja {uuid4().hex[:8]}")
    cid = app.receive_message(
        ReceiveMessage(tid, "cloud", inbound("atendente", at))
    ).conversation_id
    app.request_handoff(cid, reason="explicit_request")
    return tid, cid


def event_names(app: UrbanaApp, cid: UUID) -> list[str]:
    return [type(e).__name__ for e in app.stream(cid)]


def test_a_reply_retried_with_its_idempotency_key_is_queued_once() -> None:
    app = in_memory_app()
    _, cid = handed_off(app)
    app.assign(cid, assignee="ana")
    ids = {
        app.attendant_reply(cid, attendant="ana", text="Olá!", idempotency_key="k-1")
        for _ in range(5)
    }
    assert ids == {reply_outbound_id(cid, "ana", "k-1")}
    assert event_names(app, cid).count("OutboundMessageQueued") == 1


def test_another_key_is_another_message() -> None:
    app = in_memory_app()
    _, cid = handed_off(app)
    app.assign(cid, assignee="ana")
    first = app.attendant_reply(cid, attendant="ana", text="Olá!", idempotency_key="k-1")
    second = app.attendant_reply(cid, attendant="ana", text="Tudo bem?", idempotency_key="k-2")
    assert first != second
    assert event_names(app, cid).count("OutboundMessageQueued") == 2


def test_a_reply_outside_the_24_hour_window_is_refused_as_template_required() -> None:
    app = in_memory_app()
    long_ago = datetime.now(UTC) - timedelta(hours=25)
    _, cid = handed_off(app, at=long_ago)
    app.assign(cid, assignee="ana")
    before = event_names(app, cid)
    with pytest.raises(TemplateRequired):
        app.attendant_reply(cid, attendant="ana", text="Olá!", idempotency_key="k-1")
    assert event_names(app, cid) == before


def test_shortcuts_in_a_reply_expand_to_the_tenants_canned_responses() -> None:
    app = in_memory_app()
    tid, cid = handed_off(app)
    app.save_canned_response(tid, "/pix", "Nossa chave Pix é loja@example.com")
    app.assign(cid, assignee="ana")
    outbound_id = app.attendant_reply(cid, attendant="ana", text="Claro! /pix")
    queued = [e for e in app.stream(cid) if type(e).__name__ == "OutboundMessageQueued"]
    assert (queued[-1].outbound_id, queued[-1].text) == (
        outbound_id,
        "Claro! Nossa chave Pix é loja@example.com",
    )


def test_the_second_of_two_attendants_assigning_is_refused() -> None:
    app = in_memory_app()
    _, cid = handed_off(app)
    app.assign(cid, assignee="ana")
    with pytest.raises(AlreadyAssigned):
        app.assign(cid, assignee="bia")
    assert app.get(Conversation, cid).assignee == "ana"


def test_a_transfer_with_a_note_returns_the_notes_id() -> None:
    app = in_memory_app()
    tid, cid = handed_off(app)
    queue = app.create_queue(tid, "Financeiro")
    app.assign(cid, assignee="ana")
    note_id = app.transfer(cid, by="ana", to_queue=queue, note="boleto vencido")
    notes = [e for e in app.stream(cid) if type(e).__name__ == "NoteAdded"]
    assert [(n.note_id, n.text) for n in notes] == [(note_id, "boleto vencido")]
    conv = app.get(Conversation, cid)
    assert (conv.status, conv.queue) == (Status.WAITING_HUMAN, queue)


def test_notes_labels_close_and_reopen_through_the_application() -> None:
    app = in_memory_app()
    _, cid = handed_off(app)
    app.add_note(cid, author="ana", text="ligar amanhã")
    assert app.change_labels(cid, by="ana", add=["VIP"]) == ("vip",)
    app.close_conversation(cid, by="ana")
    app.reopen_conversation(cid, by="sup")
    assert app.get(Conversation, cid).status is Status.AI


def test_a_user_moves_the_lead_and_the_event_names_them() -> None:
    app = in_memory_app()
    _, cid = handed_off(app)
    lead_id = app.get(Conversation, cid).lead_id
    app.move_lead_stage(lead_id, stage=Stage.QUALIFIED, by="user-ana")
    assert app.get(Lead, lead_id).stage is Stage.QUALIFIED
    changed = [e for e in app.stream(lead_id) if type(e).__name__ == "LeadStageChanged"]
    assert changed[-1].by == "user-ana"


def test_a_queue_created_twice_is_refused() -> None:
    app = in_memory_app()
    tid, _ = app.register_tenant(f"Loja {uuid4().hex[:8]}")
    app.create_queue(tid, "Vendas")
    with pytest.raises(InvalidInput):
        app.create_queue(tid, " vendas ")


def test_a_handoff_is_routed_by_the_ais_intent_to_its_queue() -> None:
    app = in_memory_app()
    tid, _ = app.register_tenant(f"Loja {uuid4().hex[:8]}")
    sales = app.create_queue(tid, "Vendas", ("pricing",))
    cid = app.receive_message(ReceiveMessage(tid, "cloud", inbound("quanto?"))).conversation_id
    ai_reply(app, cid, reply_to_seq=1, text="Custa 10.", intent="pricing", confidence=0.4)
    app.request_handoff(cid, reason="low_confidence")
    route = app.handoff_route(cid)
    assert (route.tenant_id, route.queue, route.status) == (tid, sales, Status.WAITING_HUMAN)


def test_a_tenant_rule_routes_a_handoff_reason() -> None:
    app = in_memory_app()
    tid, cid = handed_off(app)
    vip = app.create_queue(tid, "VIP")
    app.change_settings(tid, handoff_queues={"explicit_request": vip})
    assert app.handoff_route(cid).queue == vip


def test_waiting_in_queue_tells_the_lead_once_per_handoff() -> None:
    app = in_memory_app()
    tid, cid = handed_off(app)
    queue = app.create_queue(tid, "Vendas")
    now = datetime.now(UTC)
    assert app.wait_in_queue(cid, queue=queue, now=now)
    assert app.wait_in_queue(cid, queue=queue, now=now)  # a redelivered handoff
    names = event_names(app, cid)
    assert names.count("ConversationTransferred") == 1
    assert names.count("OutboundMessageQueued") == 1
    conv = app.get(Conversation, cid)
    assert conv.queue == queue
    (message,) = (m for m in conv.outbound.values() if m.author == "system")
    assert message.text is not None
    assert "fila" in message.text  # a tenant without business hours is always open


def test_waiting_in_queue_does_nothing_once_someone_took_it() -> None:
    app = in_memory_app()
    _, cid = handed_off(app)
    app.assign(cid, assignee="ana")
    before = event_names(app, cid)
    assert not app.wait_in_queue(cid, queue=None, now=datetime.now(UTC))
    assert event_names(app, cid) == before


def test_release_inactive_follows_the_tenants_limit_and_zero_turns_it_off() -> None:
    app = in_memory_app()
    tid, cid = handed_off(app)
    app.change_settings(tid, inactivity_limit_s=600)
    app.assign(cid, assignee="ana")
    now = datetime.now(UTC)
    assert app.release_inactive(cid, now=now + timedelta(seconds=300)) is None
    app.change_settings(tid, inactivity_limit_s=0)
    assert app.release_inactive(cid, now=now + timedelta(hours=5)) is None
    app.change_settings(tid, inactivity_limit_s=600)
    assert app.release_inactive(cid, now=now + timedelta(seconds=601)) == "ana"
    assert app.get(Conversation, cid).status is Status.WAITING_HUMAN


def test_after_a_return_to_the_ai_the_next_handoff_is_routed_afresh() -> None:
    app = in_memory_app()
    tid, _ = app.register_tenant(f"Loja {uuid4().hex[:8]}")
    sales = app.create_queue(tid, "Vendas", ("pricing",))
    complaints = app.create_queue(tid, "SAC", ("complaint",))
    cid = app.receive_message(ReceiveMessage(tid, "cloud", inbound("quanto?"))).conversation_id
    ai_reply(app, cid, reply_to_seq=1, text="Custa 10.", intent="pricing", confidence=0.4)
    app.request_handoff(cid, reason="low_confidence")
    app.assign(cid, assignee="ana", queue=app.handoff_route(cid).queue)
    assert app.get(Conversation, cid).queue == sales
    app.return_to_ai(cid, by="ana")
    app.receive_message(ReceiveMessage(tid, "cloud", inbound("quero reclamar")))
    ai_reply(app, cid, reply_to_seq=2, text="Sinto muito.", intent="complaint", confidence=0.9)
    app.request_handoff(cid, reason="handoff_intent")
    assert app.handoff_route(cid).queue == complaints


def test_a_note_retried_with_its_idempotency_key_is_added_once() -> None:
    app = in_memory_app()
    _, cid = handed_off(app)
    ids = {
        app.add_note(cid, author="ana", text="ligar às 15h", idempotency_key="k") for _ in range(3)
    }
    assert len(ids) == 1
    assert event_names(app, cid).count("NoteAdded") == 1
    app.add_note(cid, author="ana", text="ligar às 15h")
    assert event_names(app, cid).count("NoteAdded") == 2
