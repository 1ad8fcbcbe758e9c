"""The event worker's consumer loop, on fake records: what it decodes, what it commits,
and what the responder's worker does with an erasure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from aiokafka import TopicPartition
from tests.fakes import InMemoryCoordination, ScriptedLLM, in_memory_app
from tests.unit.test_envelope import ClearCipher
from tests.unit.test_responder import decision

from urbana.adapters.kafka.producer import to_record
from urbana.adapters.kafka.role_workers import responder_worker
from urbana.adapters.kafka.workers import EventWorker, Subscription
from urbana.application.envelope import Envelope, envelope_from_stored
from urbana.application.responder import Responder
from urbana.application.store import OrjsonTranscoder, PiiMapper
from urbana.domain.lead import Lead

TP = TopicPartition("urbana.events.v1", 0)


def erasure_envelope(tenant_id: UUID, conversation_id: UUID) -> Envelope:
    """The envelope of a real `Lead.SubjectErased`, as the relay publishes it."""
    lead = Lead.create(tenant_id, "5511988887777", phone="5511988887777", name=None)
    lead.erase("subject_request", conversation_ids=[conversation_id])
    mapper = PiiMapper(transcoder=OrjsonTranscoder(), cipher=ClearCipher())
    stored = mapper.to_stored_event(lead.collect_events()[-1])
    return envelope_from_stored(
        1, str(stored.originator_id), stored.originator_version, stored.topic, stored.state
    )


def envelope(type_: str, data: dict[str, Any], stream_id: UUID | None = None) -> Envelope:
    return Envelope(
        event_id=str(uuid4()),
        type=type_,
        aggregate="Conversation",
        schema_version=2,
        stream_id=str(stream_id or uuid4()),
        stream_version=1,
        position=1,
        tenant_id=str(uuid4()),
        occurred_at="2026-01-01T00:00:00+00:00",
        data=data,
        encrypted=None,
    )


@dataclass
class FakeRecord:
    offset: int
    value: bytes
    headers: list[tuple[str, bytes]]


def record(offset: int, env: Envelope, *, headers: bool = True) -> FakeRecord:
    made = to_record(env)
    assert made.value is not None
    return FakeRecord(offset, made.value, made.headers if headers else [])


@dataclass
class FakeConsumer:
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def worker(handled: list[Envelope], types: list[str]) -> EventWorker:
    async def handle(env: Envelope) -> None:
        handled.append(env)

    return EventWorker(
        name="test", subscription=Subscription("127.0.0.1:1"), handle=handle, types=types
    )


async def test_records_of_other_types_are_skipped_by_their_header_and_the_rest_handled() -> None:
    handled: list[Envelope] = []
    w = worker(handled, ["MessageReceived"])
    wanted = envelope("MessageReceived", {"seq": 1})
    other = envelope("LeadScored", {"score": 3})
    undecodable = FakeRecord(3, b"not json", [("event_type", b"LeadScored")])
    await w._accept(
        {TP: [record(0, other), record(1, wanted), record(2, wanted, headers=False), undecodable]}
    )
    await w._drain()
    assert [e.type for e in handled] == ["MessageReceived", "MessageReceived"]
    assert w.metrics.skipped == 2  # the other type and the undecodable one of another type
    assert w.metrics.handled == 2


async def test_an_unchanged_offset_is_not_committed_again() -> None:
    w = worker([], ["MessageReceived"])
    consumer = FakeConsumer()
    await w._commit(consumer)
    assert consumer.commits == []  # nothing seen yet
    await w._accept({TP: [record(0, envelope("LeadScored", {}))]})
    await w._commit(consumer)
    await w._commit(consumer)
    assert consumer.commits == [{TP: 1}]
    await w._accept({TP: [record(1, envelope("LeadScored", {}))]})
    await w._commit(consumer)
    assert consumer.commits == [{TP: 1}, {TP: 2}]


async def test_the_responder_worker_forgets_an_erased_subject() -> None:
    app = in_memory_app()
    responder = Responder(app, ScriptedLLM(decision()))
    tenant_id, conversation = uuid4(), uuid4()
    responder.vectors.put(tenant_id, conversation, "Vocês abrem no domingo?", [1.0])
    forgotten: list[list[UUID]] = []

    def forget_subject(stream_ids: Iterable[UUID]) -> None:
        forgotten.append(list(stream_ids))

    app.forget_subject = forget_subject  # type: ignore[method-assign]
    w = responder_worker(
        app=app,
        responder=responder,
        coordinator=InMemoryCoordination(),
        default_debounce_ms=0,
        subscription=Subscription("127.0.0.1:1"),
    )
    erased = erasure_envelope(tenant_id, conversation)
    assert erased.type == "SubjectErased"
    lead = UUID(erased.stream_id)
    await w._accept({TP: [record(0, erased)]})
    await w._drain()
    assert w.metrics.handled == 1
    assert len(responder.vectors) == 0
    assert forgotten == [[lead, conversation]]
