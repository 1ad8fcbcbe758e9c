"""Workspace reads under row-level security, against the same SQL run bare.

    python bench/api.py [--quick] [--conversations N]

On the embedded PostgreSQL (or URBANA_DATABASE_URL), the read models get 100,000
conversations with 10 messages each, 1,000,000 messages (--quick: 10,000 / 100,000),
across 20 tenants. The events are made by the real domain, sealed per lead by the real
mapper and cipher, folded by the real projections (`ConversationView`, `LeadPipeline`)
and written by their own driver (`apply_sync`), so every row, sealed text included, is
what the projector writes; no event store rows are needed. Then VACUUM ANALYZE.

Each workload runs many times, its variants interleaved so a busy neighbour on the
shared machine slows them alike:
- `rls`: `projections.access.tenant_read` (the API role, `app.tenant_id`, read-only)
  around the real query function of `projections.queries`, no decryption;
- `rls_decrypted`: the same with the subject cipher (data keys cached in process, as
  in an API process after a first read): what the API serves;
- `bare`: the statements that function sent (recorded once), run as the table owner on
  the same pool: no role switch, no RLS, the same explicit `WHERE tenant_id`;
- `http`: the route over the real app (`create_app`, its lifespan, its read pool) through
  httpx's ASGI transport, with a supervisor's token from `POST /v1/auth/login`: the
  bearer checked, the reads above, the JSON the client gets (no socket).
The pools are configured as the API's (`build_read_pool`'s `prepare_read_connection`).
Workloads: `list` (a tenant's latest 50), `list_waiting` (status=waiting_human),
`list_assignee` (one attendant's), `detail` (`get_conversation`: the row, its notes and
its 10 messages). `detail_key_cold`: detail of conversations whose lead's data key
this process has not read yet (one extra key lookup).

Each variant also reports `cpu_p50_ms`, this process's CPU time per read (every
thread's, the API's included): on a shared machine, wall time well above it is time
spent waiting for a core (the load averages around the measurement are in the JSON
too). `http_over_rls_decrypted` is what the route adds to the read it serves.

Targets (issue 11): list p50 <= 10 ms and p99 <= 30 ms (`rls_decrypted`, every list
workload; `meets.http_list_*` say the same of `http`), and rls/bare <= 2 (ratio of p50s,
every workload).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Self
from uuid import UUID, uuid4

import httpx
import psycopg
from argon2 import PasswordHasher
from eventsourcing.domain import DomainEventProtocol
from fastapi import FastAPI
from psycopg import AsyncConnection, AsyncCursor
from psycopg.abc import Params, Query
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit
from urbana.adapters.embedded import EmbeddedStack
from urbana.adapters.http.app import create_app
from urbana.adapters.passwords import Argon2Hasher
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.access import Access
from urbana.application.envelope import Envelope, envelope_from_stored
from urbana.application.ports import SubjectCipher
from urbana.application.store import subjects_of
from urbana.config import Settings, conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead
from urbana.domain.user import Role
from urbana.projections import queries
from urbana.projections.access import prepare_read_connection, tenant_read
from urbana.projections.apply import apply_sync
from urbana.projections.base import Projection, physical_name, table_names
from urbana.projections.conversation_view import ConversationView
from urbana.projections.lead_pipeline import LeadPipeline

TENANTS = 20
ATTENDANTS = 10  # per tenant
ROUNDS = 5  # an inbound message and its AI reply each: 10 messages per conversation
LIST_P50_MS = 10.0
LIST_P99_MS = 30.0
MAX_RATIO = 2.0
WORKLOADS = ("list", "list_waiting", "list_assignee", "detail")
INBOUND = (
    "Olá, bom dia! Gostaria de saber o preço do plano anual.",
    "Vocês entregam em Campinas?",
    "Qual o horário de atendimento no sábado?",
    "Quero cancelar meu pedido 4821",
    "Pode me mandar o boleto de novo, por favor?",
)
REPLY = "Claro! O plano anual custa R$ 1.200, em até 12x sem juros no cartão."
PASSWORD = "bench password 11"
# The server checks an argon2 hash by the parameters it carries; cheap ones make the
# users fast (logins are not measured).
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@dataclass
class World:
    """What the generator made: ids to query by."""

    tenants: list[UUID]
    attendants: dict[UUID, list[str]]
    conversations: list[tuple[UUID, UUID]] = field(default_factory=list)  # (tenant, id)
    messages: int = 0


def conversation_events(
    tenant_id: UUID, n: int, rng: random.Random, attendants: list[str], now: datetime
) -> tuple[UUID, list[DomainEventProtocol[UUID]]]:
    """A lead and its conversation of 10 messages; it ends with the AI, waiting for a
    human, held by an attendant (with a note and labels) or closed."""
    phone = f"55119{n:08d}"
    lead = Lead.create(tenant_id, f"phone:{phone}", phone=phone, name=f"Cliente {n}")
    conv = Conversation.start(tenant_id, "cloud", phone, lead.id)
    fate = rng.random()
    human = 0.60 <= fate < 0.75
    for round_ in range(ROUNDS):
        sent_at = now - timedelta(minutes=rng.randint(1, 600))
        conv.receive(
            provider_message_id=f"wamid.{uuid4().hex}",
            kind="text",
            sent_at=sent_at,
            text=rng.choice(INBOUND),
            contact_name=f"Cliente {n}",
        )
        if human and round_ == ROUNDS - 1:
            break
        oid = uuid4().hex
        conv.record_ai_reply(
            outbound_id=oid,
            reply_to_seq=conv.inbound_seq,
            text=REPLY,
            intent="pricing",
            confidence=0.87,
            usage={"tokens_in": 812, "tokens_out": 64, "cost_usd": 0.00041, "model": "gpt-4o-mini"},
        )
        conv.mark_sent(outbound_id=oid, provider_message_id=f"wamid.out.{oid}")
        conv.mark_delivered(outbound_id=oid, at=sent_at)
        if rng.random() < 0.7:
            conv.mark_read(outbound_id=oid, at=sent_at)
    lead.score_by(rng.randint(5, 60), reason="pricing")
    if fate >= 0.60:
        conv.request_handoff(reason="hot_lead", summary=f"Cliente {n} quer fechar o plano anual")
    if human:
        attendant = attendants[(n // TENANTS) % len(attendants)]
        conv.accept_handoff(attendant=attendant)
        conv.add_note(note_id=uuid4().hex, author=attendant, text="Cliente VIP, oferecer 10%")
        conv.change_labels(by=attendant, add=["vip", "renovar"])
        conv.attendant_reply(
            outbound_id=uuid4().hex, attendant=attendant, text="Oi! Sou a Ana.", now=now
        )
    elif fate >= 0.90:
        conv.return_to_ai(by=None)
        conv.close(by="system")
    return conv.id, [*conv.collect_events(), *lead.collect_events()]


def populate(store: Store, conversations: int) -> tuple[World, float]:
    """Fill the conversation view and the lead pipeline the way their projector does."""
    rng = random.Random(11)
    # Real tenants (the API's users need one); their conversations are folded below.
    tenants = [store.app.register_tenant(f"Bench {uuid4().hex[:8]}")[0] for _ in range(TENANTS)]
    world = World(tenants, {t: [str(uuid4()) for _ in range(ATTENDANTS)] for t in tenants})
    projections: list[Projection] = [ConversationView(), LeadPipeline()]
    mapper = store.app.mapper
    now = datetime.now(UTC)
    position = 0
    start = time.perf_counter()
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        cur = conn.cursor()
        for first in range(0, conversations, 1000):
            events: list[tuple[UUID, DomainEventProtocol[UUID]]] = []
            for n in range(first, min(conversations, first + 1000)):
                tenant = tenants[n % TENANTS]
                conv_id, made = conversation_events(tenant, n, rng, world.attendants[tenant], now)
                world.conversations.append((tenant, conv_id))
                events += [(tenant, e) for e in made]
            store.cipher.prepare(subjects_of(e for _, e in events))  # as a save does
            envelopes: list[Envelope] = []
            for tenant, e in events:
                position += 1
                s = mapper.to_stored_event(e)
                envelopes.append(
                    envelope_from_stored(
                        position,
                        str(s.originator_id),
                        s.originator_version,
                        s.topic,
                        s.state,
                        str(tenant),
                        event_id=False,
                    )
                )
            with conn.transaction():
                for projection in projections:
                    apply_sync(cur, projection, table_names(projection), envelopes)
            print(f"folded {first + 1000:,} conversations", file=sys.stderr, flush=True)
    with psycopg.connect(conninfo(store.url, store.schema), autocommit=True) as conn:
        for projection in projections:
            for physical in table_names(projection).values():
                conn.execute(f"VACUUM ANALYZE {physical}")
        row = conn.execute(
            f"SELECT count(*) FROM {physical_name(ConversationView(), 'messages')}"  # noqa: S608
        ).fetchone()
        assert row is not None
        world.messages = int(row[0])
    return world, time.perf_counter() - start


class Recording(AsyncCursor[Any]):
    """A cursor that keeps every statement it runs: what the query functions send."""

    sent: ClassVar[list[tuple[str, Params | None]]] = []

    async def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        if not isinstance(query, str):  # the query functions send plain SQL text
            raise TypeError(f"unexpected query {query!r}")
        Recording.sent.append((query, params))
        return await super().execute(query, params, prepare=prepare, binary=binary)


Read = Callable[[AsyncConnection[Any], SubjectCipher | None], Awaitable[int]]
Get = Callable[[httpx.AsyncClient], Awaitable[int]]


@dataclass
class Workload:
    name: str
    reads: list[tuple[UUID, Read]]  # (tenant, the query function's call)
    gets: list[Get]  # the same reads over HTTP, one for one
    statements: list[list[tuple[str, Params | None]]] = field(default_factory=list)
    items: list[int] = field(default_factory=list)  # rows each read returned


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(percentile(ordered, 0.99), 3),
        "max_ms": round(ordered[-1], 3),
        "n": len(ordered),
    }


async def record(url: str, schema: str | None, workload: Workload) -> None:
    """Run each read once as the owner (no tenant scope), keeping the SQL it sent."""
    async with await AsyncConnection.connect(conninfo(url, schema)) as conn:
        conn.cursor_factory = Recording
        for _, read in workload.reads:
            Recording.sent.clear()
            workload.items.append(await read(conn, None))
            workload.statements.append(list(Recording.sent))
            await conn.commit()


async def measure(
    pool: AsyncConnectionPool[Any],
    cipher: SubjectCipher,
    client: httpx.AsyncClient,
    workload: Workload,
    iterations: int,
) -> dict[str, Any]:
    async def bare(i: int) -> None:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            for query, params in workload.statements[i]:
                await cur.execute(query, params)
                await cur.fetchall()

    async def rls(i: int) -> None:
        tenant, read = workload.reads[i]
        async with tenant_read(pool, tenant) as conn:
            await read(conn, None)

    async def rls_decrypted(i: int) -> None:
        tenant, read = workload.reads[i]
        async with tenant_read(pool, tenant) as conn:
            await read(conn, cipher)

    async def http(i: int) -> None:
        await workload.gets[i](client)

    variants = {"bare": bare, "rls": rls, "rls_decrypted": rls_decrypted, "http": http}
    taken: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    size = len(workload.reads)
    for i in range(size):  # warm: plans prepared, keys cached
        for run in variants.values():
            await run(i)
    order = list(variants.items())
    for i in range(iterations):
        for name, run in order[i % len(order) :] + order[: i % len(order)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            await run(i % size)
            taken[name].append((time.perf_counter() - start) * 1000)
            cpu[name].append((time.process_time() - start_cpu) * 1000)
    out: dict[str, Any] = {
        name: {**figures(ms), "cpu_p50_ms": round(statistics.median(cpu[name]), 3)}
        for name, ms in taken.items()
    }
    out["items_per_read"] = {"min": min(workload.items), "max": max(workload.items)}
    out["ratio_rls_vs_bare"] = {
        "p50": round(out["rls"]["p50_ms"] / out["bare"]["p50_ms"], 2),
        "p99": round(out["rls"]["p99_ms"] / out["bare"]["p99_ms"], 2),
    }
    # What the HTTP route adds to the read it serves (credentials, framework, JSON, the
    # client), measured interleaved with it: steadier than either alone on a shared box.
    out["http_over_rls_decrypted"] = {
        k: round(out["http"][k] - out["rls_decrypted"][k], 3) for k in ("p50_ms", "cpu_p50_ms")
    }
    return out


async def cold_details(
    pool: AsyncConnectionPool[Any], cipher: SubjectCipher, sample: list[tuple[UUID, UUID]]
) -> dict[str, float]:
    """Detail with decryption for leads whose data key this process has not read yet."""
    taken = []
    for tenant, conv in sample:
        start = time.perf_counter()
        async with tenant_read(pool, tenant) as conn:
            await queries.get_conversation(conn, tenant, conv, cipher=cipher)
        taken.append((time.perf_counter() - start) * 1000)
    return figures(taken)


def list_get(token: str, **filters: Any) -> Get:
    async def get(client: httpx.AsyncClient) -> int:
        answer = await client.get(
            "/v1/conversations",
            params={"limit": 50, **filters},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
        assert items, filters
        return len(items)

    return get


def detail_get(token: str, conversation: UUID) -> Get:
    async def get(client: httpx.AsyncClient) -> int:
        answer = await client.get(
            f"/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200, answer.text
        messages = answer.json()["messages"]
        assert len(messages) == 2 * ROUNDS
        assert messages[0]["text"] in INBOUND, messages[0]
        return len(messages)

    return get


def list_read(tenant: UUID, **filters: Any) -> Read:
    async def read(conn: AsyncConnection[Any], cipher: SubjectCipher | None) -> int:
        page = await queries.list_conversations(conn, tenant, limit=50, cipher=cipher, **filters)
        assert page.items, filters  # --quick: an attendant may hold fewer than 50
        return len(page.items)

    return read


def detail_read(tenant: UUID, conversation: UUID) -> Read:
    async def read(conn: AsyncConnection[Any], cipher: SubjectCipher | None) -> int:
        detail = await queries.get_conversation(conn, tenant, conversation, cipher=cipher)
        assert detail is not None
        assert len(detail.messages) == 2 * ROUNDS
        if cipher is not None:
            assert detail.messages[0].text in INBOUND, detail.messages[0].text
        return len(detail.messages)

    return read


async def busiest_attendants(store: Store) -> dict[UUID, str]:
    """Each tenant's attendant holding the most conversations (`list_assignee` reads theirs)."""
    table = physical_name(ConversationView(), "conversations")
    async with await AsyncConnection.connect(conninfo(store.url, store.schema)) as conn:
        cur = await conn.execute(
            f"SELECT DISTINCT ON (tenant_id) tenant_id, assignee FROM {table} "  # noqa: S608
            "WHERE assignee IS NOT NULL GROUP BY 1, 2 ORDER BY tenant_id, count(*) DESC"
        )
        return {UUID(str(t)): str(a) for t, a in await cur.fetchall()}


async def sees_one_tenant(pool: AsyncConnectionPool[Any], world: World) -> bool:
    """Under `tenant_read`, a count without WHERE tenant_id counts that tenant's rows only."""
    tenant = world.tenants[0]
    table = physical_name(ConversationView(), "conversations")
    async with tenant_read(pool, tenant) as conn:
        row = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()  # noqa: S608
    mine = sum(1 for t, _ in world.conversations if t == tenant)
    return row is not None and row[0] == mine < len(world.conversations)


def api_settings(urls: Any, schema: str, master_key: bytes) -> Settings:
    """The API's settings on the bench's schema and master key."""
    return Settings(
        env="test",
        database_url=urls.postgres,
        database_schema=schema,
        kafka_bootstrap="unused:0",  # the read routes use neither Kafka nor the workers
        redis_url=urls.redis,
        master_key=SecretStr(base64.urlsafe_b64encode(master_key).decode()),
        admin_api_key=SecretStr("bench-admin-key-" + "x" * 16),
        jwt_secret=SecretStr("bench-jwt-secret-" + "y" * 32),
        pool_size=2,
    )


async def sign_in(store: Store, client: httpx.AsyncClient, world: World) -> dict[UUID, str]:
    """A supervisor per tenant, signed in over HTTP: their bearer tokens."""
    access = Access(store.app, Argon2Hasher(CHEAP))
    tokens = {}
    for tenant in world.tenants:
        email = f"sup.{uuid4().hex[:10]}@example.com"
        await asyncio.to_thread(
            access.add_user, tenant, email=email, role=Role.SUPERVISOR, password=PASSWORD
        )
        answer = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        tokens[tenant] = answer.json()["access_token"]
    return tokens


async def run(store: Store, world: World, settings: Settings, iterations: int) -> dict[str, Any]:
    rng = random.Random(3)
    detail_sample = rng.sample(world.conversations, 300)
    used = set(detail_sample)
    cold_sample = [c for c in rng.sample(world.conversations, 400) if c not in used][:100]
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo(store.url, store.schema),
        min_size=2,
        max_size=2,
        configure=prepare_read_connection,
        open=False,
    )
    app: FastAPI = create_app(settings)
    await pool.open()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench"
            ) as client,
        ):
            tokens = await sign_in(store, client, world)
            ts = world.tenants
            waiting, holder = {"status": "waiting_human"}, await busiest_attendants(store)
            workloads = [
                Workload(
                    "list", [(t, list_read(t)) for t in ts], [list_get(tokens[t]) for t in ts]
                ),
                Workload(
                    "list_waiting",
                    [(t, list_read(t, **waiting)) for t in ts],
                    [list_get(tokens[t], **waiting) for t in ts],
                ),
                Workload(
                    "list_assignee",
                    [(t, list_read(t, assignee=holder[t])) for t in ts],
                    [list_get(tokens[t], assignee=holder[t]) for t in ts],
                ),
                Workload(
                    "detail",
                    [(t, detail_read(t, c)) for t, c in detail_sample],
                    [detail_get(tokens[t], c) for t, c in detail_sample],
                ),
            ]
            results: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
            for workload in workloads:
                await record(store.url, store.schema, workload)
                measured = await measure(pool, store.cipher, client, workload, iterations)
                results[workload.name] = measured
                print(f"{workload.name}: {measured}", file=sys.stderr, flush=True)
        results["detail_key_cold"] = await cold_details(pool, store.cipher, cold_sample)
        results["rls_sees_one_tenant"] = await sees_one_tenant(pool, world)
        results["load_average_after"] = os.getloadavg()[0]
    finally:
        await pool.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--conversations", type=int, help="instead of 100,000 (--quick: 10,000); a busy machine"
    )
    args = parser.parse_args()
    conversations = args.conversations or (10_000 if args.quick else 100_000)
    iterations = 600 if args.quick else 1500
    with tempfile.TemporaryDirectory(prefix="urbana-bench-") as tmp:
        stack = EmbeddedStack(
            Path(tmp),
            postgres_url=os.environ.get("URBANA_DATABASE_URL"),
            kafka_bootstrap="unused:0",
        )
        with stack:
            urls = stack.start()
            schema = f"bench_{uuid4().hex[:8]}"
            ensure_schema(urls.postgres, schema)
            master_key = os.urandom(32)
            store = open_store(urls.postgres, master_key, schema=schema, pool_size=2)
            try:
                world, load_s = populate(store, conversations)
                settings = api_settings(urls, schema, master_key)
                results = asyncio.run(run(store, world, settings, iterations))
            finally:
                store.close()
    lists = [results[name] for name in ("list", "list_waiting", "list_assignee")]
    ratios = [results[n]["ratio_rls_vs_bare"]["p50"] for n in WORKLOADS]
    meets = {
        "list_p50": all(w["rls_decrypted"]["p50_ms"] <= LIST_P50_MS for w in lists),
        "list_p99": all(w["rls_decrypted"]["p99_ms"] <= LIST_P99_MS for w in lists),
        "http_list_p50": all(w["http"]["p50_ms"] <= LIST_P50_MS for w in lists),
        "http_list_p99": all(w["http"]["p99_ms"] <= LIST_P99_MS for w in lists),
        "ratio": all(r <= MAX_RATIO for r in ratios),
        "rls_isolates": bool(results["rls_sees_one_tenant"]),
    }
    emit(
        {
            "bench": "api",
            "unit": "ms per read",
            "tenants": TENANTS,
            "conversations": len(world.conversations),
            "messages": world.messages,
            "load_s": round(load_s, 1),
            "iterations": iterations,
            **results,
            "targets": {
                "list_p50_ms": LIST_P50_MS,
                "list_p99_ms": LIST_P99_MS,
                "ratio_rls_vs_bare_p50": MAX_RATIO,
            },
            "meets": meets,
            "meets_target": all(meets.values()),
        }
    )


if __name__ == "__main__":
    main()
