"""The public Kafka contract: topics.yaml, the envelope schema and one data schema per event."""

from __future__ import annotations

import asyncio
import json
import time
import typing
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from eventsourcing.domain import Aggregate, DomainEvent
from jsonschema import Draft202012Validator, FormatChecker
from tests.helpers import ai_reply

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.kafka.relay import Relay
from urbana.adapters.kafka.topics import (
    BUILTIN_TOPICS,
    DLQ_TOPIC,
    EVENTS_TOPIC,
    init_topics,
    load_topics,
    partition_counts,
)
from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage, RecordStatus
from urbana.application.channels import (
    ChannelState,
    DeliveryStatus,
    InboundMessage,
    StatusUpdate,
)
from urbana.application.envelope import Envelope
from urbana.application.gateways import gateway_config
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead, Stage
from urbana.domain.message_ref import MessageRef
from urbana.domain.pii import pii_spec
from urbana.domain.plans import LeadQuota
from urbana.domain.tenant import ChannelRoute, Tenant
from urbana.domain.user import ApiKey, Availability, Role, User, UserEmail

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "infra" / "kafka" / "schemas"
TOPICS_YAML = ROOT / "infra" / "kafka" / "topics.yaml"
AGGREGATES: tuple[type[Aggregate], ...] = (
    Conversation,
    Lead,
    Tenant,
    ChannelRoute,
    MessageRef,
    User,
    UserEmail,
    ApiKey,
    LeadQuota,
)
_EVENT_META = {
    "originator_id",
    "originator_version",
    "timestamp",
    "originator_id_type",
    "originator_topic",
}


def domain_events() -> list[type[DomainEvent]]:
    found = []
    for aggregate in AGGREGATES:
        for name, cls in vars(aggregate).items():
            is_event = isinstance(cls, type) and issubclass(cls, DomainEvent)
            if is_event and name not in ("Event", "Created"):
                found.append(cls)
    return found


@cache
def schema(relative: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / relative).read_text(encoding="utf-8"))
    return loaded


def validator(relative: str) -> Draft202012Validator:
    document = schema(relative)
    Draft202012Validator.check_schema(document)
    return Draft202012Validator(document, format_checker=FormatChecker())


def data_schema_name(event_type: str, version: int) -> str:
    return f"events/{event_type}.v{version}.json"


# ------------------------------------------------------------------- static contract


def test_every_event_type_has_a_data_schema_with_its_non_personal_fields() -> None:
    events = domain_events()
    assert events
    for cls in events:
        version = getattr(cls, "class_version", 1)
        document = schema(data_schema_name(cls.__name__, version))
        Draft202012Validator.check_schema(document)
        spec = pii_spec(cls)
        personal = list(spec.fields) if spec else []
        fields = set(typing.get_type_hints(cls)) - _EVENT_META
        assert set(document["properties"]) == fields - set(personal), cls.__qualname__
        assert document["x-encrypted-fields"] == personal, cls.__qualname__
        assert document["x-event-type"] == cls.__name__
        assert document["additionalProperties"] is False


def test_schema_files_are_only_for_known_event_types() -> None:
    # Every version ever published stays documented: the store holds older records.
    known = {
        data_schema_name(c.__name__, version)
        for c in domain_events()
        for version in range(1, getattr(c, "class_version", 1) + 1)
    }
    on_disk = {f"events/{p.name}" for p in (SCHEMAS / "events").glob("*.json")}
    assert on_disk == known


def test_builtin_topics_are_the_ones_in_topics_yaml() -> None:
    assert load_topics(TOPICS_YAML) == list(BUILTIN_TOPICS)
    events = {t.name: t for t in BUILTIN_TOPICS}
    assert events[EVENTS_TOPIC].partitions == 12
    assert events[EVENTS_TOPIC].config["cleanup.policy"] == "delete"
    assert DLQ_TOPIC in events


def test_production_profile_raises_replication() -> None:
    spec = load_topics(TOPICS_YAML)[0].for_profile("production")
    assert spec.replication_factor == 3
    assert spec.config["min.insync.replicas"] == "2"
    assert spec.config["cleanup.policy"] == "delete"


async def test_init_topics_creates_what_is_missing_and_only_once(
    services: ServiceUrls, tmp_path: Path
) -> None:
    suffix = uuid4().hex[:8]
    text = TOPICS_YAML.read_text().replace(EVENTS_TOPIC, f"{EVENTS_TOPIC}.{suffix}")
    text = text.replace(DLQ_TOPIC, f"{DLQ_TOPIC}.{suffix}")
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(text)

    created = await init_topics(services.kafka, topics_file)
    assert created == [f"{EVENTS_TOPIC}.{suffix}", f"{DLQ_TOPIC}.{suffix}"]
    assert await init_topics(services.kafka, topics_file) == []
    counts = await partition_counts(services.kafka)
    assert counts[f"{EVENTS_TOPIC}.{suffix}"] == 12
    assert counts[f"{DLQ_TOPIC}.{suffix}"] == 3


# ------------------------------------------------------------ what is really published


def inbound(contact: str, text: str | None = "oi", **kw: Any) -> InboundMessage:
    return InboundMessage(
        provider_message_id=kw.pop("pid", None) or f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=datetime.now(UTC),
        kind="text",
        text=text,
        **kw,
    )


def rich_history(store: Store) -> None:
    """At least one of most event types, through the application's commands."""
    app = store.app
    tid, _ = app.register_tenant(f"Schemas {uuid4().hex[:8]}")
    app.change_plan(tid, "custom", 1)
    app.connect_channel(
        tid,
        gateway_config(
            "cloud",
            {
                "phone_number_id": f"pnid{uuid4().hex[:8]}",
                "app_secret": f"appsecret{uuid4().hex}",
                "verify_token": f"verify{uuid4().hex}",
                "access_token": f"token{uuid4().hex}",
            },
        ),
    )
    phone = f"55119{uuid4().int % 10**8:08d}"
    got = app.receive_message(
        ReceiveMessage(
            tid,
            "cloud",
            inbound(
                phone,
                "Quero um orçamento",
                contact_name="Maria",
                referral={"source_url": "https://ad.example"},
            ),
        )
    )
    cid = got.conversation_id
    out = ai_reply(
        app, cid, reply_to_seq=1, text="Claro!", intent="pricing", confidence=0.9, score_delta=50
    )
    app.mark_sent(cid, out, "wamid.out1")
    app.record_statuses(
        [
            RecordStatus(
                tid, "cloud", StatusUpdate("wamid.out1", DeliveryStatus.DELIVERED, _now())
            ),
            RecordStatus(tid, "cloud", StatusUpdate("wamid.out1", DeliveryStatus.READ, _now())),
            RecordStatus(
                tid, "cloud", StatusUpdate("wamid.later", DeliveryStatus.DELIVERED, _now())
            ),
        ]
    )
    app.receive_message(ReceiveMessage(tid, "cloud", inbound(phone, "e o prazo?")))
    queued = ai_reply(app, cid, reply_to_seq=2, text="Em 3 dias", intent="x", confidence=0.8)
    app.cancel_outbound(cid, queued, "superseded")
    app.request_handoff(cid, reason="pricing", summary="quer orçamento")
    app.accept_handoff(cid, attendant="ana")
    failed = app.attendant_reply(cid, attendant="ana", text="Olá, sou a Ana")
    app.record_send_attempt(cid, failed, _now())
    app.mark_failed(cid, failed, "gateway down", code="131000")
    app.retry_outbound(cid, failed, by="ops")
    queue = app.create_queue(tid, "Vendas", ("pricing",))
    app.change_queue(tid, queue, name="Vendas e orçamentos")
    app.save_canned_response(tid, "/prazo", "Entregamos em 3 dias úteis.")
    app.remove_canned_response(tid, "/prazo")
    app.add_note(cid, author="ana", text="quer parcelar em 3x")
    app.change_labels(cid, by="ana", add=["vip"])
    app.transfer(cid, by="ana", to_queue=queue, note="melhor com vendas")
    app.assign(cid, assignee="bia", by="sup")
    app.release_inactive(cid, now=_now() + timedelta(hours=1))
    app.return_to_ai(cid, by="sup")
    app.close_conversation(cid, by="ana")
    app.reopen_conversation(cid, by="ana")
    app.close_conversation(cid, by="ana")
    app.move_lead_stage(app.get(Conversation, cid).lead_id, stage=Stage.NEW, by="bia")
    app.receive_message(ReceiveMessage(tid, "cloud", inbound(phone, "voltei")))
    user = app.add_user(
        tid, email=f"ana{uuid4().hex[:8]}@example.com", role=Role.ATTENDANT, password_hash="h1"
    )
    app.update_user(tid, user, by=None, role=Role.SUPERVISOR, disabled=True, password_hash="h2")
    app.update_user(tid, user, by=str(user), disabled=False)
    app.set_availability(tid, user, Availability.ONLINE)
    app.set_user_queues(tid, user, ["vendas"])
    key = app.create_api_key(tid, role=Role.ANALYST, secret_hash="0" * 64, by=str(user))
    app.revoke_api_key(tid, key, by=None)
    instance = f"inst{uuid4().hex[:8]}"
    app.connect_channel(
        tid,
        gateway_config(
            "evolution",
            {
                "instance": instance,
                "webhook_secret": f"hook{uuid4().hex}",
                "api_url": "http://evolution.example",
                "api_key": f"key{uuid4().hex}",
            },
        ),
    )
    qr = ChannelState(
        "waiting_qr", _now(), qr_code="data:image/png;base64,iVBOR", pairing_code="AB"
    )
    app.record_channel_state(tid, "evolution", qr)
    app.record_channel_state(tid, "evolution", ChannelState("connected", _now(), reason="200"))
    # A second new lead: past the plan's limit of one.
    app.receive_message(ReceiveMessage(tid, "cloud", inbound(f"55119{uuid4().int % 10**8:08d}")))
    # The business phone wrote a message whose status had arrived first.
    app.receive_message(
        ReceiveMessage(
            tid, "cloud", inbound(phone, "mensagem do celular", pid="wamid.later", from_me=True)
        )
    )


def _now() -> datetime:
    return datetime.now(UTC)


async def test_every_published_envelope_validates_against_the_schemas(
    store: Store, services: ServiceUrls
) -> None:
    await asyncio.to_thread(rich_history, store)
    topic = f"test.schemas.{uuid4().hex[:10]}"
    async with Relay(
        database_url=store.url, schema=store.schema, bootstrap=services.kafka, topic=topic
    ) as relay:
        count = await relay.run_once()

    envelope_validator = validator("envelope.v1.json")
    seen_types: set[str] = set()
    records = await _consume(services.kafka, topic, count)
    assert len(records) == count
    for value in records:
        doc = json.loads(value)
        envelope_validator.validate(doc)
        envelope = Envelope.from_json(value)
        name = data_schema_name(envelope.type, envelope.schema_version)
        validator(name).validate(envelope.data)
        personal = schema(name)["x-encrypted-fields"]
        if personal:
            assert envelope.encrypted is not None
            assert envelope.encrypted["fields"] == personal
            subject = schema(name)["x-subject-key"]
            expected = envelope.stream_id if subject == "stream_id" else envelope.data[subject]
            assert envelope.encrypted["key_id"] == expected
        else:
            assert envelope.encrypted is None
        assert envelope.tenant_id is not None
        UUID(envelope.tenant_id)
        seen_types.add(envelope.type)
    # The history above really exercised the schemas (not just a couple of types).
    assert {
        "TenantRegistered",
        "ChannelConnected",
        "ChannelRouted",
        "ChannelStateChanged",
        "ConversationStarted",
        "LeadCreated",
        "MessageReceived",
        "MessageRefRecorded",
        "AIReplyGenerated",
        "OutboundMessageQueued",
        "OutboundMessageSent",
        "MessageDelivered",
        "MessageRead",
        "StatusHeld",
        "LeadScored",
        "LeadStageChanged",
        "OutboundMessageCancelled",
        "HandoffRequested",
        "HandoffAccepted",
        "OutboundMessageFailed",
        "OutboundSendAttempted",
        "OutboundMessageRetried",
        "ReturnedToAI",
        "ConversationClosed",
        "ConversationReopened",
        "MessageRefLinked",
        "QueueCreated",
        "QueueChanged",
        "CannedResponseSaved",
        "CannedResponseRemoved",
        "NoteAdded",
        "LabelsChanged",
        "ConversationTransferred",
        "ConversationAssigned",
        "ReturnedToQueue",
        "UserInvited",
        "UserEmailClaimed",
        "UserRoleChanged",
        "UserDisabled",
        "UserEnabled",
        "PasswordChanged",
        "AvailabilityChanged",
        "UserQueuesChanged",
        "ApiKeyCreated",
        "ApiKeyRevoked",
        "PlanChanged",
        "LeadQuotaOpened",
        "LeadCounted",
        "LeadOverPlanLimit",
    } <= seen_types


async def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    partitions = (await partition_counts(bootstrap))[topic]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < count and time.monotonic() < deadline:
            for items in (await consumer.getmany(timeout_ms=200)).values():
                values.extend(r.value for r in items if r.value is not None)
        return values
    finally:
        await consumer.stop()
