"""The assigner's consumer on real Kafka and PostgreSQL: handoffs and attendants coming online."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaProducer
from tests.fakes import InMemoryFinder, InMemoryRoster
from tests.helpers import ai_reply

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.kafka.assignment import assignment_worker
from urbana.adapters.kafka.producer import to_record
from urbana.adapters.kafka.relay import Relay
from urbana.adapters.kafka.workers import Subscription
from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage
from urbana.application.assignment import AutoAssigner
from urbana.application.channels import InboundMessage
from urbana.application.envelope import Envelope
from urbana.domain.attendance import Availability
from urbana.domain.conversation import Conversation, Status

pytestmark = pytest.mark.integration


async def wait_for(
    condition: Callable[[], bool], task: asyncio.Task[None], within: float = 30.0
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if task.done():
            task.result()
            raise AssertionError("the worker stopped")
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def handed_off(store: Store, tenant_id: UUID) -> UUID:
    phone = f"55119{uuid4().int % 10**8:08d}"
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=phone,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text="quero falar com um atendente",
    )
    app = store.app
    cid = app.receive_message(ReceiveMessage(tenant_id, "cloud", message)).conversation_id
    ai_reply(app, cid, reply_to_seq=1, text="Claro.", intent="human", confidence=0.9)
    app.request_handoff(cid, reason="explicit_request")
    return cid


def came_online(tenant_id: UUID, user_id: UUID, position: int) -> Envelope:
    """An attendant's AvailabilityChanged, in the shape the issue's contract fixes."""
    return Envelope(
        event_id=str(uuid4()),
        type="AvailabilityChanged",
        aggregate="User",
        schema_version=1,
        stream_id=str(user_id),
        stream_version=2,
        position=position,
        tenant_id=str(tenant_id),
        occurred_at=datetime.now(UTC).isoformat(),
        data={"tenant_id": str(tenant_id), "availability": "online"},
        encrypted=None,
    )


async def relay_all(store: Store, services: ServiceUrls, topic: str) -> None:
    relay = Relay(
        database_url=store.url, schema=store.schema, bootstrap=services.kafka, topic=topic
    )
    try:
        assert await relay.run_once() > 0
    finally:
        await relay.aclose()


async def test_the_worker_assigns_handoffs_and_hands_out_the_queue_when_someone_comes_online(
    store: Store, services: ServiceUrls
) -> None:
    app = store.app
    tid, _ = await asyncio.to_thread(app.register_tenant, f"Assigner {uuid4().hex[:8]}")
    finder = InMemoryFinder(app)
    roster = InMemoryRoster(app, finder)
    assigner = AutoAssigner(app, roster, finder)
    first = await asyncio.to_thread(handed_off, store, tid)
    finder.add(tid, first)
    topic = f"test.assigner.{uuid4().hex[:10]}"
    await relay_all(store, services, topic)

    worker = assignment_worker(
        assigner=assigner,
        subscription=Subscription(services.kafka, topic, f"test.assigner.{uuid4().hex[:10]}"),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    def expectation_sent(cid: UUID) -> bool:
        conv = app.get(Conversation, cid)
        return any(m.author == "system" for m in conv.outbound.values())

    try:
        # Nobody online: it waits in the general queue, and the lead is told.
        await wait_for(lambda: expectation_sent(first), task)
        assert app.get(Conversation, first).status is Status.WAITING_HUMAN

        user = uuid4()
        roster.set(tid, str(user), Availability.ONLINE)
        producer = AIOKafkaProducer(bootstrap_servers=services.kafka, acks="all")
        await producer.start()
        try:
            record = to_record(came_online(tid, user, position=10**9))
            await producer.send_and_wait(
                topic, key=record.key, value=record.value, headers=record.headers
            )
        finally:
            await producer.stop()
        await wait_for(lambda: app.get(Conversation, first).assignee == str(user), task)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert app.get(Conversation, first).status is Status.HUMAN


async def test_the_worker_retries_a_handoff_until_its_messages_are_sent(
    store: Store, services: ServiceUrls
) -> None:
    app = store.app
    tid, _ = await asyncio.to_thread(app.register_tenant, f"Assigner {uuid4().hex[:8]}")
    finder = InMemoryFinder(app)
    roster = InMemoryRoster(app, finder)
    roster.set(tid, "ana", Availability.ONLINE)
    cid = await asyncio.to_thread(handed_off, store, tid)
    finder.add(tid, cid)
    topic = f"test.assigner.{uuid4().hex[:10]}"
    await relay_all(store, services, topic)
    worker = assignment_worker(
        assigner=AutoAssigner(app, roster, finder),
        subscription=Subscription(services.kafka, topic, f"test.assigner.{uuid4().hex[:10]}"),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(lambda: worker.metrics.retries >= 1, task)
        assert app.get(Conversation, cid).status is Status.WAITING_HUMAN
        (out,) = app.get(Conversation, cid).outbound  # the AI's answer, not sent yet
        await asyncio.to_thread(app.mark_sent, cid, out, f"wamid.out.{uuid4().hex}")
        await wait_for(lambda: app.get(Conversation, cid).assignee == "ana", task)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert app.get(Conversation, cid).message(out).delivery.value == "sent"
