"""Erasure of a data subject (LGPD Art. 18 VI) and the retention job that uses it.

One path for every erasure, whoever asks (an auditor over HTTP, the operator's CLI, the
retention job): append `SubjectErased` on the lead (ids and a reason category, no
personal data), destroy the subject's data key (crypto-shredding: every copy in the
store, Kafka and backups becomes unreadable at once; the key vault then refuses to seal
anything for the subject again), then remove what the read models, Redis and this
process's memory still hold of the subject, counting it for the receipt. The event goes
first so that a message arriving meanwhile already finds the lead closed and starts the
next generation's subject; a message that raced in before it is sealed under the old
key and is destroyed with it. If the key's destruction fails after the append, the retry
finds the subject erased and destroys the key then.

Erasing an erased subject appends nothing and answers a receipt with `already_erased`,
the original time and reason, and the counts of what it still found to remove (a key or
rows an interrupted first call left; normally nothing). The projections also consume
`SubjectErased` (so a replay builds the same read models), and so does every API
process's live feed, which drops its cached aggregates and keys (see
docs/architecture.md, Privacy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar
from uuid import UUID

from urbana.application.envelope import Envelope
from urbana.application.ports import Clock
from urbana.application.unit_of_work import StoreApp, UnitOfWork
from urbana.domain.channels import CHANNELS
from urbana.domain.contacts import conversation_id_for, lead_id_for, lead_key
from urbana.domain.errors import InvalidInput, NotFound
from urbana.domain.lead import Lead
from urbana.domain.tenant import Tenant

R = TypeVar("R")

# How many erasures of one phone the footprint looks back through (each is a generation).
MAX_GENERATIONS = 64


@dataclass(frozen=True, slots=True)
class Footprint:
    """Where a subject's data sits outside the event store, found before it is removed."""

    conversation_ids: list[UUID] = field(default_factory=list)
    # (channel, provider id digest) of the subject's messages: Redis's seen-id keys.
    provider_ids: list[tuple[str, str]] = field(default_factory=list)
    # The subject's read-model rows by table (conversations, messages, notes, leads) when
    # found: the projector, consuming `SubjectErased`, may delete them before `drop` does.
    rows: Mapping[str, int] = field(default_factory=dict)


class SubjectRows(Protocol):
    """The read models' side of erasure and retention (the owner's connection)."""

    def footprint(self, tenant_id: UUID, lead_id: UUID) -> Footprint:
        """The subject's conversations and message ids, as the read models know them."""
        ...

    def drop(self, tenant_id: UUID, lead_id: UUID, conversation_ids: list[UUID]) -> dict[str, int]:
        """Delete the subject's rows; how many per table."""
        ...

    def inactive_leads(self, tenant_id: UUID, before: datetime) -> list[UUID]:
        """Leads of the tenant whose last activity is older than `before`."""
        ...


class SubjectCache(Protocol):
    """Redis's side: the keys named after the subject's conversations and messages."""

    async def drop(
        self, tenant_id: UUID, conversation_ids: list[UUID], provider_ids: list[tuple[str, str]]
    ) -> int:
        """Delete them; how many existed."""
        ...


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """What one erasure did: the answer of the route and the CLI."""

    lead_id: UUID
    tenant_id: UUID
    erased_at: datetime
    reason: str
    already_erased: bool
    removed: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "lead_id": str(self.lead_id),
            "tenant_id": str(self.tenant_id),
            "erased_at": self.erased_at.isoformat(),
            "reason": self.reason,
            "already_erased": self.already_erased,
            "removed": dict(self.removed),
        }


@dataclass(frozen=True, slots=True)
class RetentionReport:
    tenant_id: UUID
    retention_days: int | None
    cutoff: datetime | None
    due: list[UUID]
    erased: int
    dry_run: bool
    removed: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant_id": str(self.tenant_id),
            "retention_days": self.retention_days,
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "due": [str(i) for i in self.due],
            "erased": self.erased,
            "dry_run": self.dry_run,
            "removed": dict(self.removed),
        }


async def _in_thread(fn: Callable[[], R]) -> R:
    return await asyncio.to_thread(fn)


class ErasureCommands(StoreApp):
    """The application's command: record that a subject's key was destroyed."""

    def record_erasure(
        self, lead_id: UUID, reason: str, conversation_ids: list[UUID], *, by: str | None = None
    ) -> None:
        """Append `SubjectErased` (once: a retry that finds it recorded appends nothing).

        Call it after the key is destroyed (see the module docstring).
        """

        def work(uow: UnitOfWork) -> None:
            lead = uow.require(Lead, lead_id)
            if not lead.erased:
                lead.erase(reason, conversation_ids=conversation_ids, by=by)

        self._retrying(work)


class Erasure:
    """Erase subjects; one instance per process, on the process's application."""

    def __init__(
        self,
        app: ErasureCommands,
        rows: SubjectRows,
        cache: SubjectCache | None,
        clock: Clock,
        *,
        run: Callable[[Callable[[], Any]], Any] = _in_thread,
    ) -> None:
        self._app = app
        self._rows = rows
        self._cache = cache
        self._clock = clock
        # How synchronous store calls run: a worker thread, or the API's store gate.
        self._run = run

    def subject(self, tenant_id: UUID, lead_id: UUID) -> Lead:
        """The tenant's lead; another tenant's is NotFound, worded as a missing one."""
        try:
            lead = self._app.get(Lead, lead_id)
        except (NotFound, InvalidInput):  # no stream, or another kind's (a conversation's)
            raise NotFound(f"no subject {lead_id}") from None
        if lead.tenant_id != tenant_id:
            raise NotFound(f"no subject {lead_id}")
        return lead

    def subject_of_phone(self, tenant_id: UUID, phone: str) -> Lead:
        """The tenant's lead for a phone (any spelling): the newest generation's.

        That is the live subject, or the last erased one when the phone has not written
        since (erasing it again is harmless). NotFound when the phone never wrote.
        """
        key = lead_key(phone, phone)
        found: Lead | None = None
        for generation in range(MAX_GENERATIONS):
            try:
                lead = self._app.get(Lead, lead_id_for(tenant_id, key, generation))
            except NotFound:
                break
            found = lead
            if not lead.erased:
                break
        if found is None:
            raise NotFound("no subject with that phone")
        return found

    async def erase(
        self, tenant_id: UUID, lead_id: UUID, reason: str, *, by: str | None = None
    ) -> ErasureReceipt:
        """Erase one subject (see the module docstring); NotFound for none in the tenant."""
        lead: Lead = await self._run(lambda: self.subject(tenant_id, lead_id))
        if not lead.erased:
            Lead.erase_reason(reason)  # a bad reason is refused before anything is destroyed
        found: Footprint = await self._run(lambda: self.footprint(lead))
        if lead.erased:
            # Nothing destroyed or appended again; what an interrupted first call left
            # behind (Redis was down, say) is removed now and counted.
            ids = sorted({*lead.erased_conversations, *found.conversation_ids}, key=str)
            removed = await self._clean(tenant_id, lead_id, Footprint(ids, found.provider_ids))
            return ErasureReceipt(
                lead_id, tenant_id, lead.modified_on, lead.erased_reason, True, removed
            )
        await self._run(
            lambda: self._app.record_erasure(lead_id, reason, found.conversation_ids, by=by)
        )
        removed = await self._clean(tenant_id, lead_id, found)
        removed["events_appended"] = 1
        return ErasureReceipt(lead_id, tenant_id, self._clock.now(), reason, False, removed)

    def footprint(self, lead: Lead) -> Footprint:
        """The read models' view of the subject, plus the conversations the store names.

        The read models lag the store by the projector: a conversation they have not
        seen yet is found in the store, from the lead's key (the phone as a contact, on
        every channel, in the lead's generation) and from the lead's stream, which names
        each conversation its key does not give (`ConversationLinked`: an `@lid`
        contact), so `SubjectErased` lists it all the same and the projector drops its
        rows when it gets there.
        """
        found = self._rows.footprint(lead.tenant_id, lead.id)
        ids = dict.fromkeys(found.conversation_ids)
        if not lead.erased:
            for candidate in [*_conversations_named_by(lead), *lead.linked_conversations]:
                if candidate in ids:
                    continue
                first = self._app.events.get(candidate, limit=1)
                if any(getattr(e, "lead_id", None) == lead.id for e in first):
                    ids[candidate] = None
        return Footprint(sorted(ids, key=str), found.provider_ids, found.rows)

    async def _clean(self, tenant_id: UUID, lead_id: UUID, found: Footprint) -> dict[str, int]:
        """Destroy the subject's data key, then remove its read-model rows, Redis keys and
        this process's copies.

        A table's count is what the drop deleted or, when the projector got there first
        (it deletes the same rows on `SubjectErased`), what the footprint found.
        """
        removed = _zero()
        removed["data_keys"] = int(await self._run(lambda: self._app.cipher.shred(lead_id)))
        dropped = await self._run(
            lambda: self._rows.drop(tenant_id, lead_id, found.conversation_ids)
        )
        for table in {*dropped, *found.rows}:
            removed[table] = max(dropped.get(table, 0), found.rows.get(table, 0))
        if self._cache is not None:
            removed["redis_keys"] = await self._cache.drop(
                tenant_id, found.conversation_ids, found.provider_ids
            )
        self._app.forget_subject([lead_id, *found.conversation_ids])
        return removed

    async def retention(self, tenant_id: UUID, now: datetime, *, dry_run: bool) -> RetentionReport:
        """Erase the tenant's subjects inactive for longer than its `retention_days`.

        The job a scheduler calls (one tenant, its own clock's now). Unset retention
        keeps everything. Idempotent: erased subjects leave the lead pipeline, so a
        second run finds nothing due.
        """
        tenant: Tenant = await self._run(lambda: self._app.get(Tenant, tenant_id))
        days = tenant.settings.retention_days
        if days is None:
            return RetentionReport(tenant_id, None, None, [], 0, dry_run, _zero())
        cutoff = now - timedelta(days=days)
        due: list[UUID] = await self._run(lambda: self._rows.inactive_leads(tenant_id, cutoff))
        totals = _zero()
        erased = 0
        if not dry_run:
            for lead_id in due:
                receipt = await self.erase(tenant_id, lead_id, "retention")
                erased += 0 if receipt.already_erased else 1
                for name, count in receipt.removed.items():
                    totals[name] = totals.get(name, 0) + count
        return RetentionReport(tenant_id, days, cutoff, due, erased, dry_run, totals)


def _conversations_named_by(lead: Lead) -> list[UUID]:
    """The conversations the lead's own key would have as a contact (its phone, or the
    `@lid` / business-scoped id it was created from), on every channel."""
    generation = next(
        (g for g in range(MAX_GENERATIONS) if lead_id_for(lead.tenant_id, lead.key, g) == lead.id),
        None,
    )
    if generation is None:
        return []
    return [
        conversation_id_for(lead.tenant_id, channel, lead.key, generation) for channel in CHANNELS
    ]


def forget_erased(app: StoreApp) -> Callable[[Envelope], Awaitable[None]]:
    """What a process does on consuming `SubjectErased`: forget the subject's lead,
    conversations and key (in a thread: the writer's cache lock may be held by a batch)."""

    async def forget(envelope: Envelope) -> None:
        ids = [UUID(envelope.stream_id), *map(UUID, envelope.data.get("conversation_ids") or [])]
        await asyncio.to_thread(app.forget_subject, ids)

    return forget


def _zero() -> dict[str, int]:
    return {
        "data_keys": 0,
        "events_appended": 0,
        "conversations": 0,
        "messages": 0,
        "notes": 0,
        "leads": 0,
        "redis_keys": 0,
    }
