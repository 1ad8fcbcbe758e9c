"""`urbana dlq`: outbound messages that failed for good, and queueing them again."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from urbana.cli.common import (
    DataDir,
    JsonOut,
    err,
    out,
    parse_tenant,
    store_of,
)

app = typer.Typer(
    help="Outbound messages that failed for good (the dead letters).", no_args_is_help=True
)


def _failed_item(failed: Any) -> dict[str, Any]:
    return {
        "tenant_id": str(failed.tenant_id),
        "conversation_id": str(failed.conversation_id),
        "outbound_id": failed.outbound_id,
        "channel": failed.channel,
        "author": failed.author,
        "reason": failed.reason,
        "code": failed.code,
        "failed_at": failed.failed_at.isoformat(),
        "retryable": failed.retryable,
        "refusal": failed.refusal,
    }


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """List failed outbound messages, oldest first: why, and whether they may be retried."""
    tid = parse_tenant(tenant) if tenant else None
    with store_of(ctx, data_dir) as store:
        items = [_failed_item(f) for f in store.app.failed_outbounds(tid)]
    if as_json:
        out.print(json.dumps({"failed": items}))
        return
    if not items:
        out.print("no failed messages")
        return
    for item in items:
        verdict = "retryable" if item["retryable"] else f"not retryable: {item['refusal']}"
        code = f" [{item['code']}]" if item["code"] else ""
        out.print(
            f"{item['outbound_id']}  {item['failed_at']}  tenant {item['tenant_id']}  "
            f"{item['channel']}/{item['author']}{code}: {item['reason']} ({verdict})"
        )


@app.command("retry")
def retry(
    ctx: typer.Context,
    outbound_ids: Annotated[
        list[str] | None, typer.Argument(help="Outbound ids (from `urbana dlq list`).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every retryable failed message.")] = False,
    tenant: Annotated[str | None, typer.Option("--tenant", help="With --all: one tenant.")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Queue failed messages again (OutboundMessageRetried); the dispatcher sends them.

    Exit 1 when any of the named messages may not be retried (the others are).
    """
    from urbana.domain.errors import DomainError

    wanted = list(dict.fromkeys(outbound_ids or []))
    if bool(wanted) == all_:
        err.print("error: give OUTBOUND_ID... or --all (not both)")
        raise typer.Exit(2)
    tid = parse_tenant(tenant) if tenant else None
    retried: list[dict[str, str]] = []
    refused: list[dict[str, str]] = []
    with store_of(ctx, data_dir) as store:
        failed = {f.outbound_id: f for f in store.app.failed_outbounds(tid)}
        if all_:
            wanted = [i for i, f in failed.items() if f.retryable]
        for outbound_id in wanted:
            found = failed.get(outbound_id)
            if found is None:
                refused.append({"outbound_id": outbound_id, "reason": "no failed message"})
                continue
            try:
                store.app.retry_outbound(found.conversation_id, outbound_id, by="cli")
            except DomainError as exc:
                refused.append({"outbound_id": outbound_id, "reason": str(exc)})
                continue
            retried.append(
                {"outbound_id": outbound_id, "conversation_id": str(found.conversation_id)}
            )
    if as_json:
        out.print(json.dumps({"retried": retried, "refused": refused}))
    else:
        for item in retried:
            out.print(f"retried {item['outbound_id']}")
        for item in refused:
            out.print(f"refused {item['outbound_id']}: {item['reason']}")
        if not retried and not refused:
            out.print("nothing to retry")
    if refused:
        raise typer.Exit(1)
