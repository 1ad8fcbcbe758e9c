"""Events stored at schema version 1, before every event named its tenant, still read.

The records below are written into the store exactly as the code before version 2
wrote them (no `tenant_id` but in a stream's first event, no `class_version`, personal
fields sealed). They must load into the same aggregates, read back through the
application with their tenant, publish as version 1 envelopes that name the tenant,
and live on in streams that new version 2 events continue.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from eventsourcing.persistence import StoredEvent
from jsonschema import Draft202012Validator, FormatChecker

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.kafka.relay import Relay
from urbana.adapters.kafka.topics import partition_counts
from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage, RecordStatus
from urbana.application.channels import DeliveryStatus, InboundMessage, StatusUpdate
from urbana.application.envelope import Envelope
from urbana.domain.contacts import message_ref_id_for, tenant_id_for
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead, Stage
from urbana.domain.message_ref import MessageRef
from urbana.domain.tenant import Tenant

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "infra" / "kafka" / "schemas" / "events"
PHONE = "5511988887777"
OUTBOUND = "2279c8f0-bc75-4aa3-96bc-a6960c9e8949"
STARTS = {"ConversationStarted", "LeadCreated", "MessageRefRecorded"}


def _uuid(value: UUID) -> dict[str, str]:
    return {"_type_": "uuid", "_data_": value.hex}


def _at(value: datetime) -> dict[str, str]:
    return {"_type_": "datetime", "_data_": value.isoformat()}


class V1Streams:
    """One tenant's history as the version 1 code stored it."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.tenant = tenant_id_for(name)
        self.lead = Lead.create_id(self.tenant, f"phone:{PHONE}")
        self.conversation = Conversation.create_id(self.tenant, "cloud", PHONE)
        self.ref = message_ref_id_for(self.tenant, "cloud", "wamid.v1")
        self.name = name
        self.records: list[StoredEvent] = []

    def sealed(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A `_pii_` block as the mapper writes it, under the lead's key."""
        ciphertext = self.store.cipher.seal(self.lead, orjson.dumps(fields))
        return {
            "k": str(self.lead),
            "f": list(fields),
            "c": base64.b64encode(ciphertext).decode("ascii"),
        }

    def add(self, stream: UUID, version: int, topic: str, state: dict[str, Any]) -> None:
        state = {"timestamp": _at(datetime.now(UTC)), **state}
        self.records.append(StoredEvent(stream, version, topic, orjson.dumps(state)))

    def write(self) -> None:
        conversation = "urbana.domain.conversation:Conversation"
        lead = "urbana.domain.lead:Lead"
        self.add(
            self.tenant,
            1,
            "urbana.domain.tenant:Tenant.TenantRegistered",
            {"originator_topic": "urbana.domain.tenant:Tenant", "name": self.name},
        )
        self.add(
            self.tenant,
            2,
            "urbana.domain.tenant:Tenant.HandoffRulesChanged",
            {"changes": {"debounce_ms": 0}},
        )
        self.add(
            self.lead,
            1,
            f"{lead}.LeadCreated",
            {
                "originator_topic": lead,
                "tenant_id": _uuid(self.tenant),
                "_pii_": self.sealed({"key": f"phone:{PHONE}", "phone": PHONE, "name": None}),
            },
        )
        self.add(
            self.conversation,
            1,
            f"{conversation}.ConversationStarted",
            {
                "originator_topic": conversation,
                "tenant_id": _uuid(self.tenant),
                "channel": "cloud",
                "lead_id": _uuid(self.lead),
                "_pii_": self.sealed({"contact": PHONE}),
            },
        )
        self.add(
            self.conversation,
            2,
            f"{conversation}.MessageReceived",
            {
                "lead_id": _uuid(self.lead),
                "provider_message_id": "wamid.v1",
                "seq": 1,
                "kind": "text",
                "sent_at": _at(datetime.now(UTC)),
                "media_mime": None,
                "reply_to": None,
                "referral": None,
                "_pii_": self.sealed(
                    {
                        "text": "oi",
                        "contact_name": None,
                        "media_url": None,
                        "extra": None,
                        "contact": None,
                    }
                ),
            },
        )
        self.add(
            self.ref,
            1,
            "urbana.domain.message_ref:MessageRef.MessageRefRecorded",
            {
                "originator_topic": "urbana.domain.message_ref:MessageRef",
                "tenant_id": _uuid(self.tenant),
                "channel": "cloud",
                "provider_message_id": "wamid.v1",
                "conversation_id": _uuid(self.conversation),
                "outbound_id": None,
            },
        )
        self.add(
            self.conversation,
            3,
            f"{conversation}.AIReplyGenerated",
            {
                "lead_id": _uuid(self.lead),
                "reply_to_seq": 1,
                "intent": "greeting",
                "confidence": 0.9,
                "usage": {},
                "_pii_": self.sealed({"text": "Olá!"}),
            },
        )
        self.add(
            self.conversation,
            4,
            f"{conversation}.OutboundMessageQueued",
            {
                "lead_id": _uuid(self.lead),
                "outbound_id": OUTBOUND,
                "author": "ai",
                "attendant": None,
                "external_provider_id": None,
                "_pii_": self.sealed({"text": "Olá!"}),
            },
        )
        self.add(
            self.lead,
            2,
            f"{lead}.LeadScored",
            {"delta": 15, "score": 15, "reason": "greeting"},
        )
        self.add(
            self.lead,
            3,
            f"{lead}.LeadStageChanged",
            {"from_stage": "new", "to_stage": "engaged", "reason": "greeting"},
        )
        self.store.app.recorder.insert_events(self.records)

    def streams(self) -> tuple[UUID, ...]:
        return (self.tenant, self.lead, self.conversation, self.ref)


@pytest.fixture
def v1(store: Store) -> V1Streams:
    streams = V1Streams(store, f"Loja V1 {time.monotonic_ns()}")
    streams.write()
    return streams


def test_version_1_events_load_into_the_same_aggregates(store: Store, v1: V1Streams) -> None:
    app = store.app
    conversation = app.get(Conversation, v1.conversation)
    assert (conversation.tenant_id, conversation.lead_id) == (v1.tenant, v1.lead)
    assert (conversation.inbound_seq, conversation.answered_seq) == (1, 1)
    assert conversation.history[0]["text"] == "oi"
    assert conversation.is_queued(OUTBOUND)
    assert conversation.message(OUTBOUND).text == "Olá!"
    tenant = app.get(Tenant, v1.tenant)
    assert (tenant.tenant_id, tenant.name, tenant.settings.debounce_ms) == (v1.tenant, v1.name, 0)
    lead = app.get(Lead, v1.lead)
    assert (lead.tenant_id, lead.score, lead.stage) == (v1.tenant, 15, Stage.ENGAGED)
    ref = app.get(MessageRef, v1.ref)
    assert (ref.tenant_id, ref.conversation_id) == (v1.tenant, v1.conversation)


def test_a_message_recorded_before_ids_were_keyed_is_still_a_duplicate(
    store: Store, v1: V1Streams
) -> None:
    """Its MessageRef was named after the wamid in clear; a redelivery finds it there."""
    again = InboundMessage(
        provider_message_id="wamid.v1",
        contact=PHONE,
        phone=PHONE,
        sent_at=datetime.now(UTC),
        kind="text",
        text="oi",
    )
    got = store.app.receive_message(ReceiveMessage(v1.tenant, "cloud", again))
    assert (got.duplicate, got.conversation_id) == (True, v1.conversation)
    status = StatusUpdate("wamid.v1", DeliveryStatus.READ, datetime.now(UTC))
    assert store.app.record_statuses([RecordStatus(v1.tenant, "cloud", status)]) == ["stale"]


def test_version_1_events_read_through_the_application_name_their_tenant(
    store: Store, v1: V1Streams
) -> None:
    for stream in v1.streams():
        events = store.app.stream(stream)
        assert events
        assert {e.tenant_id for e in events} == {v1.tenant}, stream


def test_new_events_on_a_version_1_stream_are_current_and_name_their_tenant(
    store: Store, v1: V1Streams
) -> None:
    store.app.mark_sent(v1.conversation, OUTBOUND, "wamid.out")
    (sent,) = store.app.recorder.select_events(v1.conversation, gt=4)
    state = orjson.loads(sent.state)
    assert state["class_version"] == 3  # its provider id is a digest
    assert state["tenant_id"] == _uuid(v1.tenant)
    conversation = store.app.get(Conversation, v1.conversation)
    assert not conversation.is_queued(OUTBOUND)
    assert store.app.stream(v1.conversation)[-1].tenant_id == v1.tenant


async def test_version_1_events_publish_as_version_1_envelopes_naming_their_tenant(
    store: Store, v1: V1Streams, services: ServiceUrls
) -> None:
    await asyncio.to_thread(store.app.mark_sent, v1.conversation, OUTBOUND, "wamid.out")
    topic = f"test.versions.{time.monotonic_ns()}"
    async with Relay(
        database_url=store.url, schema=store.schema, bootstrap=services.kafka, topic=topic
    ) as relay:
        count = await relay.run_once()
    envelopes = [Envelope.from_json(v) for v in await _consume(services.kafka, topic, count)]
    assert len(envelopes) == count == len(v1.records) + 2  # + OutboundMessageSent, its ref
    for envelope in envelopes:
        assert envelope.tenant_id == str(v1.tenant), envelope.type
        schema = json.loads(
            (SCHEMAS / f"{envelope.type}.v{envelope.schema_version}.json").read_text()
        )
        Draft202012Validator(schema, format_checker=FormatChecker()).validate(envelope.data)
        if envelope.schema_version >= 2 or envelope.type in STARTS:
            assert envelope.data["tenant_id"] == str(v1.tenant), envelope.type
        else:
            assert "tenant_id" not in envelope.data, envelope.type
    versions = {(e.type, e.schema_version) for e in envelopes}
    assert ("MessageReceived", 1) in versions
    assert ("TenantRegistered", 1) in versions
    assert ("OutboundMessageSent", 3) in versions
    assert ("MessageRefRecorded", 2) in versions  # the new one; v1's stays at 1
    assert ("MessageRefRecorded", 1) in versions


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


def test_records_from_before_version_3_read_back_with_nobody_acting(
    store: Store, v1: V1Streams
) -> None:
    # A version 2 record, as the code before `by` wrote it, after the version 1 ones.
    state = {
        "timestamp": _at(datetime.now(UTC)),
        "class_version": 2,
        "tenant_id": _uuid(v1.tenant),
        "from_stage": "engaged",
        "to_stage": "qualified",
        "reason": "attendant",
    }
    topic = "urbana.domain.lead:Lead.LeadStageChanged"
    store.app.recorder.insert_events([StoredEvent(v1.lead, 4, topic, orjson.dumps(state))])
    changed = [e for e in store.app.stream(v1.lead) if type(e).__name__ == "LeadStageChanged"]
    assert [(e.to_stage, e.by) for e in changed] == [("engaged", None), ("qualified", None)]
    assert store.app.get(Lead, v1.lead).stage is Stage.QUALIFIED
    store.app.move_lead_stage(v1.lead, stage=Stage.HOT, by="user-ana")
    (moved,) = store.app.recorder.select_events(v1.lead, gt=4)
    assert orjson.loads(moved.state)["class_version"] == 3
    assert store.app.stream(v1.lead)[-1].by == "user-ana"


def test_settings_changes_from_before_version_3_read_back_with_nobody_acting(
    store: Store, v1: V1Streams
) -> None:
    # Version 2 records of the tenant's settings, as the code before `by` wrote them.
    after = len(store.app.recorder.select_events(v1.tenant))
    tenant = "urbana.domain.tenant:Tenant"
    old: list[tuple[str, dict[str, Any]]] = [
        ("HandoffRulesChanged", {"changes": {"hot_score": 80}}),
        ("PromptChanged", {"prompt": "Você é a assistente."}),
    ]
    records = [
        StoredEvent(
            v1.tenant,
            after + 1 + i,
            f"{tenant}.{name}",
            orjson.dumps(
                {
                    "timestamp": _at(datetime.now(UTC)),
                    "class_version": 2,
                    "tenant_id": _uuid(v1.tenant),
                    **data,
                }
            ),
        )
        for i, (name, data) in enumerate(old)
    ]
    store.app.recorder.insert_events(records)
    read = store.app.stream(v1.tenant)[after:]
    assert [(type(e).__name__, e.by) for e in read] == [
        ("HandoffRulesChanged", None),
        ("PromptChanged", None),
    ]
    settings = store.app.get(Tenant, v1.tenant).settings
    assert (settings.hot_score, settings.prompt) == (80, "Você é a assistente.")
    store.app.configure_tenant(v1.tenant, {"hot_score": 90}, by="user-ana")
    (changed,) = store.app.recorder.select_events(v1.tenant, gt=after + 2)
    assert orjson.loads(changed.state)["class_version"] == 3
    assert store.app.stream(v1.tenant)[-1].by == "user-ana"
