"""THE property: read models built incrementally through Kafka equal a full replay.

For random command sequences over a few conversations and their attendants (with the
events issue 11 adds: assignments, transfers, notes, labels, returns to the queue, the
users' availability, queues and disabling, the tenant's queues and canned responses, and
erasures of a lead, after which its contact may write again as a new subject, and the
tenant's plan limit, past which new leads are flagged), all
recorded by the application's own commands, so every event has the shape the domain
gives it, the events are published to a fresh topic in chunks, some
chunks twice (a relay that crashed before saving its position), and consumed by
runners that are killed between the database commit and the offset commit (so Kafka
redelivers what was already applied). Whatever happened, the tables must equal, row for
row, what `replay` builds from the event store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.helpers import ai_reply

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.kafka.producer import to_record
from urbana.adapters.kafka.projector import ProjectionRunner
from urbana.adapters.postgres.log import LogReader
from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.app import AIOutcome, ReceiveMessage, RecordStatus
from urbana.application.channels import DeliveryStatus, InboundMessage, StatusUpdate
from urbana.application.envelope import Envelope
from urbana.config import conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.errors import DomainError
from urbana.domain.lead import Lead, Stage
from urbana.domain.reply import DEFAULT_MESSAGES, LLM_FAILURE
from urbana.domain.user import Availability, Role
from urbana.projections.base import physical_name
from urbana.projections.schema import all_projections

pytestmark = pytest.mark.integration

TABLES = tuple(physical_name(p, t) for p in all_projections() for t in p.tables)
CONTACTS = ("5511900000001", "5511900000002", "5511900000003")
ATTENDANTS = ("ana", "bia")
QUEUES = ("vendas", "suporte")
LABELS = ("vip", "urgente", "retorno")
AVAILABILITY = ("online", "away", "offline")
SHORTCUTS = ("/ola", "/preco")
# Users are added by the application's command with a hash already made (no login here).
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"

command = st.one_of(
    st.tuples(st.just("receive"), st.integers(0, 2)),
    st.tuples(st.just("ai_reply"), st.integers(0, 2), st.integers(-5, 40)),
    st.tuples(st.just("ai_failure"), st.integers(0, 2)),
    st.tuples(st.just("handoff"), st.integers(0, 2)),
    st.tuples(st.just("accept"), st.integers(0, 2)),
    st.tuples(st.just("human_reply"), st.integers(0, 2)),
    st.tuples(st.just("return"), st.integers(0, 2)),
    st.tuples(st.just("close"), st.integers(0, 2)),
    st.tuples(st.just("sent"), st.integers(0, 2)),
    st.tuples(
        st.just("status"), st.integers(0, 2), st.sampled_from(["delivered", "read", "failed"])
    ),
    st.tuples(st.just("cancel"), st.integers(0, 2)),
    st.tuples(st.just("assign"), st.integers(0, 2), st.sampled_from(ATTENDANTS)),
    st.tuples(st.just("transfer"), st.integers(0, 2), st.sampled_from([*ATTENDANTS, None])),
    st.tuples(st.just("note"), st.integers(0, 2)),
    st.tuples(st.just("labels"), st.integers(0, 2)),
    st.tuples(st.just("release"), st.integers(0, 2)),
    st.tuples(st.just("reopen"), st.integers(0, 2)),
    st.tuples(st.just("stage"), st.integers(0, 2), st.sampled_from(list(Stage))),
    st.tuples(st.just("availability"), st.integers(0, 2), st.sampled_from(AVAILABILITY)),
    st.tuples(st.just("user_queues"), st.integers(0, 2), st.lists(st.sampled_from(QUEUES))),
    st.tuples(st.just("disable"), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("queue"), st.integers(0, 2), st.sampled_from(QUEUES)),
    st.tuples(st.just("canned"), st.integers(0, 2), st.sampled_from(SHORTCUTS), st.booleans()),
    # LGPD erasure of the conversation's lead (its key, then SubjectErased); the contact
    # writing again afterwards is the next generation's subject.
    st.tuples(st.just("erase"), st.integers(0, 2)),
)

scenario = st.fixed_dictionaries(
    {
        # conversations opened first: the other commands aim at them
        "opening": st.lists(st.integers(0, 2), min_size=1, max_size=3),
        "commands": st.lists(command, min_size=5, max_size=40),
        "partitions": st.integers(1, 4),
        "chunks": st.integers(1, 4),
        "republish": st.lists(st.booleans(), min_size=4, max_size=4),
        "crash_after": st.lists(st.integers(1, 3), max_size=2),
        "batch_size": st.sampled_from([3, 10, 500]),
    }
)


class World:
    """The commands' effects on a real store; remembers ids to aim later commands."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.tenant_id, _ = store.app.register_tenant(f"Prop {uuid4().hex[:8]}")
        # Two new leads a month: the third contact (or a contact writing again after its
        # erasure, a new subject) is recorded past the limit and flagged.
        store.app.change_plan(self.tenant_id, "custom", 2)
        self.conversations: dict[int, UUID] = {}
        self.outbound: dict[int, list[tuple[str, str | None]]] = {}  # (outbound id, provider id)
        # Two invited users and one assignee never invited (its row has only activity).
        self.queues: dict[str, str] = {}  # name -> id
        self.people = [
            str(self.invite("Ana", Role.ATTENDANT)),
            str(self.invite("Bia", Role.SUPERVISOR)),
            str(uuid4()),
        ]
        # The attendants the conversation commands name, as the users they are.
        self.staff = dict(zip(ATTENDANTS, self.people, strict=False))

    def invite(self, name: str, role: Role) -> UUID:
        return self.store.app.add_user(
            self.tenant_id,
            email=f"{name.lower()}.{uuid4().hex[:8]}@prop.test",
            role=role,
            password_hash=PASSWORD_HASH,
            name=name,
        )

    def run(self, cmd: tuple[Any, ...]) -> None:
        app, name, c = self.store.app, cmd[0], cmd[1]
        now = datetime.now(UTC)
        if name == "receive":
            msg = InboundMessage(
                provider_message_id=f"wamid.{uuid4().hex}",
                contact=CONTACTS[c],
                phone=CONTACTS[c],
                sent_at=now,
                kind="text",
                text=f"mensagem {uuid4().hex[:4]}",
                contact_name=f"Pessoa {c}",
            )
            got = app.receive_message(ReceiveMessage(self.tenant_id, "cloud", msg))
            self.conversations[c] = got.conversation_id
            return
        try:
            if name in ("availability", "user_queues", "disable"):
                self.user_event(cmd)
                return
            if name in ("queue", "canned"):
                self.tenant_event(cmd)
                return
        except DomainError:
            return  # the domain refused: nothing was recorded
        conversation_id = self.conversations.get(c)
        if conversation_id is None:
            return
        outbound = self.outbound.setdefault(c, [])
        try:
            if name == "ai_reply":
                conv = app.get(Conversation, conversation_id)
                oid = ai_reply(
                    app,
                    conversation_id,
                    reply_to_seq=conv.inbound_seq,
                    text="resposta",
                    intent="faq",
                    confidence=0.9,
                    usage={"tokens_in": 7, "tokens_out": 3, "cost_usd": 0.0001},
                    score_delta=cmd[2],
                )
                outbound.append((oid, None))
            elif name == "ai_failure":
                # What the responder records when every model failed: the generic
                # answer as the AI's reply, the transition message, the handoff.
                conv = app.get(Conversation, conversation_id)
                queued = app.apply_ai_outcome(
                    conversation_id,
                    AIOutcome(
                        reply_to_seq=conv.inbound_seq,
                        reply=DEFAULT_MESSAGES["fallback"],
                        intent="other",
                        confidence=0.0,
                        usage={"tokens_in": 5, "tokens_out": 0, "cost_usd": 0.00001},
                        handoff_reason=LLM_FAILURE,
                        transition_message=DEFAULT_MESSAGES["handoff"],
                        summary="resumo",
                    ),
                )
                outbound.extend((oid, None) for oid in queued)
            elif name == "handoff":
                app.request_handoff(conversation_id, reason="asked", summary="resumo")
            elif name == "accept":
                app.accept_handoff(conversation_id, attendant=self.staff["ana"])
            elif name == "human_reply":
                holder = app.get(Conversation, conversation_id).assignee or self.staff["ana"]
                oid = app.attendant_reply(conversation_id, attendant=holder, text="humano aqui")
                outbound.append((oid, None))
            elif name == "return":
                app.return_to_ai(conversation_id)
            elif name == "close":
                app.close_conversation(conversation_id, by="ana")
            elif name == "sent" and outbound:
                oid, _ = outbound[-1]
                pid = f"wamid.out.{uuid4().hex}"
                app.mark_sent(conversation_id, oid, pid)
                outbound[-1] = (oid, pid)
            elif name == "status":
                sent = [pid for _, pid in outbound if pid]
                if sent:
                    status = DeliveryStatus(cmd[2])
                    app.record_statuses(
                        [RecordStatus(self.tenant_id, "cloud", StatusUpdate(sent[-1], status, now))]
                    )
            elif name == "cancel" and outbound:
                app.cancel_outbound(conversation_id, outbound[-1][0], reason="took over")
            elif name == "assign":
                app.assign(conversation_id, assignee=self.staff[cmd[2]])
            elif name == "transfer":
                holder = app.get(Conversation, conversation_id).assignee or "sup"
                app.transfer(
                    conversation_id,
                    by=holder,
                    to_user=self.staff[cmd[2]] if cmd[2] else None,
                    to_queue=None if cmd[2] else "q-geral",
                    note="nota de transferência",
                )
            elif name == "note":
                app.add_note(conversation_id, author="ana", text="nota privada")
            elif name == "labels":
                app.change_labels(conversation_id, by="ana", add=["vip"], remove=["novo"])
            elif name == "release":
                app.release_inactive(conversation_id, now=now + timedelta(hours=1))
            elif name == "reopen":
                app.reopen_conversation(conversation_id, by="sup")
            elif name == "erase":
                lead_id = app.get(Conversation, conversation_id).lead_id
                if not app.get(Lead, lead_id).erased:
                    app.cipher.shred(lead_id)
                    app.record_erasure(lead_id, "subject_request", [conversation_id])
            elif name == "stage":
                lead_id = app.get(Conversation, conversation_id).lead_id
                app.move_lead_stage(lead_id, stage=cmd[2], by="ana")
        except DomainError:
            pass  # the domain refused: nothing was recorded

    def tenant_event(self, cmd: tuple[Any, ...]) -> None:
        app, tenant = self.store.app, self.tenant_id
        if cmd[0] == "queue":
            queue_id = self.queues.get(cmd[2])
            if queue_id is not None:
                app.change_queue(tenant, queue_id, intents=(f"intent{cmd[1]}",))
            else:
                self.queues[cmd[2]] = app.create_queue(tenant, cmd[2].title())
        elif cmd[3]:
            app.save_canned_response(tenant, cmd[2], f"resposta {cmd[1]}")
        else:  # refused (nothing recorded) when the tenant has no such canned response
            app.remove_canned_response(tenant, cmd[2])

    def user_event(self, cmd: tuple[Any, ...]) -> None:
        app, name, person = self.store.app, cmd[0], self.people[cmd[1]]
        if person not in self.people[:2]:
            return  # never invited: no stream of its own
        user_id = UUID(person)
        if name == "availability":
            app.set_availability(self.tenant_id, user_id, Availability(cmd[2]))
        elif name == "user_queues":
            queues = [self.queues.get(q, q) for q in cmd[2]]
            app.set_user_queues(self.tenant_id, user_id, queues)
        else:
            app.update_user(self.tenant_id, user_id, by=person, disabled=cmd[2])


def envelopes_of(store: Store) -> list[Envelope]:
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        return [e for _, _, page in LogReader(store.schema).pages(conn.cursor(), 0) for e in page]


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        return {
            t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)  # noqa: S608
            for t in TABLES
        }


class Crash(Exception):
    """A runner killed after its database commit, before committing offsets."""


async def through_kafka(
    bootstrap: str, store: Store, events: list[Envelope], plan: dict[str, Any]
) -> None:
    topic = f"prop.{uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topic, num_partitions=plan["partitions"], replication_factor=1),
                NewTopic(topic + ".dlq", num_partitions=1, replication_factor=1),
            ]
        )
    finally:
        await admin.close()

    def make(after_db_commit: Any = None) -> ProjectionRunner:
        return ProjectionRunner(
            database_url=store.url,
            schema=store.schema,
            bootstrap=bootstrap,
            topic=topic,
            dlq_topic=topic + ".dlq",
            group_prefix=topic,
            assign=True,
            batch_size=plan["batch_size"],
            after_db_commit=after_db_commit,
        )

    size = max(1, -(-len(events) // plan["chunks"]))
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    crashes = list(plan["crash_after"])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        for i, chunk in enumerate(chunks):
            copies = 2 if plan["republish"][i % 4] else 1
            for _ in range(copies):
                for e in chunk:
                    record = to_record(e)
                    await producer.send(
                        topic, key=record.key, value=record.value, headers=record.headers
                    )
            await producer.flush()
            if crashes:
                left = crashes.pop(0)

                async def crash(name: str, applied: object, _n: list[int] = [left]) -> None:  # noqa: B006
                    _n[0] -= 1
                    if _n[0] <= 0:
                        raise Crash

                with contextlib.suppress(Crash):
                    await make(crash).run_until_caught_up(60)
        metrics = await make().run_until_caught_up(60)
    finally:
        await producer.stop()
    assert all(m.dead_lettered == 0 for m in metrics.values())


@settings(
    max_examples=int(os.environ.get("URBANA_PROPERTY_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=scenario)
def test_kafka_built_read_models_equal_a_full_replay(
    services: ServiceUrls, plan: dict[str, Any]
) -> None:
    schema = f"p_{uuid4().hex[:12]}"
    ensure_schema(services.postgres, schema)
    store = open_store(services.postgres, os.urandom(32), schema=schema, pool_size=2)
    try:
        world = World(store)
        for contact in plan["opening"]:
            world.run(("receive", contact))
        for cmd in plan["commands"]:
            world.run(cmd)
        events = envelopes_of(store)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(through_kafka(services.kafka, store, events, plan))
        finally:
            loop.close()
        incremental = snapshot(store)
        replay(store.url, store.schema)
        rebuilt = snapshot(store)
        for table in TABLES:
            assert incremental[table] == rebuilt[table], table
    finally:
        store.close()
        with psycopg.connect(conninfo(services.postgres), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
