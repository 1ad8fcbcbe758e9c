"""`urbana tenant`: register tenants, configure them, and say where their handoff
notices go."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from urbana.cli.common import (
    DataDir,
    JsonOut,
    emit,
    err,
    parse_tenant,
    refusals,
    store_of,
)

app = typer.Typer(help="Tenants.", no_args_is_help=True)

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE, repeatable. VALUE is read as JSON when it is JSON (600, true, "
        '{"mon": "08:00-18:00"}), else as text.',
        show_default=False,
    ),
]


@app.command("create")
def create(
    ctx: typer.Context, name: str, data_dir: DataDir = None, as_json: JsonOut = False
) -> None:
    """Register a tenant; prints its id."""
    with store_of(ctx, data_dir) as store:
        tenant_id, created = store.app.register_tenant(name)
    emit(as_json, {"tenant_id": str(tenant_id), "created": created}, str(tenant_id))


@app.command("telegram")
def telegram(
    ctx: typer.Context,
    tenant_id: str,
    chat_id: Annotated[
        str | None, typer.Option(help="the chat (or group) the bot posts to")
    ] = None,
    bot_token: Annotated[str | None, typer.Option(help="the tenant's bot, from @BotFather")] = None,
    off: Annotated[bool, typer.Option("--off", help="stop sending handoff notices")] = False,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Send the tenant's handoff notices to a Telegram chat (the token is stored encrypted)."""
    from urbana.application.gateways import tenant_uuid
    from urbana.domain.errors import DomainError

    with refusals(2):
        if off == (chat_id is not None):
            raise DomainError("give --chat-id and --bot-token, or --off")
        tid = tenant_uuid(tenant_id)
    with store_of(ctx, data_dir) as store, refusals():
        store.app.configure_telegram(tid, chat_id=chat_id, bot_token=bot_token)
    emit(
        as_json,
        {"tenant_id": tenant_id, "telegram_chat_id": chat_id},
        f"handoff notices of {tenant_id} go to telegram chat {chat_id}"
        if chat_id
        else f"handoff notices of {tenant_id} are off",
    )


@app.command("set-plan")
def set_plan(
    ctx: typer.Context,
    tenant_id: str,
    plan: Annotated[str, typer.Argument(help="unlimited, starter, pro, business or custom")],
    limit: Annotated[
        int | None, typer.Option(help="new leads a month (the custom plan only)", min=0)
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Put a tenant on a plan: how many new leads a month the AI answers (months begin
    on the 1st at 00:00 America/Sao_Paulo). Leads past it are recorded and flagged."""

    tid = parse_tenant(tenant_id)
    with store_of(ctx, data_dir) as store, refusals():
        chosen = store.app.change_plan(tid, plan, limit)
    limit = chosen.lead_limit
    limit_text = (
        "no limit" if limit is None else f"{limit} new lead{'' if limit == 1 else 's'} a month"
    )
    emit(
        as_json,
        {"tenant_id": str(tid), "plan": chosen.name, "lead_limit": chosen.lead_limit},
        f"{tid} is on plan {chosen.name}: {limit_text}",
    )


def _changes(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs as settings changes; exit 2 for one that is not a pair."""
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            err.print(f"error: expected KEY=VALUE, not {pair!r}")
            raise typer.Exit(2)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        changes[key.strip()] = value
    return changes


@app.command("configure")
def configure(
    ctx: typer.Context,
    tenant_id: str,
    set_: SetOpt = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Change a tenant's settings (the prompt, handoff rules, thresholds, debounce, rate
    limit, bot messages, business hours, inactivity limit, queue routing); prints them
    all. Without --set, only prints them. An unknown key or a bad value changes nothing."""
    from datetime import UTC, datetime

    from urbana.application.tenants import settings_json
    from urbana.domain.tenant import Tenant

    tid = parse_tenant(tenant_id)
    changes = _changes(set_ or [])
    with store_of(ctx, data_dir) as store, refusals():
        if changes:
            now = store.app.configure_tenant(tid, changes)
        else:
            now = store.app.get(Tenant, tid).settings
        # As GET /v1/settings shows them: with the plan, read-only here (set-plan).
        usage = store.app.plan_usage(tid, datetime.now(UTC))
    shown = {**settings_json(now), "plan": usage.as_json()}
    emit(
        as_json,
        {"tenant_id": str(tid), "settings": shown},
        "\n".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in shown.items()),
    )
