"""`urbana privacy erase` and `urbana privacy retention run`: erasure of data subjects.

Both go through the application's one erasure path (`urbana.application.erasure`), on
the event store, the read models and Redis of the installation (`--data-dir`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from uuid import UUID

import typer

from urbana.cli.common import (
    DataDir,
    JsonOut,
    emit,
    err,
    out,
    parse_tenant,
    refusals,
    settings_and_store,
)
from urbana.cli.privacy import app
from urbana.domain.lead import ERASURE_REASONS

if TYPE_CHECKING:
    from urbana.adapters.postgres.store import Store
    from urbana.application.erasure import Erasure, SubjectCache
    from urbana.config import Settings

T = TypeVar("T")

# The commands join the `privacy` group of `urbana.cli.privacy` (export), one group for
# every data subject request.
retention = typer.Typer(help="Erase subjects past the tenant's retention_days.")
app.add_typer(retention, name="retention")

REASONS = ", ".join(sorted(ERASURE_REASONS))


def _erasure(store: Store, cache: SubjectCache | None = None) -> Erasure:
    from urbana.adapters.postgres.erasure import PostgresSubjectRows
    from urbana.application.erasure import Erasure
    from urbana.application.ports import SystemClock

    return Erasure(store.app, PostgresSubjectRows(store.pool), cache, SystemClock())


def on_erasure_path(settings: Settings, store: Store, work: Callable[[Erasure], Awaitable[T]]) -> T:
    """`work` on the erasure path with the installation's Redis (when it has one)."""
    from urbana.adapters.redis_coord import redis_client
    from urbana.adapters.redis_erasure import RedisSubjectCache

    async def main() -> T:
        client = redis_client(settings.redis_url) if settings.redis_url else None
        try:
            cache = RedisSubjectCache(client) if client is not None else None
            return await work(_erasure(store, cache))
        finally:
            if client is not None:
                await client.aclose()

    return asyncio.run(main())


@app.command("erase")
def erase(
    ctx: typer.Context,
    tenant_id: Annotated[str, typer.Argument(help="The tenant id.")],
    reason: Annotated[
        str, typer.Option("--reason", help=f"Why, as a category (never personal data): {REASONS}")
    ],
    phone: Annotated[str | None, typer.Option("--phone", help="The subject's phone.")] = None,
    lead: Annotated[str | None, typer.Option("--lead", help="The subject's lead id.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Destroy a subject's data key, record `SubjectErased`, remove its rows and keys."""
    from urbana.domain.errors import DomainError
    from urbana.domain.lead import Lead

    tid = parse_tenant(tenant_id)
    if (phone is None) == (lead is None):
        err.print("error: give exactly one of --phone and --lead")
        raise typer.Exit(2)
    with refusals(2, DomainError, ValueError):
        Lead.erase_reason(reason)
        lead_id = UUID(lead) if lead is not None else None
    with settings_and_store(ctx, data_dir) as (settings, store):
        erasure = _erasure(store)
        with refusals():
            subject = (
                erasure.subject(tid, lead_id)
                if lead_id is not None
                else erasure.subject_of_phone(tid, phone or "")
            )
        if not yes and not subject.erased:
            found = erasure.footprint(subject)
            typer.confirm(
                f"This destroys the data key of lead {subject.id} (tenant {tid}): its phone, "
                f"name and the text of its {len(found.conversation_ids)} conversation(s) become "
                "unreadable for good, and its rows in the read models and Redis are removed. "
                "Erase?",
                abort=True,
                err=True,  # stdout stays the receipt alone (--json)
            )
        with refusals():
            receipt = on_erasure_path(settings, store, lambda e: e.erase(tid, subject.id, reason))
    payload = receipt.as_json()
    removed = ", ".join(f"{k} {v}" for k, v in receipt.removed.items())
    verb = "already erased" if receipt.already_erased else "erased"
    emit(as_json, payload, f"lead {receipt.lead_id} {verb} ({receipt.reason}); removed: {removed}")


@retention.command("run")
def retention_run(
    ctx: typer.Context,
    tenant_id: Annotated[str, typer.Argument(help="The tenant id.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list the subjects that are due.")
    ] = False,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Erase (or list) the subjects inactive for longer than the tenant's retention_days."""
    tid = parse_tenant(tenant_id)
    with settings_and_store(ctx, data_dir) as (settings, store), refusals():
        report = on_erasure_path(
            settings, store, lambda e: e.retention(tid, datetime.now(UTC), dry_run=dry_run)
        )
    payload: dict[str, Any] = report.as_json()
    if as_json:
        emit(True, payload, "")
        return
    if report.retention_days is None:
        out.print("retention_days is not set: every subject is kept")
        return
    for lead_id in report.due:
        out.print(f"{'due' if dry_run else 'erased'}: {lead_id}")
    out.print(
        f"{len(report.due)} subject(s) inactive since before {payload['cutoff']}; "
        f"erased {report.erased}"
    )
