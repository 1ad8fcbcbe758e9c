"""`urbana tenant`: register tenants; where their handoff notices go."""

from __future__ import annotations

from typing import Annotated

import typer

from urbana.cli.common import (
    DataDir,
    JsonOut,
    emit,
    err,
    opened_store,
    settings_of,
    with_running_services,
)

app = typer.Typer(help="Tenants.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context, name: str, data_dir: DataDir = None, as_json: JsonOut = False
) -> None:
    """Register a tenant; prints its id."""
    settings = with_running_services(settings_of(ctx, data_dir))
    with opened_store(settings) as store:
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

    try:
        if off == (chat_id is not None):
            raise DomainError("give --chat-id and --bot-token, or --off")
        tid = tenant_uuid(tenant_id)
    except DomainError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    settings = with_running_services(settings_of(ctx, data_dir))
    with opened_store(settings) as store:
        try:
            store.app.configure_telegram(tid, chat_id=chat_id, bot_token=bot_token)
        except DomainError as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(1) from exc
    emit(
        as_json,
        {"tenant_id": tenant_id, "telegram_chat_id": chat_id},
        f"handoff notices of {tenant_id} go to telegram chat {chat_id}"
        if chat_id
        else f"handoff notices of {tenant_id} are off",
    )
