"""The ports: what the application needs from the outside world, as Protocols.

Adapters implement them (PostgreSQL, Redis, OpenAI, the WhatsApp gateways); the tests'
in-memory fakes implement the same ones (tests/fakes.py). The application and the
domain never import an adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import NamedTuple, Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from urbana.application.ai import DEFAULT_K, LLMResult, Passage, Prompt
from urbana.application.channels import OutboundRequest
from urbana.domain.attendance import Candidate
from urbana.errors import Unavailable, UrbanaError

# ------------------------------------------------------------------- persistence


class SubjectCipher(Protocol):
    """Per-data-subject authenticated encryption (crypto-shredding)."""

    def seal(self, subject_id: UUID, plaintext: bytes) -> bytes:
        """Encrypt with the subject's data key, creating the key if it has none.

        `ErasedSubject` for a subject whose key was destroyed: it never gets another.
        """
        ...

    def open(self, subject_id: UUID, sealed: bytes) -> bytes | None:
        """Decrypt; None when the subject's key was destroyed (erased)."""
        ...

    def prepare(self, subject_ids: Iterable[UUID]) -> None:
        """Make sure these subjects have keys (one round trip for a whole batch)."""
        ...

    def shred(self, subject_id: UUID) -> bool:
        """Destroy the subject's key: everything sealed with it becomes unreadable.

        True when there was a key to destroy.
        """
        ...

    def forget(self, subject_ids: Iterable[UUID]) -> None:
        """Drop this process's cached copies of these subjects' keys (another process
        destroyed them)."""
        ...

    def digest(self, context: str, value: str) -> str:
        """A keyed one-way digest of an id that may carry personal data (a wamid holds
        the phone): deterministic under this installation's secret, so it still finds
        what it named, and without the secret it names nothing."""
        ...


class StreamIndex(Protocol):
    """Many streams read in one query instead of one query per stream."""

    def stored_after(self, versions: Mapping[UUID, int]) -> list[StoredEvent]:
        """Each stream's stored events after the given version, in stream order."""
        ...


# ---------------------------------------------------------------------- time


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The `Clock` of a running process: the machine's time, in UTC."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        return datetime.now(UTC)


# ------------------------------------------------------------------------ AI


class Embeddings(Protocol):
    """Text to vectors; the e5 family needs distinct query and passage encodings."""

    @property
    def model(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed_query(self, text: str) -> list[float]:
        """One normalised vector for a search query; `Unavailable` on failure."""
        ...

    async def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised vector per passage, in order; `Unavailable` on failure."""
        ...


class LLM(Protocol):
    """Answers a prompt with an `AIDecision`; never raises (last resort: handoff)."""

    async def complete(self, prompt: Prompt) -> LLMResult:
        """The decision for this prompt, with the model's usage."""
        ...


class Summarizer(Protocol):
    """Writes the handoff summary an attendant reads first; never raises."""

    async def summarize(self, transcript: Sequence[tuple[str, str]], reason: str) -> str | None:
        """A few sentences on the (author, text) transcript, or None when it could not."""
        ...


class KnowledgeSearch(Protocol):
    async def search(
        self, tenant_id: UUID, query_vector: Sequence[float], k: int = DEFAULT_K
    ) -> list[Passage]:
        """The tenant's `k` passages closest to the vector, best first."""
        ...


class KnowledgeStore(KnowledgeSearch, Protocol):
    """The tenants' knowledge bases: documents chunked, embedded and searchable."""

    async def add_document(
        self,
        tenant_id: UUID,
        name: str,
        text: str,
        *,
        version: int | None = None,
        force: bool = False,
    ) -> UUID:
        """Chunk, embed and store a document (replacing one of the same name); its id.

        `version` is the tenant stream version of the event the text comes from: a
        document already stored from that version or a later one is left alone, unless
        `force`. Without a version the document is replaced unconditionally.
        """
        ...


# ---------------------------------------------------------------- attendants


class AttendantRoster(Protocol):
    """The tenant's attendants as the assignment policy needs them (a read model)."""

    async def candidates(self, tenant_id: UUID) -> list[Candidate]:
        """Every enabled attendant of the tenant: availability, queues and workload."""
        ...


class ConversationFinder(Protocol):
    """Which conversations the assignment and inactivity processes should look at.

    A read model answers, so it may lag: the processes re-check each conversation
    on its aggregate, which decides.
    """

    async def waiting(self, tenant_id: UUID) -> list[UUID]:
        """Conversations waiting for a person, longest wait first."""
        ...

    async def maybe_unanswered(self, tenant_id: UUID) -> list[UUID]:
        """Conversations held by an attendant whose last message is not the attendant's.

        Every conversation whose lead waits for its attendant is among them.
        """
        ...


# ------------------------------------------------------------------ channels


class Sender(Protocol):
    """Sends one outbound message through a gateway.

    `reconciles` is True when the gateway echoes `OutboundRequest.callback_data` in
    its status webhooks, so a send whose outcome is unknown can be confirmed later
    instead of repeated.
    """

    reconciles: bool

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        """Send; return the provider's message id. Raises SendFailed."""
        ...


class RateLimiter(Protocol):
    """The tenant's send rate, shared by every dispatcher."""

    async def acquire(self, tenant_id: UUID, per_second: int) -> None:
        """Wait until the tenant may send one more message; `Unavailable` when it cannot tell."""
        ...


class AttemptLimiter(Protocol):
    """Attempts counted per key in a sliding window, shared by every API process."""

    async def take(self, key: str, limit: int, window_s: float, attempt: str) -> float:
        """Count `attempt` under `key`: 0 when fewer than `limit` were counted in the last
        `window_s` seconds; else (counting nothing) the seconds until one may be.
        `Unavailable` when it cannot tell."""
        ...

    async def forget(self, key: str, attempt: str) -> None:
        """Uncount `attempt` (it turned out not to be one of those limited)."""
        ...


# -------------------------------------------------------------- coordination


class CoordinationUnavailable(Unavailable):
    """The coordinator (Redis) did not answer: down, paused, or no connection free."""


class LockBusy(UrbanaError, TimeoutError):
    """Another holder kept the conversation's lock for longer than we could wait."""


class Coordination(Protocol):
    """The responder's debounce and per-conversation lock, shared by every responder.

    A coordinator, never an authority: one reply per burst is a domain invariant the
    event store enforces; this only spares duplicate work (two LLM calls for one burst).
    Faults are raised as `CoordinationUnavailable`.
    """

    async def note_messages(self, latest: Mapping[UUID, int]) -> None:
        """Remember the latest inbound sequence number of each conversation."""
        ...

    async def quiet_after(self, conversation_id: UUID, seq: int, debounce_ms: int) -> bool:
        """Wait `debounce_ms`; True when `seq` is still the conversation's latest message."""
        ...

    def lock(
        self, conversation_id: UUID, *, wait_s: float = ...
    ) -> AbstractAsyncContextManager[None]:
        """Hold the conversation's lock while the block runs.

        LockBusy when another holder keeps it for longer than `wait_s`.
        """
        ...


# -------------------------------------------------------------- scheduled jobs


class JobSources(Protocol):
    """Where the jobs find their candidates (read models; each is checked on its aggregate)."""

    def tenants(self) -> list[UUID]:
        """Tenants with at least one conversation."""
        ...

    def silent_leads(self, tenant_id: UUID, before: datetime) -> list[tuple[UUID, list[UUID]]]:
        """Leads with a score whose last message is older than `before`, each with its
        conversations."""
        ...

    def stale_conversations(self, tenant_id: UUID, before: datetime) -> list[UUID]:
        """Open conversations with no activity since `before`."""
        ...

    def cold_conversations(self, tenant_id: UUID, before: datetime) -> list[UUID]:
        """Conversations the AI holds whose last message, ours, is older than `before`."""
        ...


class JobLedger(Protocol):
    """The runs of each job for each tenant and period: a period runs once."""

    def claim(self, job: str, tenant_id: UUID, period: datetime) -> bool:
        """Take this run; False when it was taken (and finished or running) before."""
        ...

    def finish(
        self, job: str, tenant_id: UUID, period: datetime, counts: Mapping[str, int]
    ) -> None:
        """Record the run's counts."""
        ...

    def release(self, job: str, tenant_id: UUID, period: datetime) -> None:
        """Give the run back (it failed): the next tick takes it again."""
        ...

    def abandon_running(self) -> int:
        """Give back the runs a scheduler that died left taken; how many."""
        ...

    def last_runs(self) -> list[dict[str, object]]:
        """The latest finished run of each job and tenant."""
        ...


class Leadership(Protocol):
    """Exactly one active scheduler across processes."""

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process leads (True) or `stop` is set (False)."""
        ...

    async def check(self) -> None:
        """`Unavailable` when leadership was lost (its session ended)."""
        ...

    async def release(self) -> None: ...


# ------------------------------------------------------------ data subjects


class StoredRecord(NamedTuple):
    """One stored event as the store holds it (personal fields sealed)."""

    position: int
    stream_id: str  # as text: that is how the export writes it
    version: int
    topic: str
    state: bytes


class SubjectStreams(Protocol):
    """Reads a subject's streams whole, and where the read models put its conversations."""

    def records(self, stream_ids: Collection[UUID]) -> list[StoredRecord]:
        """Every stored event of these streams, in global (commit) order."""
        ...

    def conversations_of(self, tenant_id: UUID, lead_id: UUID) -> list[UUID]:
        """The conversations the conversation view attributes to the lead (may lag)."""
        ...
