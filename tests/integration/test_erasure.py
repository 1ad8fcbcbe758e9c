"""Erasure of a data subject and the retention job, on the real store and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
import redis.asyncio as aioredis
from tests.helpers import ai_reply
from tests.provider_ids import evolution_id

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.live import LiveFeed
from urbana.adapters.postgres.erasure import PostgresSubjectRows
from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.store import Store, open_store
from urbana.adapters.redis_coord import RedisCoordinator
from urbana.adapters.redis_erasure import RedisSubjectCache
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.erasure import Erasure, forget_erased
from urbana.application.ports import SystemClock
from urbana.config import conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.errors import InvalidInput, NotFound
from urbana.domain.lead import ErasedSubject, Lead
from urbana.domain.pii import ERASED
from urbana.projections import queries
from urbana.projections.base import physical_name
from urbana.projections.schema import all_projections

pytestmark = pytest.mark.integration

TABLES = tuple(physical_name(p, t) for p in all_projections() for t in p.tables)


def message(phone: str, text: str, name: str = "Marta Quintela") -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=phone,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text=text,
        contact_name=name,
    )


def new_phone() -> str:
    return f"55219{uuid4().int % 10**8:08d}"


def rows(store: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        return conn.execute(sql, params).fetchall()


def log_head(store: Store) -> int:
    return store.app.recorder.max_notification_id() or 0


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: sorted(rows(store, f"SELECT * FROM {t}"), key=repr)  # noqa: S608
        for t in TABLES
    }


@pytest.fixture
async def redis(services: ServiceUrls) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(services.redis)
    try:
        yield client
    finally:
        await client.aclose()


def erasure_on(store: Store, redis: aioredis.Redis | None = None) -> Erasure:
    cache = RedisSubjectCache(redis) if redis is not None else None
    return Erasure(store.app, PostgresSubjectRows(store.pool), cache, SystemClock())


def talk(store: Store, tenant_id: UUID, phone: str) -> tuple[UUID, UUID]:
    """A lead who writes twice and gets an AI answer; (conversation id, lead id)."""
    app = store.app
    got = app.receive_message(ReceiveMessage(tenant_id, "cloud", message(phone, "Oi, sou a Marta")))
    app.receive_message(ReceiveMessage(tenant_id, "cloud", message(phone, "Moro na Rua Sete")))
    ai_reply(
        app,
        got.conversation_id,
        reply_to_seq=2,
        text="Olá Marta, anotado",
        intent="faq",
        confidence=0.9,
        usage={"tokens_in": 1, "tokens_out": 1, "cost_usd": 0.0},
        score_delta=5,
    )
    app.add_note(got.conversation_id, author="ana", text="Marta prefere ligação")
    return got.conversation_id, got.lead_id


async def test_erasure_destroys_the_key_records_the_fact_and_removes_the_rows(
    store: Store, redis: aioredis.Redis
) -> None:
    tenant_id, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    conversation_id, lead_id = talk(store, tenant_id, new_phone())
    other_conversation, other_lead = talk(store, tenant_id, new_phone())
    replay(store.url, store.schema)
    coordinator = RedisCoordinator(redis)
    await coordinator.note_messages({conversation_id: 2})

    receipt = await erasure_on(store, redis).erase(
        tenant_id, lead_id, "subject_request", by="auditor-1"
    )

    assert (receipt.lead_id, receipt.tenant_id, receipt.already_erased) == (
        lead_id,
        tenant_id,
        False,
    )
    assert receipt.removed == {
        "data_keys": 1,
        "events_appended": 1,
        "conversations": 1,
        "messages": 3,
        "notes": 1,
        "leads": 1,
        "redis_keys": 1,
    }
    # The key material is gone; the row stays as the mark that the subject was erased.
    assert rows(
        store,
        "SELECT wrapped, erased_at IS NOT NULL FROM urbana_subject_keys WHERE subject_id = %s",
        lead_id,
    ) == [(None, True)]
    erased = store.app.stream(lead_id)[-1]
    assert type(erased).__name__ == "SubjectErased"
    assert (erased.reason, erased.by, erased.conversation_ids) == (
        "subject_request",
        "auditor-1",
        [conversation_id],
    )
    assert not await redis.exists(f"urbana:burst:{conversation_id}")
    lead = store.app.get(Lead, lead_id)
    assert (lead.erased, lead.name, lead.phone) == (True, ERASED, ERASED)
    assert {m.get("text") for m in store.app.get(Conversation, conversation_id).history} <= {
        ERASED,
        None,
    }
    # The other subject is untouched.
    assert rows(store, "SELECT count(*) FROM rm_conversations WHERE id = %s", other_conversation)
    assert store.app.get(Lead, other_lead).name == "Marta Quintela"


class ProjectorFirst(PostgresSubjectRows):
    """The read models as they are when the projector consumed `SubjectErased` (and
    deleted the subject's rows) before the erasure's own drop ran."""

    def drop(self, tenant_id: UUID, lead_id: UUID, conversation_ids: list[UUID]) -> dict[str, int]:
        super().drop(tenant_id, lead_id, conversation_ids)  # the projector's turn
        return super().drop(tenant_id, lead_id, conversation_ids)


async def test_the_receipt_counts_the_rows_when_the_projector_removed_them_first(
    store: Store,
) -> None:
    tenant_id, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    _, lead_id = talk(store, tenant_id, new_phone())
    replay(store.url, store.schema)
    erasure = Erasure(store.app, ProjectorFirst(store.pool), None, SystemClock())

    receipt = await erasure.erase(tenant_id, lead_id, "subject_request")

    removed = {k: receipt.removed[k] for k in ("conversations", "messages", "notes", "leads")}
    assert removed == {"conversations": 1, "messages": 3, "notes": 1, "leads": 1}
    assert rows(store, "SELECT count(*) FROM rm_leads WHERE id = %s", lead_id) == [(0,)]


async def test_a_second_erasure_appends_nothing_and_removes_nothing(store: Store) -> None:
    tenant_id, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    _, lead_id = talk(store, tenant_id, new_phone())
    erasure = erasure_on(store)
    first = await erasure.erase(tenant_id, lead_id, "consent_withdrawn")
    head = log_head(store)

    again = await erasure.erase(tenant_id, lead_id, "subject_request")

    assert log_head(store) == head
    assert again.already_erased
    assert again.reason == "consent_withdrawn"  # the erasure that happened
    assert set(again.removed) == set(first.removed)
    assert set(again.removed.values()) == {0}


@pytest.mark.parametrize("case", ["unknown", "other tenant", "a conversation id", "bad reason"])
async def test_refused_erasures_append_nothing_and_keep_the_key(store: Store, case: str) -> None:
    mine, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    theirs, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    conversation_id, lead_id = talk(store, theirs if case == "other tenant" else mine, new_phone())
    target = {"unknown": uuid4(), "a conversation id": conversation_id}.get(case, lead_id)
    reason = "because I said so" if case == "bad reason" else "subject_request"
    head = log_head(store)

    expected = InvalidInput if case == "bad reason" else NotFound
    with pytest.raises(expected):
        await erasure_on(store).erase(mine, target, reason)

    assert log_head(store) == head
    assert rows(
        store,
        "SELECT count(*) FROM urbana_subject_keys WHERE subject_id = %s AND wrapped IS NOT NULL",
        lead_id,
    ) == [(1,)]


async def test_the_same_phone_writing_after_erasure_is_a_new_subject(store: Store) -> None:
    tenant_id, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    phone = new_phone()
    old_conversation, old_lead = talk(store, tenant_id, phone)
    await erasure_on(store).erase(tenant_id, old_lead, "subject_request")

    again = store.app.receive_message(
        ReceiveMessage(tenant_id, "cloud", message(phone, "Voltei", name="Marta Nova"))
    )

    assert again.lead_id != old_lead
    assert again.conversation_id != old_conversation
    assert again.seq == 1  # a new conversation: nothing of the old one comes back
    fresh = store.app.get(Conversation, again.conversation_id)
    assert [m["text"] for m in fresh.history] == ["Voltei"]
    new_lead = store.app.get(Lead, again.lead_id)
    assert (new_lead.name, new_lead.score, new_lead.erased) == ("Marta Nova", 0, False)
    assert store.app.get(Lead, old_lead).erased
    # The old stream reads as erased (its key is gone, not replaced by the new one).
    assert {e.text for e in store.app.stream(old_conversation) if hasattr(e, "text")} == {ERASED}
    # Erasing the new subject, then writing once more, starts a third generation.
    await erasure_on(store).erase(tenant_id, again.lead_id, "subject_request")
    third = store.app.receive_message(ReceiveMessage(tenant_id, "cloud", message(phone, "Oi")))
    assert third.lead_id not in (old_lead, again.lead_id)

    replay(store.url, store.schema)
    conn = await psycopg.AsyncConnection.connect(conninfo(store.url, store.schema), autocommit=True)
    try:
        leads = (await queries.list_leads(conn, tenant_id, cipher=store.cipher)).items
        listed = (await queries.list_conversations(conn, tenant_id, cipher=store.cipher)).items
    finally:
        await conn.close()
    assert [lead.id for lead in leads] == [third.lead_id]
    assert [(c.id, c.last_message_preview) for c in listed] == [(third.conversation_id, "Oi")]


async def test_replay_after_erasure_builds_what_the_live_erasure_left(store: Store) -> None:
    tenant_id, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    _, lead_id = talk(store, tenant_id, new_phone())
    talk(store, tenant_id, new_phone())
    replay(store.url, store.schema)
    await erasure_on(store).erase(tenant_id, lead_id, "subject_request")
    live = snapshot(store)

    replay(store.url, store.schema)

    assert snapshot(store) == live


async def test_a_process_that_consumes_the_erasure_forgets_the_subject(
    store: Store, services: ServiceUrls, master_key: bytes
) -> None:
    tenant_id, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    phone = new_phone()
    # This store's ingest writer caches the lead and conversation (and their plaintext).
    got = store.app.receive_message(ReceiveMessage(tenant_id, "cloud", message(phone, "Oi")))
    store.app.get(Conversation, got.conversation_id)  # and the repository's cache too
    repository = store.app.repository.cache
    assert repository is not None
    assert repository.get(got.conversation_id) is not None
    cached = store.app._writer_cache
    assert cached.get(got.lead_id) is not None
    assert store.cipher._cache.get(got.lead_id) is not None
    other = open_store(store.url, master_key, schema=store.schema, pool_size=2)
    feed = LiveFeed(database_url=store.url, schema=store.schema, on_erased=forget_erased(store.app))
    await feed.start()
    try:
        # Another process erases the subject.
        await erasure_on(other).erase(tenant_id, got.lead_id, "subject_request")
        for _ in range(600):
            if store.cipher._cache.get(got.lead_id) is None:
                break
            await asyncio.sleep(0.05)
    finally:
        await feed.aclose()
        other.close()
    with pytest.raises(KeyError):
        cached.get(got.lead_id)
    with pytest.raises(KeyError):
        cached.get(got.conversation_id)
    with pytest.raises(KeyError):
        repository.get(got.conversation_id)
    assert store.cipher._cache.get(got.lead_id) is None


async def test_retention_erases_subjects_inactive_past_the_tenants_days(store: Store) -> None:
    tenant_id, _ = store.app.register_tenant(f"Keep {uuid4().hex[:8]}")
    _, first = talk(store, tenant_id, new_phone())
    _, second = talk(store, tenant_id, new_phone())
    replay(store.url, store.schema)
    erasure = erasure_on(store)
    later = datetime.now(UTC) + timedelta(days=31)

    unset = await erasure.retention(tenant_id, later, dry_run=False)
    assert (unset.retention_days, unset.due, unset.erased) == (None, [], 0)

    store.app.change_settings(tenant_id, retention_days=30)
    assert (await erasure.retention(tenant_id, datetime.now(UTC), dry_run=False)).due == []
    head = log_head(store)
    dry = await erasure.retention(tenant_id, later, dry_run=True)
    assert (sorted(dry.due, key=str), dry.erased) == (sorted([first, second], key=str), 0)
    assert log_head(store) == head

    done = await erasure.retention(tenant_id, later, dry_run=False)
    assert done.erased == 2
    assert (done.removed["data_keys"], done.removed["leads"]) == (2, 2)
    assert store.app.get(Lead, first).erased_reason == "retention"
    head = log_head(store)
    again = await erasure.retention(tenant_id, later, dry_run=False)
    assert (again.due, again.erased, log_head(store)) == ([], 0, head)


async def test_nothing_personal_is_recorded_for_an_erased_subject_nor_a_new_key_made(
    store: Store,
) -> None:
    tenant_id, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    conversation_id, lead_id = talk(store, tenant_id, new_phone())
    await erasure_on(store).erase(tenant_id, lead_id, "subject_request")
    head = log_head(store)

    with pytest.raises(ErasedSubject):
        store.app.add_note(conversation_id, author="ana", text="anotação depois do apagamento")

    assert log_head(store) == head
    assert rows(
        store, "SELECT wrapped FROM urbana_subject_keys WHERE subject_id = %s", lead_id
    ) == [(None,)]
    # Its old events still read as erased (no new key that would fail to open them).
    assert {e.text for e in store.app.stream(conversation_id) if hasattr(e, "text")} == {ERASED}


async def test_a_lid_conversation_the_projector_has_not_seen_is_erased_too(store: Store) -> None:
    """Evolution names a lead known by phone by its `@lid`: the conversation's id comes
    from the @lid, so neither the lead's key nor a lagging read model gives it."""
    tenant_id, _ = store.app.register_tenant(f"Erase {uuid4().hex[:8]}")
    phone = new_phone()
    by_phone, lead_id = talk(store, tenant_id, phone)
    replay(store.url, store.schema)  # the projector has seen the phone's conversation
    lid = f"{uuid4().int % 10**15}@lid"
    lid_message = InboundMessage(
        provider_message_id=evolution_id(),
        contact=lid,
        phone=phone,  # Evolution's senderPn
        sent_at=datetime.now(UTC),
        kind="text",
        text="Sou eu de novo, pelo outro número",
        contact_name="Marta Quintela",
    )
    # Then it stops; the @lid message is only in the store when the erasure runs.
    by_lid = store.app.receive_message(ReceiveMessage(tenant_id, "evolution", lid_message))
    assert (by_lid.lead_id, by_lid.new_conversation) == (lead_id, True)
    assert not rows(store, "SELECT 1 FROM rm_conversations WHERE id = %s", by_lid.conversation_id)

    await erasure_on(store).erase(tenant_id, lead_id, "subject_request")

    erased = store.app.stream(lead_id)[-1]
    assert sorted(erased.conversation_ids, key=str) == sorted(
        [by_phone, by_lid.conversation_id], key=str
    )
    replay(store.url, store.schema)  # the projector starts again and gets to it
    for conversation_id in (by_phone, by_lid.conversation_id):
        assert not rows(store, "SELECT 1 FROM rm_conversations WHERE id = %s", conversation_id)
        assert not rows(
            store, "SELECT 1 FROM rm_messages WHERE conversation_id = %s", conversation_id
        )
