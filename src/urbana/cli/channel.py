"""`urbana channel`: connect WhatsApp gateways to tenants."""

from __future__ import annotations

from typing import Annotated

import typer

from urbana.cli.common import (
    DataDir,
    JsonOut,
    emit,
    refusals,
    store_of,
)

app = typer.Typer(help="WhatsApp gateways.", no_args_is_help=True)


@app.command("connect")
def connect(
    ctx: typer.Context,
    tenant_id: str,
    kind: Annotated[str, typer.Argument(help="cloud | evolution | zapi")],
    phone_number_id: Annotated[str | None, typer.Option(help="cloud")] = None,
    app_secret: Annotated[str | None, typer.Option(help="cloud")] = None,
    verify_token: Annotated[str | None, typer.Option(help="cloud")] = None,
    access_token: Annotated[str | None, typer.Option(help="cloud")] = None,
    instance: Annotated[str | None, typer.Option(help="evolution")] = None,
    api_url: Annotated[str | None, typer.Option(help="evolution")] = None,
    api_key: Annotated[str | None, typer.Option(help="evolution")] = None,
    jwt_key: Annotated[str | None, typer.Option(help="evolution")] = None,
    instance_id: Annotated[str | None, typer.Option(help="zapi")] = None,
    token: Annotated[str | None, typer.Option(help="zapi")] = None,
    client_token: Annotated[str | None, typer.Option(help="zapi")] = None,
    webhook_secret: Annotated[str | None, typer.Option(help="evolution, zapi")] = None,
    api_base_url: Annotated[str | None, typer.Option(help="cloud, zapi")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Connect a WhatsApp gateway to a tenant."""
    from urbana.application.gateways import GATEWAYS, gateway_config, tenant_uuid
    from urbana.domain.errors import DomainError

    given = {
        "phone_number_id": phone_number_id,
        "app_secret": app_secret,
        "verify_token": verify_token,
        "access_token": access_token,
        "instance": instance,
        "api_url": api_url,
        "api_key": api_key,
        "jwt_key": jwt_key,
        "instance_id": instance_id,
        "token": token,
        "client_token": client_token,
        "webhook_secret": webhook_secret,
        "api_base_url": api_base_url,
    }
    spec = GATEWAYS.get(kind)
    with refusals(2):
        if spec is None or kind == "console":
            raise DomainError(f"unknown channel kind {kind!r} (cloud | evolution | zapi)")
        allowed = set(spec.public) | set(spec.secret)
        fields = {k: v for k, v in given.items() if v is not None}
        stray = sorted(set(fields) - allowed)
        if stray:
            flags = ", ".join("--" + f.replace("_", "-") for f in stray)
            raise DomainError(f"{kind} does not take {flags}")
        config = gateway_config(kind, fields)
        tid = tenant_uuid(tenant_id)
    with store_of(ctx, data_dir) as store, refusals():
        store.app.connect_channel(tid, config)
    emit(
        as_json,
        {"tenant_id": tenant_id, "channel": kind, "route_key": config.route_key},
        f"connected {kind} {config.route_key} to {tenant_id}",
    )
