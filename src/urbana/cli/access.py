"""`urbana user` and `urbana apikey`: the operator's way to give people and scripts access."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar
from uuid import UUID

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

if TYPE_CHECKING:
    from urbana.domain.user import Role

users = typer.Typer(help="Users of a tenant's workspace.", no_args_is_help=True)
apikeys = typer.Typer(help="API keys for scripts.", no_args_is_help=True)

RoleOpt = Annotated[
    str,
    typer.Option(
        "--role", help="attendant, supervisor, analyst, auditor or admin", show_default=False
    ),
]
NameOpt = Annotated[str, typer.Option("--name", help="A label (a person's or a script's name).")]
T = TypeVar("T")


def _tenant_and_role(tenant_id: str, role: str) -> tuple[UUID, Role]:
    """The tenant and role arguments: exit 2 for a bad tenant id, 1 for an unknown role."""
    from urbana.domain.user import role_of

    tid = parse_tenant(tenant_id)
    with refusals():
        chosen = role_of(role)
    return tid, chosen


def _with_access(ctx: typer.Context, data_dir: DataDir, use: Callable[..., T]) -> T:
    from urbana.adapters.passwords import Argon2Hasher
    from urbana.application.access import Access

    with store_of(ctx, data_dir) as store, refusals():
        return use(Access(store.app, Argon2Hasher()))


@users.command("add")
def add_user(
    ctx: typer.Context,
    tenant_id: str,
    email: str,
    role: RoleOpt,
    password: Annotated[
        str | None,
        typer.Option("--password", help="Without it, one is generated and printed once."),
    ] = None,
    name: NameOpt = "",
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Add a user to a tenant; prints the user id (and the generated password)."""
    tid, chosen = _tenant_and_role(tenant_id, role)
    user_id, generated = _with_access(
        ctx,
        data_dir,
        lambda access: access.add_user(tid, email=email, role=chosen, password=password, name=name),
    )
    payload: dict[str, str | None] = {
        "user_id": str(user_id),
        "tenant_id": str(tid),
        "email": email.strip().lower(),
        "role": chosen.value,
        "password": generated,
    }
    text = str(user_id) if generated is None else f"{user_id}\npassword: {generated}"
    emit(as_json, payload, text)


@apikeys.command("create")
def create_key(
    ctx: typer.Context,
    tenant_id: str,
    role: RoleOpt,
    name: NameOpt = "",
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create an API key acting with ROLE in the tenant; prints the key (shown only now)."""
    tid, chosen = _tenant_and_role(tenant_id, role)
    created = _with_access(
        ctx, data_dir, lambda access: access.create_api_key(tid, role=chosen, name=name, by=None)
    )
    payload = {
        "key_id": str(created.key_id),
        "key": created.token,
        "tenant_id": str(tid),
        "role": chosen.value,
        "name": name,
    }
    emit(as_json, payload, created.token)


@apikeys.command("revoke")
def revoke_key(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id, or the key itself.")],
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Revoke an API key: it stops working at once. Revoking it again changes nothing."""
    kid = _key_id(key_id)
    revoked = _with_access(
        ctx, data_dir, lambda access: access.app.revoke_api_key(None, kid, by=None)
    )
    emit(
        as_json,
        {"key_id": str(kid), "revoked": revoked},
        f"{kid} revoked" if revoked else f"{kid} was already revoked",
    )


def _key_id(text: str) -> UUID:
    from urbana.application.access import API_KEY_PREFIX, parse_api_key
    from urbana.domain.errors import NotAuthenticated

    try:
        if text.startswith(API_KEY_PREFIX):
            return parse_api_key(text)[0]
        return UUID(text)
    except (NotAuthenticated, ValueError) as exc:
        err.print(f"error: not an API key or key id: {text!r}")
        raise typer.Exit(2) from exc
