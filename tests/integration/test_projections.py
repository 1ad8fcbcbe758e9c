"""The Kafka projection runner on real PostgreSQL and the Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tests.helpers import ai_reply

from urbana.adapters.embedded import EmbeddedStack, ServiceUrls
from urbana.adapters.kafka.producer import to_record
from urbana.adapters.kafka.projector import ProjectionRunner
from urbana.adapters.postgres.log import LogReader
from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.envelope import Envelope
from urbana.config import conninfo
from urbana.projections.base import physical_name
from urbana.projections.schema import all_projections

pytestmark = pytest.mark.integration

TABLES = tuple(physical_name(p, t) for p in all_projections() for t in p.tables)


def inbound(contact: str, text: str) -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=datetime.now(UTC),
        kind="text",
        text=text,
        contact_name="Cliente",
    )


def converse(store: Store, tenant_id: UUID, contacts: Sequence[str]) -> list[UUID]:
    """A few conversations: inbound, AI reply with usage, a handoff and a human reply."""
    app = store.app
    ids = []
    for i, contact in enumerate(contacts):
        got = app.receive_message(ReceiveMessage(tenant_id, "cloud", inbound(contact, "Olá")))
        app.receive_message(ReceiveMessage(tenant_id, "cloud", inbound(contact, "Preço?")))
        ai_reply(
            app,
            got.conversation_id,
            reply_to_seq=2,
            text="Custa 10",
            intent="pricing",
            confidence=0.8,
            usage={"prompt_tokens": 10, "completion_tokens": 5, "cost": "0.001"},
            score_delta=10 + i,
        )
        if i % 2:
            app.request_handoff(got.conversation_id, reason="hot_lead")
            app.accept_handoff(got.conversation_id, attendant="ana")
            app.attendant_reply(got.conversation_id, attendant="ana", text="Oi, é a Ana")
        ids.append(got.conversation_id)
    return ids


def stored_envelopes(store: Store, after: int = 0) -> list[Envelope]:
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        cur = conn.cursor()
        return [e for _, _, page in LogReader(store.schema).pages(cur, after) for e in page]


async def new_topics(bootstrap: str, *names: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def publish(bootstrap: str, topic: str, envelopes: Sequence[Envelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for e in envelopes:
            record = to_record(e)
            futures.append(
                await producer.send(
                    topic, key=record.key, value=record.value, headers=record.headers
                )
            )
        for f in futures:
            await f
    finally:
        await producer.stop()


async def publish_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        return {
            t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)  # noqa: S608
            for t in TABLES
        }


def runner(services: ServiceUrls, store: Store, topic: str, **kw: Any) -> ProjectionRunner:
    return ProjectionRunner(
        database_url=store.url,
        schema=store.schema,
        bootstrap=services.kafka,
        topic=topic,
        group_prefix=kw.pop("group_prefix", f"test.{topic}"),
        assign=True,
        dlq_topic=kw.pop("dlq_topic", f"{topic}.dlq"),
        **kw,
    )


def unique_topic() -> str:
    return f"test.events.{uuid4().hex[:10]}"


async def test_runner_builds_what_replay_builds_even_with_redeliveries(
    services: ServiceUrls, store: Store
) -> None:
    tenant_id, _ = store.app.register_tenant(f"T {uuid4().hex[:6]}")
    converse(store, tenant_id, [f"55119{n:08d}" for n in range(4)])
    envelopes = stored_envelopes(store)
    topic = unique_topic()
    await new_topics(services.kafka, topic, f"{topic}.dlq")
    await publish(services.kafka, topic, envelopes)
    await publish(services.kafka, topic, envelopes[: len(envelopes) // 2])  # redelivered
    metrics = await runner(services, store, topic, batch_size=7).run_until_caught_up(60)
    incremental = snapshot(store)
    assert len(incremental["rm_conversations_v3"]) == 4
    assert metrics["conversation_view"].skipped == len(envelopes) // 2
    assert all(m.dead_lettered == 0 for m in metrics.values())
    replay(store.url, store.schema)
    assert snapshot(store) == incremental


async def test_poison_event_goes_to_the_dlq_and_the_partition_moves_on(
    services: ServiceUrls, store: Store
) -> None:
    tenant_id, _ = store.app.register_tenant(f"T {uuid4().hex[:6]}")
    (conversation_id,) = converse(store, tenant_id, ["5511977770000"])
    before = stored_envelopes(store)
    store.app.receive_message(
        ReceiveMessage(tenant_id, "cloud", inbound("5511977770000", "depois do veneno"))
    )
    after = stored_envelopes(store, before[-1].position)
    last = before[-1]
    # In place of the last stored event: a MessageReceived without its `seq`, which the
    # conversation view cannot apply.
    poison = Envelope(
        **{
            **{f: getattr(last, f) for f in Envelope.__dataclass_fields__},
            "type": "MessageReceived",
            "aggregate": "Conversation",
            "stream_id": str(conversation_id),
            "position": last.position,
            "data": {"lead_id": None},
        }
    )
    topic = unique_topic()
    dlq = f"{topic}.dlq"
    await new_topics(services.kafka, topic, dlq, partitions=1)
    await publish(services.kafka, topic, before[:-1])
    await publish(services.kafka, topic, [poison])
    await publish_raw(services.kafka, topic, str(conversation_id).encode(), b"not json")
    await publish(services.kafka, topic, after)
    metrics = await runner(
        services, store, topic, projections=["conversation_view"]
    ).run_until_caught_up(60)
    assert metrics["conversation_view"].dead_lettered == 2
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        inbound_count = conn.execute(
            "SELECT inbound_count FROM rm_conversations_v3 WHERE id = %s", (conversation_id,)
        ).fetchone()
    assert inbound_count == (3,)  # the message after the poison was applied
    consumer = AIOKafkaConsumer(dlq, bootstrap_servers=services.kafka, auto_offset_reset="earliest")
    await consumer.start()
    try:
        got = await consumer.getmany(timeout_ms=5000, max_records=10)
    finally:
        await consumer.stop()
    dead = [r for batch in got.values() for r in batch]
    assert len(dead) == 2
    by_error = {dict(r.headers)["error"].decode().split(":")[0]: r for r in dead}
    assert set(by_error) == {"KeyError", "JSONDecodeError"}
    assert orjson.loads(by_error["KeyError"].value)["position"] == poison.position
    assert dict(by_error["KeyError"].headers)["projection"] == b"conversation_view"


async def test_a_batch_with_a_poison_event_applies_the_rest_once_in_every_projection(
    services: ServiceUrls, store: Store
) -> None:
    """One fetched batch feeds every projection; the one that cannot apply an event falls
    back to one by one and dead-letters it, the others apply the whole batch. Delivered
    again (a new group reads the topic from the start), nothing is applied twice and
    nothing is dead-lettered twice."""
    tenant_id, _ = store.app.register_tenant(f"T {uuid4().hex[:6]}")
    (conversation_id,) = converse(store, tenant_id, ["5511977771111"])
    before = stored_envelopes(store)
    store.app.receive_message(
        ReceiveMessage(tenant_id, "cloud", inbound("5511977771111", "depois do veneno"))
    )
    after = stored_envelopes(store, before[-1].position)
    last = before[-1]
    poison = Envelope(  # a MessageReceived without its `seq`: the conversation view fails
        **{
            **{f: getattr(last, f) for f in Envelope.__dataclass_fields__},
            "type": "MessageReceived",
            "aggregate": "Conversation",
            "stream_id": str(conversation_id),
            "position": last.position,
            "data": {"lead_id": None},
        }
    )
    published = [*before[:-1], poison, *after]
    topic = unique_topic()
    await new_topics(services.kafka, topic, f"{topic}.dlq", partitions=1)
    await publish(services.kafka, topic, published)

    first = await runner(services, store, topic, batch_size=10_000).run_until_caught_up(60)
    assert first["conversation_view"].dead_lettered == 1
    for name, m in first.items():
        assert m.batches == 1, name  # the whole topic came in one batch
        assert m.applied + m.dead_lettered == len(published), name
        assert m.skipped == 0, name
        assert m.positions == {0: published[-1].position}, name
    applied_once = snapshot(store)
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        inbound_count = conn.execute(
            "SELECT inbound_count FROM rm_conversations_v3 WHERE id = %s", (conversation_id,)
        ).fetchone()
    assert inbound_count == (3,)  # the messages around the poison were applied

    again = await runner(
        services, store, topic, batch_size=10_000, group_prefix=f"again.{topic}"
    ).run_until_caught_up(60)
    for name, m in again.items():
        assert (m.applied, m.dead_lettered, m.skipped) == (0, 0, len(published)), name
    assert snapshot(store) == applied_once


async def test_after_a_replay_the_runner_applies_only_what_is_newer(
    services: ServiceUrls, store: Store
) -> None:
    tenant_id, _ = store.app.register_tenant(f"T {uuid4().hex[:6]}")
    converse(store, tenant_id, ["5511966660000", "5511966660001"])
    replay(store.url, store.schema)
    converse(store, tenant_id, ["5511966660002"])
    store.app.receive_message(
        ReceiveMessage(tenant_id, "cloud", inbound("5511966660000", "mais uma"))
    )
    topic = unique_topic()
    await new_topics(services.kafka, topic, f"{topic}.dlq")
    await publish(services.kafka, topic, stored_envelopes(store))  # the whole history
    await runner(services, store, topic).run_until_caught_up(60)
    incremental = snapshot(store)
    replay(store.url, store.schema)
    assert snapshot(store) == incremental


async def test_crash_between_db_commit_and_offset_commit_applies_nothing_twice(
    services: ServiceUrls, store: Store
) -> None:
    tenant_id, _ = store.app.register_tenant(f"T {uuid4().hex[:6]}")
    converse(store, tenant_id, [f"55119555{n:05d}" for n in range(3)])
    topic = unique_topic()
    await new_topics(services.kafka, topic, f"{topic}.dlq")
    await publish(services.kafka, topic, stored_envelopes(store))

    class Crash(Exception):
        pass

    async def crash(name: str, applied: object) -> None:
        raise Crash

    with pytest.raises(Crash):
        await runner(
            services, store, topic, batch_size=5, after_db_commit=crash
        ).run_until_caught_up(60)
    metrics = await runner(services, store, topic, batch_size=5).run_until_caught_up(60)
    assert sum(m.skipped for m in metrics.values()) > 0
    incremental = snapshot(store)
    replay(store.url, store.schema)
    assert snapshot(store) == incremental


async def test_republish_filters_by_conversation_and_resumes(
    services: ServiceUrls, store: Store
) -> None:
    from urbana.adapters.kafka.republish import republish

    tenant_id, _ = store.app.register_tenant(f"T {uuid4().hex[:6]}")
    first, second = converse(store, tenant_id, ["5511944440000", "5511944440001"])
    expected = [e.position for e in stored_envelopes(store) if e.stream_id == str(second)]
    topic = unique_topic()
    await new_topics(services.kafka, topic, partitions=1)

    class Stop(Exception):
        pass

    def stop_once(published: int, position: int) -> None:
        raise Stop

    kw: dict[str, Any] = {"topic": topic, "conversation_id": second, "page_size": 8}
    with pytest.raises(Stop):
        await republish(store.url, store.schema, services.kafka, progress=stop_once, **kw)
    result = await republish(store.url, store.schema, services.kafka, **kw)
    assert result.position == store.app.recorder.max_notification_id()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=services.kafka, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got = await consumer.getmany(timeout_ms=5000, max_records=1000)
    finally:
        await consumer.stop()
    records = [r for batch in got.values() for r in batch]
    assert [orjson.loads(r.value)["position"] for r in records] == expected
    assert all(r.key == str(second).encode() for r in records)
    assert dict(records[0].headers)["event_type"] == b"ConversationStarted"
    assert first != second


async def test_run_in_a_consumer_group_follows_new_events_until_stopped(
    services: ServiceUrls, store: Store
) -> None:
    import asyncio

    tenant_id, _ = store.app.register_tenant(f"T {uuid4().hex[:6]}")
    converse(store, tenant_id, ["5511933330000"])
    topic = unique_topic()
    await new_topics(services.kafka, topic, f"{topic}.dlq")
    await publish(services.kafka, topic, stored_envelopes(store))
    group_runner = ProjectionRunner(
        database_url=store.url,
        schema=store.schema,
        bootstrap=services.kafka,
        topic=topic,
        dlq_topic=f"{topic}.dlq",
        group_prefix=f"test.{topic}",
        projections=["conversation_view"],
        poll_ms=50,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(group_runner.run(stop))
    try:
        before = store.app.recorder.max_notification_id() or 0
        converse(store, tenant_id, ["5511933330001"])
        await publish(services.kafka, topic, stored_envelopes(store, before))
        for _ in range(300):
            if conversations(store) == 2:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert conversations(store) == 2
    assert group_runner.metrics["conversation_view"].applied > 0


def conversations(store: Store) -> int:
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        exists = conn.execute("SELECT to_regclass('rm_conversations_v3')").fetchone()
        if not exists or exists[0] is None:
            return 0  # the runner has not started yet
        row = conn.execute("SELECT count(*) FROM rm_conversations_v3").fetchone()
    return int(row[0]) if row else 0


async def until(condition: Callable[[], bool], task: asyncio.Task[None], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if task.done():
            task.result()
            raise AssertionError("the runner stopped early")
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_database_restart_is_waited_out_and_nothing_dead_lettered(
    services: ServiceUrls, tmp_path: Path
) -> None:
    stack = EmbeddedStack(tmp_path / "pg", kafka_bootstrap=services.kafka, redis_url=services.redis)
    urls = await asyncio.to_thread(stack.start)
    schema = f"t_{uuid4().hex[:12]}"
    await asyncio.to_thread(ensure_schema, urls.postgres, schema)
    own = open_store(urls.postgres, os.urandom(32), schema=schema, pool_size=1)
    try:
        tenant_id, _ = own.app.register_tenant(f"T {uuid4().hex[:6]}")
        converse(own, tenant_id, ["5511922220000"])
        first = stored_envelopes(own)
        converse(own, tenant_id, ["5511922220001", "5511922220002"])
        second = stored_envelopes(own, first[-1].position)
        topic = unique_topic()
        await new_topics(services.kafka, topic, f"{topic}.dlq", partitions=1)
        following = runner(services, own, topic, poll_ms=50)
        metrics = following.metrics.values()

        def at(position: int) -> bool:
            return all(m.positions.get(0) == position for m in metrics)

        stop = asyncio.Event()
        task = asyncio.create_task(following.run(stop))
        try:
            await publish(services.kafka, topic, first)
            await until(lambda: at(first[-1].position), task, within=60)
            await asyncio.to_thread(stack.stop)
            await publish(services.kafka, topic, second)  # arrives while PostgreSQL is down
            await until(lambda: all(m.db_retries > 0 for m in metrics), task, within=60)
            await asyncio.to_thread(stack.start)
            await until(lambda: at(second[-1].position), task, within=60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        assert all(m.dead_lettered == 0 for m in metrics)
        incremental = snapshot(own)
        replay(own.url, own.schema)
        assert snapshot(own) == incremental
    finally:
        own.close()
        await asyncio.to_thread(stack.stop)
