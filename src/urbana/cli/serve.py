"""The processes: `urbana dev` (everything on embedded services), `serve`, `worker`."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from urbana.cli.common import (
    DataDir,
    Host,
    Port,
    err,
    has_uvloop,
    out,
    refusals,
    run,
    service_settings,
    settings_of,
    setup_logging,
)
from urbana.config import Settings

METRICS_EVERY_S = 30.0


def dev(
    ctx: typer.Context,
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    reset: Annotated[bool, typer.Option("--reset", help="Wipe the data dir first.")] = False,
) -> None:
    """Run the whole system on embedded services (PostgreSQL, Kafka, Redis)."""
    from urbana.adapters.embedded import EmbeddedStack, wipe

    setup_logging("dev")
    # SIGTERM must unwind like Ctrl-C so the `finally` below stops every service
    # (uvicorn re-raises the signal it captured once it has shut down).
    signal.signal(signal.SIGTERM, _interrupt)
    settings = settings_of(ctx, data_dir)
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

        from urbana.adapters.kafka.topics import init_topics
        from urbana.adapters.runtime import ROLES
        from urbana.errors import UrbanaError

        # Every topic first, shaped by topics.yaml, as `kafka init` does in production:
        # else the first client to ask the broker about the event topic gets it
        # auto-created with the broker's default partitions. A broker given by URL
        # that does not answer ends dev with the reason (exit 1), not a traceback.
        with refusals(1, UrbanaError):
            asyncio.run(init_topics(urls.kafka))
        run(_serve(settings, host, port, started, roles=ROLES))
    except KeyboardInterrupt:
        err.print("stopping")
    finally:
        services_file.unlink(missing_ok=True)
        stack.stop()


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
        access_log=False,  # the app logs one line per request (adapters.http.observe)
        log_config=None,  # uvicorn's loggers go through ours
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


def serve(
    ctx: typer.Context,
    host: Host = None,
    port: Port = None,
    workers: Annotated[
        int, typer.Option(min=1, help="HTTP worker processes (one group committer each).")
    ] = 1,
    data_dir: DataDir = None,
) -> None:
    """Run the HTTP API against external services (URBANA_DATABASE_URL, ...)."""
    setup_logging("api")
    settings = service_settings(ctx, data_dir)
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    if workers == 1:
        run(_serve(settings, host, port, lambda url: out.print(f"api: {url}")))
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
    _share_metrics()
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
        loop="uvloop" if has_uvloop() else "asyncio",
        access_log=False,
        log_config=None,
    )


def _share_metrics() -> None:
    """Have the HTTP workers count into one place, so that a scrape of any of them tells
    the figures of all (prometheus-client's multiprocess mode).

    An operator's PROMETHEUS_MULTIPROC_DIR is used (and emptied: figures start at zero
    with the process, as a single process's do); else a fresh temporary one.
    """
    from urbana.adapters.metrics import MULTIPROC_ENV

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="urbana-metrics-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = str(folder)


def worker(
    ctx: typer.Context,
    role: Annotated[
        list[str],
        typer.Option(
            "--role",
            help="relay | projector | responder | dispatcher | knowledge | notifier | assigner"
            " | scheduler",
        ),
    ],
    data_dir: DataDir = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve GET /metrics and /healthz on this port, 0 = any free one "
            "(default: URBANA_METRICS_PORT, else none)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run background roles (repeat --role) against external services, until SIGTERM."""
    from urbana.adapters.runtime import parse_roles
    from urbana.errors import ConfigurationError

    with refusals(2, ConfigurationError):
        roles = parse_roles(role)
    setup_logging(",".join(roles))
    settings = service_settings(ctx, data_dir)
    if metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": metrics_port})
    run(_work(settings, roles))


async def _work(settings: Settings, roles: tuple[str, ...]) -> None:
    from urbana.adapters import tracing
    from urbana.adapters.bootstrap import build
    from urbana.adapters.roles import build_runtime

    tracing.start(roles[0] if len(roles) == 1 else "worker")

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
    runtime = build_runtime(container, roles, stop=stop)
    await runtime.start()
    out.print(f"worker: {', '.join(roles)}")
    if settings.metrics_port is None:
        reporter = asyncio.create_task(_report(runtime.metrics))
    else:
        reporter = asyncio.create_task(_serve_metrics(settings, runtime.metrics, stop))
    try:
        await asyncio.gather(*runtime.tasks)
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        await runtime.aclose()
        await container.aclose()
        await asyncio.to_thread(tracing.shutdown)  # sends what is buffered


async def _report(figures: Callable[[], dict[str, Any]]) -> None:
    """Without a metrics port, a worker's figures (relay lag, ...) go to the log."""
    while True:
        await asyncio.sleep(METRICS_EVERY_S)
        logging.getLogger("urbana.metrics").info("figures", extra={"figures": figures()})


async def _serve_metrics(
    settings: Settings, figures: Callable[[], dict[str, Any]], stop: asyncio.Event
) -> None:
    """The worker's metrics server (`GET /metrics`, `/healthz`) until the worker stops."""
    from urbana.adapters.http.observe import metrics_app, serve_until

    await serve_until(
        metrics_app(settings.metrics_token, figures),
        settings.host,
        settings.metrics_port or 0,
        stop,
        started=lambda url: out.print(f"metrics: {url}/metrics"),
    )
