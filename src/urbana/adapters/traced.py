"""Spans around the responder's and the dispatcher's calls out: retrieval, the LLM, the
gateway send.

Each wrapper implements the port it wraps and only adds a span (see
`urbana.adapters.tracing`); the composition root puts them in place only while tracing
is on. Attributes are models, counts, tokens, similarity and outcomes: a prompt, a
passage, a reply, a recipient or a gateway's error text is never one of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from urbana.adapters import tracing
from urbana.application.ai import DEFAULT_K, LLMResult, Passage, Prompt
from urbana.application.channels import OutboundRequest, SendFailed
from urbana.application.ports import LLM, Embeddings, KnowledgeSearch, Sender

CLIENT = tracing.SpanKind.CLIENT


class TracedLLM:
    """`LLM` with a span per completion: the model that answered, its tokens and cost."""

    def __init__(self, llm: LLM) -> None:
        self._llm = llm

    async def complete(self, prompt: Prompt) -> LLMResult:
        """The wrapped LLM's decision, inside a `gen_ai` client span."""
        with tracing.span(
            "chat", kind=CLIENT, attributes={"gen_ai.operation.name": "chat"}
        ) as span:
            result = await self._llm.complete(prompt)
            if span is not None:
                usage = result.usage
                span.set_attribute("gen_ai.response.model", usage.model)
                span.set_attribute("gen_ai.usage.input_tokens", usage.tokens_in)
                span.set_attribute("gen_ai.usage.output_tokens", usage.tokens_out)
                tracing.note(
                    span,
                    prompt_messages=len(prompt.messages),
                    cost_usd=usage.cost_usd,
                    attempts=len(result.attempts),
                    llm_failure=result.failure,
                    handoff=result.decision.should_handoff,
                    confidence=result.decision.confidence,
                )
            return result


class TracedKnowledge:
    """`KnowledgeSearch` with a span per search: how many passages, how close the best."""

    def __init__(self, knowledge: KnowledgeSearch) -> None:
        self._knowledge = knowledge

    async def search(
        self, tenant_id: UUID, query_vector: Sequence[float], k: int = DEFAULT_K
    ) -> list[Passage]:
        """The wrapped store's passages, inside a `retrieval` span."""
        with tracing.span("retrieval", attributes={"urbana.k": k}) as span:
            passages = await self._knowledge.search(tenant_id, query_vector, k)
            tracing.note(
                span,
                passages=len(passages),
                best_similarity=round(passages[0].score, 4) if passages else None,
            )
            return passages


class TracedEmbeddings:
    """`Embeddings` with a span per query embedding (the first half of retrieval)."""

    def __init__(self, embeddings: Embeddings) -> None:
        self._embeddings = embeddings

    @property
    def model(self) -> str:
        return self._embeddings.model

    @property
    def dim(self) -> int:
        return self._embeddings.dim

    async def embed_query(self, text: str) -> list[float]:
        """The wrapped model's query vector, inside an `embed query` span."""
        with tracing.span("embed query", attributes={"urbana.embeddings.model": self.model}):
            return await self._embeddings.embed_query(text)

    async def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        """The wrapped model's passage vectors (not traced: the knowledge role's)."""
        return await self._embeddings.embed_passages(texts)


class TracedSender:
    """`Sender` with a client span per gateway call: the channel kind and the outcome."""

    def __init__(self, kind: str, sender: Sender) -> None:
        self._kind = kind
        self._sender = sender
        self.reconciles = sender.reconciles

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        """The wrapped gateway's provider id, inside a `send` span."""
        with tracing.span(
            f"send {self._kind}",
            kind=CLIENT,
            attributes={"urbana.channel": self._kind, "urbana.template": bool(request.template)},
        ) as span:
            try:
                return await self._sender.send(config, request)
            except SendFailed as exc:
                # The reason and code are the gateway's classification, not its text.
                tracing.note(
                    span,
                    retryable=exc.retryable,
                    outcome_unknown=exc.outcome_unknown,
                    status=exc.status,
                    code=exc.code,
                )
                raise


def traced_senders(senders: Mapping[str, Sender]) -> dict[str, Sender]:
    """The senders, each in a `TracedSender` while tracing is on."""
    if not tracing.enabled():
        return dict(senders)
    return {kind: TracedSender(kind, sender) for kind, sender in senders.items()}
