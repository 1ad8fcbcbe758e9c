"""Data subject requests on the real store: the subject's streams read whole, lookup and
export over them, and the access-log table's grants and row-level security."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import AsyncConnectionPool
from tests.helpers import ai_reply

from urbana.adapters.postgres import access_log
from urbana.adapters.postgres.erasure import PostgresSubjectRows
from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.store import Store
from urbana.adapters.postgres.subjects import PostgresSubjectStreams
from urbana.application.app import Received, ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.erasure import Erasure
from urbana.application.ports import SystemClock
from urbana.application.privacy import SubjectQuery, SubjectRequests
from urbana.config import conninfo
from urbana.domain.errors import NotFound
from urbana.domain.pii import ERASED
from urbana.projections.access import tenant_read
from urbana.projections.schema import API_ROLE

pytestmark = pytest.mark.integration

PHONE = "5511987654321"  # with the ninth digit
OLD_FORM = "551187654321"  # the same mobile without it


def say(
    store: Store,
    tenant: UUID,
    text: str,
    *,
    channel: str = "cloud",
    contact: str = PHONE,
    phone: str | None = PHONE,
) -> Received:
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text=text,
        contact_name="Joana Prado",
    )
    return store.app.receive_message(ReceiveMessage(tenant, channel, message))


def requests(store: Store) -> SubjectRequests:
    streams = PostgresSubjectStreams(store.pool, store.schema)
    return SubjectRequests(store.app, streams, store.cipher, SystemClock())


def test_records_are_every_event_of_the_streams_asked_in_commit_order(store: Store) -> None:
    tenant, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    first = say(store, tenant, "Oi", channel="cloud")
    say(store, tenant, "Outro cliente", contact="5511900001111", phone="5511900001111")
    second = say(store, tenant, "Pelo Evolution", channel="evolution")
    say(store, tenant, "De novo", channel="cloud")
    streams = PostgresSubjectStreams(store.pool, store.schema)

    records = streams.records([first.conversation_id, second.conversation_id, first.lead_id])

    positions = [r.position for r in records]
    assert positions == sorted(positions)
    assert {r.stream_id for r in records} == {
        str(first.conversation_id),
        str(second.conversation_id),
        str(first.lead_id),
    }
    for stream in {r.stream_id for r in records}:
        versions = [r.version for r in records if r.stream_id == stream]
        assert versions == list(range(1, len(versions) + 1))  # the whole stream
    # They come sealed. (A text with a space: "Oi" alone turns up by chance in base64.)
    assert b"Pelo Evolution" not in b"".join(r.state for r in records)
    assert streams.records([uuid4()]) == []
    assert streams.records([]) == []


def test_both_phone_forms_and_the_lead_id_find_one_subject_with_every_channel(
    store: Store,
) -> None:
    tenant, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    cloud = say(store, tenant, "Oi pelo Cloud")
    evolution = say(store, tenant, "Oi pelo Evolution", channel="evolution", contact=OLD_FORM)

    found = [
        requests(store).find(tenant, SubjectQuery(phone=form))
        for form in (PHONE, OLD_FORM, "+55 (11) 98765-4321", "+55 11 8765-4321")
    ] + [requests(store).find(tenant, SubjectQuery(lead_id=cloud.lead_id))]

    assert {s.lead_id for s in found} == {cloud.lead_id}
    subject = found[0]
    assert (subject.phone, subject.name, subject.key) == (PHONE, "Joana Prado", f"phone:{PHONE}")
    assert {c.id for c in subject.conversations} == {
        cloud.conversation_id,
        evolution.conversation_id,
    }
    assert {c.channel for c in subject.conversations} == {"cloud", "evolution"}
    assert len(subject.message_refs) == 2


def test_a_lid_contact_finds_the_lead_it_belongs_to(store: Store) -> None:
    tenant, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    lid, bare = f"{uuid4().int % 10**15}@lid", str(uuid4().int % 10**15)
    by_phone = say(store, tenant, "Oi", channel="evolution", contact=lid, phone=PHONE)
    only_lid = say(store, tenant, "Sem telefone", contact=f"{bare}@lid", phone=None)

    of_lid = requests(store).find(tenant, SubjectQuery(contact_id=lid))
    by_phone_too = requests(store).find(tenant, SubjectQuery(phone=PHONE))
    lid_only = requests(store).find(tenant, SubjectQuery(contact_id=f"lid:{bare}"))

    # The conversation's id comes from the @lid, the lead's from the phone: found both ways.
    assert of_lid.lead_id == by_phone_too.lead_id == by_phone.lead_id
    assert [c.id for c in of_lid.conversations] == [by_phone.conversation_id]
    assert lid_only.lead_id == only_lid.lead_id
    assert lid_only.phone is None


def test_unknown_and_other_tenants_subjects_are_not_found(store: Store) -> None:
    mine, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    theirs, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    their = say(store, theirs, "Oi")

    for query in (
        SubjectQuery(phone=PHONE),
        SubjectQuery(lead_id=their.lead_id),
        SubjectQuery(lead_id=uuid4()),
        SubjectQuery(contact_id=PHONE),
    ):
        with pytest.raises(NotFound):
            requests(store).find(mine, query)


def test_the_export_is_every_event_decrypted_in_order_and_is_recorded(store: Store) -> None:
    tenant, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    received = say(store, tenant, "Quero um colchão")
    ai_reply(
        store.app,
        received.conversation_id,
        reply_to_seq=1,
        text="Temos vários modelos!",
        intent="compra",
        confidence=0.9,
    )
    before = store.app.stream(received.lead_id)

    done = requests(store).export(
        tenant,
        SubjectQuery(phone=PHONE),
        by="u-1",
        role="auditor",
        purpose="Ticket 42",
        rendering="json",
    )

    texts = [e.data.get("text") for e in done.events if e.type == "MessageReceived"]
    assert texts == ["Quero um colchão"]
    assert "Temos vários modelos!" in [e.data.get("text") for e in done.events]
    assert [e.position for e in done.events] == sorted(e.position for e in done.events)
    assert {e.aggregate for e in done.events} == {"Lead", "Conversation", "MessageRef"}
    after = store.app.stream(received.lead_id)
    assert len(after) == len(before) + 1
    recorded = after[-1]
    assert type(recorded).__name__ == "SubjectDataExported"
    assert (recorded.by, recorded.role, recorded.purpose, recorded.rendering) == (
        "u-1",
        "auditor",
        "Ticket 42",
        "json",
    )


def test_an_erased_subjects_personal_fields_export_as_erased(store: Store) -> None:
    tenant, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    received = say(store, tenant, "Meu CPF é 123")
    replay(store.url, store.schema)  # the conversation view knows the lead's conversations
    store.cipher.shred(received.lead_id)

    done = requests(store).export(
        tenant,
        SubjectQuery(lead_id=received.lead_id),
        by="u",
        role="auditor",
        purpose=None,
        rendering="json",
    )

    assert done.subject.erased
    assert (done.subject.phone, done.subject.name) == (ERASED, ERASED)
    message = next(e for e in done.events if e.type == "MessageReceived")
    assert (message.data["text"], message.data["contact_name"]) == (ERASED, ERASED)
    assert "123" not in str([e.data for e in done.events])
    # Its key is gone, so its conversations cannot be derived: the view still names them.
    assert [(c.id, c.contact) for c in done.subject.conversations] == [
        (received.conversation_id, ERASED)
    ]


async def test_an_erased_subject_still_lists_its_conversations_whose_rows_are_gone(
    store: Store,
) -> None:
    tenant, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    received = say(store, tenant, "Meu CPF é 123")
    replay(store.url, store.schema)
    erasure = Erasure(store.app, PostgresSubjectRows(store.pool), None, SystemClock())
    await erasure.erase(tenant, received.lead_id, "subject_request", by="auditor-1")

    found = requests(store).find(tenant, SubjectQuery(lead_id=received.lead_id))

    # Neither the key (destroyed) nor the view (its rows dropped) names them now: the
    # lead's SubjectErased does.
    assert found.erased
    assert [(c.id, c.contact, c.messages) for c in found.conversations] == [
        (received.conversation_id, ERASED, 1)
    ]


# ------------------------------------------------------------------ access log


@pytest.fixture
async def reads(store: Store) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo(store.url, store.schema), min_size=1, max_size=2, open=False
    )
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


async def log_one(pool: AsyncConnectionPool[Any], tenant: UUID, lead: UUID) -> UUID:
    return await access_log.record(
        pool,
        tenant,
        actor=str(uuid4()),
        actor_kind="user",
        role="auditor",
        lead_id=lead,
        resource=str(lead),
        route="GET /v1/privacy/subjects",
        purpose="Ticket 7",
    )


async def as_api(pool: AsyncConnectionPool[Any], tenant: UUID, statement: str) -> None:
    """Run one statement as the API's role in `tenant`, as the API's writes do."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "SELECT set_config('role', %s, true), set_config('app.tenant_id', %s, true)",
            (API_ROLE, str(tenant)),
        )
        await conn.execute(statement)


async def test_the_access_log_is_append_only_for_the_api_role(
    store: Store, reads: AsyncConnectionPool[Any]
) -> None:
    tenant, lead = uuid4(), uuid4()
    await log_one(reads, tenant, lead)
    for statement in (
        f"UPDATE {access_log.ACCESS_LOG_TABLE} SET purpose = 'x'",  # noqa: S608
        f"DELETE FROM {access_log.ACCESS_LOG_TABLE}",  # noqa: S608
        f"TRUNCATE {access_log.ACCESS_LOG_TABLE}",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            await as_api(reads, tenant, statement)
    async with tenant_read(reads, tenant) as conn:
        page = await access_log.entries(conn, tenant, limit=10)
    assert [(e.lead_id, e.purpose) for e in page.items] == [(lead, "Ticket 7")]


async def test_the_access_log_is_tenant_isolated(
    store: Store, reads: AsyncConnectionPool[Any]
) -> None:
    mine, theirs, lead = uuid4(), uuid4(), uuid4()
    await log_one(reads, mine, lead)
    await log_one(reads, theirs, lead)
    async with tenant_read(reads, mine) as conn:
        # No WHERE on the tenant: the policy alone keeps the other tenant's row out.
        cur = await conn.execute(f"SELECT tenant_id FROM {access_log.ACCESS_LOG_TABLE}")  # noqa: S608
        assert {r[0] for r in await cur.fetchall()} == {mine}
    insert = (
        f"INSERT INTO {access_log.ACCESS_LOG_TABLE} "  # noqa: S608
        "(id, tenant_id, actor, actor_kind, role, resource, route) "
        f"VALUES ('{uuid4()}', '{theirs}', 'a', 'user', 'auditor', 'r', 'GET /x')"
    )
    with pytest.raises(errors.InsufficientPrivilege):  # RLS: a row for another tenant
        await as_api(reads, mine, insert)


async def test_access_log_pages_filter_by_lead_and_time(
    store: Store, reads: AsyncConnectionPool[Any]
) -> None:
    tenant, lead, other = uuid4(), uuid4(), uuid4()
    for _ in range(3):
        await log_one(reads, tenant, lead)
    await log_one(reads, tenant, other)
    async with tenant_read(reads, tenant) as conn:
        first = await access_log.entries(conn, tenant, lead_id=lead, limit=2)
        assert first.next_cursor is not None
        rest = await access_log.entries(
            conn, tenant, lead_id=lead, limit=2, cursor=first.next_cursor
        )
        everything = await access_log.entries(conn, tenant, limit=10)
        later = await access_log.entries(conn, tenant, since=datetime.now(UTC), limit=10)
        earlier = await access_log.entries(conn, tenant, until=everything.items[-1].at, limit=10)
    seen = [e.id for e in first.items + rest.items]
    assert len(seen) == len(set(seen)) == 3
    assert rest.next_cursor is None
    assert [e.at for e in everything.items] == sorted(
        (e.at for e in everything.items), reverse=True
    )
    assert len(everything.items) == 4
    assert later.items == []
    assert earlier.items == []


def test_the_api_role_has_only_select_and_insert_on_the_access_log(store: Store) -> None:
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        rows = conn.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = %s AND table_name = %s AND table_schema = %s",
            (API_ROLE, access_log.ACCESS_LOG_TABLE, store.schema),
        ).fetchall()
    assert {r[0] for r in rows} == {"SELECT", "INSERT"}
