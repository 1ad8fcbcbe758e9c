"""The responder's consumer on real Kafka, PostgreSQL and a Redis of the test's own.

Redis down must pause the responder, never stop it: the fault stays inside the event's
retries (not in the consumer loop, where it would crash the role), and the burst is
answered within seconds of Redis's return.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from tests.redis_server import RedisServer

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.kafka.relay import Relay
from urbana.adapters.kafka.role_workers import responder_worker
from urbana.adapters.kafka.workers import EventWorker, Subscription
from urbana.adapters.llm.retrieval import RetrievalResponder
from urbana.adapters.postgres.store import Store
from urbana.adapters.redis_coord import RedisCoordinator, redis_client
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.responder import Responder
from urbana.domain.conversation import Conversation

pytestmark = pytest.mark.integration


async def wait_for(
    condition: Callable[[], bool], task: asyncio.Task[None], within: float = 30.0
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if task.done():
            task.result()  # the worker's own error, if it crashed
            raise AssertionError("the worker stopped")
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def stored_message(store: Store) -> UUID:
    """A new lead's message, stored: a conversation with a burst to answer."""
    tenant_id, _ = await asyncio.to_thread(store.app.register_tenant, f"T {uuid4().hex[:8]}")
    contact = f"55119{uuid4().int % 10**8:08d}"
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=datetime.now(UTC),
        kind="text",
        text="Vocês abrem no domingo?",
    )
    (outcome,) = await asyncio.to_thread(
        store.app.receive_messages, [ReceiveMessage(tenant_id, "cloud", message)]
    )
    assert not isinstance(outcome, Exception)
    return Conversation.create_id(tenant_id, "cloud", contact)


async def test_a_redis_outage_pauses_the_responder_and_it_answers_when_redis_returns(
    store: Store, services: ServiceUrls, tmp_path: Path
) -> None:
    conversation_id = await stored_message(store)
    topic = f"test.responder.{uuid4().hex[:10]}"
    relay = Relay(
        database_url=store.url, schema=store.schema, bootstrap=services.kafka, topic=topic
    )
    try:
        assert await relay.run_once() > 0
    finally:
        await relay.aclose()

    redis = RedisServer(tmp_path / "redis")
    redis.start()
    client = redis_client(redis.url)
    worker: EventWorker = responder_worker(
        app=store.app,
        responder=Responder(store.app, RetrievalResponder()),
        coordinator=RedisCoordinator(client, prefix=f"test:{uuid4().hex}"),
        default_debounce_ms=0,
        subscription=Subscription(services.kafka, topic, f"test.responder.{uuid4().hex[:10]}"),
    )

    def answered() -> bool:
        return bool(store.app.get(Conversation, conversation_id).answered_seq >= 1)

    stop = asyncio.Event()
    redis.stop()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(lambda: worker.metrics.retries >= 3, task)  # it met the outage
        assert not answered()
        assert worker.metrics.restarts == 0  # the consumer itself never noticed

        redis.start()
        back = time.monotonic()
        await wait_for(answered, task)
        assert time.monotonic() - back < 5.0
        await wait_for(lambda: worker.metrics.handled >= 1, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await client.aclose()
        redis.stop()
