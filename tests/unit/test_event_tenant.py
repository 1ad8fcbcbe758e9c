"""Every event records its tenant (schema version 2), and survives the mapper unchanged."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
from eventsourcing.domain import Aggregate, CanMutateProtocol
from tests.fakes import in_memory_app
from tests.helpers import ai_reply

from urbana.application.app import AIOutcome, ReceiveMessage, RecordStatus, UrbanaApp
from urbana.application.channels import (
    ChannelState,
    DeliveryStatus,
    InboundMessage,
    StatusUpdate,
)
from urbana.application.gateways import gateway_config
from urbana.domain.conversation import Conversation
from urbana.domain.events import events_of
from urbana.domain.lead import Lead
from urbana.domain.message_ref import MessageRef
from urbana.domain.plans import LeadQuota
from urbana.domain.tenant import ChannelRoute, Tenant

AGGREGATES: tuple[type[Aggregate], ...] = (
    Conversation,
    Lead,
    Tenant,
    ChannelRoute,
    MessageRef,
    LeadQuota,
)
# The first event of these streams carried tenant_id from version 1 on.
STARTS = {
    "ConversationStarted",
    "LeadCreated",
    "MessageRefRecorded",
    "ChannelRouted",
    "LeadQuotaOpened",
}
# Added after version 2: they carried tenant_id from their first version.
BORN_WITH_IT = {
    "ConversationAssigned",
    "ConversationTransferred",
    "NoteAdded",
    "LabelsChanged",
    "ReturnedToQueue",
    "QueueCreated",
    "QueueChanged",
    "CannedResponseSaved",
    "CannedResponseRemoved",
    "NotificationsConfigured",
    "TemplateRegistered",
    "TemplateRemoved",
    "SubjectDataExported",
    "ChannelStateChanged",
    "SubjectErased",
    "ConversationLinked",
    "PlanChanged",
    "LeadOverPlanLimit",
    "LeadCounted",
}
# Version 3 added who acted (`by`).
BY_ADDED_IN_V3 = {
    "ReturnedToAI",
    "ConversationReopened",
    "LeadStageChanged",
    "HandoffRulesChanged",
    "PromptChanged",
}
# Version 3 added which decay step a scheduled job applied (`decay`).
DECAY_ADDED_IN_V3 = {"LeadScored"}
# Version 3 of OutboundMessageQueued added `template`.
TEMPLATE_ADDED_IN_V3 = {"OutboundMessageQueued"}
# Version 3 of AIReplyGenerated added the passages the AI was given.
PASSAGES_ADDED_IN_V3 = {"AIReplyGenerated"}
# The next version records provider message ids as keyed digests.
IDS_KEYED = {"MessageReceived": 3, "OutboundMessageSent": 3, "OutboundMessageQueued": 4}
IDS_KEYED_FIRST = {"MessageRefRecorded": 2}
PHONE = "5511988887777"


def expected_version(name: str) -> int:
    if name in IDS_KEYED or name in IDS_KEYED_FIRST:
        return {**IDS_KEYED, **IDS_KEYED_FIRST}[name]
    if name in STARTS or name in BORN_WITH_IT:
        return 1
    return (
        3
        if name in BY_ADDED_IN_V3 | DECAY_ADDED_IN_V3 | TEMPLATE_ADDED_IN_V3 | PASSAGES_ADDED_IN_V3
        else 2
    )


def now() -> datetime:
    return datetime.now(UTC)


def inbound(text: str, pid: str | None = None, from_me: bool = False) -> InboundMessage:
    return InboundMessage(
        provider_message_id=pid or f"wamid.{uuid4().hex}",
        contact=PHONE,
        phone=PHONE,
        sent_at=now(),
        kind="text",
        text=text,
        from_me=from_me,
    )


def history(app: UrbanaApp) -> UUID:
    """Most event types, through the application's commands; the tenant's id."""
    tid, _ = app.register_tenant(f"Loja {uuid4().hex[:8]}")
    app.connect_channel(
        tid,
        gateway_config(
            "cloud",
            {
                "phone_number_id": f"pnid{uuid4().hex[:8]}",
                "app_secret": "appsecret",
                "verify_token": "verify",
                "access_token": "token",
            },
        ),
    )
    app.record_channel_state(tid, "cloud", ChannelState("connected", now()))
    app.change_settings(tid, debounce_ms=0, handoff_intents=["price"])
    app.change_prompt(tid, "Seja breve.")
    app.add_knowledge_document(tid, "loja.md", "# Loja\nAbrimos às 9h.")
    queue = app.create_queue(tid, "Vendas", ("pricing",))
    app.change_queue(tid, queue, intents=("pricing", "price"))
    app.save_canned_response(tid, "/pix", "Nossa chave Pix é loja@example.com")
    app.remove_canned_response(tid, "pix")
    app.configure_telegram(tid, chat_id="-100123", bot_token="123:abc")
    app.register_template(
        tid, "boas_vindas", language="pt_BR", parameters=["nome"], text="Oi {{1}}"
    )
    app.register_template(tid, "ate_logo", language="pt_BR", parameters=[], text="Até logo!")
    app.remove_template(tid, "ate_logo")
    app.change_plan(tid, "custom", 1)
    first = app.receive_message(ReceiveMessage(tid, "cloud", inbound("oi")))
    cid = first.conversation_id
    app.record_export(first.lead_id, by="aud", role="auditor", purpose="LGPD", rendering="json")
    out = ai_reply(app, cid, reply_to_seq=1, text="Olá!", intent="greeting", confidence=0.9)
    app.mark_sent(cid, out, "wamid.out")
    status = StatusUpdate("wamid.out", DeliveryStatus.READ, now())
    early = StatusUpdate("wamid.later", DeliveryStatus.DELIVERED, now())
    app.record_statuses([RecordStatus(tid, "cloud", status), RecordStatus(tid, "cloud", early)])
    app.receive_message(ReceiveMessage(tid, "cloud", inbound("e o preço?")))
    cancelled = ai_reply(
        app, cid, reply_to_seq=2, text="Custa 10.", intent="pricing", confidence=0.8, score_delta=20
    )
    app.cancel_outbound(cid, cancelled, "superseded")
    app.request_handoff(cid, reason="pricing")
    app.accept_handoff(cid, attendant="ana")
    app.send_template(cid, attendant="ana", name="boas_vindas", values={"nome": "Rui"})
    failed = app.attendant_reply(cid, attendant="ana", text="Oi, é a Ana")
    app.record_send_attempt(cid, failed, now())
    app.mark_failed(cid, failed, "gateway down", code="131000")
    app.retry_outbound(cid, failed, by="ops")
    app.add_note(cid, author="ana", text="quer parcelar")
    app.change_labels(cid, by="ana", add=["vip"])
    app.transfer(cid, by="ana", to_queue=queue, note="melhor com vendas")
    app.assign(cid, assignee="bia", by="sup")
    app.release_inactive(cid, now=now() + timedelta(hours=1))
    app.return_to_ai(cid, by="sup")
    app.close_conversation(cid, by="ana")
    app.reopen_conversation(cid, by="ana")
    app.close_conversation(cid, by="ana")
    app.receive_message(ReceiveMessage(tid, "cloud", inbound("voltei")))
    app.apply_ai_outcome(
        cid, AIOutcome(3, "x", "guard", 0.0, {}, rejected="guard_rejected", fallback="Desculpe.")
    )
    app.receive_message(ReceiveMessage(tid, "cloud", inbound("do celular", "wamid.later", True)))
    # The lead on Evolution, under its @lid: a conversation its key does not give.
    by_lid = replace(inbound("pelo outro app"), contact="123456789012345@lid")
    app.receive_message(ReceiveMessage(tid, "evolution", by_lid))
    lead_id = app.get(Conversation, cid).lead_id
    app.cipher.shred(lead_id)
    app.record_erasure(lead_id, "subject_request", [cid], by="auditor")
    other = dataclasses.replace(inbound("oi"), contact="5511977776666", phone="5511977776666")
    app.receive_message(ReceiveMessage(tid, "cloud", other))  # past the plan's limit of 1
    return tid


def test_every_event_type_declares_its_tenant() -> None:
    for aggregate in AGGREGATES:
        for event_class in events_of(aggregate):
            assert "tenant_id" in typing.get_type_hints(event_class), event_class.__qualname__
            version = getattr(event_class, "class_version", 1)
            assert version == expected_version(event_class.__name__), event_class


def test_every_stored_event_names_its_tenant_and_its_version() -> None:
    app = in_memory_app()
    tid = history(app)
    records = app.recorder.select_notifications(start=None, limit=1000)
    types = set()
    for record in records:
        state: dict[str, Any] = orjson.loads(record.state)
        name = record.topic.rpartition(".")[2]
        types.add(name)
        assert state["tenant_id"] == {"_type_": "uuid", "_data_": tid.hex}, name
        assert state.get("class_version", 1) == expected_version(name), name
    declared = {e.__name__ for a in AGGREGATES for e in events_of(a)}
    assert declared - types == {"LeadProfileUpdated"}  # no command records it yet


def test_aggregates_rebuilt_from_their_stored_events_equal_the_ones_that_recorded_them() -> None:
    app = in_memory_app()
    tenant = Tenant.register("Loja Sol")
    tenant.change_settings(stage_thresholds={"hot": 90}, bot_messages={"handoff": "Já volto."})
    tenant.change_prompt("Seja breve.")
    conversation = Conversation.start(tenant.id, "cloud", PHONE, uuid4())
    conversation.receive(provider_message_id="w1", kind="text", sent_at=now(), text="oi")
    conversation.record_ai_reply(
        outbound_id="o1", reply_to_seq=1, text="Olá!", intent="greeting", confidence=0.9
    )
    conversation.record_send_attempt(outbound_id="o1", at=now())
    conversation.mark_failed(outbound_id="o1", reason="down", code="500")
    for aggregate in (tenant, conversation):
        stored = [app.mapper.to_stored_event(e) for e in aggregate.collect_events()]
        events = [app.mapper.to_domain_event(s) for s in stored]
        rebuilt = None
        for domain_event in events:
            assert isinstance(domain_event, CanMutateProtocol)
            rebuilt = domain_event.mutate(rebuilt)
        assert rebuilt == aggregate
