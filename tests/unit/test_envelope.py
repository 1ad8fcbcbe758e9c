"""The one decoder: a stored record becomes the public envelope of infra/kafka/schemas."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4, uuid5

import orjson
from eventsourcing.domain import DomainEventProtocol
from jsonschema import Draft202012Validator, FormatChecker

from urbana.application.envelope import EVENT_ID_NAMESPACE, Envelope, envelope_from_stored
from urbana.application.store import OrjsonTranscoder, PiiMapper
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead, Stage
from urbana.domain.message_ref import MessageRef
from urbana.domain.plans import LeadQuota, Plan, billing_month
from urbana.domain.templates import Template
from urbana.domain.tenant import ChannelRoute, Tenant
from urbana.domain.user import ApiKey, Availability, Role, User, UserEmail

SCHEMAS = Path(__file__).resolve().parents[2] / "infra" / "kafka" / "schemas"
TOPIC = "urbana.domain.conversation:Conversation.MessageReceived"


class ClearCipher:
    """A SubjectCipher that does not encrypt (the decoder never opens anything)."""

    def seal(self, subject_id: UUID, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, subject_id: UUID, sealed: bytes) -> bytes | None:
        return sealed

    def prepare(self, subject_ids: Iterable[UUID]) -> None:
        return None

    def shred(self, subject_id: UUID) -> bool:
        return False

    def forget(self, subject_ids: Iterable[UUID]) -> None:
        return None

    def digest(self, context: str, value: str) -> str:
        return f"{context}:{value}"


@cache
def schema(relative: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / relative).read_text(encoding="utf-8"))
    return loaded


def validator(relative: str) -> Draft202012Validator:
    return Draft202012Validator(schema(relative), format_checker=FormatChecker())


def history() -> list[DomainEventProtocol[UUID]]:
    """Every event type, recorded by the domain itself."""
    now = datetime.now(UTC)
    tenant = Tenant.register("Loja")
    tenant.connect_channel(
        channel="cloud", route_key="pnid1", public={"phone_number_id": "pnid1"}, secrets={"s": "x"}
    )
    tenant.change_settings(hot_score=80)
    tenant.change_prompt("Seja breve.")
    tenant.add_knowledge_document(name="faq.md", text="Abrimos às 9h.")
    tenant.create_queue(queue_id="q-vendas", name="Vendas", intents=("pricing",))
    tenant.change_queue(queue_id="q-vendas", name="Vendas e orçamentos")
    tenant.save_canned_response(shortcut="/pix", text="Nossa chave Pix é loja@example.com")
    tenant.remove_canned_response(shortcut="pix")
    tenant.configure_telegram(chat_id="-100123", bot_token="123:abc")
    welcome = Template.of("boas_vindas", "pt_BR", ["nome"], "Oi {{1}}!")
    tenant.register_template(welcome)
    tenant.register_template(Template.of("ate_logo", "pt_BR", [], "Até logo!"))
    tenant.remove_template(name="ate_logo")
    tenant.change_plan(Plan.of("custom", 1), by="operator")
    route = ChannelRoute(channel="cloud", route_key="pnid1", tenant_id=tenant.id)
    route.change_state(state="waiting_qr", at=now, qr_code="data:image/png;base64,iVBOR")
    lead = Lead.create(tenant.id, "phone:5511999990000", phone="5511999990000", name="Ana")
    lead.score_by(45, reason="pricing")
    lead.move_to(Stage.HOT, reason="attendant", by="user-ana")
    lead.update_profile(name="Ana Maria")
    month = billing_month(now)
    quota = LeadQuota(tenant_id=tenant.id, month=month)
    quota.count(lead.id, 1)
    lead.mark_over_plan_limit(month=month, limit=1)
    lead.record_export(by="user-aud", role="auditor", purpose="LGPD art. 18", rendering="json")
    conv = Conversation.start(tenant.id, "cloud", "5511999990000", lead.id)
    by_lid = Conversation.start(tenant.id, "evolution", "123456789012345@lid", lead.id)
    lead.link_conversation(by_lid.id)
    lead.erase("subject_request", conversation_ids=[conv.id], by="user-auditor")
    conv.receive(
        provider_message_id="w1",
        kind="text",
        sent_at=now,
        text="oi",
        contact_name="Ana",
        referral={"source_url": "https://ad.example"},
        extra={"a": [1, {"b": 2}]},
    )
    conv.record_ai_reply(
        outbound_id="o1",
        reply_to_seq=1,
        text="olá",
        intent="greeting",
        confidence=0.5,
        usage={"tokens_in": 3, "cost_usd": 0.1},
    )
    conv.mark_sent(outbound_id="o1", provider_message_id="wo1")
    conv.mark_delivered(outbound_id="o1", at=now)
    conv.mark_read(outbound_id="o1", at=now)
    conv.receive(provider_message_id="w2", kind="text", sent_at=now, text="e o preço?")
    conv.reject_ai_reply(reply_to_seq=2, text="não sei", reason="ungrounded")
    conv.queue_system_message(outbound_id="o2", text="Um momento.")
    conv.cancel_outbound(outbound_id="o2", reason="superseded")
    conv.request_handoff(reason="pricing", summary="quer preço")
    conv.accept_handoff(attendant="ana")
    conv.send_template(outbound_id="t1", attendant="ana", template=welcome, values={"nome": "Rui"})
    conv.attendant_reply(now=now, outbound_id="o3", attendant="ana", text="Oi, sou a Ana")
    conv.record_send_attempt(outbound_id="o3", at=now)
    conv.mark_failed(outbound_id="o3", reason="gateway down", code="131000")
    conv.retry_outbound(outbound_id="o3", by="ops", now=now)
    conv.add_note(note_id="n1", author="ana", text="cliente pediu desconto")
    conv.change_labels(by="ana", add=["vip"], remove=[])
    conv.transfer(by="ana", to_queue="q-vendas", note_id="n2", note="melhor com vendas")
    conv.assign(assignee="bia", by="sup", queue="q-vendas")
    conv.release_inactive(now=now + timedelta(hours=1), limit=timedelta(minutes=15))
    conv.return_to_ai(by="sup")
    conv.close(by="ana")
    conv.reopen(by="ana")
    conv.close(by="ana")
    conv.receive(provider_message_id="w3", kind="text", sent_at=now, text="voltei")
    held = MessageRef(tenant.id, "cloud", "w9", None, None)
    held.hold_status(status="delivered", at=now, code=None, title=None)
    held.link(conversation_id=conv.id, outbound_id="o1")
    user = User.invite(
        tenant_id=tenant.id, email="ana@loja.com", role=Role.ADMIN, password_hash="h"
    )
    index = UserEmail(email=user.email, user_id=user.id, tenant_id=tenant.id)
    user.change_role(Role.SUPERVISOR, by=None)
    user.disable(by=str(user.id))
    user.enable(by=str(user.id))
    user.change_password("h2")
    user.set_availability(Availability.ONLINE)
    user.set_queues(["vendas"])
    key = ApiKey.create(
        tenant_id=tenant.id, name="crm", role=Role.ANALYST, secret_hash="0" * 64, by=None
    )
    key.revoke(by=str(user.id))
    return [
        *tenant.collect_events(),
        *route.collect_events(),
        *lead.collect_events(),
        *conv.collect_events(),
        *held.collect_events(),
        *user.collect_events(),
        *index.collect_events(),
        *key.collect_events(),
        *quota.collect_events(),
    ]


def stored(events: list[DomainEventProtocol[UUID]]) -> list[tuple[int, str, int, str, bytes]]:
    mapper = PiiMapper(transcoder=OrjsonTranscoder(), cipher=ClearCipher())
    out = []
    for position, event in enumerate(events, start=1):
        record = mapper.to_stored_event(event)
        out.append(
            (
                position,
                str(record.originator_id),
                record.originator_version,
                record.topic,
                record.state,
            )
        )
    return out


def test_every_event_type_decodes_to_an_envelope_its_schemas_accept() -> None:
    envelope_schema = validator("envelope.v1.json")
    seen: set[str] = set()
    for row in stored(history()):
        envelope = envelope_from_stored(*row)
        envelope_schema.validate(orjson.loads(envelope.to_json()))
        name = f"events/{envelope.type}.v{envelope.schema_version}.json"
        validator(name).validate(envelope.data)
        personal = schema(name)["x-encrypted-fields"]
        if personal:
            assert envelope.encrypted is not None
            assert envelope.encrypted["fields"] == personal
            assert not set(personal) & set(envelope.data)
            subject = schema(name)["x-subject-key"]
            expected = envelope.stream_id if subject == "stream_id" else envelope.data[subject]
            assert envelope.encrypted["key_id"] == expected
        else:
            assert envelope.encrypted is None
        assert (envelope.position, envelope.stream_id, envelope.stream_version) == row[:3]
        assert envelope.occurred.tzinfo is not None
        seen.add(envelope.type)
    on_disk = {schema(f"events/{p.name}")["x-event-type"] for p in (SCHEMAS / "events").iterdir()}
    assert seen == on_disk  # every schema checked against a real envelope


def test_the_event_id_is_uuid5_of_stream_and_version() -> None:
    for row in stored(history()):
        envelope = envelope_from_stored(*row)
        assert envelope.event_id == str(uuid5(EVENT_ID_NAMESPACE, f"{row[1]}:{row[2]}"))
        without = envelope_from_stored(*row, event_id=False)
        assert without == replace(envelope, event_id="")


def test_tagged_store_values_become_plain_json() -> None:
    stream, ref = uuid4(), uuid4()
    state = orjson.dumps(
        {
            "timestamp": {"_type_": "datetime", "_data_": "2025-03-01T12:00:00+00:00"},
            "originator_topic": "ignored",
            "class_version": 2,
            "ref": {"_type_": "uuid", "_data_": ref.hex},
            "amounts": [{"_type_": "decimal", "_data_": "1.50"}, 2],
            "nested": {"at": {"_type_": "datetime", "_data_": "2025-03-01T12:00:01+00:00"}},
            "text": None,
        }
    )
    envelope = envelope_from_stored(7, str(stream), 3, TOPIC, state)
    assert (envelope.aggregate, envelope.type, envelope.schema_version) == (
        "Conversation",
        "MessageReceived",
        2,
    )
    assert envelope.occurred_at == "2025-03-01T12:00:00+00:00"
    assert envelope.data == {
        "ref": str(ref),
        "amounts": ["1.50", 2],
        "nested": {"at": "2025-03-01T12:00:01+00:00"},
        "text": None,
    }
    assert envelope.encrypted is None
    assert envelope.tenant_id is None


def test_the_events_own_tenant_wins_over_the_streams() -> None:
    own, streams = uuid4(), str(uuid4())
    timestamp = {"_type_": "datetime", "_data_": "2025-03-01T12:00:00+00:00"}
    carrying = orjson.dumps(
        {"timestamp": timestamp, "tenant_id": {"_type_": "uuid", "_data_": own.hex}}
    )
    legacy = orjson.dumps({"timestamp": timestamp, "seq": 2})
    stream = str(uuid4())
    assert envelope_from_stored(1, stream, 2, TOPIC, carrying, streams).tenant_id == str(own)
    assert envelope_from_stored(2, stream, 3, TOPIC, legacy, streams).tenant_id == streams
    assert envelope_from_stored(3, stream, 4, TOPIC, legacy).tenant_id is None


def test_an_envelope_reads_back_from_its_json() -> None:
    for row in stored(history()):
        envelope = envelope_from_stored(*row, str(uuid4()))
        assert Envelope.from_json(envelope.to_json()) == envelope
