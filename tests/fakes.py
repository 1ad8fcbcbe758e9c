"""In-memory implementations of the application's ports (urbana.application.ports).

Each one keeps the promises of its port that the application relies on; the contract
tests (tests/integration/test_port_contracts.py) run the same assertions against a
fake and the real adapter, so a fake cannot drift from what it stands for.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import os
import re
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID, uuid5

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from urbana.application.ai import (
    DEFAULT_K,
    LLMResult,
    Passage,
    Prompt,
    Usage,
    chunk_markdown,
)
from urbana.application.app import UrbanaApp
from urbana.application.channels import OutboundRequest, SendFailed
from urbana.application.ports import CoordinationUnavailable, LockBusy
from urbana.domain.attendance import Availability, Candidate
from urbana.domain.conversation import Conversation, Status
from urbana.domain.lead import ErasedSubject
from urbana.domain.reply import AIDecision
from urbana.errors import Unavailable

NONCE = 12
DIM = 384
_WORD = re.compile(r"\w+")
_DOCUMENTS = UUID("2f8c3a4e-1b7d-4c55-9a0e-6d3f1e2b7c90")


def in_memory_app() -> UrbanaApp:
    """The real application on the event-sourcing library's in-memory store."""
    return UrbanaApp(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, cipher=InMemoryCipher())


class InMemoryCipher:
    """SubjectCipher: an AES-GCM data key per subject, kept in a dict."""

    def __init__(self) -> None:
        self.keys: dict[UUID, bytes] = {}
        self.erased: set[UUID] = set()
        self.digest_key = os.urandom(32)

    def seal(self, subject_id: UUID, plaintext: bytes) -> bytes:
        if subject_id in self.erased:
            raise ErasedSubject(f"subject {subject_id} was erased")
        key = self.keys.setdefault(subject_id, AESGCM.generate_key(bit_length=256))
        nonce = os.urandom(NONCE)
        return nonce + AESGCM(key).encrypt(nonce, plaintext, subject_id.bytes)

    def open(self, subject_id: UUID, sealed: bytes) -> bytes | None:
        key = self.keys.get(subject_id)
        if key is None:
            return None
        try:
            return AESGCM(key).decrypt(sealed[:NONCE], sealed[NONCE:], subject_id.bytes)
        except InvalidTag as exc:
            raise ValueError(f"sealed data of {subject_id} was tampered with") from exc

    def prepare(self, subject_ids: Iterable[UUID]) -> None:
        for subject_id in subject_ids:
            if subject_id not in self.erased:
                self.keys.setdefault(subject_id, AESGCM.generate_key(bit_length=256))

    def shred(self, subject_id: UUID) -> bool:
        self.erased.add(subject_id)
        return self.keys.pop(subject_id, None) is not None

    def forget(self, subject_ids: Iterable[UUID]) -> None:
        """Nothing is cached apart from the keys themselves."""

    def digest(self, context: str, value: str) -> str:
        """HMAC-SHA256 under this fake's own random key, as the vault's."""
        mac = hmac.new(self.digest_key, f"{context}\0{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]


class FakeClock:
    """Clock: a time that moves only when told to."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class ScriptedLLM:
    """LLM: answers each prompt with the next scripted decision (the last one repeats)."""

    def __init__(self, *decisions: AIDecision, failure: str | None = None) -> None:
        assert decisions, "script at least one decision"
        self._decisions = list(decisions)
        self._failure = failure
        self.prompts: list[Prompt] = []

    async def complete(self, prompt: Prompt) -> LLMResult:
        self.prompts.append(prompt)
        decision = self._decisions.pop(0) if len(self._decisions) > 1 else self._decisions[0]
        return LLMResult(
            decision=decision,
            usage=Usage(model="scripted", tokens_in=10, tokens_out=5),
            failure=self._failure,
        )


class WordEmbeddings:
    """Embeddings: a normalised bag of words hashed into 384 buckets.

    Texts sharing words point the same way, which is all a knowledge store test needs;
    query and passage encodings are the same.
    """

    model = "test/bag-of-words"
    dim = DIM

    def vector(self, text: str) -> list[float]:
        counts = [0.0] * DIM
        for word in _WORD.findall(text.lower()):
            counts[zlib.crc32(word.encode()) % DIM] += 1.0
        if not any(counts):
            counts[0] = 1.0  # pgvector refuses the cosine of a zero vector
        norm = math.sqrt(sum(x * x for x in counts))
        return [x / norm for x in counts]

    async def embed_query(self, text: str) -> list[float]:
        return self.vector(text)

    async def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]


@dataclass
class _Document:
    version: int
    chunks: list[tuple[str, list[float]]] = field(default_factory=list)


class InMemoryKnowledgeStore:
    """KnowledgeStore: documents chunked and embedded into a dict, searched by cosine."""

    def __init__(
        self,
        embeddings: WordEmbeddings,
        *,
        max_chars: int = 800,
        overlap: int = 120,
        fail: bool = False,
    ) -> None:
        self._embeddings = embeddings
        self._max_chars = max_chars
        self._overlap = overlap
        self._documents: dict[tuple[UUID, UUID], _Document] = {}
        self.fail = fail  # search raises Unavailable, as when the store is down

    async def add_document(
        self,
        tenant_id: UUID,
        name: str,
        text: str,
        *,
        version: int | None = None,
        force: bool = False,
    ) -> UUID:
        if not name.strip():
            raise ValueError("document name is required")
        chunks = chunk_markdown(text, max_chars=self._max_chars, overlap=self._overlap)
        if not chunks:
            raise ValueError("document has no text")
        document_id = uuid5(_DOCUMENTS, f"{tenant_id}:{name.strip()}")
        stored = self._documents.get((tenant_id, document_id))
        if version is not None and stored is not None and not force and stored.version >= version:
            return document_id
        vectors = await self._embeddings.embed_passages(chunks)
        self._documents[(tenant_id, document_id)] = _Document(
            version or 0, list(zip(chunks, vectors, strict=True))
        )
        return document_id

    async def search(
        self, tenant_id: UUID, query_vector: Sequence[float], k: int = DEFAULT_K
    ) -> list[Passage]:
        if self.fail:
            raise Unavailable("knowledge store is down")
        if len(query_vector) != DIM:
            raise ValueError(f"query vector has {len(query_vector)} dimensions, not {DIM}")
        scored = [
            Passage(text=text, score=_dot(query_vector, vector), document_id=doc_id, chunk_no=n)
            for (tenant, doc_id), document in self._documents.items()
            if tenant == tenant_id
            for n, (text, vector) in enumerate(document.chunks)
        ]
        scored.sort(key=lambda p: p.score, reverse=True)
        return scored[:k]


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


class InMemoryCoordination:
    """Coordination: the latest message of each conversation, and an asyncio lock each.

    `available = False` makes every call fail as a coordinator that is down does.
    """

    def __init__(self) -> None:
        self._latest: dict[UUID, int] = {}
        self._locks: dict[UUID, asyncio.Lock] = {}
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise CoordinationUnavailable("the in-memory coordinator is down")

    async def note_messages(self, latest: Mapping[UUID, int]) -> None:
        self._check()
        for conversation_id, seq in latest.items():
            self._latest[conversation_id] = max(self._latest.get(conversation_id, 0), seq)

    async def quiet_after(self, conversation_id: UUID, seq: int, debounce_ms: int) -> bool:
        await self.note_messages({conversation_id: seq})
        if debounce_ms > 0:
            await asyncio.sleep(debounce_ms / 1000)
        self._check()
        return self._latest.get(conversation_id, 0) <= seq

    @asynccontextmanager
    async def lock(self, conversation_id: UUID, *, wait_s: float = 30.0) -> AsyncIterator[None]:
        self._check()
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), timeout=wait_s)
        except TimeoutError:
            raise LockBusy(f"lock of conversation {conversation_id} is busy") from None
        try:
            yield
        finally:
            lock.release()


class FakeSender:
    """Sender: raises the scripted failures in turn, then accepts every message."""

    def __init__(self, *failures: SendFailed, reconciles: bool = True) -> None:
        self.reconciles = reconciles
        self._failures = list(failures)
        self.requests: list[OutboundRequest] = []
        self.configs: list[dict[str, str]] = []

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        self.requests.append(request)
        self.configs.append(dict(config))
        if self._failures:
            raise self._failures.pop(0)
        return f"wamid.fake.{len(self.requests)}"


class RecordingRateLimiter:
    """RateLimiter: lets every send through at once, remembering what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[UUID, int]] = []

    async def acquire(self, tenant_id: UUID, per_second: int) -> None:
        self.calls.append((tenant_id, per_second))


class InMemoryRoster:
    """AttendantRoster: attendants set by the test; workload counted from the aggregates.

    Open conversations and the last assignment are read from the conversations the
    finder knows, so the roster agrees with what the commands really recorded.
    """

    def __init__(self, app: UrbanaApp, finder: InMemoryFinder) -> None:
        self._app = app
        self._finder = finder
        self.attendants: dict[UUID, dict[str, tuple[Availability, frozenset[str]]]] = {}

    def set(
        self,
        tenant_id: UUID,
        user_id: str,
        availability: Availability,
        queues: Iterable[str] = (),
    ) -> None:
        self.attendants.setdefault(tenant_id, {})[user_id] = (availability, frozenset(queues))

    async def candidates(self, tenant_id: UUID) -> list[Candidate]:
        held: dict[str, int] = {}
        last: dict[str, datetime] = {}
        for conversation_id in self._finder.known.get(tenant_id, []):
            conv = self._app.get(Conversation, conversation_id)
            if conv.status is Status.HUMAN and conv.assignee is not None:
                held[conv.assignee] = held.get(conv.assignee, 0) + 1
        for conversation_id in self._finder.known.get(tenant_id, []):
            for event in self._app.stream(conversation_id):
                if type(event).__name__ == "ConversationAssigned":
                    last[event.assignee] = max(
                        last.get(event.assignee, event.timestamp), event.timestamp
                    )
        return [
            Candidate(user, availability, queues, held.get(user, 0), last.get(user))
            for user, (availability, queues) in self.attendants.get(tenant_id, {}).items()
        ]


_OUT_OF_QUEUE = {
    "ConversationAssigned",
    "HandoffAccepted",
    "ReturnedToAI",
    "ConversationClosed",
}


class InMemoryFinder:
    """ConversationFinder over the conversations a test registers, read from their aggregates."""

    def __init__(self, app: UrbanaApp) -> None:
        self._app = app
        self.known: dict[UUID, list[UUID]] = {}

    def add(self, tenant_id: UUID, conversation_id: UUID) -> None:
        if conversation_id not in self.known.setdefault(tenant_id, []):
            self.known[tenant_id].append(conversation_id)

    async def waiting(self, tenant_id: UUID) -> list[UUID]:
        found = []
        for conversation_id in self.known.get(tenant_id, []):
            since = self._waiting_since(conversation_id)
            if since is not None:
                found.append((since, conversation_id))
        return [conversation_id for _, conversation_id in sorted(found)]

    def _waiting_since(self, conversation_id: UUID) -> datetime | None:
        """When it last started waiting for a person (None: it does not wait)."""
        since: datetime | None = None
        for event in self._app.stream(conversation_id):
            name = type(event).__name__
            to_queue = name == "ConversationTransferred" and event.to_user is None
            if name in ("HandoffRequested", "ReturnedToQueue") or to_queue:
                since = since or event.timestamp
            elif name in _OUT_OF_QUEUE or name == "ConversationTransferred":
                since = None
        return since

    async def maybe_unanswered(self, tenant_id: UUID) -> list[UUID]:
        return [
            conversation_id
            for conversation_id in self.known.get(tenant_id, [])
            if self._app.get(Conversation, conversation_id).awaiting_attendant_since is not None
        ]


class ScriptedSummarizer:
    """Summarizer: the scripted summary (None: as if the model failed); records transcripts."""

    def __init__(self, summary: str | None) -> None:
        self._summary = summary
        self.calls: list[tuple[list[tuple[str, str]], str]] = []

    async def summarize(self, transcript: Sequence[tuple[str, str]], reason: str) -> str | None:
        self.calls.append((list(transcript), reason))
        return self._summary
