"""`urbana privacy`: the operator's side of data subject requests (LGPD).

`export` writes every event of a subject (found by phone or lead id), decrypted, as
JSON or a Portuguese HTML transcript, to a file or stdout, and records the export on the
subject's lead (`SubjectDataExported`, by `cli`, role `operator`). It reads the store
directly with the installation's master key, as the other operator commands do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

from urbana.cli.common import (
    DataDir,
    err,
    parse_tenant,
    refusals,
    settings_and_store,
)

app = typer.Typer(
    help="Data subject requests (LGPD): export, erasure and retention.", no_args_is_help=True
)

CLI_ACTOR, CLI_ROLE = "cli", "operator"


@app.command("export")
def export(
    ctx: typer.Context,
    tenant_id: str,
    phone: Annotated[
        str | None, typer.Option("--phone", help="The subject's phone (any Brazilian form).")
    ] = None,
    lead: Annotated[str | None, typer.Option("--lead", help="The subject's lead id.")] = None,
    rendering: Annotated[
        str, typer.Option("--format", help="json (portable) or html (a transcript).")
    ] = "json",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of stdout.", dir_okay=False)
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option("--purpose", help="Why (a legal ground or a ticket; no personal data)."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Export every event of a data subject, decrypted; the export is recorded."""
    from urbana.adapters.postgres.subjects import PostgresSubjectStreams
    from urbana.adapters.transcript import TranscriptRenderer, export_json
    from urbana.application.ports import SystemClock
    from urbana.application.privacy import SubjectQuery, SubjectRequests
    from urbana.domain.errors import NotFound

    tid = parse_tenant(tenant_id)
    if (phone is None) == (lead is None):
        err.print("error: name the subject with exactly one of --phone, --lead")
        raise typer.Exit(2)
    if rendering not in ("json", "html"):
        err.print("error: --format is json or html")
        raise typer.Exit(2)
    try:
        query = SubjectQuery(phone=phone, lead_id=UUID(lead) if lead else None)
    except ValueError as exc:
        err.print(f"error: not a lead id: {lead!r}")
        raise typer.Exit(2) from exc
    with settings_and_store(ctx, data_dir) as (settings, store):
        streams = PostgresSubjectStreams(store.pool, store.schema, settings.store_wait_s)
        requests = SubjectRequests(store.app, streams, store.cipher, SystemClock())
        # No such subject exits 1; any other refusal (a bad phone, ...) exits 2.
        with refusals(2), refusals(1, NotFound):
            done = requests.export(
                tid,
                query,
                by=CLI_ACTOR,
                role=CLI_ROLE,
                purpose=purpose,
                rendering="html" if rendering == "html" else "json",
            )
    body = TranscriptRenderer().html(done).encode() if rendering == "html" else export_json(done)
    if out_file is None:
        typer.echo(body.decode())
    else:
        out_file.write_bytes(body)
        err.print(f"{len(done.events)} events of lead {done.subject.lead_id} written to {out_file}")
