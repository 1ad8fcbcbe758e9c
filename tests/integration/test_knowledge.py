"""The pgvector knowledge store with local e5 embeddings, and the offline responder.

Also the calibration of the responder's thresholds: on a small Portuguese knowledge
base, every question it covers is answered from the right passage and every
unrelated question is handed off.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.embeddings import LocalE5Embeddings, OpenAIEmbeddings
from urbana.adapters.llm.retrieval import RetrievalResponder
from urbana.adapters.postgres.knowledge import PgKnowledgeStore, document_id_for
from urbana.adapters.postgres.schema import ensure_schema
from urbana.application.ai import LLMResult, build_prompt
from urbana.application.search_text import search_text
from urbana.config import conninfo
from urbana.domain.guard import check_output
from urbana.errors import Unavailable

pytestmark = pytest.mark.integration

KB = """# Colchões Sono Bom

## Horário de atendimento
Atendemos de segunda a sexta, das 8h às 18h, e aos sábados das 9h às 13h. Não abrimos aos
domingos e feriados.

## Endereço
Nossa loja fica na Rua das Flores, 123, Centro, Curitiba - PR. Há estacionamento gratuito
para clientes.

## Formas de pagamento
Aceitamos Pix, cartão de crédito em até 10x sem juros, cartão de débito e boleto bancário.

## Entrega
Entregamos em toda a região metropolitana em até 5 dias úteis. O frete é grátis para
compras acima de R$ 300,00.

## Trocas e devoluções
Você pode trocar ou devolver produtos em até 7 dias após o recebimento, com a nota fiscal.

## Garantia
Todos os colchões têm garantia de 2 anos contra defeitos de fabricação.
"""

# question -> a phrase of the passage that answers it
ANSWERABLE = {
    "Qual o horário de atendimento?": "das 8h às 18h",
    "Vocês abrem no domingo?": "domingos e feriados",
    "Onde fica a loja?": "Rua das Flores",
    "Aceitam pix?": "Aceitamos Pix",
    "Dá pra parcelar no cartão?": "10x sem juros",
    "Quanto tempo demora a entrega?": "5 dias úteis",
    "Posso devolver um produto?": "trocar ou devolver",
    "Qual a garantia do colchão?": "garantia de 2 anos",
}
UNRELATED = [
    "Qual a capital da França?",
    "Vocês vendem carros usados?",
    "Meu cachorro está doente, o que faço?",
    "Quem ganhou o jogo ontem?",
    "Qual a previsão do tempo para amanhã?",
    "Vocês têm vaga de emprego?",
    "Me conta uma piada",
    "Qual o telefone do SAC?",
]


@pytest.fixture(scope="module")
def embeddings() -> LocalE5Embeddings:
    return LocalE5Embeddings()


@pytest.fixture
def pool(services: ServiceUrls, schema: str) -> Iterator[ConnectionPool]:
    url = services.postgres
    ensure_schema(url, schema)
    opened = ConnectionPool(conninfo(url, schema), min_size=1, max_size=2, open=True)
    try:
        yield opened
    finally:
        opened.close()
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def kb(pool: ConnectionPool, embeddings: LocalE5Embeddings) -> tuple[PgKnowledgeStore, UUID]:
    store = PgKnowledgeStore(pool, embeddings, max_chars=400)
    tenant = uuid4()
    await store.add_document(tenant, "faq.md", KB)
    return store, tenant


async def answer(
    store: PgKnowledgeStore, embeddings: LocalE5Embeddings, tenant: UUID, question: str
) -> LLMResult:
    # As the responder searches: with what the lead asked (`search_text`).
    vector = await embeddings.embed_query(search_text(question))
    passages = await store.search(tenant, vector, k=3)
    history = [{"role": "lead", "seq": 1, "kind": "text", "text": question}]
    prompt = build_prompt(history=history, answered_seq=0, tenant_prompt=None, passages=passages)
    return await RetrievalResponder().complete(prompt)


async def test_local_e5_vectors_are_normalised_384_floats(embeddings: LocalE5Embeddings) -> None:
    query = await embeddings.embed_query("horário")
    passages = await embeddings.embed_passages(["a", "b"])
    assert len(query) == 384
    assert [len(p) for p in passages] == [384, 384]
    assert sum(x * x for x in query) == pytest.approx(1.0, abs=1e-3)


async def test_document_is_chunked_embedded_and_stored_with_model_and_dim(
    kb: tuple[PgKnowledgeStore, UUID], pool: ConnectionPool
) -> None:
    _, tenant = kb
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT document_id, chunk_no, model, dim, vector_dims(embedding) FROM kb_chunks "
            "WHERE tenant_id = %s ORDER BY chunk_no",
            (tenant,),
        ).fetchall()
        index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'kb_chunks_embedding_hnsw'"
        ).fetchone()
    assert len(rows) == 6
    assert {r[0] for r in rows} == {document_id_for(tenant, "faq.md")}
    assert [r[1] for r in rows] == list(range(6))
    assert {(r[2], r[3], r[4]) for r in rows} == {("multilingual-e5-small", 384, 384)}
    assert index is not None
    assert "hnsw" in index[0]
    assert "vector_cosine_ops" in index[0]


async def test_a_document_larger_than_the_socket_buffer_is_stored_whole(
    pool: ConnectionPool, services: ServiceUrls, schema: str, embeddings: LocalE5Embeddings
) -> None:
    """Hundreds of chunks (their vectors as text: about 1 MB) over a connection whose
    send buffer takes a few KB at a time are stored whole (the store's pipelined writes
    hung on a batch like this: see test_store)."""
    # `pool` made the schema (and drops it); this pool's one connection sends slowly.
    small = ConnectionPool(conninfo(services.postgres, schema), min_size=1, max_size=1, open=True)
    try:
        with small.connection() as conn:
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.close()  # the duplicate; the connection keeps its own descriptor
        store = PgKnowledgeStore(small, embeddings, max_chars=200, overlap=0)
        tenant = uuid4()
        text = "\n\n".join(
            f"# Seção {n}\n\nResposta número {n} sobre entregas e prazos." for n in range(200)
        )
        await asyncio.wait_for(store.add_document(tenant, "grande.md", text), timeout=120)
        with small.connection() as conn:
            row = conn.execute(
                "SELECT count(*), min(chunk_no), max(chunk_no), min(dim) FROM kb_chunks "
                "WHERE tenant_id = %s",
                (tenant,),
            ).fetchone()
    finally:
        small.close()
    assert row is not None
    count, first, last, dim = row
    assert count >= 100
    assert (first, last, dim) == (0, count - 1, 384)


async def test_search_finds_the_right_passage_best_first(
    kb: tuple[PgKnowledgeStore, UUID], embeddings: LocalE5Embeddings
) -> None:
    store, tenant = kb
    passages = await store.search(tenant, await embeddings.embed_query("Onde fica a loja?"), k=3)
    assert len(passages) == 3
    assert "Rua das Flores" in passages[0].text
    assert passages[0].score >= passages[1].score >= passages[2].score


async def test_search_is_per_tenant(
    kb: tuple[PgKnowledgeStore, UUID], embeddings: LocalE5Embeddings
) -> None:
    store, _ = kb
    assert await store.search(uuid4(), await embeddings.embed_query("horário"), k=3) == []


async def test_adding_a_document_again_replaces_its_chunks(
    kb: tuple[PgKnowledgeStore, UUID], pool: ConnectionPool
) -> None:
    store, tenant = kb
    document_id = await store.add_document(tenant, "faq.md", "Só abrimos com hora marcada.")
    with pool.connection() as conn:
        texts = conn.execute(
            "SELECT text FROM kb_chunks WHERE tenant_id = %s", (tenant,)
        ).fetchall()
    assert texts == [("Só abrimos com hora marcada.",)]
    assert document_id == document_id_for(tenant, "faq.md")


async def test_an_older_event_never_replaces_a_newer_document(
    kb: tuple[PgKnowledgeStore, UUID], pool: ConnectionPool
) -> None:
    """Redelivered or reordered KnowledgeDocumentAdded events leave the newest text."""
    store, tenant = kb
    await store.add_document(tenant, "precos.md", "Frete grátis acima de R$ 500.", version=7)
    await store.add_document(tenant, "precos.md", "Frete grátis acima de R$ 300.", version=4)
    await store.add_document(tenant, "precos.md", "Frete grátis acima de R$ 500.", version=7)
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT text, source_version FROM kb_chunks WHERE tenant_id = %s AND document_id = %s",
            (tenant, document_id_for(tenant, "precos.md")),
        ).fetchall()
    assert rows == [("Frete grátis acima de R$ 500.", 7)]


async def test_the_same_version_is_embedded_again_only_when_forced(
    kb: tuple[PgKnowledgeStore, UUID], pool: ConnectionPool
) -> None:
    store, tenant = kb

    def stored() -> list[tuple[str, int]]:
        with pool.connection() as conn:
            rows = conn.execute(
                "SELECT text, source_version FROM kb_chunks "
                "WHERE tenant_id = %s AND document_id = %s",
                (tenant, document_id_for(tenant, "pix.md")),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    await store.add_document(tenant, "pix.md", "Aceitamos Pix.", version=5)
    await store.add_document(tenant, "pix.md", "Aceitamos Pix e boleto.", version=5)
    assert stored() == [("Aceitamos Pix.", 5)]
    await store.add_document(tenant, "pix.md", "Aceitamos Pix e boleto.", version=5, force=True)
    assert stored() == [("Aceitamos Pix e boleto.", 5)]
    await store.add_document(tenant, "pix.md", "Só dinheiro.", version=4, force=True)
    assert stored() == [("Aceitamos Pix e boleto.", 5)]


async def test_offline_responder_answers_the_opening_hours_question(
    kb: tuple[PgKnowledgeStore, UUID], embeddings: LocalE5Embeddings
) -> None:
    store, tenant = kb
    result = await answer(store, embeddings, tenant, "Qual o horário de atendimento?")
    decision = result.decision
    assert not decision.should_handoff
    assert decision.intent == "faq"
    assert "das 8h às 18h" in decision.reply
    assert not decision.reply.startswith("#")
    assert decision.confidence >= 0.6
    assert result.usage.model == "retrieval/multilingual-e5-small"
    assert result.usage.cost_usd == 0.0


async def test_offline_responder_hands_off_an_unrelated_question(
    kb: tuple[PgKnowledgeStore, UUID], embeddings: LocalE5Embeddings
) -> None:
    store, tenant = kb
    result = await answer(store, embeddings, tenant, "Qual a capital da França?")
    assert result.decision.should_handoff
    assert result.decision.handoff_reason == "no_answer"
    assert result.decision.reply == ""
    assert result.decision.confidence < 0.55


async def test_offline_responder_hands_off_an_explicit_request_without_a_passage(
    kb: tuple[PgKnowledgeStore, UUID], embeddings: LocalE5Embeddings
) -> None:
    store, tenant = kb
    # "atendente" shares a stem with "atendimento": no passage about opening hours.
    result = await answer(store, embeddings, tenant, "Quero falar com um atendente, por favor")
    assert result.decision.should_handoff
    assert result.decision.handoff_reason == "explicit_request"
    assert result.decision.reply == ""


async def test_offline_responder_greets_back(
    kb: tuple[PgKnowledgeStore, UUID], embeddings: LocalE5Embeddings
) -> None:
    store, tenant = kb
    result = await answer(store, embeddings, tenant, "Oi, bom dia!")
    assert not result.decision.should_handoff
    assert result.decision.intent == "greeting"


# The same questions as leads write them: greetings, no accents, shouting, politeness.
AS_LEADS_WRITE = {
    "oi boa tarde, qual o horario de atendimento??": "das 8h às 18h",
    "Bom dia! Vcs abrem no domingo?": "domingos e feriados",
    "ola onde fica a loja pfv": "Rua das Flores",
    "oii tudo bem? ACEITAM PIX?": "Aceitamos Pix",
    "boa noite posso devolver um produto? obrigado": "trocar ou devolver",
}


@pytest.mark.parametrize(
    ("answerable", "unrelated"),
    [
        (ANSWERABLE, UNRELATED),
        (AS_LEADS_WRITE, [f"oi boa tarde, {question.lower()}" for question in UNRELATED]),
    ],
    ids=["as written", "as leads write"],
)
async def test_calibration_answers_every_covered_question_and_no_unrelated_one(
    kb: tuple[PgKnowledgeStore, UUID],
    embeddings: LocalE5Embeddings,
    answerable: dict[str, str],
    unrelated: list[str],
) -> None:
    store, tenant = kb
    for question, phrase in answerable.items():
        result = await answer(store, embeddings, tenant, question)
        assert not result.decision.should_handoff, question
        assert phrase in result.decision.reply, question
    for question in unrelated:
        result = await answer(store, embeddings, tenant, question)
        assert result.decision.should_handoff, question


async def test_retrieved_answers_pass_the_output_guard(
    kb: tuple[PgKnowledgeStore, UUID], embeddings: LocalE5Embeddings
) -> None:
    store, tenant = kb
    for question in ANSWERABLE:
        vector = await embeddings.embed_query(question)
        passages = await store.search(tenant, vector, k=3)
        result = await answer(store, embeddings, tenant, question)
        verdict = check_output(
            result.decision.reply,
            system_prompt="Você é a Sol.",
            passages=[p.text for p in passages],
            confidence=result.decision.confidence,
        )
        assert verdict.ok, (question, verdict)


# ------------------------------------------------------------- OpenAI embeddings


async def test_openai_embeddings_request_dimensions_and_normalise() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"body": body, "auth": request.headers["authorization"]})
        data = [
            {"index": i, "embedding": [3.0, 4.0] + [0.0] * 382} for i in range(len(body["input"]))
        ]
        return httpx.Response(200, json={"data": list(reversed(data))})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        embeddings = OpenAIEmbeddings(http, api_key="sk-test", base_url="http://llm.test/v1")
        vectors = await embeddings.embed_passages(["a", "b"])
        query = await embeddings.embed_query("c")

    assert seen[0]["auth"] == "Bearer sk-test"
    assert seen[0]["body"]["dimensions"] == 384
    assert seen[0]["body"]["model"] == "text-embedding-3-small"
    assert vectors[0][:2] == [0.6, 0.8]
    assert len(query) == 384


async def test_openai_embeddings_failures_are_mapped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "down"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        embeddings = OpenAIEmbeddings(http, api_key="sk-test")
        with pytest.raises(Unavailable, match="503"):
            await embeddings.embed_query("c")
