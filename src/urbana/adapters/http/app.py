"""The FastAPI application; its lifespan is where the container is built and closed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Unpack

import psycopg
from eventsourcing.persistence import PersistenceError
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from urbana.adapters.bootstrap import Container, Overrides, build, build_runtime
from urbana.adapters.health import check_kafka, check_postgres, check_redis
from urbana.adapters.http import access, admin, webhooks
from urbana.adapters.http.problems import problem
from urbana.adapters.runtime import Runtime
from urbana.application.ingest import CommitterClosed, StoreUnavailable
from urbana.config import Settings
from urbana.domain.errors import AlreadyTaken, DomainError, NotAuthenticated, NotFound

log = logging.getLogger(__name__)

# Our own transient faults: the gateway should retry (503), never drop (4xx).
TRANSIENT: tuple[type[Exception], ...] = (
    PersistenceError,
    psycopg.Error,
    PoolTimeout,
    RedisError,
    CommitterClosed,
    StoreUnavailable,
    ConnectionError,
    TimeoutError,
)


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def create_app(
    settings: Settings, roles: tuple[str, ...] = (), **overrides: Unpack[Overrides]
) -> FastAPI:
    """Build the ASGI app; pools and clients are made in the lifespan, not here.

    `roles` are background roles (relay, projector, responder, dispatcher) run in
    the same process, as `urbana dev` does; `overrides` go to the composition root.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = await build(settings, **overrides)
        runtime = build_runtime(container, roles)
        app.state.container = container
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.aclose()
            await container.aclose()

    app = FastAPI(title="Urbana", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "invalid request", errors=exc.errors())

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        if isinstance(exc, NotAuthenticated):
            return problem(401, "not authenticated", headers={"WWW-Authenticate": "Bearer"})
        status = 409 if isinstance(exc, AlreadyTaken) else 404 if isinstance(exc, NotFound) else 422
        return problem(status, exc.code.replace("_", " "), str(exc))

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning(
            "%s %s: unavailable: %s: %s", request.method, request.url.path, type(exc).__name__, exc
        )
        return problem(
            503, "temporarily unavailable", type(exc).__name__, headers={"Retry-After": "5"}
        )

    for transient in TRANSIENT:
        app.add_exception_handler(transient, unavailable)
    app.include_router(webhooks.router)
    app.include_router(admin.router)
    app.include_router(access.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics(request: Request, container: ContainerDep) -> JSONResponse:
        """This process's figures: ingest group commits, and the roles it runs."""
        committer = container.ingestor.committer
        runtime: Runtime = request.app.state.runtime
        return JSONResponse(
            {
                "ingest": {
                    "batches": committer.batches,
                    "items": committer.items,
                    "mean_batch": round(committer.items / committer.batches, 2)
                    if committer.batches
                    else 0.0,
                    "store_down": committer.gate.down,
                    "refused_while_down": committer.gate.refused,
                },
                **runtime.metrics(),
            }
        )

    @app.get("/readyz")
    async def readyz(container: ContainerDep) -> JSONResponse:
        """Ready when PostgreSQL, Kafka and Redis all answer; else 503 naming those that do not."""
        checks: dict[str, Awaitable[None]] = {
            "postgres": check_postgres(settings),
            "kafka": check_kafka(settings),
            "redis": check_redis(container.redis),
        }
        results = await asyncio.gather(*checks.values(), return_exceptions=True)
        status = {
            name: ("ok" if not isinstance(r, BaseException) else f"error: {type(r).__name__}")
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
    return create_app(Settings())
