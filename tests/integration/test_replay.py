"""Replay from the event store: fresh tables swapped in, resumable; queries decrypt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from tests.helpers import ai_reply

from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage, RecordStatus
from urbana.application.channels import DeliveryStatus, InboundMessage, StatusUpdate
from urbana.config import conninfo
from urbana.domain.pii import ERASED
from urbana.projections import queries
from urbana.projections.base import physical_name
from urbana.projections.kpis import Kpis
from urbana.projections.schema import FLOOR, all_projections

pytestmark = pytest.mark.integration


def inbound(contact: str, text: str, name: str = "Maria") -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=datetime.now(UTC),
        kind="text",
        text=text,
        contact_name=name,
    )


@dataclass
class Script:
    tenant_id: UUID
    a: UUID  # conversation handed to a human, answered, closed
    b: UUID  # conversation still with the AI, two unread messages
    lead_a: UUID
    lead_b: UUID
    ai_outbound: str


def scripted(store: Store) -> Script:
    app = store.app
    tid, _ = app.register_tenant(f"Loja {uuid4().hex[:8]}")
    ra = app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988880001", "Oi, bom dia")))
    app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988880001", "Quanto custa?")))
    oid = ai_reply(
        app,
        ra.conversation_id,
        reply_to_seq=2,
        text="O plano anual custa R$ 100",
        intent="pricing",
        confidence=0.9,
        usage={"tokens_in": 120, "tokens_out": 30, "cost_usd": 0.0012},
        score_delta=15,
    )
    app.mark_sent(ra.conversation_id, oid, "wamid.out.a1")
    app.record_statuses(
        [
            RecordStatus(
                tid,
                "cloud",
                StatusUpdate("wamid.out.a1", DeliveryStatus.READ, datetime.now(UTC)),
            ),
            # arrives late: must not move the status back
            RecordStatus(
                tid,
                "cloud",
                StatusUpdate("wamid.out.a1", DeliveryStatus.DELIVERED, datetime.now(UTC)),
            ),
        ]
    )
    app.receive_message(
        ReceiveMessage(tid, "cloud", inbound("5511988880001", "Quero falar com humano"))
    )
    app.request_handoff(ra.conversation_id, reason="explicit_request", summary="Quer o plano anual")
    app.accept_handoff(ra.conversation_id, attendant="ana")
    app.attendant_reply(ra.conversation_id, attendant="ana", text="Olá Maria, sou a Ana")
    app.close_conversation(ra.conversation_id, by="ana")
    rb = app.receive_message(
        ReceiveMessage(tid, "cloud", inbound("5511988880002", "Vocês abrem sábado?", name="João"))
    )
    app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988880002", "?", name="João")))
    return Script(tid, ra.conversation_id, rb.conversation_id, ra.lead_id, rb.lead_id, oid)


def rows(store: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        return conn.execute(sql, params).fetchall()


async def aconn(store: Store) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(conninfo(store.url, store.schema), autocommit=True)


async def test_replay_builds_the_conversation_view(store: Store) -> None:
    s = scripted(store)
    result = replay(store.url, store.schema)
    assert result.events == store.app.recorder.max_notification_id()
    conn = await aconn(store)
    try:
        listed = (await queries.list_conversations(conn, s.tenant_id, cipher=store.cipher)).items
        detail = await queries.get_conversation(conn, s.tenant_id, s.a, cipher=store.cipher)
        ai_only = (await queries.list_conversations(conn, s.tenant_id, status="ai")).items
    finally:
        await conn.close()
    assert [c.id for c in listed] == [s.b, s.a]  # latest message first
    b, a = listed
    assert (b.status, b.unread, b.inbound_count, b.last_message_preview) == ("ai", 2, 2, "?")
    assert (a.status, a.unread, a.assignee, a.handoffs) == ("closed", 0, None, 1)
    assert a.last_message_preview == "Olá Maria, sou a Ana"
    assert [c.id for c in ai_only] == [s.b]
    assert ai_only[0].last_message_preview is None  # no cipher: nothing decrypted
    assert detail is not None
    assert detail.summary == "Quer o plano anual"
    got = [(m.direction, m.author, m.status, m.text) for m in detail.messages]
    assert got == [
        ("in", "lead", "received", "Oi, bom dia"),
        ("in", "lead", "received", "Quanto custa?"),
        ("out", "ai", "read", "O plano anual custa R$ 100"),
        ("in", "lead", "received", "Quero falar com humano"),
        ("out", "human", "queued", "Olá Maria, sou a Ana"),
    ]
    ai_msg = detail.messages[2]
    assert ai_msg.provider_message_id == store.app.provider_key(
        s.tenant_id, "cloud", "wamid.out.a1"
    )
    assert ai_msg.read_at is not None
    assert ai_msg.delivered_at is not None
    assert detail.messages[0].contact_name == "Maria"


async def test_replay_builds_leads_and_kpis(store: Store) -> None:
    s = scripted(store)
    replay(store.url, store.schema)
    conn = await aconn(store)
    today = datetime.now(UTC).date()
    try:
        leads = (await queries.list_leads(conn, s.tenant_id, cipher=store.cipher)).items
        counts = await queries.pipeline_counts(conn, s.tenant_id)
        days = await queries.kpis_by_day(
            conn, s.tenant_id, today - timedelta(days=1), today + timedelta(days=1)
        )
    finally:
        await conn.close()
    assert [(lead.id, lead.score, lead.stage, lead.name) for lead in leads] == [
        (s.lead_a, 15, "engaged", "Maria"),
        (s.lead_b, 0, "new", "João"),
    ]
    assert leads[0].phone == "5511988880001"
    assert (leads[0].conversations, leads[0].messages_in) == (1, 3)
    assert counts == {"engaged": 1, "new": 1}
    assert len(days) == 1
    k = days[0]
    assert k.counts["conversations_started"] == 2
    assert k.counts["inbound"] == 5
    assert (k.counts["ai_replies"], k.counts["human_replies"]) == (1, 1)
    assert (k.counts["handoffs"], k.counts["takeovers"], k.counts["resolved"]) == (1, 1, 1)
    assert (k.counts["tokens_in"], k.counts["tokens_out"]) == (120, 30)
    assert str(k.cost_usd) == "0.0012"
    # two bursts of conversation A were answered (by the AI, then by Ana), all within a minute
    assert k.counts["frt_count"] == 2
    assert k.first_response["frt_lt_1m"] == 2
    # A was handled by the AI and handed off; B has not been answered yet
    assert (k.counts["ai_handled"], k.counts["handed_off"], k.handoff_rate) == (1, 1, 1.0)
    assert (k.counts["ai_closed"], k.counts["ai_resolved"], k.ai_resolution_rate) == (1, 0, 0.0)


async def test_erased_lead_reads_as_erased_without_error(store: Store) -> None:
    s = scripted(store)
    replay(store.url, store.schema)
    store.cipher.shred(s.lead_a)
    conn = await aconn(store)
    try:
        detail = await queries.get_conversation(conn, s.tenant_id, s.a, cipher=store.cipher)
        leads = (await queries.list_leads(conn, s.tenant_id, cipher=store.cipher)).items
        listed = (await queries.list_conversations(conn, s.tenant_id, cipher=store.cipher)).items
    finally:
        await conn.close()
    assert detail is not None
    assert {m.text for m in detail.messages} == {ERASED}
    assert detail.summary == ERASED
    by_id = {lead.id: lead for lead in leads}
    assert (by_id[s.lead_a].name, by_id[s.lead_a].phone) == (ERASED, ERASED)
    assert by_id[s.lead_b].name == "João"
    assert {c.id: c.last_message_preview for c in listed}[s.a] == ERASED
    # no personal text is stored in clear in the read models
    dump = rows(store, "SELECT row_to_json(m)::text FROM rm_messages_v3 m")
    assert not any("Maria" in r[0] or "Quanto custa" in r[0] for r in dump)


async def test_queries_only_return_the_callers_tenant(store: Store) -> None:
    s = scripted(store)
    replay(store.url, store.schema)
    other = uuid4()
    conn = await aconn(store)
    try:
        assert (await queries.list_conversations(conn, other)).items == []
        assert await queries.get_conversation(conn, other, s.a) is None
        assert (await queries.list_leads(conn, other)).items == []
    finally:
        await conn.close()


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    tables = [physical_name(p, t) for p in all_projections() for t in p.tables]
    return {
        t: sorted(rows(store, f"SELECT * FROM {t}"), key=repr)  # noqa: S608
        for t in tables
    }


class Interrupted(Exception):
    pass


def test_interrupted_replay_resumes_to_the_same_result(store: Store) -> None:
    for _ in range(3):
        scripted(store)
    total = store.app.recorder.max_notification_id() or 0
    replay(store.url, store.schema)
    expected = snapshot(store)

    pages = 0

    def stop_after_two(done: int, of: int, rate: float) -> None:
        nonlocal pages
        pages += 1
        assert 0 < done <= of
        if pages == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        replay(store.url, store.schema, page_size=7, progress=stop_after_two)
    assert rows(store, "SELECT DISTINCT position FROM rm_replay") == [(14,)]
    seen: list[int] = []
    resumed = replay(store.url, store.schema, page_size=7, progress=lambda d, t, r: seen.append(d))
    assert resumed.resumed_from == 14
    assert resumed.events == total - 14
    assert snapshot(store) == expected
    assert rows(store, "SELECT count(*) FROM rm_replay") == [(0,)]


def test_replay_swaps_tables_views_and_sets_the_tracking_floor(store: Store) -> None:
    scripted(store)
    with psycopg.connect(conninfo(store.url, store.schema), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS rm_tracking (projection text, version int, partition int,"
            " position bigint, updated_at timestamptz DEFAULT now(),"
            " PRIMARY KEY (projection, version, partition))"
        )
        conn.execute("INSERT INTO rm_tracking VALUES ('kpis', %s, 3, 5, now())", (Kpis.version,))
    first = replay(store.url, store.schema, ["kpis"])
    assert first.projections == ["kpis"]
    assert rows(store, "SELECT partition, position FROM rm_tracking WHERE projection = 'kpis'") == [
        (FLOOR, first.position)
    ]
    # Only the kpis were rebuilt: the conversation view's live table is as it was (empty).
    assert rows(store, "SELECT count(*) FROM rm_conversations_v3") == [(0,)]
    replay(store.url, store.schema)
    again = replay(store.url, store.schema)  # swapping over existing live tables and views
    assert again.position == first.position
    assert rows(store, "SELECT count(*) FROM rm_conversations") == [(2,)]
    indexes = {
        r[0]
        for r in rows(store, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    }
    assert "rm_conversations_v3_pkey" in indexes
    assert not any("rebuild" in i for i in indexes)


def test_unknown_projection_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown projection"):
        replay(store.url, store.schema, ["nope"])
