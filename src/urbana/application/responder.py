"""The AI responder: one grounded answer per inbound burst, or a handoff.

On each `MessageReceived` (`BurstTrigger`): wait for the burst to end (the tenant's
debounce), then answer it under the conversation's lock, both held by the
`Coordination` port. Answering (`Responder`): load the conversation, skip unless the
AI owns it and a burst is pending, guard the input, retrieve knowledge, ask the LLM,
guard the output, decide on handoff, and record everything in one transaction
(`UrbanaApp.apply_ai_outcome`). The domain refuses a second outcome for the same
burst, so a redelivered trigger is harmless.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from urbana.application.ai import (
    Passage,
    build_prompt,
    burst_of,
    document_id_for,
    passage_record,
)
from urbana.application.app import AIOutcome, UrbanaApp
from urbana.application.ports import (
    LLM,
    Coordination,
    CoordinationUnavailable,
    Embeddings,
    KnowledgeSearch,
    Summarizer,
    SystemClock,
)
from urbana.application.search_text import search_text
from urbana.domain.conversation import Conversation, Status
from urbana.domain.errors import BurstAlreadyAnswered, InvalidTransition
from urbana.domain.guard import check_input, check_output
from urbana.domain.lead import Lead
from urbana.domain.reply import LLM_FAILURE, bot_message, handoff_reason
from urbana.domain.templates import window_applies
from urbana.domain.tenant import Tenant, TenantSettings
from urbana.errors import Unavailable

log = logging.getLogger(__name__)

GUARD_REJECTED = "guard_rejected"
TRANSCRIPT_SIZE = 10  # the last messages the handoff summary is written from
_AUTHORS = {"lead": "Cliente", "ai": "IA", "human": "Atendente", "system": "Sistema"}
# Noting arrivals waits this long at most: it only lengthens other triggers' debounce.
ARRIVAL_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Responded:
    action: str  # replied | handoff | skipped
    detail: str = ""
    outbound_ids: tuple[str, ...] = ()


class QueryVectors:
    """The query vectors of recent bursts, so a question asked again is not embedded again.

    Leads ask the same few questions over and over, and embedding one is most of the
    responder's CPU. An entry is keyed by the tenant and a keyed digest of the burst's
    `search_text` (a per-process random key: the text itself is never held), and knows
    the conversations whose bursts it came from. A vector is derived from what a lead
    wrote, so it is personal data of each of them: `forget` (the responder consumes
    `SubjectErased`) drops every entry an erased conversation used, and refuses to keep
    one for that conversation afterwards (its messages may still be in flight on another
    partition). Bounded in size and in age (`ttl_s`), like the process's other caches; a
    vector is held as packed doubles (3 KiB for e5's 384 dimensions, a quarter of a list
    of floats). One tenant never reads another's entries. Not thread-safe: the
    responder's event loop owns it.
    """

    def __init__(
        self,
        *,
        maxsize: int = 4096,
        ttl_s: float = 600.0,
        max_erased: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = os.urandom(32)
        self._maxsize = maxsize
        self._ttl_s = ttl_s
        self._max_erased = max_erased
        self._clock = clock
        # (tenant, digest) -> (vector, expires at, conversations it came from)
        self._entries: OrderedDict[tuple[UUID, bytes], tuple[array[float], float, set[UUID]]] = (
            OrderedDict()
        )
        self._by_conversation: dict[UUID, set[tuple[UUID, bytes]]] = {}
        self._erased: OrderedDict[UUID, None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, tenant_id: UUID, text: str) -> tuple[UUID, bytes]:
        digest = hashlib.blake2b(text.encode(), key=self._key, digest_size=16).digest()
        return tenant_id, digest

    def get(self, tenant_id: UUID, conversation_id: UUID, text: str) -> list[float] | None:
        """The cached vector of `text` in this tenant (noting that this conversation used it)."""
        key = self._digest(tenant_id, text)
        entry = self._entries.get(key)
        if entry is None or entry[1] <= self._clock() or conversation_id in self._erased:
            if entry is not None:
                self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self._used_by(key, entry[2], conversation_id)
        self.hits += 1
        return entry[0].tolist()

    def put(self, tenant_id: UUID, conversation_id: UUID, text: str, vector: list[float]) -> None:
        if conversation_id in self._erased:
            return
        key = self._digest(tenant_id, text)
        previous = self._entries.get(key)
        users = previous[2] if previous is not None else set()
        self._entries[key] = (array("d", vector), self._clock() + self._ttl_s, users)
        self._entries.move_to_end(key)
        self._used_by(key, users, conversation_id)
        while len(self._entries) > self._maxsize:
            self._drop(next(iter(self._entries)))

    def forget(self, conversation_ids: Iterable[UUID]) -> int:
        """Drop what these (erased) conversations' bursts left here; how many entries went."""
        dropped = 0
        for conversation_id in conversation_ids:
            self._erased[conversation_id] = None
            self._erased.move_to_end(conversation_id)
            for key in self._by_conversation.pop(conversation_id, set()):
                if key in self._entries:
                    self._drop(key)
                    dropped += 1
        while len(self._erased) > self._max_erased:
            self._erased.popitem(last=False)
        return dropped

    def _used_by(self, key: tuple[UUID, bytes], users: set[UUID], conversation_id: UUID) -> None:
        users.add(conversation_id)
        self._by_conversation.setdefault(conversation_id, set()).add(key)

    def _drop(self, key: tuple[UUID, bytes]) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for conversation_id in entry[2]:
            keys = self._by_conversation.get(conversation_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_conversation[conversation_id]


class Responder:
    """Answers the pending burst of a conversation (see module docstring)."""

    def __init__(
        self,
        app: UrbanaApp,
        llm: LLM,
        *,
        knowledge: KnowledgeSearch | None = None,
        embeddings: Embeddings | None = None,
        summarizer: Summarizer | None = None,
        k: int = 4,
        vectors: QueryVectors | None = None,
    ) -> None:
        self._app = app
        self._llm = llm
        self._summarizer = summarizer
        self._knowledge = knowledge
        self._embeddings = embeddings
        self._k = k
        self.vectors = vectors if vectors is not None else QueryVectors()

    async def subject_erased(self, lead_id: UUID, conversation_ids: Iterable[UUID]) -> None:
        """Forget what this process holds of an erased subject: its conversations' cached
        query vectors, and its lead's and conversations' aggregates and data keys."""
        ids = list(conversation_ids)
        self.vectors.forget(ids)
        await asyncio.to_thread(self._app.forget_subject, [lead_id, *ids])

    async def respond(self, conversation_id: UUID) -> Responded:
        conv: Conversation = await asyncio.to_thread(self._app.get, Conversation, conversation_id)
        if conv.status is not Status.AI:
            return Responded("skipped", f"conversation is {conv.status.value}")
        if conv.pending_burst == 0:
            return Responded("skipped", "nothing to answer")
        lead = await asyncio.to_thread(self._app.get, Lead, conv.lead_id)
        if lead.over_plan_limit:
            # Recorded in full and flagged for the tenant's admins, but the plan pays for
            # no answer: no LLM call (see docs/architecture.md, Plans and lead limits).
            return Responded("skipped", "lead over the plan's monthly limit")
        tenant = await asyncio.to_thread(self._app.get, Tenant, conv.tenant_id)
        settings = tenant.settings
        if window_applies(
            conv.channel, settings.window_exempt_channels
        ) and not conv.within_service_window(SystemClock().now()):
            # A reply that could not be sent is not generated: no LLM spend for it. The
            # lead's next message opens the window and that burst is answered.
            return Responded("skipped", "outside the 24-hour window")
        messages = settings.bot_messages
        burst = burst_of(conv.history, conv.answered_seq)
        reply_to = conv.inbound_seq
        verdict = check_input(burst)
        if not verdict.ok:
            outcome = self._refusal(reply_to, "", verdict.reason or GUARD_REJECTED, burst, messages)
            return await self._record(conversation_id, outcome)

        passages = await self._retrieve(conv.tenant_id, conversation_id, burst)
        prompt = build_prompt(
            history=conv.history,
            answered_seq=conv.answered_seq,
            tenant_prompt=settings.prompt,
            passages=passages,
            handoff_intents=settings.handoff_intents,
        )
        result = await self._llm.complete(prompt)
        decision = result.decision
        usage = result.usage.as_dict()
        if decision.reply and not result.failure:  # the last resort is our own text
            out_verdict = check_output(
                decision.reply,
                system_prompt=prompt.system,
                passages=[p.text for p in passages],
                confidence=decision.confidence,
            )
            if not out_verdict.ok:
                outcome = self._refusal(
                    reply_to, decision.reply, out_verdict.reason or GUARD_REJECTED, burst, messages
                )
                return await self._record(conversation_id, outcome, usage=usage)

        hot = settings.hot_score
        after = max(0, min(100, lead.score + decision.score_delta))
        crossed_hot = lead.score < hot <= after
        if result.failure:
            reason: str | None = LLM_FAILURE
        else:
            reason = handoff_reason(
                decision,
                burst_text=burst,
                confidence_threshold=settings.confidence_threshold,
                handoff_intents=settings.handoff_intents,
                hot_score=hot,
                # Hot is a threshold to cross, not a state that keeps handing off.
                lead_score=after if crossed_hot else min(after, hot - 1),
            )
        summary = None
        if reason:
            # The model that just failed is not asked for a summary.
            summary = await self._summarize(conv, reason) if not result.failure else None
            summary = summary or _summary(burst)
        outcome = AIOutcome(
            reply_to_seq=reply_to,
            reply=decision.reply or None,
            intent=decision.intent,
            confidence=decision.confidence,
            usage=usage,
            score_delta=decision.score_delta,
            handoff_reason=reason,
            transition_message=bot_message("handoff", messages) if reason else None,
            summary=summary,
            passages=tuple(passage_record(p, _documents(tenant)) for p in passages),
        )
        return await self._record(conversation_id, outcome)

    async def _summarize(self, conv: Conversation, reason: str) -> str | None:
        """The LLM's summary of the last messages (None without a summarizer or on failure).

        Only for handoffs the AI decided on: input or output the guards refused is not
        sent to a model again, and gets the template.
        """
        if self._summarizer is None:
            return None
        transcript = [
            (_AUTHORS[entry["role"]], str(entry["text"]))
            for entry in conv.history
            if entry.get("role") in _AUTHORS and entry.get("text")
        ][-TRANSCRIPT_SIZE:]
        if not transcript:
            return None
        return await self._summarizer.summarize(transcript, reason)

    async def _retrieve(self, tenant_id: UUID, conversation_id: UUID, burst: str) -> list[Passage]:
        if self._knowledge is None or self._embeddings is None or not burst.strip():
            return []
        query = search_text(burst)
        try:
            vector = self.vectors.get(tenant_id, conversation_id, query)
            if vector is None:
                vector = await self._embeddings.embed_query(query)
                self.vectors.put(tenant_id, conversation_id, query, vector)
            return await self._knowledge.search(tenant_id, vector, self._k)
        except Unavailable as exc:  # no knowledge is a worse answer, not a lost message
            log.warning("retrieval failed for tenant %s: %s", tenant_id, exc)
            return []

    @staticmethod
    def _refusal(
        reply_to: int, reply: str, reason: str, burst: str, messages: Mapping[str, str]
    ) -> AIOutcome:
        return AIOutcome(
            reply_to_seq=reply_to,
            reply=reply,
            intent="guard",
            confidence=0.0,
            usage={},
            rejected=reason,
            fallback=bot_message("fallback", messages),
            handoff_reason=reason,
            transition_message=bot_message("handoff", messages),
            summary=_summary(burst),
        )

    async def _record(
        self, conversation_id: UUID, outcome: AIOutcome, usage: dict[str, Any] | None = None
    ) -> Responded:
        if usage is not None:
            outcome = dataclasses.replace(outcome, usage=usage)
        try:
            queued = await asyncio.to_thread(self._app.apply_ai_outcome, conversation_id, outcome)
        except (BurstAlreadyAnswered, InvalidTransition) as exc:
            # Someone (a redelivery, a human) got there first: nothing to do.
            return Responded("skipped", f"{type(exc).__name__}: {exc}")
        action = "handoff" if outcome.handoff_reason else "replied"
        return Responded(action, outcome.handoff_reason or "", tuple(queued))


class TenantSettingsCache:
    """Tenants' settings, read from the store at most once per `ttl` seconds each."""

    def __init__(
        self, app: UrbanaApp, *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._app = app
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[UUID, tuple[TenantSettings, float]] = {}

    async def get(self, tenant_id: UUID) -> TenantSettings:
        hit = self._cache.get(tenant_id)
        if hit and hit[1] > self._clock():
            return hit[0]
        tenant = await asyncio.to_thread(self._app.get, Tenant, tenant_id)
        self._cache[tenant_id] = (tenant.settings, self._clock() + self._ttl)
        return tenant.settings


class BurstTrigger:
    """What the responder does on each `MessageReceived`: one answer per burst.

    The coordinator holds the debounce and the lock, so while it is unavailable the
    trigger fails (`CoordinationUnavailable`) and its caller retries it: answering
    without them would give a burst several answers, and the lock is what keeps two
    LLM calls from racing for one burst (the store would refuse the second answer).
    """

    def __init__(
        self,
        responder: Responder,
        coordination: Coordination,
        tenants: TenantSettingsCache,
        *,
        default_debounce_ms: int,
    ) -> None:
        self._responder = responder
        self._coordination = coordination
        self._tenants = tenants
        self._default_debounce_ms = default_debounce_ms

    async def message_received(
        self, conversation_id: UUID, seq: int, tenant_id: UUID | None
    ) -> Responded | None:
        """Answer the burst `seq` belongs to if it is its last message; None if it is not."""
        debounce = self._default_debounce_ms
        if tenant_id is not None:
            debounce = (await self._tenants.get(tenant_id)).debounce_ms
        if not await self._coordination.quiet_after(conversation_id, seq, debounce):
            return None  # a later message of the burst will trigger the answer
        async with self._coordination.lock(conversation_id):
            return await self._responder.respond(conversation_id)

    async def messages_arrived(self, latest: Mapping[UUID, int]) -> None:
        """Note the latest message of each conversation as soon as it is read.

        So an earlier message's debounce sees it. Failing here only shortens a
        debounce: each trigger notes its own message again before it waits.
        """
        try:
            async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
                await self._coordination.note_messages(latest)
        except (CoordinationUnavailable, TimeoutError) as exc:
            log.warning("responder: could not note %d arrivals: %s", len(latest), exc)


def _documents(tenant: Tenant) -> dict[UUID, str]:
    """The tenant's knowledge documents by id, to name the passages an answer used."""
    return {document_id_for(tenant.id, name): name for name in tenant.knowledge_documents}


def _summary(burst: str) -> str:
    """The summary when no model wrote one: the lead's last words. The reason is beside it
    wherever a handoff is shown (in words there), so it is not repeated as a code here."""
    text = " ".join(burst.split())
    if len(text) > 280:
        text = text[:277] + "..."
    return f"Última mensagem do cliente: {text}"
