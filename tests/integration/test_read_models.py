"""Read models v2 on the real store: what the workspace API will serve, under RLS.

Two tenants' conversations, leads and users are recorded through the application (the
events issue 11 adds through `tests.contract_events`), the read models are built by a
replay, and every read goes through `tenant_scope` / `tenant_read`: as the API role,
one tenant per transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import AsyncConnectionPool
from tests import contract_events as ce
from tests.helpers import ai_reply

from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.config import conninfo
from urbana.projections import queries
from urbana.projections.access import tenant_read, tenant_scope
from urbana.projections.base import physical_name
from urbana.projections.schema import API_ROLE, all_projections

pytestmark = pytest.mark.integration

TABLES = [physical_name(p, t) for p in all_projections() for t in p.tables]


def inbound(contact: str, text: str, name: str, sent_at: datetime | None = None) -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=sent_at or datetime.now(UTC),
        kind="text",
        text=text,
        contact_name=name,
    )


@dataclass
class World:
    tenant: UUID
    other: UUID
    ana: UUID  # attendant, online, queue "vendas"
    bia: UUID  # attendant, online, queues "vendas" and "suporte"
    caio: UUID  # supervisor, disabled
    maria: UUID  # conversation: AI reply, handoff to "vendas", assigned to Ana, note, labels
    joao: UUID  # conversation: handoff, waiting longest
    lia: UUID  # conversation: handoff, taken by Bia, transferred to "suporte" (waits last)
    rui: UUID  # conversation: Bia, Ana, "suporte", Bia again, then back to the queue
    stranger: UUID  # the other tenant's conversation
    maria_lead: UUID
    note: str
    maria_sent_at: datetime


def build(store: Store) -> World:
    app = store.app
    tenant, _ = app.register_tenant(f"RM {uuid4().hex[:8]}")
    other, _ = app.register_tenant(f"RM other {uuid4().hex[:8]}")
    users = ce.Users(store, tenant)
    ana = users.invite("ana@loja.com.br", "Ana", "attendant")
    bia = users.invite("bia@loja.com.br", "Bia", "attendant")
    caio = users.invite("caio@loja.com.br", "Caio", "attendant")
    users.role(caio, "supervisor", by=ana)
    users.queues(ana, ["vendas"])
    users.queues(bia, ["suporte", "vendas", "vendas"])
    users.availability(ana, "online")
    users.availability(bia, "away")
    users.availability(bia, "online")
    users.disable(caio, by=ana)
    ce.create_queue(store, tenant, "vendas", "Vendas", ["pricing", "purchase"])
    ce.create_queue(store, tenant, "suporte", "Suporte", ["complaint"])
    ce.change_queue(store, tenant, "suporte", name="Suporte técnico", intents=["complaint"])
    ce.save_canned(store, tenant, "/ola", "Olá! Em que posso ajudar?")
    ce.save_canned(store, tenant, "/preco", "O plano custa R$ 100")
    ce.save_canned(store, tenant, "/prazo", "Entregamos em 3 dias")
    ce.save_canned(store, tenant, "/preco", "O plano anual custa R$ 1.000")
    ce.remove_canned(store, tenant, "/prazo")
    ce.save_canned(store, other, "/ola", "Oi, aqui é outra loja")

    def start(contact: str, name: str, text: str, sent_at: datetime | None = None) -> Any:
        return app.receive_message(
            ReceiveMessage(tenant, "cloud", inbound(contact, text, name, sent_at))
        )

    maria_sent_at = datetime.now(UTC) - timedelta(hours=2)
    maria = start("5511911110001", "Maria", "Quanto custa o plano?", maria_sent_at)
    ai_reply(
        app,
        maria.conversation_id,
        reply_to_seq=1,
        text="O plano custa R$ 100",
        intent="pricing",
        confidence=0.82,
        score_delta=45,
    )
    app.request_handoff(maria.conversation_id, reason="hot_lead", summary="Quer o plano anual")
    ce.assign(store, maria.conversation_id, str(ana), queue="vendas")
    app.attendant_reply(maria.conversation_id, attendant=str(ana), text="Oi Maria, sou a Ana")
    note = ce.add_note(store, maria.conversation_id, author=str(ana), text="Cliente antiga")
    ce.change_labels(store, maria.conversation_id, by=str(ana), add=["vip", "anual"], remove=[])
    ce.change_labels(store, maria.conversation_id, by=str(ana), add=["renovar"], remove=["anual"])

    joao = start("5511911110002", "João", "Quero falar com alguém")
    app.request_handoff(joao.conversation_id, reason="asked_for_human")
    lia = start("5511911110003", "Lia", "Meu pedido não chegou")
    app.request_handoff(lia.conversation_id, reason="complaint")
    rui = start("5511911110004", "Rui", "Oi")
    ce.assign(store, rui.conversation_id, str(bia))
    ce.transfer(store, rui.conversation_id, by=str(bia), to_user=str(ana))
    ce.transfer(store, rui.conversation_id, by=str(ana), to_queue="suporte")
    ce.assign(store, rui.conversation_id, str(bia), by=str(ana))
    ce.return_to_queue(store, rui.conversation_id, queue="suporte")
    # Lia is taken, then transferred to "suporte": her wait starts again, after Rui's.
    ce.assign(store, lia.conversation_id, str(bia))
    ce.transfer(store, lia.conversation_id, by=str(bia), to_queue="suporte")

    stranger = app.receive_message(
        ReceiveMessage(other, "cloud", inbound("5511911110009", "Olá", "Zé"))
    )
    # An erased subject of the other tenant: only its tombstones are left.
    gone = app.receive_message(ReceiveMessage(other, "cloud", inbound("5511911110008", "Oi", "Ex")))
    app.cipher.shred(gone.lead_id)
    app.record_erasure(gone.lead_id, "subject_request", [gone.conversation_id])
    return World(
        tenant=tenant,
        other=other,
        ana=ana,
        bia=bia,
        caio=caio,
        maria=maria.conversation_id,
        joao=joao.conversation_id,
        lia=lia.conversation_id,
        rui=rui.conversation_id,
        stranger=stranger.conversation_id,
        maria_lead=maria.lead_id,
        note=note,
        maria_sent_at=maria_sent_at,
    )


@pytest.fixture
def world(store: Store) -> World:
    built = build(store)
    replay(store.url, store.schema)
    return built


@pytest.fixture
async def conn(store: Store) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection as the schema's owner (who makes the tables), as the API pool has."""
    async with await psycopg.AsyncConnection.connect(conninfo(store.url, store.schema)) as c:
        yield c


async def counts(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    out = {}
    for table in TABLES:
        cur = await conn.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
        row = await cur.fetchone()
        assert row is not None
        out[table] = int(row[0])
    return out


async def test_without_the_tenant_setting_the_api_role_reads_zero_rows(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    async with conn.transaction():
        owner = await counts(conn)
    assert all(owner[physical_name(p, t)] > 0 for p in all_projections() for t in p.tables)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {API_ROLE}")
        unset = await counts(conn)
    assert set(unset.values()) == {0}
    # A setting made by an earlier transaction leaves '' behind: still nothing, no error.
    async with tenant_scope(conn, world.tenant):
        pass
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {API_ROLE}")
        assert set((await counts(conn)).values()) == {0}


async def test_a_query_that_forgets_its_tenant_still_sees_only_its_own(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    conversations = physical_name(all_projections()[0], "conversations")
    async with tenant_scope(conn, world.other):
        cur = await conn.execute(f"SELECT id, tenant_id FROM {conversations}")  # noqa: S608
        rows = await cur.fetchall()
        via_view = await (await conn.execute("SELECT id FROM rm_conversations")).fetchall()
    assert rows == [(world.stranger, world.other)]
    assert via_view == [(world.stranger,)]  # the stable view binds the reader too
    async with tenant_scope(conn, world.tenant):
        mine = await queries.list_conversations(conn, world.tenant)
        theirs = await queries.list_conversations(conn, world.other)
        detail = await queries.get_conversation(conn, world.other, world.stranger)
    assert {c.id for c in mine.items} == {world.maria, world.joao, world.lia, world.rui}
    assert (theirs.items, detail) == ([], None)


async def test_the_api_role_reads_and_nothing_else(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    conversations = physical_name(all_projections()[0], "conversations")
    for statement in (
        f"UPDATE {conversations} SET status = 'closed'",  # noqa: S608
        "SELECT count(*) FROM urbana_events",
        "SELECT count(*) FROM urbana_subject_keys",
        "SELECT count(*) FROM rm_tracking",
    ):
        with pytest.raises((errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)):
            async with tenant_scope(conn, world.tenant):
                await conn.execute(statement)


async def test_a_replay_swap_keeps_the_policies_and_the_grants(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    replay(store.url, store.schema)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {API_ROLE}")
        assert set((await counts(conn)).values()) == {0}
    async with tenant_scope(conn, world.tenant):
        page = await queries.list_conversations(conn, world.tenant)
    assert len(page.items) == 4


async def test_tenant_read_borrows_a_pooled_connection(store: Store, world: World) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo(store.url, store.schema), min_size=1, max_size=1, open=False
    )
    await pool.open()
    try:
        async with tenant_read(pool, world.tenant) as scoped:
            first = await queries.waiting_queue(scoped, world.tenant)
            user = await (await scoped.execute("SELECT current_user")).fetchone()
        async with pool.connection() as again:  # the same connection, given back clean
            after = await (await again.execute("SELECT current_user")).fetchone()
            setting = await (
                await again.execute("SELECT current_setting('app.tenant_id', true)")
            ).fetchone()
    finally:
        await pool.close()
    assert [c.id for c in first.items] == [world.joao, world.rui, world.lia]
    assert user == (API_ROLE,)
    assert after != (API_ROLE,)
    assert setting in ((None,), ("",))


async def test_the_conversation_view_shows_who_holds_what(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    cipher = store.cipher
    async with tenant_scope(conn, world.tenant):
        listed = await queries.list_conversations(conn, world.tenant, cipher=cipher)
        detail = await queries.get_conversation(conn, world.tenant, world.maria, cipher=cipher)
    by_id = {c.id: c for c in listed.items}
    maria = by_id[world.maria]
    assert (maria.status, maria.assignee, maria.queue) == ("human", str(world.ana), "vendas")
    assert maria.labels == ["renovar", "vip"]
    assert (maria.contact_name, maria.lead_score, maria.lead_stage) == ("Maria", 45, "qualified")
    assert (maria.last_intent, maria.last_confidence) == ("pricing", 0.82)
    assert maria.last_inbound_at == world.maria_sent_at
    assert maria.waiting_since is None
    assert maria.assigned_at is not None
    assert (maria.last_message_author, maria.last_message_preview) == (
        "human",
        "Oi Maria, sou a Ana",
    )
    joao, lia, rui = by_id[world.joao], by_id[world.lia], by_id[world.rui]
    assert (joao.handoff_reason, lia.handoff_reason) == ("asked_for_human", "complaint")
    assert (joao.status, joao.assignee, joao.queue) == ("waiting_human", None, None)
    assert (lia.status, lia.assignee, lia.queue) == ("waiting_human", None, "suporte")
    assert (rui.status, rui.assignee, rui.queue) == ("waiting_human", None, "suporte")
    assert joao.waiting_since is not None
    assert lia.waiting_since is not None
    assert rui.waiting_since is not None
    assert joao.waiting_since < rui.waiting_since < lia.waiting_since
    assert all(c.position > 0 for c in listed.items)

    assert detail is not None
    assert detail.summary == "Quer o plano anual"
    assert detail.conversation.handoff_reason == "hot_lead"
    assert [(n.id, n.author, n.text) for n in detail.notes] == [
        (world.note, str(world.ana), "Cliente antiga")
    ]
    got = [(m.author, m.text, m.intent, m.confidence, m.status) for m in detail.messages]
    assert got == [
        ("lead", "Quanto custa o plano?", None, None, "received"),
        ("ai", "O plano custa R$ 100", "pricing", 0.82, "queued"),
        ("human", "Oi Maria, sou a Ana", None, None, "queued"),
    ]
    assert detail.older_messages is None
    # the note is sealed in the read model: only the query decrypts it
    notes = physical_name(all_projections()[0], "notes")
    cur = await conn.execute(f"SELECT row_to_json(n)::text FROM {notes} n")  # noqa: S608
    assert not any("Cliente antiga" in r[0] for r in await cur.fetchall())


async def test_conversation_filters(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    async def ids(**filters: Any) -> set[UUID]:
        page = await queries.list_conversations(conn, world.tenant, **filters)
        return {c.id for c in page.items}

    async with tenant_scope(conn, world.tenant):
        assert await ids(status="human") == {world.maria}
        assert await ids(status=["waiting_human", "human"]) == {
            world.maria,
            world.joao,
            world.lia,
            world.rui,
        }
        assert await ids(assignee="me", me=str(world.ana)) == {world.maria}
        assert await ids(assignee=str(world.bia)) == set()
        assert await ids(assignee="none") == {world.joao, world.lia, world.rui}
        assert await ids(label="vip") == {world.maria}
        assert await ids(label="anual") == set()
        assert await ids(queue="suporte") == {world.lia, world.rui}
        suporte = await queries.waiting_queue(conn, world.tenant, queue="suporte")
    assert [c.id for c in suporte.items] == [world.rui, world.lia]
    with pytest.raises(ValueError, match="me"):
        await queries.list_conversations(conn, world.tenant, assignee="me")


async def test_pages_walk_every_item_once_in_order(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    async with tenant_scope(conn, world.tenant):
        whole = await queries.list_conversations(conn, world.tenant, limit=100)
        walked: list[UUID] = []
        cursor: str | None = None
        while True:
            page = await queries.list_conversations(conn, world.tenant, limit=1, cursor=cursor)
            walked += [c.id for c in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        queue = []
        cursor = None
        while True:
            qpage = await queries.waiting_queue(conn, world.tenant, limit=2, cursor=cursor)
            queue += [c.id for c in qpage.items]
            if (cursor := qpage.next_cursor) is None:
                break
        messages = await queries.list_messages(conn, world.tenant, world.maria, limit=2)
        older = await queries.list_messages(
            conn, world.tenant, world.maria, limit=2, cursor=messages.next_cursor
        )
        detail = await queries.get_conversation(conn, world.tenant, world.maria, limit=1)
    assert whole.next_cursor is None
    assert walked == [c.id for c in whole.items]
    assert len(walked) == 4
    activity = [(c.last_message_at or c.started_at) for c in whole.items]
    assert activity == sorted(activity, reverse=True)  # type: ignore[type-var]
    assert queue == [world.joao, world.rui, world.lia]
    assert [m.author for m in messages.items] == ["ai", "human"]
    assert [m.author for m in older.items] == ["lead"]
    assert older.next_cursor is None
    assert detail is not None
    assert detail.older_messages is not None
    for bad in ("not-base64!", "W10", "WyJ4IiwxXQ"):  # garbage, [], ["x", 1]
        with pytest.raises(queries.InvalidCursor):
            async with tenant_scope(conn, world.tenant):
                await queries.list_conversations(conn, world.tenant, cursor=bad)


async def test_leads_as_the_api_lists_them(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    async with tenant_scope(conn, world.tenant):
        hot = await queries.list_leads(conn, world.tenant, min_score=40, cipher=store.cipher)
        new = await queries.list_leads(conn, world.tenant, stage="new")
        first = await queries.list_leads(conn, world.tenant, limit=2)
        rest = await queries.list_leads(conn, world.tenant, limit=2, cursor=first.next_cursor)
        lead = await queries.get_lead(conn, world.tenant, world.maria_lead, cipher=store.cipher)
        elsewhere = await queries.get_lead(conn, world.other, world.maria_lead)
    assert [(x.id, x.score, x.stage, x.name) for x in hot.items] == [
        (world.maria_lead, 45, "qualified", "Maria")
    ]
    assert len(new.items) == 3
    assert world.maria_lead not in {x.id for x in new.items}
    assert len(first.items) == 2
    assert rest.next_cursor is None
    assert len({x.id for x in first.items + rest.items}) == 4
    assert first.items[0].id == world.maria_lead
    assert lead is not None
    assert lead.lead.phone == "5511911110001"
    assert [c.id for c in lead.conversations] == [world.maria]
    assert lead.lead.position > 0
    assert elsewhere is None


async def test_the_team_view_feeds_the_assignment_policy(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    async with tenant_scope(conn, world.tenant):
        everyone = await queries.team(conn, world.tenant)
        vendas = await queries.team(
            conn, world.tenant, availability="online", queue="vendas", include_disabled=False
        )
        suporte = await queries.team(conn, world.tenant, queue="suporte")
        paged = await queries.team(conn, world.tenant, limit=2)
        rest = await queries.team(conn, world.tenant, limit=2, cursor=paged.next_cursor)
    by_id = {m.id: m for m in everyone.items}
    ana, bia, caio = by_id[world.ana], by_id[world.bia], by_id[world.caio]
    assert (ana.email, ana.name, ana.role, ana.availability) == (
        "ana@loja.com.br",
        "Ana",
        "attendant",
        "online",
    )
    assert (ana.queues, bia.queues) == (["vendas"], ["suporte", "vendas"])
    # Ana holds Maria; Rui went back to the queue and Lia to "suporte": Bia holds none
    assert (ana.open_conversations, bia.open_conversations) == (1, 0)
    assert ana.last_assigned_at is not None
    assert bia.last_assigned_at is not None
    assert bia.last_assigned_at > ana.last_assigned_at  # Bia took Lia last
    assert (caio.role, caio.disabled, caio.availability) == ("supervisor", True, "offline")
    assert caio.last_assigned_at is None
    assert {m.id for m in vendas.items} == {world.ana, world.bia}
    assert [m.id for m in suporte.items] == [world.bia]
    assert [m.id for m in paged.items + rest.items] == [m.id for m in everyone.items]
    assert len(everyone.items) == 3


async def test_kpis_per_day_and_totals(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    today = datetime.now(UTC).date()
    async with tenant_scope(conn, world.tenant):
        report = await queries.kpi_report(
            conn, world.tenant, today - timedelta(days=1), today + timedelta(days=1)
        )
    assert [d.day for d in report.days] == [today]
    (day,) = report.days
    totals = report.totals
    assert totals.day is None
    assert totals.counts == day.counts
    assert day.counts["conversations_started"] == 4
    assert day.counts["handoffs"] == 3
    # takeovers: Maria (assigned from the queue), Rui (taken, then again after the queue),
    # Lia: a transfer to another user is not one
    assert day.counts["takeovers"] == 4
    assert (day.counts["ai_replies"], day.counts["human_replies"]) == (1, 1)
    # Maria's first burst was answered by the AI; nobody answered the others yet
    assert day.ai_first_response_p50_s is not None
    assert day.ai_first_response_p50_s == day.ai_first_response_p90_s
    assert day.human_first_response_p50_s is None
    assert totals.ai_first_response_p50_s == day.ai_first_response_p50_s


async def test_the_knowledge_chunks_are_tenant_scoped_too(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO kb_chunks (tenant_id, document_id, chunk_no, text, embedding, model, dim) "
            "VALUES (%s, %s, 0, 'Entregamos em São Paulo', "
            "array_fill(0.1::real, ARRAY[384])::vector, 'test', 384)",
            (world.tenant, uuid4()),
        )
    count = "SELECT count(*) FROM kb_chunks"
    async with tenant_scope(conn, world.tenant):
        own = await (await conn.execute(count)).fetchone()
    async with tenant_scope(conn, world.other):
        other = await (await conn.execute(count)).fetchone()
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {API_ROLE}")
        unset = await (await conn.execute(count)).fetchone()
    seen = {"own": own, "other": other, "unset": unset}
    assert seen == {"own": (1,), "other": (0,), "unset": (0,)}


async def test_queues_and_canned_responses(
    store: Store, world: World, conn: psycopg.AsyncConnection[Any]
) -> None:
    async with tenant_scope(conn, world.tenant):
        queues = await queries.list_queues(conn, world.tenant)
        canned = await queries.list_canned_responses(conn, world.tenant)
        pre = await queries.list_canned_responses(conn, world.tenant, prefix="/pr")
    got = [(q.id, q.name, q.intents, q.waiting, q.online) for q in queues]
    assert got == [
        ("suporte", "Suporte técnico", ["complaint"], 2, 1),  # Lia, Rui; Bia online
        ("vendas", "Vendas", ["pricing", "purchase"], 0, 2),  # Maria is held; Ana, Bia
    ]
    assert [(c.shortcut, c.text) for c in canned] == [
        ("/ola", "Olá! Em que posso ajudar?"),
        ("/preco", "O plano anual custa R$ 1.000"),
    ]
    assert [c.shortcut for c in pre] == ["/preco"]
