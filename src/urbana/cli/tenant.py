"""`urbana tenant`: register tenants."""

from __future__ import annotations

import typer

from urbana.cli.common import (
    DataDir,
    JsonOut,
    emit,
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
