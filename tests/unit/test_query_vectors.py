"""The responder's cache of query vectors: asked again, a question is not embedded again;
an erased subject's bursts leave nothing behind; one tenant never reads another's."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID, uuid4

from tests.fakes import (
    InMemoryKnowledgeStore,
    ScriptedLLM,
    WordEmbeddings,
    in_memory_app,
)
from tests.unit.test_responder import KB, decision, receive, tenant

from urbana.application.responder import QueryVectors, Responder
from urbana.domain.conversation import Conversation


class CountingEmbeddings(WordEmbeddings):
    def __init__(self) -> None:
        self.queries: list[str] = []

    async def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return self.vector(text)

    async def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_vector_is_found_again_in_its_tenant_only() -> None:
    cache = QueryVectors()
    t1, t2, c1, c2 = uuid4(), uuid4(), uuid4(), uuid4()
    cache.put(t1, c1, "Vocês abrem no domingo?", [1.0, 0.0])
    assert cache.get(t1, c2, "Vocês abrem no domingo?") == [1.0, 0.0]
    assert cache.get(t2, c2, "Vocês abrem no domingo?") is None
    assert cache.get(t1, c2, "Vocês abrem no sábado?") is None


def test_the_text_itself_is_not_held() -> None:
    cache = QueryVectors()
    cache.put(uuid4(), uuid4(), "meu cpf é 123.456.789-00", [1.0])
    held = repr(cache._entries) + repr(cache._by_conversation)
    assert "cpf" not in held
    assert "123.456" not in held


def test_erasure_drops_every_entry_the_conversation_used_and_refuses_new_ones() -> None:
    cache = QueryVectors()
    tid, erased, other = uuid4(), uuid4(), uuid4()
    cache.put(tid, erased, "oi", [1.0])
    cache.put(tid, other, "qual o preço?", [0.5])
    assert cache.get(tid, other, "oi") == [1.0]  # shared by both conversations now
    assert cache.get(tid, erased, "qual o preço?") == [0.5]

    assert cache.forget([erased]) == 2
    assert len(cache) == 0
    # The erased conversation's messages may still be in flight: nothing is kept for them.
    cache.put(tid, erased, "oi", [1.0])
    assert len(cache) == 0
    assert cache.get(tid, erased, "oi") is None
    # Others fill it again.
    cache.put(tid, other, "oi", [1.0])
    assert cache.get(tid, other, "oi") == [1.0]


def test_entries_expire_and_the_cache_is_bounded() -> None:
    clock = Clock()
    cache = QueryVectors(maxsize=2, ttl_s=10.0, clock=clock)
    tid, cid = uuid4(), uuid4()
    cache.put(tid, cid, "a", [1.0])
    clock.now = 10.0
    assert cache.get(tid, cid, "a") is None
    assert len(cache) == 0
    for text in ("a", "b", "c"):
        cache.put(tid, cid, text, [1.0])
    assert len(cache) == 2
    assert cache.get(tid, cid, "a") is None  # the least recently used went
    assert cache.forget([cid]) == 2
    assert not cache._by_conversation


async def test_the_responder_embeds_a_repeated_question_once_and_forgets_it_on_erasure() -> None:
    app = in_memory_app()
    tid = tenant(app)
    embeddings = CountingEmbeddings()
    store = InMemoryKnowledgeStore(embeddings)
    await store.add_document(tid, "loja.md", KB)
    llm = ScriptedLLM(decision("Não abrimos aos domingos."), decision("Não abrimos aos domingos."))
    responder = Responder(app, llm, knowledge=store, embeddings=embeddings)

    first = receive(app, tid, "Vocês abrem no domingo?", contact="5511988887777")
    # The same question, with a greeting, shouting and no accent: embedded once.
    second = receive(app, tid, "oii boa tarde, VOCÊS ABREM NO DOMINGO??", contact="5511977776666")
    assert (await responder.respond(first)).action == "replied"
    assert (await responder.respond(second)).action == "replied"

    assert embeddings.queries == ["vocês abrem no domingo"]
    first_prompt, second_prompt = llm.prompts
    assert first_prompt.passages == second_prompt.passages
    assert responder.vectors.hits == 1

    lead_id: UUID = app.get(Conversation, first).lead_id
    await responder.subject_erased(lead_id, [first])
    assert len(responder.vectors) == 0
    # The other lead asking the same again is embedded afresh.
    third = receive(app, tid, "Vocês abrem no domingo?", contact="5511966665555")
    assert (await responder.respond(third)).action == "replied"
    assert len(embeddings.queries) == 2
