"""`urbana jobs`: the scheduled jobs, listed or run now by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from urbana.cli.common import (
    DataDir,
    JsonOut,
    emit,
    err,
    out,
    parse_tenant,
    settings_and_store,
    store_of,
)

if TYPE_CHECKING:
    from urbana.application.erasure import Erasure
    from urbana.application.jobs import JobReport

app = typer.Typer(help="Scheduled jobs (the scheduler role runs them on their schedules).")


@app.command("list")
def list_jobs(ctx: typer.Context, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """The jobs, their schedules, and the last run of each for each tenant."""
    from urbana.adapters.roles import job_ports
    from urbana.application.jobs import SPECS

    with store_of(ctx, data_dir) as store:
        runs = job_ports(store)[1].last_runs()
    jobs = [{"name": j.name, "schedule": j.schedule, "summary": j.summary} for j in SPECS]
    if as_json:
        emit(True, {"jobs": jobs, "last_runs": runs}, "")
        return
    table = Table("job", "schedule (tenant time zone)", "what it does")
    for job in jobs:
        table.add_row(job["name"], job["schedule"], job["summary"])
    out.print(table)
    if runs:
        last = Table("job", "tenant", "period", "examined", "changed")
        for run in runs:
            counts = run["counts"] if isinstance(run["counts"], dict) else {}
            last.add_row(
                str(run["job"]),
                str(run["tenant_id"]),
                str(run["period"]),
                str(counts.get("examined", "")),
                str(counts.get("changed", "")),
            )
        out.print(last)


@app.command("run")
def run_job(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the job (see `urbana jobs list`)")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="only this tenant (default: every tenant)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what it would change; change nothing")
    ] = False,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Run one job now for one tenant or all, outside its schedule (it is idempotent)."""
    from urbana.adapters.roles import job_ports
    from urbana.application.jobs import SPECS, catalogue
    from urbana.application.scheduler import run_job as run_now
    from urbana.cli.erasure import on_erasure_path

    if name not in {s.name for s in SPECS}:
        err.print(f"error: unknown job {name!r} ({', '.join(s.name for s in SPECS)})")
        raise typer.Exit(2)
    with settings_and_store(ctx, data_dir) as (settings, store):
        sources, _ = job_ports(store)
        tenants = [parse_tenant(tenant)] if tenant else sources.tenants()

        async def work(erasure: Erasure) -> list[JobReport]:
            (job,) = [j for j in catalogue(store.app, sources, erasure) if j.name == name]
            return await run_now(job, tenants, now=datetime.now(UTC), dry_run=dry_run)

        reports = on_erasure_path(settings, store, work)
    text = "\n".join(
        f"{r.job} {r.tenant_id}: {r.examined} examined, {r.changed} "
        f"{'would change' if r.dry_run else 'changed'}"
        for r in reports
    )
    runs = {"runs": [r.as_json() for r in reports]}
    emit(as_json, runs, text or "no tenant has conversations yet")
