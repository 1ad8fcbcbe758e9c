"""The one reader of the notification log, on real PostgreSQL: ranges, order, legacy tenants."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
import pytest
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import StoredEvent

from urbana.adapters.postgres.log import AsyncLogReader, LogReader
from urbana.adapters.postgres.schema import EVENTS_TABLE
from urbana.adapters.postgres.store import Store
from urbana.application.envelope import Envelope
from urbana.config import conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead
from urbana.domain.tenant import Tenant

pytestmark = pytest.mark.integration


def histories(n: int) -> tuple[Tenant, list[DomainEventProtocol[UUID]]]:
    """A tenant, then `n` leads with a conversation of three messages each, interleaved."""
    tenant = Tenant.register(f"Loja {UUID(int=n)}")
    tenant.change_prompt("Seja breve.")
    events: list[DomainEventProtocol[UUID]] = list(tenant.collect_events())
    conversations = []
    for i in range(n):
        phone = f"5511977{i:06d}"
        lead = Lead.create(tenant.id, f"phone:{phone}", phone=phone, name=f"Pessoa {i}")
        conversations.append(Conversation.start(tenant.id, "cloud", phone, lead.id))
        events.extend(lead.collect_events())
    for round_ in range(3):
        for conv in conversations:
            conv.receive(
                provider_message_id=f"w{conv.id}{round_}",
                kind="text",
                sent_at=datetime.now(UTC),
                text="oi",
            )
            events.extend(conv.collect_events())
    return tenant, events


def as_version_1(record: StoredEvent) -> StoredEvent:
    """The record as class_version 1 wrote it: `tenant_id` only in a stream's first event."""
    state = orjson.loads(record.state)
    if record.originator_version > 1 or record.topic.endswith(":Tenant.TenantRegistered"):
        state.pop("tenant_id", None)
        state.pop("class_version", None)
    return StoredEvent(
        record.originator_id, record.originator_version, record.topic, orjson.dumps(state)
    )


def store_legacy(store: Store, events: list[DomainEventProtocol[UUID]]) -> list[int]:
    """Write the events as version 1 records; their positions, in order."""
    mapper = store.app.mapper
    records = [as_version_1(mapper.to_stored_event(e)) for e in events]
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        before = conn.execute(f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}")  # noqa: S608
        row = before.fetchone()
        assert row is not None
        start = int(row[0])
        with conn.cursor().copy(
            f"COPY {EVENTS_TABLE} (originator_id, originator_version, topic, state) FROM STDIN"
        ) as copy:
            for r in records:
                copy.write_row((r.originator_id, r.originator_version, r.topic, r.state))
        conn.commit()
        rows = conn.execute(
            f"SELECT notification_id FROM {EVENTS_TABLE} WHERE notification_id > %s "  # noqa: S608
            "ORDER BY notification_id",
            (start,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def read_all(store: Store, after: int = 0, **kw: Any) -> list[Envelope]:
    reader = LogReader(store.schema, **kw)
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        return [e for page in reader.pages(conn.cursor(), after, 7) for e in page.envelopes]


def test_pages_hold_a_position_range_in_order(store: Store) -> None:
    _, events = histories(4)
    positions = store_legacy(store, events)
    after, upto = positions[2], positions[-5]
    reader = LogReader(store.schema)
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        pages = list(reader.pages(conn.cursor(), after, 5, upto))
        assert reader.count_after(conn.cursor(), after) == len(positions) - 3
    assert [e.position for p in pages for e in p.envelopes] == positions[3:-4]
    assert all(p.size == len(p.envelopes) <= 5 for p in pages)
    assert [p.last for p in pages] == [p.envelopes[-1].position for p in pages]


def test_a_reader_told_what_it_handles_decodes_only_that(store: Store) -> None:
    _, events = histories(3)
    positions = store_legacy(store, events)
    reader = LogReader(store.schema, handles=frozenset({"Conversation.MessageReceived"}))
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        pages = list(reader.pages(conn.cursor(), 0, 4))
    assert sum(p.size for p in pages) == len(positions)
    got = [e for p in pages for e in p.envelopes]
    assert {e.type for e in got} == {"MessageReceived"}
    assert len(got) == 9


def test_version_1_records_take_the_tenant_of_their_streams_first_event(store: Store) -> None:
    tenant, events = histories(5)
    positions = store_legacy(store, events)
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        stored = conn.execute(f"SELECT state FROM {EVENTS_TABLE}").fetchall()  # noqa: S608
    assert sum(b'"tenant_id"' not in bytes(s[0]) for s in stored) == 2 + 15  # legacy indeed

    whole = read_all(store)
    # Started after every stream's first event: the reader asks the store for them.
    late = read_all(store, after=positions[11])
    # A cache of one stream: the tenants it forgot are asked for again.
    forgetful = read_all(store, tenant_cache_size=1)
    for envelopes in (whole, late, forgetful):
        assert envelopes
        assert {e.tenant_id for e in envelopes} == {str(tenant.id)}
    assert [e.position for e in whole] == positions
    assert late == whole[12:]
    assert forgetful == whole


async def test_the_async_reader_reads_what_the_sync_reader_reads(store: Store) -> None:
    _, events = histories(3)
    store_legacy(store, events)
    expected = read_all(store, after=4)
    reader = AsyncLogReader(store.schema)
    conn = await psycopg.AsyncConnection.connect(conninfo(store.url, store.schema), autocommit=True)
    got: list[Envelope] = []
    try:
        after = 4
        while (page := await reader.page(conn, after, 4)) is not None:
            got.extend(page.envelopes)
            after = page.last
        assert await reader.head(conn) == after
    finally:
        await conn.close()
    assert got == expected
