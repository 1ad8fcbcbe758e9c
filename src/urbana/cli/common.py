"""What every command group shares: consoles, options, the settings, the store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.console import Console

from urbana.config import Settings

if TYPE_CHECKING:
    from urbana.adapters.postgres.store import Store

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where `urbana dev` keeps its services and data "
        "(default: URBANA_DATA_DIR, else .urbana)",
        show_default=False,
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Host = Annotated[
    str | None,
    typer.Option(
        help="API bind address (default: URBANA_HOST, else 127.0.0.1)", show_default=False
    ),
]
Port = Annotated[
    int | None,
    typer.Option(
        help="API port, 0 = any free one (default: URBANA_PORT, else 8000)", show_default=False
    ),
]


def settings_of(ctx: typer.Context, data_dir: Path | None = None) -> Settings:
    """This invocation's settings (environment, `.env`), parsed once; `--data-dir` over
    URBANA_DATA_DIR when given."""
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        try:
            root.obj = Settings()
        except ValidationError as exc:  # a bad URBANA_* variable: say which, not a traceback
            for error in exc.errors():
                where = "_".join(str(part) for part in error["loc"]).upper()
                name = f"URBANA_{where}" if where else "settings"
                err.print(f"urbana: {name}: {error['msg']}", markup=False)
            raise typer.Exit(2) from exc
    settings: Settings = root.obj
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def with_running_services(settings: Settings, *, need_database: bool = True) -> Settings:
    """Fill unset service URLs from a running `urbana dev` (its services.json).

    Commands that talk only to Kafka pass `need_database=False`: in production the
    `kafka-init` service runs before PostgreSQL is reachable, and needs no database.
    """
    path = Path(settings.data_dir) / "services.json"
    if path.exists():
        services = json.loads(path.read_text())
        updates: dict[str, Any] = {}
        if not settings.database_url:
            updates["database_url"] = services.get("postgres")
        if not settings.kafka_bootstrap:
            updates["kafka_bootstrap"] = services.get("kafka")
        if not settings.redis_url:
            updates["redis_url"] = services.get("redis")
        settings = settings.model_copy(update=updates)
    if need_database and not settings.database_url:
        err.print(
            "no database: set URBANA_DATABASE_URL or start `urbana dev` first "
            f"(no services.json in {Path(settings.data_dir).resolve()})"
        )
        raise typer.Exit(2)
    return settings


def require_kafka(settings: Settings) -> str:
    """The Kafka bootstrap, or exit 2 saying where to get one."""
    if not settings.kafka_bootstrap:
        err.print("no Kafka: set URBANA_KAFKA_BOOTSTRAP or start `urbana dev` first")
        raise typer.Exit(2)
    return settings.kafka_bootstrap


@contextmanager
def opened_store(settings: Settings) -> Iterator[Store]:
    """The event store alone: no LLM, Kafka or Redis client to import or open."""
    from urbana.adapters.bootstrap import build_store

    store = build_store(settings)
    try:
        yield store
    finally:
        store.close()


def service_settings(
    ctx: typer.Context, data_dir: Path | None, *, need_database: bool = True
) -> Settings:
    """This invocation's settings with the service URLs of a running `urbana dev`
    filling the unset ones (see `with_running_services`)."""
    return with_running_services(settings_of(ctx, data_dir), need_database=need_database)


@contextmanager
def settings_and_store(
    ctx: typer.Context, data_dir: Path | None
) -> Iterator[tuple[Settings, Store]]:
    """The settings (as `service_settings` gives them) and the event store they name,
    closed on the way out."""
    settings = service_settings(ctx, data_dir)
    with opened_store(settings) as store:
        yield settings, store


@contextmanager
def store_of(ctx: typer.Context, data_dir: Path | None) -> Iterator[Store]:
    """The event store of this invocation's installation, for commands that need nothing
    else from the settings."""
    with settings_and_store(ctx, data_dir) as (_, store):
        yield store


@contextmanager
def refusals(code: int = 1, *errors: type[Exception]) -> Iterator[None]:
    """A refusal (`errors`, by default a DomainError) exits `code`, saying why."""
    from urbana.domain.errors import DomainError

    refused = errors or (DomainError,)
    try:
        yield
    except refused as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(code) from exc


def parse_tenant(text: str) -> UUID:
    """A tenant id argument, or exit 2 saying what is wrong with it."""
    from urbana.application.gateways import tenant_uuid

    with refusals(2):
        tid = tenant_uuid(text)
    return tid


def emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    if as_json:
        out.print(json.dumps(payload, default=str))
    else:
        out.print(text)


def setup_logging(role: str = "cli") -> None:
    """JSON lines on stderr, tagged with what this process runs (see `adapters.logs`)."""
    from urbana.adapters import logs

    logs.configure(role)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when available: the ingest path is event-loop bound."""
    if has_uvloop():
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
