"""The FastAPI application; its lifespan is where the container is built and closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Unpack

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from urbana.adapters import logs, metrics, tracing
from urbana.adapters.bootstrap import (
    Container,
    Overrides,
    build,
    build_live_feed,
    build_read_pool,
)
from urbana.adapters.health import check_kafka, check_postgres, check_redis
from urbana.adapters.http import (
    access,
    admin,
    channels,
    console,
    fast_path,
    knowledge,
    notifications,
    observe,
    panel,
    privacy,
    reads,
    stream,
    team,
    templates,
    webhooks,
    workspace,
)
from urbana.adapters.http import erasure as erasure_routes
from urbana.adapters.http.common import container_of
from urbana.adapters.http.errors import add_error_handlers
from urbana.adapters.http.problems import problem
from urbana.adapters.roles import build_runtime
from urbana.config import Settings
from urbana.errors import UrbanaError


async def get_container(request: Request) -> Container:
    return container_of(request)


ContainerDep = Annotated[Container, Depends(get_container)]


class UrbanaAPI(FastAPI):
    """FastAPI, with the gateways' webhook POSTs taken on a fast path (`fast_path`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if fast_path.handles(scope):
            scope["app"] = self  # what `request.app` reads, as Starlette would set it
            await fast_path.WEBHOOKS(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, roles: tuple[str, ...] = (), **overrides: Unpack[Overrides]
) -> FastAPI:
    """Build the ASGI app; pools and clients are made in the lifespan, not here.

    `roles` are background roles (see `adapters.roles`) run in the same process, as
    `urbana dev` does; `overrides` go to the composition root.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Here, not in the CLI: `serve --workers N` starts each worker process anew.
        tracing.start("dev" if roles else "serve")
        container = await build(settings, **overrides)
        runtime = build_runtime(container, roles)
        app.state.container = container
        app.state.runtime = runtime
        # The /v1 reads' pool and the live feed: one of each per API process.
        read_pool = app.state.reads = build_read_pool(settings)
        live = app.state.live = build_live_feed(settings, container.store.app)
        try:
            await read_pool.open()
            await live.start()
            await runtime.start()
            yield
        finally:
            await runtime.aclose()
            await live.aclose()
            await read_pool.close()
            await container.aclose()
            metrics.process_ended()
            await asyncio.to_thread(tracing.shutdown)  # sends what is buffered

    # FastAPI's own OpenTelemetry spans would record each request's path and query (a
    # webhook secret, a phone) and continue a caller's trace: ours are
    # `tracing.TracedRequests`.
    app = UrbanaAPI(
        title="Urbana",
        version="0.1.0",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    add_error_handlers(app)
    app.add_middleware(tracing.TracedRequests)
    app.include_router(webhooks.router)
    app.include_router(admin.router)
    app.include_router(access.router)
    app.include_router(workspace.router)
    app.include_router(team.router)
    app.include_router(templates.router)
    app.include_router(reads.router)
    app.include_router(stream.router)
    app.include_router(privacy.router)
    app.include_router(console.router)
    app.include_router(channels.router)
    app.include_router(knowledge.router)
    app.include_router(notifications.router)
    panel.install(app)
    app.include_router(erasure_routes.router)
    app.include_router(observe.router)
    observe.install_metrics(app, settings.metrics_token, observe.api_figures)
    app.add_middleware(observe.RequestLog)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(container: ContainerDep) -> JSONResponse:
        """Ready when PostgreSQL, Kafka and Redis all answer; else 503 naming those that do not."""
        checks: dict[str, Awaitable[None]] = {
            "postgres": check_postgres(settings),
            "kafka": check_kafka(settings),
            "redis": check_redis(container.redis),
        }
        results = await asyncio.gather(*checks.values(), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, UrbanaError):
                raise result  # a fault of the check itself, not of the service it asks
        status = {
            name: "ok" if r is None else f"error: {r}"
            for name, r in zip(checks, results, strict=True)
        }
        failing = [name for name, v in status.items() if v != "ok"]
        if not failing:
            return JSONResponse({"status": "ready", "checks": status})
        return problem(
            503,
            "not ready",
            f"not reachable: {', '.join(failing)}",
            checks=status,
            failing=failing,
            headers={"Retry-After": "5"},
        )

    return app


def from_environment() -> FastAPI:
    """The app with settings from the environment: the factory `serve --workers N` spawns."""
    logs.configure("api")  # in each spawned worker, which starts with logging unset
    return create_app(Settings())
