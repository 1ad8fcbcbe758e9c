"""Jobs on a clock: what the scheduler runs for each tenant.

Each job asks a read model for candidates (cheap, and maybe a moment behind the store),
then decides on each aggregate as it is stored now. So a lead who wrote a second ago is
not cooled, and a job run twice appends nothing the second time: the aggregate
remembers what was done (a lead, the decay steps of its current silence; a conversation,
that it is closed). See docs/architecture.md, Scheduled jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid5

from urbana.application.erasure import Erasure
from urbana.application.ports import JobSources
from urbana.application.unit_of_work import StoreApp, UnitOfWork
from urbana.domain.conversation import Conversation, Status
from urbana.domain.lead import Lead
from urbana.domain.reply import bot_message
from urbana.domain.templates import window_applies
from urbana.domain.tenant import Tenant, TenantSettings

SCHEDULER = "scheduler"  # `by` of what the jobs do
STALE_RESOLUTION = "stale"

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class JobReport:
    """What one run of a job did for one tenant (in a dry run: what it would do)."""

    job: str
    tenant_id: UUID
    dry_run: bool
    examined: int  # candidates the read model named
    changed: int  # aggregates changed (events appended), or that would be in a dry run

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "tenant_id": str(self.tenant_id),
            "dry_run": self.dry_run,
            "examined": self.examined,
            "changed": self.changed,
        }


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job of the catalogue: its name, when it runs (cron, in the tenant's time zone)."""

    name: str
    schedule: str
    summary: str


# Runs a job for one tenant at `now` (the bool: a dry run).
RunJob = Callable[[UUID, datetime, bool], Awaitable[JobReport]]


@dataclass(frozen=True, slots=True)
class Job:
    """A job bound to what it needs: `run` decides and appends for one tenant."""

    spec: JobSpec
    run: RunJob

    @property
    def name(self) -> str:
        return self.spec.name


class JobCommands(StoreApp):
    """The commands the jobs issue, each deciding on the aggregate as stored now."""

    def decay_lead(
        self,
        lead_id: UUID,
        conversation_ids: Sequence[UUID],
        *,
        steps: Mapping[str, int],
        now: datetime,
        dry_run: bool,
    ) -> int:
        """Cool a silent lead by the tenant's `steps` that are due; the number applied."""

        def work(uow: UnitOfWork) -> int:
            lead = uow.require(Lead, lead_id)
            conversations = [uow.get(Conversation, c) for c in conversation_ids]
            inbound = [c.last_inbound_at for c in conversations if c and c.last_inbound_at]
            if not inbound:
                return 0
            since = max(inbound)  # the lead's last message, on any of its channels
            applied = 0
            for hours, delta in sorted((int(h), d) for h, d in steps.items()):
                if now - since < timedelta(hours=hours):
                    break
                reason = f"no reply for {hours} h"
                if dry_run:
                    applied += lead.score > 0 and f"{since.isoformat()}/{hours}h" not in lead.decays
                elif lead.decay(silent_since=since, after_hours=hours, delta=delta, reason=reason):
                    applied += 1
            return applied

        return self._decided(work, dry_run=dry_run)

    def close_if_stale(self, conversation_id: UUID, *, before: datetime, dry_run: bool) -> bool:
        """Close the conversation when nothing happened on it since `before`."""

        def work(uow: UnitOfWork) -> bool:
            conversation = uow.require(Conversation, conversation_id)
            last = conversation.modified_on  # its latest event, whatever it was
            if conversation.status is Status.CLOSED or last is None or last >= before:
                return False
            if not dry_run:
                conversation.close(by=SCHEDULER, resolution=STALE_RESOLUTION)
            return True

        return self._decided(work, dry_run=dry_run)

    def follow_up(self, conversation_id: UUID, *, now: datetime, dry_run: bool) -> bool:
        """One follow-up to a lead who went quiet after the AI answered; False when none
        is due (it wrote since, a person has it, one was sent for this silence, or the
        window is shut and the tenant has no template for after it)."""

        def work(uow: UnitOfWork) -> bool:
            conversation = uow.require(Conversation, conversation_id)
            settings = uow.require(Tenant, conversation.tenant_id).settings
            hours = settings.follow_up_after_hours
            last, since = conversation.modified_on, conversation.last_inbound_at
            before = now - timedelta(hours=hours)
            if not hours or conversation.status is not Status.AI or since is None:
                return False
            if conversation.answered_seq < conversation.inbound_seq or last >= before:
                return False  # still unanswered, or something happened since
            # One per silence: the id names the lead's last message.
            outbound_id = str(uuid5(conversation_id, f"follow-up:{conversation.inbound_seq}"))
            if outbound_id in conversation.outbound:
                return False
            exempt = settings.window_exempt_channels
            if conversation.within_service_window(now) or not window_applies(
                conversation.channel, exempt
            ):
                if not dry_run:
                    text = bot_message("follow_up", settings.bot_messages)
                    conversation.queue_system_message(outbound_id=outbound_id, text=text)
                return True
            name = settings.follow_up_template
            template = uow.require(Tenant, conversation.tenant_id).templates.get(name or "")
            if template is None or template.parameters or conversation.channel != "cloud":
                return False  # after the window only an approved template may go
            if not dry_run:
                conversation.queue_system_template(
                    outbound_id=outbound_id, template=template, values={}
                )
            return True

        return self._decided(work, dry_run=dry_run)

    def tenant_settings(self, tenant_id: UUID) -> TenantSettings:
        return self.get(Tenant, tenant_id).settings

    def _decided(self, work: Callable[[UnitOfWork], R], *, dry_run: bool) -> R:
        """What `work` decides, saved; in a dry run, on a unit of work never saved."""
        if dry_run:
            return work(UnitOfWork(self))
        return self._retrying(work)


def decay_scores(
    app: JobCommands, sources: JobSources, tenant_id: UUID, now: datetime, dry_run: bool
) -> JobReport:
    steps = app.tenant_settings(tenant_id).decay_steps
    first = min((int(h) for h in steps), default=0)
    leads = sources.silent_leads(tenant_id, now - timedelta(hours=first)) if steps else []
    changed = sum(
        bool(app.decay_lead(lead_id, conversation_ids, steps=steps, now=now, dry_run=dry_run))
        for lead_id, conversation_ids in leads
    )
    return JobReport(DECAY_SCORES.name, tenant_id, dry_run, len(leads), changed)


def close_stale(
    app: JobCommands, sources: JobSources, tenant_id: UUID, now: datetime, dry_run: bool
) -> JobReport:
    days = app.tenant_settings(tenant_id).stale_after_days
    before = now - timedelta(days=days)
    stale = sources.stale_conversations(tenant_id, before) if days else []
    changed = sum(app.close_if_stale(c, before=before, dry_run=dry_run) for c in stale)
    return JobReport(CLOSE_STALE.name, tenant_id, dry_run, len(stale), changed)


def follow_up(
    app: JobCommands, sources: JobSources, tenant_id: UUID, now: datetime, dry_run: bool
) -> JobReport:
    hours = app.tenant_settings(tenant_id).follow_up_after_hours
    cold = sources.cold_conversations(tenant_id, now - timedelta(hours=hours)) if hours else []
    changed = sum(app.follow_up(c, now=now, dry_run=dry_run) for c in cold)
    return JobReport(FOLLOW_UP.name, tenant_id, dry_run, len(cold), changed)


DECAY_SCORES = JobSpec(
    "decay-scores",
    "0 * * * *",
    "cool leads with no reply (tenant setting decay_steps: hours -> score change)",
)
CLOSE_STALE = JobSpec(
    "close-stale",
    "30 3 * * *",
    "close conversations with no activity for stale_after_days (0: never)",
)
RETENTION = JobSpec(
    "retention",
    "0 4 * * *",
    "erase subjects inactive for longer than retention_days (unset: keep), as LGPD asks",
)
FOLLOW_UP = JobSpec(
    "follow-up",
    "*/15 * * * *",
    "one follow-up to a lead quiet for follow_up_after_hours (0: off, the default): text "
    "inside the 24-hour window, only the follow_up_template after it",
)
SPECS: tuple[JobSpec, ...] = (DECAY_SCORES, CLOSE_STALE, FOLLOW_UP, RETENTION)


def catalogue(app: JobCommands, sources: JobSources, erasure: Erasure | None) -> tuple[Job, ...]:
    """The jobs bound to the application and its read models; without an erasure path
    (no Redis to clean, a process that cannot erase) there is no retention job."""

    def in_thread(
        job: Callable[[JobCommands, JobSources, UUID, datetime, bool], JobReport],
    ) -> RunJob:
        async def run(tenant_id: UUID, now: datetime, dry_run: bool) -> JobReport:
            # The store is synchronous: the job's reads and appends run off the event loop.
            return await asyncio.to_thread(job, app, sources, tenant_id, now, dry_run)

        return run

    jobs = [
        Job(DECAY_SCORES, in_thread(decay_scores)),
        Job(CLOSE_STALE, in_thread(close_stale)),
        Job(FOLLOW_UP, in_thread(follow_up)),
    ]
    if erasure is not None:

        async def retention(tenant_id: UUID, now: datetime, dry_run: bool) -> JobReport:
            report = await erasure.retention(tenant_id, now, dry_run=dry_run)
            erased = len(report.due) if dry_run else report.erased
            return JobReport(RETENTION.name, tenant_id, dry_run, len(report.due), erased)

        jobs.append(Job(RETENTION, retention))
    return tuple(jobs)
