"""The scheduler: runs each job of the catalogue for each tenant when its schedule says.

Exactly one scheduler is active across processes (`Leadership`: a PostgreSQL advisory
lock held by a session, so it ends when the process dies and a waiting scheduler takes
over within a poll). Each tick it asks, for every tenant and job, which period is due
now (the job's cron schedule in the tenant's time zone), and runs a period at most once
(`JobLedger`). A missed period is not replayed one by one: the jobs decide from "now",
so the latest period does what the missed ones would have. See docs/architecture.md,
Scheduled jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from croniter import croniter

from urbana.application.jobs import Job, JobCommands, JobReport
from urbana.application.ports import Clock, JobLedger, JobSources, Leadership, SystemClock

log = logging.getLogger(__name__)


def due_period(schedule: str, now: datetime, timezone: str) -> datetime:
    """The latest time at or before `now` that `schedule` (cron) names in `timezone`."""
    # croniter's get_prev is strictly before its start: start just after this second.
    start = now.astimezone(ZoneInfo(timezone)).replace(microsecond=0) + timedelta(seconds=1)
    prev: datetime = croniter(schedule, start).get_prev(datetime)
    return prev


def next_period(schedule: str, now: datetime, timezone: str) -> datetime:
    """The first time after `now` that `schedule` names in `timezone`."""
    nxt: datetime = croniter(schedule, now.astimezone(ZoneInfo(timezone))).get_next(datetime)
    return nxt


# (job, outcome "ok" | "failed", candidates examined, aggregates changed): for metrics.
JobObserver = Callable[[str, str, int, int], None]


@dataclass
class SchedulerMetrics:
    ticks: int = 0
    leading: bool = False
    runs: int = 0
    failures: int = 0
    changed: dict[str, int] = field(default_factory=dict)  # job -> aggregates changed


class Scheduler:
    """Runs the catalogue's jobs per tenant on their schedules, while it leads."""

    def __init__(
        self,
        app: JobCommands,
        sources: JobSources,
        ledger: JobLedger,
        leadership: Leadership,
        *,
        jobs: tuple[Job, ...],
        tick_s: float = 30.0,
        clock: Clock | None = None,
        on_run: JobObserver | None = None,
    ) -> None:
        self._app = app
        self._sources = sources
        self._ledger = ledger
        self._leadership = leadership
        self._jobs = jobs
        self._tick_s = tick_s
        self._clock = clock or SystemClock()
        self.metrics = SchedulerMetrics()
        self._on_run = on_run or (lambda job, outcome, examined, changed: None)

    async def run(self, stop: asyncio.Event) -> None:
        """Wait to lead, then tick until `stop`; losing the lead raises (the role restarts)."""
        if not await self._leadership.acquire(stop):
            return
        self.metrics.leading = True
        try:
            given_back = await asyncio.to_thread(self._ledger.abandon_running)
            log.info("scheduler leads (%d abandoned runs given back)", given_back)
            while not stop.is_set():
                await self._leadership.check()
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._tick_s)
        finally:
            self.metrics.leading = False
            await self._leadership.release()

    async def tick(self) -> list[JobReport]:
        """Run every period that is due and not run yet; the reports of the runs made."""
        self.metrics.ticks += 1
        now = self._clock.now()
        reports = []
        for tenant_id in await asyncio.to_thread(self._sources.tenants):
            timezone = (await asyncio.to_thread(self._app.tenant_settings, tenant_id)).timezone
            for job in self._jobs:
                period = due_period(job.spec.schedule, now, timezone)
                report = await self._run_once(job, tenant_id, period, now)
                if report is not None:
                    reports.append(report)
        return reports

    async def _run_once(
        self, job: Job, tenant_id: UUID, period: datetime, now: datetime
    ) -> JobReport | None:
        if not await asyncio.to_thread(self._ledger.claim, job.name, tenant_id, period):
            return None
        try:
            report = await job.run(tenant_id, now, False)
        except Exception:
            self.metrics.failures += 1
            self._on_run(job.name, "failed", 0, 0)
            await asyncio.to_thread(self._ledger.release, job.name, tenant_id, period)
            # The next tick takes the period again; one failed job must not stop the rest.
            log.exception(
                "job %s failed for tenant %s",
                job.name,
                tenant_id,
                extra={"job": job.name, "tenant": str(tenant_id), "outcome": "failed"},
            )
            return None
        counts = {"examined": report.examined, "changed": report.changed}
        await asyncio.to_thread(self._ledger.finish, job.name, tenant_id, period, counts)
        self.metrics.runs += 1
        self.metrics.changed[job.name] = self.metrics.changed.get(job.name, 0) + report.changed
        self._on_run(job.name, "ok", report.examined, report.changed)
        log.info(
            "job %s for tenant %s (period %s): %d examined, %d changed",
            job.name,
            tenant_id,
            period.isoformat(),
            report.examined,
            report.changed,
            extra={
                "job": job.name,
                "tenant": str(tenant_id),
                "outcome": "ok",
                "period": period.isoformat(),
                **counts,
            },
        )
        return report


async def run_job(
    job: Job, tenants: list[UUID], *, now: datetime, dry_run: bool
) -> list[JobReport]:
    """Run one job now, outside its schedule (`urbana jobs run`), for these tenants."""
    return [await job.run(tenant_id, now, dry_run) for tenant_id in tenants]
