"""Contract tests: the in-memory fake and the real adapter of a port pass the same assertions.

Knowledge store: tests/fakes.InMemoryKnowledgeStore and PgKnowledgeStore (pgvector).
Coordination: tests/fakes.InMemoryCoordination and RedisCoordinator (Redis). Digests of
the subject cipher: tests/fakes.InMemoryCipher and PostgresSubjectCipher. The unit
tests of the responder and the dispatcher run on the fakes; these tests are why that
says something about the real thing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from tests.fakes import (
    InMemoryCipher,
    InMemoryCoordination,
    InMemoryKnowledgeStore,
    WordEmbeddings,
)
from tests.provider_ids import cloud_wamid

from urbana.adapters.crypto import PostgresSubjectCipher
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.postgres.knowledge import PgKnowledgeStore
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.redis_coord import RedisCoordinator, redis_client
from urbana.application.ports import Coordination, KnowledgeStore, LockBusy, SubjectCipher
from urbana.config import conninfo

pytestmark = pytest.mark.integration

HOURS = "# Loja\n\n## Horário\nAbrimos de segunda a sábado, das 9h às 18h."
PAYMENT = "# Loja\n\n## Pagamento\nAceitamos pix e cartão de crédito em até 10x."


# -------------------------------------------------------------- knowledge store


@pytest.fixture
def pool(services: ServiceUrls, schema: str) -> Iterator[ConnectionPool]:
    ensure_schema(services.postgres, schema)
    opened = ConnectionPool(conninfo(services.postgres, schema), min_size=1, max_size=2, open=True)
    try:
        yield opened
    finally:
        opened.close()
        with psycopg.connect(conninfo(services.postgres), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["in-memory", "pgvector"])
def knowledge(request: pytest.FixtureRequest) -> KnowledgeStore:
    if request.param == "in-memory":
        return InMemoryKnowledgeStore(WordEmbeddings())
    return PgKnowledgeStore(request.getfixturevalue("pool"), WordEmbeddings())


async def ask(knowledge: KnowledgeStore, tenant: UUID, question: str, k: int = 4) -> list[str]:
    vector = await WordEmbeddings().embed_query(question)
    return [p.text for p in await knowledge.search(tenant, vector, k)]


async def test_the_closest_passage_comes_first(knowledge: KnowledgeStore) -> None:
    tenant = uuid4()
    await knowledge.add_document(tenant, "horario.md", HOURS)
    await knowledge.add_document(tenant, "pagamento.md", PAYMENT)
    found = await ask(knowledge, tenant, "aceitam pix?")
    assert len(found) == 2
    assert "pix" in found[0]
    assert await ask(knowledge, tenant, "aceitam pix?", k=1) == found[:1]


async def test_a_tenant_never_finds_another_tenants_passages(knowledge: KnowledgeStore) -> None:
    mine, theirs = uuid4(), uuid4()
    await knowledge.add_document(theirs, "pagamento.md", PAYMENT)
    assert await ask(knowledge, mine, "aceitam pix?") == []


async def test_adding_a_document_again_by_name_replaces_it(knowledge: KnowledgeStore) -> None:
    tenant = uuid4()
    first = await knowledge.add_document(tenant, "loja.md", HOURS)
    again = await knowledge.add_document(tenant, "loja.md", PAYMENT)
    other = await knowledge.add_document(tenant, "outro.md", HOURS)
    assert first == again != other
    found = await ask(knowledge, tenant, "aceitam pix?")
    assert sorted(found) == sorted([PAYMENT.replace("\n\n", "\n"), HOURS.replace("\n\n", "\n")])


async def test_an_older_version_of_a_document_changes_nothing(knowledge: KnowledgeStore) -> None:
    tenant = uuid4()
    await knowledge.add_document(tenant, "loja.md", PAYMENT, version=5)
    await knowledge.add_document(tenant, "loja.md", HOURS, version=4)  # a late redelivery
    await knowledge.add_document(tenant, "loja.md", HOURS, version=5)  # the same event again
    assert "pix" in (await ask(knowledge, tenant, "horário", k=1))[0]
    await knowledge.add_document(tenant, "loja.md", HOURS, version=5, force=True)  # a rebuild
    assert "9h" in (await ask(knowledge, tenant, "pix", k=1))[0]


async def test_a_document_without_text_or_name_is_refused(knowledge: KnowledgeStore) -> None:
    with pytest.raises(ValueError, match="name"):
        await knowledge.add_document(uuid4(), "  ", HOURS)
    with pytest.raises(ValueError, match="no text"):
        await knowledge.add_document(uuid4(), "vazio.md", "   ")


# ------------------------------------------------------------------ coordination


@pytest.fixture(params=["in-memory", "redis"])
async def coordination(
    request: pytest.FixtureRequest, services: ServiceUrls
) -> AsyncIterator[Coordination]:
    if request.param == "in-memory":
        yield InMemoryCoordination()
        return
    client = redis_client(services.redis)
    try:
        yield RedisCoordinator(client, prefix=f"test:{uuid4().hex}")
    finally:
        await client.aclose()


async def test_a_trigger_is_quiet_only_while_no_later_message_arrived(
    coordination: Coordination,
) -> None:
    conversation = uuid4()
    assert await coordination.quiet_after(conversation, 1, 0)
    await coordination.note_messages({conversation: 3})
    assert not await coordination.quiet_after(conversation, 2, 0)
    assert await coordination.quiet_after(conversation, 3, 0)
    await coordination.note_messages({conversation: 2})  # an older arrival never lowers it
    assert not await coordination.quiet_after(conversation, 2, 0)


async def test_a_message_noted_during_the_debounce_keeps_the_earlier_trigger_quiet(
    coordination: Coordination,
) -> None:
    conversation = uuid4()
    waiting = asyncio.create_task(coordination.quiet_after(conversation, 1, 300))
    await asyncio.sleep(0.05)
    await coordination.note_messages({conversation: 2, uuid4(): 9})
    assert not await waiting


async def test_conversations_do_not_share_bursts(coordination: Coordination) -> None:
    first, second = uuid4(), uuid4()
    await coordination.note_messages({first: 5})
    assert await coordination.quiet_after(second, 1, 0)


async def test_the_lock_admits_one_holder_at_a_time(coordination: Coordination) -> None:
    conversation = uuid4()
    order: list[str] = []

    async def hold(name: str, seconds: float) -> None:
        async with coordination.lock(conversation):
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
            order.append(f"{name} out")

    first = asyncio.create_task(hold("first", 0.3))
    await asyncio.sleep(0.05)
    await asyncio.gather(first, hold("second", 0))
    assert order == ["first in", "first out", "second in", "second out"]


async def test_a_lock_held_past_the_wait_is_busy_and_others_are_free(
    coordination: Coordination,
) -> None:
    conversation = uuid4()
    async with coordination.lock(conversation):
        with pytest.raises(LockBusy):
            async with coordination.lock(conversation, wait_s=0.2):
                pass
        async with coordination.lock(uuid4(), wait_s=0.2):
            pass  # another conversation's lock is free
    async with coordination.lock(conversation, wait_s=0.2):
        pass  # released


# -------------------------------------------------------------- subject cipher's digests


@pytest.fixture(params=["in-memory", "postgres"])
def vault(request: pytest.FixtureRequest) -> SubjectCipher:
    if request.param == "in-memory":
        return InMemoryCipher()
    return PostgresSubjectCipher(request.getfixturevalue("pool"), os.urandom(32))


def test_a_digest_names_the_same_id_every_time_and_no_other(vault: SubjectCipher) -> None:
    wamid = cloud_wamid("5511987654321")
    first = vault.digest("message:t1:cloud", wamid)
    assert vault.digest("message:t1:cloud", wamid) == first
    assert vault.digest("message:t2:cloud", wamid) != first  # another tenant
    assert vault.digest("message:t1:cloud", cloud_wamid("5511987654321")) != first
    # Nothing of the id, nor of the phone it embeds, is left in it.
    assert "5511987654321" not in first
    assert wamid.removeprefix("wamid.")[:12] not in first


def test_a_digest_is_keyed_by_the_installation_secret(pool: ConnectionPool) -> None:
    master = os.urandom(32)
    one, same = PostgresSubjectCipher(pool, master), PostgresSubjectCipher(pool, master)
    other = PostgresSubjectCipher(pool, os.urandom(32))
    # Every process of an installation computes the same digest; another secret does not.
    assert one.digest("c", "wamid.X") == same.digest("c", "wamid.X")
    assert one.digest("c", "wamid.X") != other.digest("c", "wamid.X")
