"""The application on a real PostgreSQL: durability, idempotency, encryption, erasure."""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from tests.helpers import ai_reply

from urbana.adapters.postgres.schema import EVENTS_TABLE, ensure_schema
from urbana.adapters.postgres.store import PostgresStreamIndex, Store, open_store
from urbana.application.app import ReceiveMessage, RecordStatus
from urbana.application.channels import DeliveryStatus, InboundMessage, StatusUpdate
from urbana.application.gateways import gateway_config
from urbana.application.inbound import Received
from urbana.config import conninfo
from urbana.domain.conversation import Conversation, Status
from urbana.domain.errors import AIReplyNotAllowed, BurstAlreadyAnswered, InvalidInput, NotFound
from urbana.domain.lead import Lead
from urbana.domain.pii import ERASED

pytestmark = pytest.mark.integration


def inbound(
    contact: str, text: str | None = "oi", pid: str | None = None, **kw: Any
) -> InboundMessage:
    phone = kw.pop("phone", None if contact.endswith("@lid") else contact)
    return InboundMessage(
        provider_message_id=pid or f"wamid.{uuid4().hex}",
        contact=contact,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind=str(kw.pop("kind", "text")),
        text=text,
        **kw,
    )


def event_count(store: Store) -> int:
    return store.app.recorder.max_notification_id() or 0


def tenant(store: Store) -> UUID:
    tenant_id, created = store.app.register_tenant(f"Tenant {uuid4().hex[:8]}")
    assert created
    return tenant_id


def test_message_is_durable_and_readable_after_reopening(store: Store, master_key: bytes) -> None:
    tid = tenant(store)
    got = store.app.receive_message(
        ReceiveMessage(tid, "cloud", inbound("5511988887777", "Quero um orçamento"))
    )
    reopened = open_store(store.url, master_key, schema=store.schema, pool_size=1)
    try:
        conv = reopened.app.get(Conversation, got.conversation_id)
        assert conv.history[-1]["text"] == "Quero um orçamento"
        assert conv.inbound_seq == 1
    finally:
        reopened.close()


def test_redelivered_message_is_duplicate_and_appends_nothing(store: Store) -> None:
    tid = tenant(store)
    msg = inbound("5511988887777")
    first = store.app.receive_message(ReceiveMessage(tid, "cloud", msg))
    before = event_count(store)
    again = store.app.receive_message(ReceiveMessage(tid, "cloud", msg))
    assert again.duplicate
    assert not first.duplicate
    assert event_count(store) == before


def test_same_provider_id_twice_in_one_batch_records_once(store: Store) -> None:
    tid = tenant(store)
    msg = inbound("5511988887777")
    outcomes = store.app.receive_messages([ReceiveMessage(tid, "cloud", msg)] * 3)
    assert [getattr(o, "duplicate", None) for o in outcomes] == [False, True, True]
    assert isinstance(outcomes[0], Received)
    conv = store.app.get(Conversation, outcomes[0].conversation_id)
    assert conv.inbound_seq == 1


def test_ninth_digit_variants_are_one_lead_and_one_conversation(store: Store) -> None:
    tid = tenant(store)
    a = store.app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988887777")))
    b = store.app.receive_message(ReceiveMessage(tid, "cloud", inbound("551188887777")))
    assert a.lead_id == b.lead_id
    assert a.conversation_id == b.conversation_id
    assert store.app.get(Conversation, a.conversation_id).inbound_seq == 2


def test_lid_contact_without_phone_gets_its_own_lead(store: Store) -> None:
    tid = tenant(store)
    got = store.app.receive_message(ReceiveMessage(tid, "evolution", inbound("12345678901234@lid")))
    lead = store.app.get(Lead, got.lead_id)
    assert lead.key == "lid:12345678901234"
    assert lead.phone is None


def test_invalid_message_raises_typed_error_and_appends_nothing(store: Store) -> None:
    tid = tenant(store)
    before = event_count(store)
    with pytest.raises(InvalidInput):
        store.app.receive_message(
            ReceiveMessage(tid, "cloud", inbound("5511988887777", text="   "))
        )
    with pytest.raises(InvalidInput):
        store.app.receive_message(ReceiveMessage(tid, "cloud", inbound("not-a-phone")))
    assert event_count(store) == before


def test_bad_message_in_a_batch_does_not_block_the_others(store: Store) -> None:
    tid = tenant(store)
    outcomes = store.app.receive_messages(
        [
            ReceiveMessage(tid, "cloud", inbound("5511911112222")),
            ReceiveMessage(tid, "cloud", inbound("5511933334444", text="")),
            ReceiveMessage(tid, "cloud", inbound("5511955556666")),
        ]
    )
    assert isinstance(outcomes[1], InvalidInput)
    assert not isinstance(outcomes[0], Exception)
    assert not isinstance(outcomes[2], Exception)
    with pytest.raises(NotFound, match="no conversation"):
        store.app.get(Conversation, Conversation.create_id(tid, "cloud", "5511933334444"))


def test_one_ai_reply_per_burst_and_none_in_human_mode(store: Store) -> None:
    tid = tenant(store)
    got = store.app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988887777")))
    ai_reply(
        store.app, got.conversation_id, reply_to_seq=1, text="Olá!", intent="greet", confidence=0.9
    )
    with pytest.raises(BurstAlreadyAnswered):
        ai_reply(
            store.app,
            got.conversation_id,
            reply_to_seq=1,
            text="Olá de novo",
            intent="greet",
            confidence=0.9,
        )
    store.app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988887777")))
    store.app.request_handoff(got.conversation_id, reason="explicit_request")
    with pytest.raises(AIReplyNotAllowed):
        ai_reply(
            store.app, got.conversation_id, reply_to_seq=2, text="...", intent="x", confidence=0.9
        )
    store.app.accept_handoff(got.conversation_id, attendant="ana")
    store.app.attendant_reply(got.conversation_id, attendant="ana", text="Oi, é a Ana")
    store.app.return_to_ai(got.conversation_id)
    store.app.close_conversation(got.conversation_id, by="ana")
    assert store.app.get(Conversation, got.conversation_id).status is Status.CLOSED


def test_status_before_its_message_is_held_then_applied(store: Store) -> None:
    tid = tenant(store)
    got = store.app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988887777")))
    out_id = ai_reply(
        store.app, got.conversation_id, reply_to_seq=1, text="Olá!", intent="greet", confidence=0.9
    )
    now = datetime.now(UTC)
    held = store.app.record_statuses(
        [RecordStatus(tid, "cloud", StatusUpdate("wamid.OUT1", DeliveryStatus.DELIVERED, now))]
    )
    assert held == ["held"]
    store.app.mark_sent(got.conversation_id, out_id, "wamid.OUT1")
    assert store.app.get(Conversation, got.conversation_id).outbound[out_id].delivery == "delivered"
    results = store.app.record_statuses(
        [
            RecordStatus(tid, "cloud", StatusUpdate("wamid.OUT1", DeliveryStatus.READ, now)),
            RecordStatus(tid, "cloud", StatusUpdate("wamid.OUT1", DeliveryStatus.DELIVERED, now)),
        ]
    )
    assert results == ["applied", "stale"]
    assert store.app.get(Conversation, got.conversation_id).outbound[out_id].delivery == "read"


def test_a_held_status_recorded_again_is_a_duplicate_and_appends_nothing(store: Store) -> None:
    tid = tenant(store)
    now = datetime.now(UTC)
    wamid = f"wamid.{uuid4().hex}"

    def status(value: DeliveryStatus) -> RecordStatus:
        return RecordStatus(tid, "cloud", StatusUpdate(wamid, value, now))

    assert store.app.record_statuses([status(DeliveryStatus.DELIVERED)]) == ["held"]
    count = event_count(store)
    assert store.app.record_statuses([status(DeliveryStatus.DELIVERED)]) == ["duplicate"]
    assert event_count(store) == count
    # Within one batch too, and a new status is still held.
    assert store.app.record_statuses(
        [status(DeliveryStatus.READ), status(DeliveryStatus.READ), status(DeliveryStatus.DELIVERED)]
    ) == ["held", "duplicate", "duplicate"]
    assert event_count(store) == count + 1


def test_concurrent_writers_on_one_conversation_lose_nothing(
    store: Store, master_key: bytes
) -> None:
    tid = tenant(store)
    other = open_store(store.url, master_key, schema=store.schema, pool_size=2)
    store.app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988887777")))
    errors: list[BaseException] = []

    def write(s: Store, n: int) -> None:
        try:
            for _ in range(n):
                s.app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988887777")))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, 15)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert errors == []
    conv_id = Conversation.create_id(tid, "cloud", "5511988887777")
    assert store.app.get(Conversation, conv_id).inbound_seq == 31


def test_inbound_batches_see_what_other_writers_recorded_meanwhile(
    store: Store, master_key: bytes
) -> None:
    """The ingest writer keeps aggregates between batches; it must still catch up."""
    tid = tenant(store)
    got = store.app.receive_message(ReceiveMessage(tid, "cloud", inbound("5511988887777")))
    other = open_store(store.url, master_key, schema=store.schema, pool_size=1)
    try:
        other.app.request_handoff(got.conversation_id, reason="explicit_request")
        other.app.accept_handoff(got.conversation_id, attendant="ana")
    finally:
        other.close()
    again = store.app.ingest([ReceiveMessage(tid, "cloud", inbound("5511988887777", "ainda aí?"))])
    assert isinstance(again[0], Received)
    assert again[0].seq == 2
    conv = store.app.get(Conversation, got.conversation_id)
    assert conv.status is Status.HUMAN
    assert conv.assignee == "ana"
    assert [m["text"] for m in conv.history if m["role"] == "lead"] == ["oi", "ainda aí?"]


def test_a_batch_larger_than_the_socket_buffer_is_written_whole(
    store: Store, master_key: bytes
) -> None:
    """A write whose bytes the socket takes only in part must still reach the server.

    psycopg 3.3's pipeline mode stopped sending such a batch half-way and then waited
    for results forever (the server waiting for the rest): with a small send buffer,
    the library's pipelined insert hung on the first batch like this one.
    """
    tid = tenant(store)
    small = open_store(store.url, master_key, schema=store.schema, pool_size=1)
    try:
        with small.pool.connection() as conn:
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.close()  # the duplicate; the connection's own descriptor stays open
        contacts = [f"55119{n:08d}" for n in range(200)]
        batch = [ReceiveMessage(tid, "cloud", inbound(c, "x" * 3000)) for c in contacts]
        outcome: list[object] = []
        writer = threading.Thread(
            target=lambda: outcome.append(small.app.receive_messages(batch)), daemon=True
        )
        writer.start()
        writer.join(30)
        assert not writer.is_alive(), "the write hung"
    finally:
        small.close()
    (results,) = outcome
    assert isinstance(results, list)
    assert [type(r) for r in results] == [Received] * 200
    conv_id = Conversation.create_id(tid, "cloud", contacts[-1])
    assert store.app.get(Conversation, conv_id).history[-1]["text"] == "x" * 3000


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _plan_nodes(child))]


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
def test_reading_streams_looks_each_up_in_the_index_of_a_store_grown_unanalyzed(
    store: Store, plan_cache_mode: str
) -> None:
    """Loading a batch's streams costs an index lookup per stream, not a scan of the store.

    A store filled faster than autovacuum analyzes it (a new one under load) has no
    statistics: a plain join of the wanted ids with the events was then planned as a
    hash join over a sequential scan, and ingest slowed as the store grew.
    """
    index = store.app.index
    assert isinstance(index, PostgresStreamIndex)
    streams = [uuid4() for _ in range(20_000)]
    with psycopg.connect(conninfo(store.url, store.schema), autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {EVENTS_TABLE} "  # noqa: S608
            "(originator_id, originator_version, topic, state) "
            "SELECT id, v, 'bench', '\\x00' FROM unnest(%s::uuid[]) AS id, "
            "generate_series(1, 3) AS v",
            (streams,),
        )
        # What a batch of 30 webhooks asks for: 90 streams, a third of them stored.
        wanted = {streams[7]: 1, streams[9_000]: 0} | {uuid4(): 0 for _ in range(60)}
        wanted |= {s: 3 for s in streams[100:128]}
        conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        conn.execute(
            "PREPARE read_streams(uuid[], bigint[]) AS "
            + index.statement.replace("%s", "$1", 1).replace("%s", "$2", 1)
        )
        cursor = psycopg.ClientCursor(conn)
        cursor.execute(
            "EXPLAIN (FORMAT JSON) EXECUTE read_streams(%s::uuid[], %s::bigint[])",
            index.params(wanted),
        )
        ((explained,),) = cursor.fetchall()
    nodes = _plan_nodes(explained[0]["Plan"])
    scanned = {n["Node Type"] for n in nodes if n.get("Relation Name") == EVENTS_TABLE}
    assert scanned, nodes
    assert "Seq Scan" not in scanned, scanned
    got = index.stored_after(wanted)
    assert [(e.originator_id, e.originator_version) for e in got] == sorted(
        [(streams[7], 2), (streams[7], 3)] + [(streams[9_000], v) for v in (1, 2, 3)]
    )


def _all_table_text(url: str) -> str:
    """Every row of every table in the database, as text (bytea rendered as hex)."""
    chunks: list[str] = []
    with psycopg.connect(conninfo(url)) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema_name, table in tables:
            rows = conn.execute(f'SELECT t::text FROM "{schema_name}"."{table}" t').fetchall()  # noqa: S608
            chunks.extend(r[0] for r in rows)
    return "\n".join(chunks)


def test_no_phone_number_or_text_is_stored_in_clear(store: Store) -> None:
    tid = tenant(store)
    phone = "55119" + str(uuid4().int)[:8]
    name = f"Fulana {uuid4().hex[:6]}"
    text = f"meu cpf é {uuid4().hex[:10]}"
    media = f"https://cdn.example/{uuid4().hex}.jpg"
    got = store.app.receive_message(
        ReceiveMessage(tid, "cloud", inbound(phone, text, contact_name=name, media_url=media))
    )
    reply = f"resposta {uuid4().hex[:10]}"
    ai_reply(store.app, got.conversation_id, reply_to_seq=1, text=reply, intent="x", confidence=0.5)
    app_secret = f"appsecret{uuid4().hex}"
    store.app.connect_channel(
        tid,
        gateway_config(
            "cloud",
            {
                "phone_number_id": f"pnid{uuid4().hex[:8]}",
                "app_secret": app_secret,
                "verify_token": f"verify{uuid4().hex}",
                "access_token": f"token{uuid4().hex}",
            },
        ),
    )
    dump = _all_table_text(store.url)
    assert dump, "the dump must see the rows"
    needles = [phone, phone[-8:], name, text, media, reply, app_secret]
    for needle in needles:
        assert needle not in dump
        assert needle.encode().hex() not in dump
    # ... and yet the application reads them back.
    conv = store.app.get(Conversation, got.conversation_id)
    assert conv.contact == phone
    assert store.app.get(Lead, got.lead_id).name == name


def test_erased_subject_reads_as_erased_not_an_error(store: Store) -> None:
    tid = tenant(store)
    got = store.app.receive_message(
        ReceiveMessage(tid, "cloud", inbound("5511977776666", "segredo", contact_name="Zé"))
    )
    store.cipher.shred(got.lead_id)
    events = store.app.stream(got.conversation_id)
    received = [e for e in events if type(e).__qualname__ == "Conversation.MessageReceived"]
    assert received[0].text == ERASED
    assert store.app.get(Lead, got.lead_id).name == ERASED


def test_processes_starting_together_create_the_schema_once(
    store: Store, master_key: bytes
) -> None:
    """The API and every worker of a stack start at the same moment: each ensures the
    schema, then opens the store."""
    schema = f"race_{uuid4().hex[:8]}"
    errors: list[BaseException] = []
    opened: list[Store] = []
    gate = threading.Barrier(6)

    def start() -> None:
        try:
            gate.wait()
            ensure_schema(store.url, schema)
            opened.append(open_store(store.url, master_key, schema=schema, pool_size=1))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in opened:
        s.close()
    with psycopg.connect(conninfo(store.url), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert errors == []
    assert len(opened) == 6
